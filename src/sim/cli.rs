//! The simulator's subcommands: `switchyard simulate`, `switchyard tune` and `switchyard trace
//! (import-routerarena | generate)`. main.rs only declares the variants and calls [`simulate`],
//! [`tune`] and [`trace`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::frontier::Frontier;
use super::offpolicy::{evaluate, Target};
use super::report::{OffPolicyReport, Report};
use super::run::{run_many, run_one, run_seed, PolicySpec, RunOptions, Source};
use super::scenario::Scenario;
use super::trace::{read_jsonl, write_jsonl, FullInfoRecord, LoggedDecision};
use super::truth::{generate_trace, ScenarioTruth, TraceData};
use super::tune::{tune as run_tune, TuneSpace};
use super::SimError;
use crate::config::Config;
use crate::logging::{init_logging, LogFormat};
use crate::policy::PolicyKind;

/// Default policies compared by `simulate`.
pub const DEFAULT_POLICIES: &str =
    "oracle,thompson,ucb,epsilon_greedy,adaptive,static_best,lowest_latency,cheapest,uniform";

/// `switchyard simulate`: run policies over a scenario, a full-information trace or logged traffic.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["scenario", "trace", "logged"])))]
pub struct SimulateArgs {
    /// Scenario file (TOML, see simulations/scenarios/).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Full-information trace (JSON Lines); its config comes from --config or FILE.config.toml.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Logged traffic exported by the service (JSON Lines), evaluated off-policy; its config comes
    /// from --config or FILE.config.toml.
    #[arg(long)]
    pub logged: Option<PathBuf>,
    /// Service config for --trace / --logged; repeat to layer fragments (later ones win).
    #[arg(long)]
    pub config: Vec<PathBuf>,
    /// Policies to compare: oracle, a policy kind, or KIND:setting=value:... (e.g.
    /// thompson:half_life_secs=600:prior_strength=4).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_POLICIES)]
    pub policies: Vec<String>,
    /// Targets for --logged: model:ID (always that model) or a policy spec; default: every logged
    /// model and thompson.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Number of seeds per policy.
    #[arg(long, default_value_t = 10)]
    pub seeds: usize,
    #[arg(long, default_value_t = 1)]
    pub base_seed: u64,
    /// Worker threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Output directory for report.json, summary.csv, runs.csv and the SVG plots
    /// (default simulations/out/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the scenario's duration (seconds).
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Also write the first policy's decisions (first seed) as logged traffic to this file, with the
    /// scenario's service config beside it as FILE.config.toml.
    #[arg(long)]
    pub log_out: Option<PathBuf>,
    /// Measure simulated decisions per second per core (one thread, one seed per policy) instead of
    /// writing a report.
    #[arg(long)]
    pub bench: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `switchyard tune`: grid search over policy settings; writes the best as a config fragment.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["scenario", "trace"])))]
pub struct TuneArgs {
    /// Scenario file (TOML).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Full-information trace (JSON Lines); its config comes from --config or FILE.config.toml.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Service config for --trace; repeat to layer fragments.
    #[arg(long)]
    pub config: Vec<PathBuf>,
    /// Policy kind to tune.
    #[arg(long, default_value = "thompson")]
    pub policy: String,
    /// Half-lives to try (seconds; inf = no decay).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "600,3600,21600,86400,inf"
    )]
    pub half_life_secs: Vec<f64>,
    #[arg(long, value_delimiter = ',', default_value = "0.5,2,8")]
    pub prior_strength: Vec<f64>,
    /// ucb_exploration (ucb) or epsilon (epsilon_greedy) values to try.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,1")]
    pub exploration: Vec<f64>,
    #[arg(long, default_value_t = 8)]
    pub seeds: usize,
    #[arg(long, default_value_t = 1)]
    pub base_seed: u64,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Where to write the config fragment.
    #[arg(long, default_value = "tuned.toml")]
    pub out: PathBuf,
    #[arg(long)]
    pub no_progress: bool,
}

/// `switchyard trace`: trace tools.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    pub command: TraceCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TraceCommand {
    /// Join RouterArena's cached results into a full-information trace.
    ImportRouterarena {
        #[arg(long, default_value = "simulations/data/routerarena")]
        data: PathBuf,
        #[arg(long, default_value = "simulations/traces/routerarena.jsonl")]
        out: PathBuf,
    },
    /// Turn a scenario into a full-information trace (and its FILE.config.toml sidecar).
    Generate {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        duration_secs: Option<f64>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a data dir's event log as logged traffic (JSON Lines) to stdout or --out.
    Export {
        #[arg(long)]
        data_dir: PathBuf,
        /// Decisions from this time: RFC 3339 (2026-01-31T12:00:00Z) or Unix milliseconds.
        #[arg(long)]
        since: Option<String>,
        /// Decisions before this time (same formats).
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Parses an RFC 3339 time or Unix milliseconds.
fn parse_time(flag: &str, text: &str) -> Result<u64, SimError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis().max(0) as u64)
        .map_err(|e| {
            SimError::new(
                flag,
                format!("{text:?} is neither RFC 3339 nor Unix milliseconds: {e}"),
            )
        })
}

fn exit(result: Result<(), SimError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::from(2)
        }
    }
}

fn threads(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

fn progress_bar(total: usize, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs, eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The sidecar config of a trace: `x.jsonl` -> `x.config.toml`.
pub fn sidecar_config(trace: &Path) -> PathBuf {
    trace.with_extension("config.toml")
}

fn load_config(configs: &[PathBuf], data: &Path) -> Result<Config, SimError> {
    let paths = if configs.is_empty() {
        vec![sidecar_config(data)]
    } else {
        configs.to_vec()
    };
    Ok(Config::load_layered(&paths)?)
}

fn load_scenario(path: &Path, duration: Option<f64>) -> Result<Source, SimError> {
    let mut scenario = Scenario::load(path)?;
    if let Some(d) = duration {
        if !(d.is_finite() && d > 0.0) {
            return Err(SimError::new(
                "--duration-secs",
                format!("must be > 0, got {d}"),
            ));
        }
        scenario.traffic.duration_secs = d;
    }
    Source::scenario(scenario)
}

fn load_trace(path: &Path, configs: &[PathBuf]) -> Result<Source, SimError> {
    let config = load_config(configs, path)?;
    let records: Vec<FullInfoRecord> = read_jsonl(path)?;
    let name = path
        .file_stem()
        .map_or_else(|| "trace".to_string(), |s| s.to_string_lossy().into_owned());
    Ok(Source::Trace(TraceData::new(&name, config, &records)?))
}

/// Runs `switchyard simulate`.
pub fn simulate(args: SimulateArgs) -> ExitCode {
    init_logging(LogFormat::Pretty, "warn");
    exit(simulate_inner(&args))
}

fn simulate_inner(args: &SimulateArgs) -> Result<(), SimError> {
    if let Some(path) = &args.logged {
        return evaluate_logged(args, path);
    }
    let source = match (&args.scenario, &args.trace) {
        (Some(s), _) => load_scenario(s, args.duration_secs)?,
        (None, Some(t)) => load_trace(t, &args.config)?,
        (None, None) => {
            return Err(SimError::new(
                "simulate",
                "give --scenario, --trace or --logged",
            ))
        }
    };
    let policies = args
        .policies
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| PolicySpec::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    if policies.is_empty() {
        return Err(SimError::new("--policies", "give at least one policy"));
    }
    if args.bench {
        return bench(&source, &policies, args.base_seed);
    }
    if args.seeds == 0 {
        return Err(SimError::new("--seeds", "must be at least 1"));
    }
    if let Some(path) = &args.log_out {
        let seed = run_seed(args.base_seed, 0);
        let mut world = source.world(seed);
        let first = policies
            .iter()
            .find(|p| !matches!(p, PolicySpec::Oracle))
            .unwrap_or(&policies[0]);
        let out = run_one(
            world.as_mut(),
            first,
            seed,
            RunOptions {
                log_decisions: true,
            },
        )?;
        write_jsonl(path, &out.logged)?;
        if let Source::Scenario(truth) = &source {
            let sidecar = sidecar_config(path);
            std::fs::write(&sidecar, &truth.scenario.service_toml).map_err(|e| {
                SimError::new(sidecar.display().to_string(), format!("cannot write: {e}"))
            })?;
        }
        println!(
            "wrote {} ({} logged decisions of {})",
            path.display(),
            out.logged.len(),
            first.label()
        );
    }
    let bar = progress_bar(policies.len() * args.seeds, args.no_progress);
    let runs = run_many(
        &source,
        &policies,
        args.seeds,
        args.base_seed,
        threads(args.threads),
        &|| bar.inc(1),
    )?;
    bar.finish_and_clear();
    let world = source.world(0);
    let report = Report::new(
        &source.name(),
        args.base_seed,
        world.duration_ms() as f64 / 1000.0,
        world.events(),
        runs,
    )
    .with_frontier(match &source {
        Source::Trace(t) => t.frontier.clone(),
        Source::Scenario(s) => Frontier::of(&generate_trace(s, args.base_seed)),
    });
    print!("{}{}", report.table(), report.frontier_table());
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("simulations/out").join(source.name()));
    for p in report.write(&dir)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}

fn bench(source: &Source, policies: &[PolicySpec], base_seed: u64) -> Result<(), SimError> {
    println!("{}: one thread, one run per policy", source.name());
    for p in policies {
        let seed = run_seed(base_seed, 0);
        let mut world = source.world(seed);
        let start = Instant::now();
        let out = run_one(world.as_mut(), p, seed, RunOptions::default())?;
        let secs = start.elapsed().as_secs_f64();
        let n = out.metrics.requests as f64;
        println!(
            "{:40} {:>9} decisions in {:>7.3} s = {:>10.0} decisions/s/core",
            p.label(),
            out.metrics.requests,
            secs,
            n / secs.max(1e-9)
        );
    }
    Ok(())
}

fn evaluate_logged(args: &SimulateArgs, path: &Path) -> Result<(), SimError> {
    let config = load_config(&args.config, path)?;
    let log: Vec<LoggedDecision> = read_jsonl(path)?;
    let targets = if args.targets.is_empty() {
        let mut models: Vec<String> = log.iter().map(|d| d.model.clone()).collect();
        models.sort();
        models.dedup();
        let mut t: Vec<Target> = models.into_iter().map(Target::Fixed).collect();
        t.push(Target::Policy(PolicySpec::parse(
            PolicyKind::Thompson.as_str(),
        )?));
        t
    } else {
        args.targets
            .iter()
            .map(|t| Target::parse(t))
            .collect::<Result<Vec<_>, _>>()?
    };
    let results = targets
        .iter()
        .map(|t| evaluate(&log, &config, t, args.base_seed))
        .collect::<Result<Vec<_>, _>>()?;
    let name = path.file_stem().map_or_else(
        || "logged".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let report = OffPolicyReport {
        source: name.clone(),
        logged_decisions: log.len(),
        results,
    };
    print!("{}", report.table());
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("simulations/out").join(name));
    for p in report.write(&dir)? {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Runs `switchyard tune`.
pub fn tune(args: TuneArgs) -> ExitCode {
    init_logging(LogFormat::Pretty, "warn");
    exit(tune_inner(&args))
}

fn tune_inner(args: &TuneArgs) -> Result<(), SimError> {
    let source = match (&args.scenario, &args.trace) {
        (Some(s), _) => load_scenario(s, args.duration_secs)?,
        (None, Some(t)) => load_trace(t, &args.config)?,
        (None, None) => return Err(SimError::new("tune", "give --scenario or --trace")),
    };
    let kind = PolicyKind::parse(&args.policy)
        .ok_or_else(|| SimError::new("--policy", format!("unknown policy {:?}", args.policy)))?;
    let space = TuneSpace {
        kind,
        half_life_secs: args.half_life_secs.clone(),
        prior_strength: args.prior_strength.clone(),
        exploration: args.exploration.clone(),
    };
    let bar = progress_bar(
        space.candidates().len() * args.seeds.max(1),
        args.no_progress,
    );
    let result = run_tune(
        &source,
        &space,
        args.seeds.max(1),
        args.base_seed,
        threads(args.threads),
        &|| bar.inc(1),
    )?;
    bar.finish_and_clear();
    print!("{}", result.table());
    let fragment = result.fragment();
    std::fs::write(&args.out, &fragment)
        .map_err(|e| SimError::new(args.out.display().to_string(), format!("cannot write: {e}")))?;
    println!("wrote {}:\n{fragment}", args.out.display());
    Ok(())
}

/// Runs `switchyard trace ...`.
pub fn trace(args: TraceArgs) -> ExitCode {
    init_logging(LogFormat::Pretty, "warn");
    exit(match args.command {
        TraceCommand::Export {
            data_dir,
            since,
            until,
            out,
        } => (|| {
            let since = since
                .map(|t| parse_time("--since", &t))
                .transpose()?
                .unwrap_or(0);
            let until = until
                .map(|t| parse_time("--until", &t))
                .transpose()?
                .unwrap_or(u64::MAX);
            let store = crate::store::Store::open(&data_dir)
                .map_err(|e| SimError::new("--data-dir", e.to_string()))?;
            let records = store
                .export(since, until)
                .map_err(|e| SimError::new("--data-dir", e.to_string()))?;
            match out {
                Some(out) => {
                    write_jsonl(&out, &records)?;
                    eprintln!("wrote {} ({} decisions)", out.display(), records.len());
                }
                None => {
                    use std::io::Write;
                    let stdout = std::io::stdout();
                    let mut w = stdout.lock();
                    for r in &records {
                        let line = serde_json::to_string(r)
                            .map_err(|e| SimError::new("export", e.to_string()))?;
                        writeln!(w, "{line}")
                            .map_err(|e| SimError::new("stdout", e.to_string()))?;
                    }
                }
            }
            Ok(())
        })(),
        TraceCommand::ImportRouterarena { data, out } => (|| {
            let records = super::trace::import_routerarena(&data)?;
            write_jsonl(&out, &records)?;
            println!("wrote {} ({} requests)", out.display(), records.len());
            Ok(())
        })(),
        TraceCommand::Generate {
            scenario,
            seed,
            duration_secs,
            out,
        } => (|| {
            let mut s = Scenario::load(&scenario)?;
            if let Some(d) = duration_secs {
                s.traffic.duration_secs = d;
            }
            let service = s.service_toml.clone();
            let truth = ScenarioTruth::new(s)?;
            let records = generate_trace(&truth, seed);
            write_jsonl(&out, &records)?;
            let sidecar = sidecar_config(&out);
            std::fs::write(&sidecar, service)
                .map_err(|e| SimError::new(sidecar.display().to_string(), e.to_string()))?;
            println!(
                "wrote {} ({} requests) and {}",
                out.display(),
                records.len(),
                sidecar.display()
            );
            Ok(())
        })(),
    })
}
