//! `switchyard bench`: a load tool for a running server over real gRPC (tonic clients), so the
//! service's own throughput and latency can be measured against the floor that tonic itself sets.
//!
//! # Layout
//! - [`BenchArgs`]: the flags; [`run`]: the core, returning a [`BenchReport`]; [`render`]: the human
//!   table; [`bench`]: the subcommand (prints the table or `--json`, maps errors to exit codes).
//! - `workload`: one unit of each [`Workload`]: a Health check, a Route, or Route + Feedback.
//! - `report`: the recorders (HdrHistogram per load task, merged) and the report types.
//!
//! Two load models. Closed loop: `--concurrency` tasks issue units back to back, so throughput is
//! what the server sustains at that concurrency. Open loop: `--rate` units per second, each started
//! at its scheduled time (start + i / rate) whether or not earlier ones finished, with latency
//! measured from the scheduled time, so a stalled server shows up in the latencies instead of
//! silently lowering the send rate (coordinated omission). The schedule runs on a blocking thread
//! that sleeps with the OS timer rather than on tokio's millisecond timer wheel; the report shows
//! how late units actually started (`schedule_lag_us`).

mod report;
mod workload;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

pub use report::{
    code_name, render, BenchReport, ErrorCount, HistogramBucket, LatencySummary, WorkloadReport,
};
pub use workload::{FALLBACK_LATENCY_MS, INPUT_TOKENS, LATENCY_FACTOR, OUTPUT_TOKENS};

use crate::logging::{init_logging, LogFormat};
use report::Recorder;
use workload::{Failure, Spec, Target};

/// Workloads run when `--workload` is not given: the floor first, so the others read against it.
pub const DEFAULT_WORKLOADS: &str = "floor,route,pair";

/// How long to wait for each connection before giving up on the address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest `--duration` or `--warmup` accepted (a day): keeps every scheduled time representable.
pub const MAX_PHASE_SECS: f64 = 86_400.0;

/// Most units one open-loop workload may schedule (each is a task and a histogram sample).
pub const MAX_OPEN_LOOP_REQUESTS: u64 = 100_000_000;

/// Most connections or concurrent tasks accepted.
pub const MAX_CONNECTIONS: usize = 1024;
pub const MAX_CONCURRENCY: usize = 100_000;
/// Most runtime threads accepted (`--threads`).
pub const MAX_THREADS: usize = 256;

/// What one unit of load is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// grpc.health.v1.Health/Check with service "": the same server stack with an (almost) empty
    /// handler, i.e. the floor that tonic, HTTP/2 and the network set.
    Floor,
    /// switchyard.v1.Route/Route alone.
    Route,
    /// Route, then the Feedback for its decision; one unit is the round trip of both.
    Pair,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Floor => "floor",
            Workload::Route => "route",
            Workload::Pair => "pair",
        }
    }

    /// What one unit is called in reports.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Pair => "pair",
            Workload::Floor | Workload::Route => "request",
        }
    }

    /// The unit of its throughput.
    pub fn rate_unit(self) -> &'static str {
        match self {
            Workload::Pair => "pairs/s",
            Workload::Floor | Workload::Route => "req/s",
        }
    }

    fn uses_task_class(self) -> bool {
        matches!(self, Workload::Route | Workload::Pair)
    }
}

/// `switchyard bench`: load a running server and report throughput and latency per workload.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "switchyard bench")]
pub struct BenchArgs {
    /// Server address: HOST:PORT or http://HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    #[command(flatten)]
    pub client: crate::tools::client::ClientArgs,
    /// Workloads to run in turn (repeat, or a comma list): floor, route, pair.
    #[arg(
        long = "workload",
        value_enum,
        value_delimiter = ',',
        default_value = DEFAULT_WORKLOADS
    )]
    pub workloads: Vec<Workload>,
    /// Task class of the route and pair workloads.
    #[arg(long, default_value = "qa")]
    pub task_class: String,
    /// Closed loop: tasks issuing requests back to back.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Open loop instead: units per second, scheduled at fixed intervals; exactly
    /// round(rate x duration) are sent per workload.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Measured seconds per workload.
    #[arg(long = "duration", default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Seconds of unrecorded load before each workload's measurement.
    #[arg(long = "warmup", default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// HTTP/2 connections; requests are spread over them round robin.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// pair: fraction of Feedbacks that report outcome ERROR.
    #[arg(long, default_value_t = 0.02)]
    pub error_rate: f64,
    /// Seed of the request contents (input tokens, outcomes, latencies, qualities).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Deadline of each RPC; a unit past it counts as an error.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Threads of the tool's own async runtime; 0 picks one per core for a closed loop and one
    /// for an open loop. With one thread every task (the units, the connections) shares it, so a
    /// unit wakes no other thread of the tool: at 10,000 Routes a second that cost it 15% less
    /// CPU, with half the context switches, than a thread per core (README, Performance).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{flag}: {message}")]
    InvalidArgument { flag: &'static str, message: String },
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("task class {task_class:?} is not known to the server at {addr} (pass --task-class): {message}")]
    UnknownTaskClass {
        task_class: String,
        addr: String,
        message: String,
    },
    #[error("{rpc} on {addr} failed: {code}: {message}")]
    Rpc {
        rpc: &'static str,
        addr: String,
        code: &'static str,
        message: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl LoadError {
    /// 2 for what the caller can fix (arguments, the address, the task class, the server), 1 for
    /// the tool's own failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Internal(_) => 1,
            _ => 2,
        }
    }
}

fn invalid(flag: &'static str, message: impl Into<String>) -> LoadError {
    LoadError::InvalidArgument {
        flag,
        message: message.into(),
    }
}

/// The validated shape of a run.
#[derive(Debug, Clone, Copy)]
enum LoadModel {
    Closed {
        concurrency: usize,
    },
    Open {
        rate: f64,
        /// Recorded units: round(rate x duration).
        requests: u64,
        /// Unrecorded units before them: round(rate x warmup).
        warmup_requests: u64,
    },
}

#[derive(Debug)]
struct Plan {
    model: LoadModel,
    duration: Duration,
    warmup: Duration,
    endpoint: Endpoint,
    /// The `authorization` value every request carries, if a key was given.
    bearer: Option<tonic::metadata::AsciiMetadataValue>,
}

fn phase(flag: &'static str, secs: f64, allow_zero: bool) -> Result<Duration, LoadError> {
    let ok =
        secs.is_finite() && secs <= MAX_PHASE_SECS && (secs > 0.0 || (allow_zero && secs == 0.0));
    if !ok {
        let bound = if allow_zero { ">= 0" } else { "> 0" };
        return Err(invalid(
            flag,
            format!("must be seconds {bound} and at most {MAX_PHASE_SECS}, got {secs}"),
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| invalid(flag, format!("{secs}: {e}")))
}

impl BenchArgs {
    /// `--threads`, checked; 0 stays 0 for a closed loop (a thread per core).
    fn threads(&self) -> Result<usize, LoadError> {
        if self.threads > MAX_THREADS {
            return Err(invalid(
                "--threads",
                format!(
                    "must be 0 (one per core for a closed loop, one for an open loop) or \
                     1..={MAX_THREADS}, got {}",
                    self.threads
                ),
            ));
        }
        Ok(match (self.threads, self.rate) {
            (0, Some(_)) => 1,
            (n, _) => n,
        })
    }

    /// The runtime `--threads` asks for, checked before any thread starts: one thread is a
    /// current-thread runtime (an open loop's scheduler still sleeps on a thread of its own, from
    /// which it hands units over).
    fn runtime(&self) -> Result<tokio::runtime::Runtime, LoadError> {
        let threads = self.threads()?;
        let built = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if threads > 1 {
                builder.worker_threads(threads);
            }
            builder.enable_all().build()
        };
        built.map_err(|e| LoadError::Internal(format!("starting the runtime: {e}")))
    }

    fn plan(&self) -> Result<Plan, LoadError> {
        if self.workloads.is_empty() {
            return Err(invalid(
                "--workload",
                "name at least one of floor, route, pair",
            ));
        }
        let duration = phase("--duration", self.duration_secs, false)?;
        let warmup = phase("--warmup", self.warmup_secs, true)?;
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(invalid(
                "--connections",
                format!("must be 1..={MAX_CONNECTIONS}, got {}", self.connections),
            ));
        }
        if !(self.error_rate.is_finite() && (0.0..=1.0).contains(&self.error_rate)) {
            return Err(invalid(
                "--error-rate",
                format!("must be a fraction in [0, 1], got {}", self.error_rate),
            ));
        }
        if self.timeout_ms == 0 {
            return Err(invalid("--timeout-ms", "must be at least 1"));
        }
        self.threads()?;
        if self.task_class.is_empty() && self.workloads.iter().any(|w| w.uses_task_class()) {
            return Err(invalid(
                "--task-class",
                "must name a task class for the route and pair workloads",
            ));
        }
        let model = match self.rate {
            None => {
                if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
                    return Err(invalid(
                        "--concurrency",
                        format!("must be 1..={MAX_CONCURRENCY}, got {}", self.concurrency),
                    ));
                }
                LoadModel::Closed {
                    concurrency: self.concurrency,
                }
            }
            Some(rate) => {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(invalid(
                        "--rate",
                        format!("must be requests per second > 0, got {rate}"),
                    ));
                }
                let requests = (rate * self.duration_secs).round();
                let warmup_requests = (rate * self.warmup_secs).round();
                if requests < 1.0 {
                    return Err(invalid(
                        "--rate",
                        format!(
                            "{rate}/s for {} s rounds to no request at all; raise --rate or \
                             --duration",
                            self.duration_secs
                        ),
                    ));
                }
                if requests + warmup_requests > MAX_OPEN_LOOP_REQUESTS as f64 {
                    return Err(invalid(
                        "--rate",
                        format!(
                            "{rate}/s for {} s (+{} s warm-up) is more than \
                             {MAX_OPEN_LOOP_REQUESTS} requests",
                            self.duration_secs, self.warmup_secs
                        ),
                    ));
                }
                LoadModel::Open {
                    rate,
                    requests: requests as u64,
                    warmup_requests: warmup_requests as u64,
                }
            }
        };
        let bearer = self.client.bearer().map_err(|e| invalid("--api-key", e))?;
        let endpoint = self
            .client
            .endpoint(&self.addr)
            .map_err(|e| invalid("--addr", format!("{:?} is not an address: {e}", self.addr)))?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_millis(self.timeout_ms));
        Ok(Plan {
            model,
            duration,
            warmup,
            endpoint,
            bearer,
        })
    }
}

/// The error and its causes on one line (tonic's transport error alone says only "transport
/// error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn connect(
    args: &BenchArgs,
    endpoint: &Endpoint,
    bearer: &Option<tonic::metadata::AsciiMetadataValue>,
) -> Result<Vec<Target>, LoadError> {
    let mut targets = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        // Each connect() opens its own HTTP/2 connection.
        let channel: Channel = endpoint.connect().await.map_err(|e| LoadError::Connect {
            addr: args.addr.clone(),
            message: chain(&e),
        })?;
        targets.push(Target::new(channel, bearer.clone()));
    }
    Ok(targets)
}

/// Asks GetArmStats (no side effects) whether the server knows the task class, so a typo stops the
/// run before any load instead of after the floor's.
async fn preflight(args: &BenchArgs, target: &mut Target) -> Result<(), LoadError> {
    let request = crate::proto::GetArmStatsRequest {
        task_class: args.task_class.clone(),
        model: String::new(),
    };
    match target.route.get_arm_stats(target.request(request)).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => Err(LoadError::UnknownTaskClass {
            task_class: args.task_class.clone(),
            addr: args.addr.clone(),
            message: status.message().to_string(),
        }),
        Err(status) => Err(LoadError::Rpc {
            rpc: "switchyard.v1.Route/GetArmStats",
            addr: args.addr.clone(),
            code: code_name(status.code()),
            message: status.message().to_string(),
        }),
    }
}

/// Stops a workload early: a Route answered NOT_FOUND (the task class is unknown), or the caller
/// went away.
#[derive(Default)]
struct Abort {
    stopped: AtomicBool,
    /// The server's message when a Route answered NOT_FOUND.
    unknown_class: OnceLock<String>,
}

impl Abort {
    fn is_tripped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn check<T>(&self, result: &Result<T, Failure>) {
        if let Err(f) = result {
            if f.rpc == "Route" && f.status.code() == tonic::Code::NotFound {
                let _ = self.unknown_class.set(f.status.message().to_string());
                self.stopped.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Stops the open-loop schedule when dropped, so it ends early if its caller is cancelled.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort.stopped.store(true, Ordering::Relaxed);
    }
}

/// What every load task of one workload shares.
struct Shared {
    spec: Spec,
    abort: Abort,
}

/// The seed of one RNG stream: one per (workload position, task), so workloads and tasks draw
/// different but reproducible sequences.
fn stream_seed(seed: u64, workload_index: usize, stream: usize) -> u64 {
    seed ^ (workload_index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (stream as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

fn later(t: Instant, d: Duration) -> Result<Instant, LoadError> {
    t.checked_add(d)
        .ok_or_else(|| LoadError::Internal(format!("{d:?} from now is not representable")))
}

fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, LoadError> {
    r.map_err(|e| LoadError::Internal(format!("load task failed: {e}")))
}

/// Closed loop: `concurrency` tasks, task k on connection k mod C, each issuing units back to back
/// until the end of the measured window; a unit is recorded when it was sent inside the window.
async fn closed_loop(
    shared: &Arc<Shared>,
    targets: &[Target],
    plan: &Plan,
    concurrency: usize,
    seed: u64,
    index: usize,
) -> Result<(Recorder, Duration), LoadError> {
    let start = Instant::now();
    let record_from = later(start, plan.warmup)?;
    let end = later(record_from, plan.duration)?;
    let mut tasks = JoinSet::new();
    for k in 0..concurrency {
        let mut target = targets[k % targets.len()].clone();
        let shared = Arc::clone(shared);
        let mut rng = SmallRng::seed_from_u64(stream_seed(seed, index, k));
        let mut recorder = Recorder::new()?;
        tasks.spawn(async move {
            while !shared.abort.is_tripped() {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = workload::issue(&shared.spec, &mut target, &mut rng).await;
                let latency = sent.elapsed();
                shared.abort.check(&result);
                if sent >= record_from {
                    recorder.record(&result, latency);
                }
            }
            recorder
        });
    }
    let mut total = Recorder::new()?;
    while let Some(done) = tasks.join_next().await {
        total.merge(joined(done)?)?;
    }
    Ok((total, Instant::now().saturating_duration_since(record_from)))
}

/// A finished open-loop unit.
struct OpenResult {
    recorded: bool,
    result: Result<workload::Done, Failure>,
    latency: Duration,
    lag: Duration,
}

/// Open loop: unit i (warm-up ones first) is started at start + i / rate on connection i mod C,
/// whether or not earlier ones finished; its latency runs from that scheduled time.
async fn open_loop(
    shared: &Arc<Shared>,
    targets: &[Target],
    rate: f64,
    total_requests: u64,
    warmup_requests: u64,
    seed: u64,
    index: usize,
) -> Result<(Recorder, Duration), LoadError> {
    let _guard = StopOnDrop(Arc::clone(shared));
    let runtime = tokio::runtime::Handle::current();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<OpenResult>();
    let start = Instant::now();
    // Offsets are computed from i, not accumulated, so there is no drift; the values are bounded by
    // the validated duration, warm-up and request count.
    let offset = move |i: u64| Duration::from_nanos((i as f64 * 1e9 / rate) as u64);
    let record_from = later(start, offset(warmup_requests))?;
    let scheduler = {
        let shared = Arc::clone(shared);
        let targets = targets.to_vec();
        tokio::task::spawn_blocking(move || -> Result<u64, LoadError> {
            let mut rng = SmallRng::seed_from_u64(stream_seed(seed, index, 0));
            let mut spawned = 0u64;
            for i in 0..total_requests {
                if shared.abort.is_tripped() {
                    break;
                }
                let scheduled = later(start, offset(i))?;
                let wait = scheduled.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                let Some(target) = targets.get((i % targets.len() as u64) as usize) else {
                    return Err(LoadError::Internal("no connection".into()));
                };
                let mut target = target.clone();
                let mut unit_rng = SmallRng::seed_from_u64(rng.random());
                let shared = Arc::clone(&shared);
                let tx = tx.clone();
                let recorded = i >= warmup_requests;
                runtime.spawn(async move {
                    let lag = scheduled.elapsed();
                    let result = workload::issue(&shared.spec, &mut target, &mut unit_rng).await;
                    let latency = scheduled.elapsed();
                    let _ = tx.send(OpenResult {
                        recorded,
                        result,
                        latency,
                        lag,
                    });
                });
                spawned += 1;
            }
            Ok(spawned)
        })
    };
    let mut recorder = Recorder::new()?;
    let mut received = 0u64;
    // Ends when the scheduler and every unit have dropped their senders.
    while let Some(done) = rx.recv().await {
        received += 1;
        shared.abort.check(&done.result);
        if done.recorded {
            recorder.record(&done.result, done.latency);
            recorder.record_lag(done.lag);
        }
    }
    let elapsed = Instant::now().saturating_duration_since(record_from);
    let spawned = joined(scheduler.await)??;
    if received != spawned {
        return Err(LoadError::Internal(format!(
            "{spawned} requests were started but {received} finished"
        )));
    }
    Ok((recorder, elapsed))
}

/// Runs each workload of `args` in turn against the server and reports them.
///
/// Errors: bad arguments, an unreachable address, or a task class the server does not know (checked
/// before any load, and again if a Route answers NOT_FOUND mid-run). RPC failures during the load
/// are not errors of the run: they are counted per gRPC code in the report.
pub async fn run(args: &BenchArgs) -> Result<BenchReport, LoadError> {
    let plan = args.plan()?;
    let mut targets = connect(args, &plan.endpoint, &plan.bearer).await?;
    if args.workloads.iter().any(|w| w.uses_task_class()) {
        if let Some(first) = targets.first_mut() {
            preflight(args, first).await?;
        }
    }
    let mut reports = Vec::with_capacity(args.workloads.len());
    for (index, &workload) in args.workloads.iter().enumerate() {
        info!(
            workload = workload.name(),
            duration_secs = args.duration_secs,
            warmup_secs = args.warmup_secs,
            "bench workload starting"
        );
        let shared = Arc::new(Shared {
            spec: Spec {
                workload,
                task_class: args.task_class.clone(),
                error_rate: args.error_rate,
            },
            abort: Abort::default(),
        });
        let (recorder, elapsed) = match plan.model {
            LoadModel::Closed { concurrency } => {
                closed_loop(&shared, &targets, &plan, concurrency, args.seed, index).await?
            }
            LoadModel::Open {
                rate,
                requests,
                warmup_requests,
            } => {
                open_loop(
                    &shared,
                    &targets,
                    rate,
                    warmup_requests + requests,
                    warmup_requests,
                    args.seed,
                    index,
                )
                .await?
            }
        };
        if let Some(message) = shared.abort.unknown_class.get() {
            return Err(LoadError::UnknownTaskClass {
                task_class: args.task_class.clone(),
                addr: args.addr.clone(),
                message: message.clone(),
            });
        }
        let report = recorder.into_report(workload, elapsed);
        for e in &report.errors_by_code {
            warn!(
                workload = workload.name(),
                rpc = e.rpc,
                code = e.code,
                count = e.count,
                first_message = %e.first_message,
                "requests failed"
            );
        }
        info!(
            workload = workload.name(),
            requests = report.requests,
            errors = report.errors,
            throughput_per_sec = report.throughput_per_sec,
            "bench workload done"
        );
        reports.push(report);
    }
    let floor = reports
        .iter()
        .find(|r| r.workload == Workload::Floor)
        .map(|r| r.throughput_per_sec)
        .filter(|t| *t > 0.0);
    if let Some(floor) = floor {
        for r in &mut reports {
            r.ratio_to_floor = Some(r.throughput_per_sec / floor);
        }
    }
    let (load_model, concurrency, rate_per_sec) = match plan.model {
        LoadModel::Closed { concurrency } => ("closed", Some(concurrency), None),
        LoadModel::Open { rate, .. } => ("open", None, Some(rate)),
    };
    Ok(BenchReport {
        addr: args.addr.clone(),
        load_model,
        concurrency,
        rate_per_sec,
        connections: args.connections,
        duration_secs: args.duration_secs,
        warmup_secs: args.warmup_secs,
        task_class: args.task_class.clone(),
        seed: args.seed,
        workloads: reports,
    })
}

/// The report as one JSON object (what `--json` prints).
pub fn to_json(report: &BenchReport) -> Result<String, LoadError> {
    serde_json::to_string_pretty(report)
        .map_err(|e| LoadError::Internal(format!("serialising the report: {e}")))
}

/// `switchyard bench`: runs [`run`] on a fresh runtime, prints [`render`] (or `--json`) on stdout;
/// errors go to stderr with exit code 2 (1 for the tool's own failures).
pub fn bench(args: BenchArgs) -> ExitCode {
    init_logging(LogFormat::Pretty, "info");
    let result = args
        .runtime()
        .and_then(|runtime| runtime.block_on(run(&args)))
        .and_then(|report| {
            if args.json {
                to_json(&report)
            } else {
                Ok(render(&report))
            }
        });
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(extra: &[&str]) -> BenchArgs {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(extra);
        BenchArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_and_workload_lists() {
        let a = parse(&[]);
        assert_eq!(
            a.workloads,
            vec![Workload::Floor, Workload::Route, Workload::Pair]
        );
        assert_eq!(
            (a.concurrency, a.connections, a.seed, a.rate),
            (32, 4, 1, None)
        );
        assert_eq!((a.duration_secs, a.warmup_secs), (10.0, 2.0));
        assert_eq!(a.task_class, "qa");
        assert_eq!(a.threads, 0);
        let a = parse(&["--workload", "pair", "--workload", "route,floor"]);
        assert_eq!(
            a.workloads,
            vec![Workload::Pair, Workload::Route, Workload::Floor]
        );
        assert!(BenchArgs::try_parse_from(["bench", "--workload", "nope"]).is_err());
        assert!(BenchArgs::try_parse_from(["bench", "--rate", "5", "--concurrency", "3"]).is_err());
    }

    #[test]
    fn threads_pick_the_runtime() {
        use tokio::runtime::RuntimeFlavor::{CurrentThread, MultiThread};
        for (extra, flavor, workers) in [
            (&[][..], MultiThread, None),
            (&["--rate", "10"][..], CurrentThread, Some(1)),
            (&["--threads", "1"][..], CurrentThread, Some(1)),
            (
                &["--rate", "10", "--threads", "3"][..],
                MultiThread,
                Some(3),
            ),
        ] {
            let rt = parse(extra).runtime().unwrap();
            assert_eq!(rt.handle().runtime_flavor(), flavor, "{extra:?}");
            if let Some(n) = workers {
                assert_eq!(rt.metrics().num_workers(), n, "{extra:?}");
            }
        }
        // Refused before any thread starts.
        let err = parse(&["--threads", "1000000"]).runtime().unwrap_err();
        assert!(err.to_string().starts_with("--threads"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn bad_arguments_name_the_flag() {
        for (extra, flag) in [
            (&["--duration", "0"][..], "--duration"),
            (&["--duration=-1"][..], "--duration"),
            (&["--duration", "NaN"][..], "--duration"),
            (&["--warmup=-1"][..], "--warmup"),
            (&["--concurrency", "0"][..], "--concurrency"),
            (&["--connections", "0"][..], "--connections"),
            (&["--rate", "0"][..], "--rate"),
            (&["--rate", "inf"][..], "--rate"),
            (&["--rate", "1", "--duration", "0.1"][..], "--rate"),
            (&["--error-rate", "1.5"][..], "--error-rate"),
            (&["--addr", "not an address"][..], "--addr"),
            (&["--task-class", ""][..], "--task-class"),
            (&["--threads", "257"][..], "--threads"),
        ] {
            let err = parse(extra).plan().unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with(flag), "{extra:?}: {text}");
            assert_eq!(err.exit_code(), 2);
        }
        // Floor alone needs no task class.
        parse(&["--task-class", "", "--workload", "floor"])
            .plan()
            .unwrap();
    }

    #[test]
    fn open_loop_counts_are_exact() {
        let plan = parse(&["--rate", "200", "--duration", "0.5", "--warmup", "0.25"])
            .plan()
            .unwrap();
        let LoadModel::Open {
            requests,
            warmup_requests,
            ..
        } = plan.model
        else {
            panic!("open loop expected");
        };
        assert_eq!((requests, warmup_requests), (100, 50));
        let plan = parse(&["--rate", "3", "--duration", "0.5"]).plan().unwrap();
        assert!(matches!(plan.model, LoadModel::Open { requests: 2, .. }));
    }
}
