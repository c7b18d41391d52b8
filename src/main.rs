//! The `switchyard` command: `serve` the router, `stats` of a running one, `bench` (load a
//! running server), `simulate`, `tune`, `trace`, `classify`, `state` and `config` tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard::config::{Config, DEFAULT_CONFIG_TOML};
use switchyard::logging::LogFormat;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An adaptive LLM router (gRPC service)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC service.
    Serve {
        /// Config file (TOML); the built-in default when absent. Repeat to layer files, e.g. a
        /// base config then a fragment written by `switchyard tune` (later files override keys).
        #[arg(long)]
        config: Vec<PathBuf>,
        /// Listen address, overriding the config's (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory, overriding the config's.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Serve plaintext on a non-loopback address (behind a TLS-terminating proxy or inside a
        /// container network); the same as `server.allow_plaintext = true`.
        #[arg(long)]
        allow_plaintext: bool,
        /// Serve Prometheus metrics on this address at `GET /metrics` (port 0 picks a free port);
        /// off when absent.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Log format (the level comes from RUST_LOG, default info).
        #[arg(long, value_enum, default_value = "pretty")]
        log_format: LogFormat,
        /// Export each RPC as an OpenTelemetry span (task class, model, reason) over OTLP/HTTP
        /// to this collector URL, e.g. http://127.0.0.1:4318 (`/v1/traces` is added when the URL
        /// has no path); off when absent.
        #[arg(long)]
        otlp_endpoint: Option<String>,
    },
    /// Simulate policies over a scenario, a full-information trace or logged traffic.
    Simulate(switchyard::sim::cli::SimulateArgs),
    /// Search policy settings on a scenario or trace; write the best as a config fragment.
    Tune(switchyard::sim::cli::TuneArgs),
    /// The cost anomaly scenario in simulated time: a quiet month, then a traffic and a price spike;
    /// prints each spike's alarms with their delay, and every false alarm.
    SimulateAnomaly {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The detector's daily seasonality: daily or none.
        #[arg(long, default_value = "daily")]
        seasonality: String,
        /// Amplitude of the traffic's daily cycle, a fraction of the mean (0 to 0.95).
        #[arg(long, default_value_t = 0.3)]
        amplitude: f64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Trace tools: import RouterArena, generate a trace from a scenario.
    Trace(switchyard::sim::cli::TraceArgs),
    /// Load a running server over gRPC: throughput and latency of Route, Route+Feedback pairs and
    /// the Health-check floor.
    Bench(switchyard::tools::load::BenchArgs),
    /// Show a running service's arm statistics and budgets as tables.
    Stats(switchyard::tools::stats::StatsArgs),
    /// Operator tools for a data dir (offline: the service must not be running on it).
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Classify prompts (JSONL) with a [classifier] rules file: each prompt's class and rule,
    /// and with labels the accuracy and confusion matrix.
    Classify(switchyard::prompt::cli::ClassifyArgs),
    /// Check a running service with grpc.health.v1: exit 0 when SERVING, 1 otherwise.
    Health(switchyard::tools::health::HealthArgs),
    /// Reports: `report spend` (settled spend grouped by day, model, budget, tag, ...) and
    /// `report ab` (an experiment's control vs router).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// API key tools.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Settled spend, requests, tokens and mean cost from the persisted rollup, grouped.
    Spend(switchyard::tools::spend_report::SpendReportArgs),
    /// A/B report of an experiment: control vs router, with 95% intervals.
    Ab(switchyard::tools::ab::AbArgs),
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Print the SHA-256 hash of an API key for `[auth.keys.NAME] sha256`. Reads the key from
    /// stdin unless --key is given (stdin keeps it out of shell history).
    HashKey {
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the built-in default configuration.
    PrintDefault,
    /// Validate a config file; errors name the key and the bad value.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Summarise what a data dir holds.
    Show {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Verify a data dir fully: every tree scanned and compared with the manifest of the last
    /// flush; exits non-zero naming the file when something is missing or damaged.
    Check {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Back up a running service's data dir (admin RPC `Backup`): the service writes a consistent
    /// copy into DIR, a new directory on its own host.
    Backup {
        /// Directory for the copy (on the service's host); must not exist or be empty.
        #[arg(long)]
        to: PathBuf,
        /// Address of the service: host:port or http://host:port.
        #[arg(long, default_value = switchyard::tools::stats::DEFAULT_ADDR)]
        addr: String,
        #[command(flatten)]
        client: switchyard::tools::client::ClientArgs,
    },
    /// Restore a backup (offline): verify it against its manifest and copy it into a new data dir.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Drop every record that does not decode (bad ledgers, decisions, breakers, arms) and rebuild
    /// the manifest; prints what it dropped.
    Repair {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Reset the arms of a task class (or one model of it) to their priors.
    Reset {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        task_class: String,
        #[arg(long)]
        model: Option<String>,
    },
}

/// mimalloc instead of the system allocator: a Route allocates and frees dozens of small strings
/// and vectors (the request, the decision and its copy kept pending, the response), and mimalloc
/// halves their cost (docs/performance-history.md: the profile); in short `sync` soaks it also
/// held less memory than glibc's per-thread arenas (244 MB vs 410 MB after ~200 000-300 000
/// decisions).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for the server's process, unless `MIMALLOC_ALLOW_THP` says
/// otherwise (mimalloc's own switch: set to 1 it keeps mimalloc's default, huge pages on).
///
/// mimalloc asks the kernel for huge pages on its memory (`madvise(MADV_HUGEPAGE)`), so the first
/// touch of each fresh 2 MiB of heap zeroes all of it inside one page fault. A Route that
/// allocated into a fresh region held the engine's lock through that fault: with huge pages, six
/// fresh `sync` servers at 10 000 Routes/s had 3-17 lock holds over 2.56 ms each (up to 14 ms,
/// all in allocations) and a Route p99 of 2.1-4.4 ms; without, 0-3 such holds and 1.1-3.3 ms
/// (docs/performance-history.md). In a profile of closed-loop Routes, zeroing huge pages was 10.4%
/// of the server's samples, most of the storage writer's 16.8%.
fn keep_pages_small() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
            eprintln!("switchyard: could not turn transparent huge pages off ({e}); continuing");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            metrics_listen,
            allow_plaintext,
            log_format,
            otlp_endpoint,
        } => {
            keep_pages_small();
            // Dropped when this arm ends, after the server stopped: flushes the queued spans.
            let _otel = match switchyard::server::otel::init(
                log_format,
                "info",
                otlp_endpoint.as_deref(),
            ) {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("switchyard: {e}");
                    return ExitCode::from(2);
                }
            };
            let loaded = Config::load_layered(&config);
            let mut cfg = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("switchyard: config error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(d) = &data_dir {
                cfg.data_dir = d.clone();
            }
            cfg.security.allow_plaintext |= allow_plaintext;
            tracing::info!(
                files = ?config,
                models = cfg.models.len(),
                task_classes = cfg.task_classes.len(),
                policy = cfg.policy.settings.kind.as_str(),
                listen = %cfg.listen,
                data_dir = %cfg.data_dir.display(),
                durability = ?cfg.storage.durability,
                "config loaded"
            );
            let reload = switchyard::server::security::ReloadSource {
                paths: config,
                listen,
                data_dir,
                allow_plaintext,
            };
            match run_server(cfg, metrics_listen, reload) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Simulate(args) => switchyard::sim::cli::simulate(args),
        Command::Tune(args) => switchyard::sim::cli::tune(args),
        Command::Trace(args) => switchyard::sim::cli::trace(args),
        Command::SimulateAnomaly {
            seed,
            seasonality,
            amplitude,
            json,
        } => {
            use switchyard::sim::anomaly;
            let scenario = anomaly::AnomalyScenario::standard(seed)
                .with_cycle(&seasonality, amplitude)
                .and_then(|s| anomaly::run(&s));
            match scenario {
                Ok(r) if json => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    print!("{}", anomaly::render(&r));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchyard simulate-anomaly: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Bench(args) => switchyard::tools::load::bench(args),
        Command::Stats(args) => switchyard::tools::stats::run(args),
        Command::Health(args) => switchyard::tools::health::run(args),
        Command::Classify(args) => switchyard::prompt::cli::run(args),
        Command::Report {
            command: ReportCommand::Spend(args),
        } => switchyard::tools::spend_report::run(args),
        Command::Report {
            command: ReportCommand::Ab(args),
        } => switchyard::tools::ab::run(args),
        Command::Auth {
            command: AuthCommand::HashKey { key },
        } => hash_key(key),
        Command::State {
            command: StateCommand::Backup { to, addr, client },
        } => match backup(&to, &addr, &client) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard state backup: {e}");
                ExitCode::from(2)
            }
        },
        Command::State { command } => match state(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard: {e}");
                ExitCode::from(2)
            }
        },
        Command::Config { command } => match command {
            ConfigCommand::PrintDefault => {
                print!("{DEFAULT_CONFIG_TOML}");
                ExitCode::SUCCESS
            }
            ConfigCommand::Check { file } => match Config::load(&file) {
                Ok(c) => {
                    println!(
                        "{}: ok ({} models, {} task classes, policy {})",
                        file.display(),
                        c.models.len(),
                        c.task_classes.len(),
                        c.policy.settings.kind.as_str()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            },
        },
    }
}

/// `auth hash-key`: the key from `--key` or stdin (first line), its hash on stdout.
fn hash_key(key: Option<String>) -> ExitCode {
    let key = match key {
        Some(k) => k,
        None => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("switchyard auth hash-key: cannot read stdin: {e}");
                return ExitCode::from(2);
            }
            line
        }
    };
    if key.trim().is_empty() {
        eprintln!("switchyard auth hash-key: empty key; pass it on stdin or with --key");
        return ExitCode::from(2);
    }
    println!("{}", switchyard::auth::hash_key_hex(&key));
    ExitCode::SUCCESS
}

fn state(command: StateCommand) -> Result<(), switchyard::store::StoreError> {
    use switchyard::store::Store;
    match command {
        StateCommand::Show { data_dir } => {
            let s = Store::open(&data_dir)?.summary(switchyard::time::now_ms())?;
            println!("data dir: {}", data_dir.display());
            println!("schema: {}", s.schema);
            println!("arms: {}", s.arms);
            println!("pending decisions: {}", s.pending);
            println!("breakers: {}", s.breakers);
            println!("ledgers: {}", s.ledgers);
            println!("decisions: {}", s.decisions);
            println!("decision bytes: {}", s.decision_bytes);
            if let (Some(a), Some(b)) = (s.first_event_ms, s.last_event_ms) {
                println!("event time range (unix ms): {a} .. {b}");
            }
        }
        StateCommand::Check { data_dir } => {
            let v = Store::check(&data_dir)?;
            println!("data dir: {}", data_dir.display());
            println!("schema: {}", switchyard::store::SCHEMA_VERSION);
            println!("generation: {}", v.generation);
            let names = switchyard::store::manifest::TREES;
            for (name, t) in names.iter().zip(v.trees.0.iter()) {
                println!("tree {name}: {} records, digest {:016x}", t.count, t.sum);
            }
            if v.manifest_behind {
                println!(
                    "the db stopped between a flush and its manifest's write: the manifest is \
                     rewritten from the db's record of that flush"
                );
            }
            match v.manifest_generation {
                Some(_) if v.compared => println!("ok: every tree matches the manifest"),
                Some(m) => println!(
                    "ok: the db holds writes newer than its manifest (generation {m}; stopped \
                     without a final flush), kept unverified; the manifest is rewritten"
                ),
                None => println!("ok: no manifest yet (written now)"),
            }
        }
        StateCommand::Restore { from, data_dir } => {
            let c = Store::restore(&from, &data_dir)?;
            println!(
                "restored {} records (generation {}) from {} into {}",
                c.records,
                c.generation,
                from.display(),
                data_dir.display()
            );
        }
        StateCommand::Repair { data_dir } => {
            let report = Store::repair(&data_dir)?;
            for line in &report {
                println!("{line}");
            }
            println!(
                "repaired {}: {} change(s)",
                data_dir.display(),
                report.len()
            );
        }
        // Handled by `backup` (it talks to a running service).
        StateCommand::Backup { .. } => {}
        StateCommand::Reset {
            data_dir,
            task_class,
            model,
        } => {
            let n = Store::open(&data_dir)?.reset_arms(&task_class, model.as_deref())?;
            println!("reset {n} arm(s) of {task_class}; they restart at their priors");
        }
    }
    Ok(())
}

/// `state backup`: asks the running service at `addr` for a copy of its data dir in `to`.
fn backup(
    to: &std::path::Path,
    addr: &str,
    client: &switchyard::tools::client::ClientArgs,
) -> Result<(), String> {
    use switchyard::proto::route_client::RouteClient;
    let to_dir = to
        .to_str()
        .ok_or_else(|| format!("--to {} is not UTF-8", to.display()))?
        .to_string();
    let bearer = client.bearer()?;
    let ep = client
        .endpoint(addr)
        .map_err(|e| format!("invalid address {addr:?}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let channel = ep
            .connect()
            .await
            .map_err(|e| format!("cannot reach switchyard at {addr}: {e}"))?;
        let mut request = tonic::Request::new(switchyard::proto::BackupRequest { to_dir });
        if let Some(b) = bearer {
            request.metadata_mut().insert("authorization", b);
        }
        let r = RouteClient::new(channel)
            .backup(request)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        println!(
            "backed up {} records (generation {}) into {}",
            r.records,
            r.generation,
            to.display()
        );
        Ok(())
    })
}

fn run_server(
    cfg: Config,
    metrics_listen: Option<SocketAddr>,
    reload: switchyard::server::security::ReloadSource,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = match cfg.storage.durability {
        switchyard::config::Durability::Memory => None,
        // Serve first, verify after: the decision log is checked in the background.
        _ => Some(switchyard::store::Store::open_serving(&cfg.data_dir, cfg.storage.cache_mb)?.0),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = switchyard::server::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let metrics = match metrics_listen {
            Some(a) => Some(switchyard::server::bind(a).await?),
            None => None,
        };
        let metrics_addr = match &metrics {
            Some(m) => Some(m.local_addr()?),
            None => None,
        };
        // One line on stdout per bound address, for scripts and tests that pass port 0; printed
        // once the data dir is restored, so a reader of the line finds the state ready.
        let on_ready = move || {
            println!("listening on {addr}");
            if let Some(m) = metrics_addr {
                println!("metrics on http://{m}/metrics");
            }
        };
        let options = switchyard::server::ServeOptions {
            store,
            metrics,
            reload,
            reload_on_sighup: true,
            on_ready: Some(Box::new(on_ready)),
        };
        switchyard::server::serve_with(cfg, options, listener, shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: serving starts (and "listening on" is printed) before the server polls
/// it, and a SIGTERM in between would otherwise kill the process without a drain or a final flush.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {},
                _ = wait(term) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received; draining");
    }
}
