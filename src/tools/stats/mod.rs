//! `switchyard stats`: what a running service has learned, as terminal tables instead of JSON.
//!
//! Fetching and rendering are apart: [`fetch`] asks a service for `GetArmStats` and `GetBudgets`
//! over gRPC, [`render`] turns the answers into text and is pure (the clock and the table width
//! are passed in through [`View`]), so tests check tables built from hand-made messages. [`run`]
//! is the subcommand: fetch, render, print, and one line on stderr with exit code 2 on failure.

mod cache;
pub mod paired;
mod render;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use tonic::transport::Endpoint;
use tonic::Code;

pub use cache::render_cache;
pub use render::{beta_interval_95, render, render_objectives, usd};

use crate::proto;
use crate::proto::route_client::RouteClient;
use crate::tools::client::{request, ClientArgs};

/// Where `stats` looks when no `--addr` is given: the built-in default config's `server.listen`
/// (a unit test keeps the two equal).
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";

/// Table width when stdout is not a terminal and no `--width` is given: a common terminal width.
/// Tables wider than the width stack their values in two-line cells (see [`render`]).
pub const DEFAULT_WIDTH: u16 = 120;

/// How long to wait for the TCP connection: a local service answers in milliseconds, and an
/// address that black-holes packets should fail fast with a clear message, not hang the terminal.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Deadline for each RPC; both are in-memory reads on the service.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// `switchyard stats`: GetArmStats and GetBudgets of a running service as tables.
#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// Address of the service: host:port or http://host:port.
    #[arg(long, default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// Only the arms of this task class (an unknown class is an error).
    #[arg(long)]
    pub task_class: Option<String>,
    /// Only this budget key (an unknown key is an error).
    #[arg(long)]
    pub budget_key: Option<String>,
    /// Table width in columns; default: the terminal's width, or 120 when stdout is not a terminal.
    #[arg(long)]
    pub width: Option<u16>,
    #[command(flatten)]
    pub client: crate::tools::client::ClientArgs,
}

/// Why `stats` could not show anything; each message is one line naming the address, class or key.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("invalid address {addr:?}: {reason}; expected host:port or http://host:port")]
    InvalidAddr { addr: String, reason: String },
    #[error("cannot reach switchyard at {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
    #[error("unknown task class {class:?} at {addr} (server says: {detail})")]
    UnknownTaskClass {
        addr: String,
        class: String,
        detail: String,
    },
    #[error("unknown budget key {key:?} at {addr} (server says: {detail})")]
    UnknownBudgetKey {
        addr: String,
        key: String,
        detail: String,
    },
    #[error("{rpc} at {addr} failed: {code:?}: {detail}")]
    Rpc {
        rpc: &'static str,
        addr: String,
        code: Code,
        detail: String,
    },
}

/// What [`fetch`] got from the service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub arms: Vec<proto::ArmStats>,
    pub budgets: Vec<proto::Budget>,
    /// Quality targets under `min_cost`, with what they achieve and their trade-off.
    pub objectives: Vec<proto::ClassObjective>,
    /// Shadow traffic's paired comparisons.
    pub paired: Vec<proto::PairedComparison>,
    /// The response cache of each caching class.
    pub cache: Vec<proto::CacheStats>,
}

/// The outside facts a rendering depends on, passed in so [`render`] stays pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// "Now" for ages and remaining times (Unix ms).
    pub now_unix_ms: i64,
    /// Maximum table width in columns; cells wrap to fit.
    pub width: u16,
}

impl View {
    /// The wall clock now and the given width.
    pub fn now(width: u16) -> View {
        View {
            now_unix_ms: Utc::now().timestamp_millis(),
            width,
        }
    }
}

/// The endpoint of `addr` (see [`crate::tools::client::endpoint`]) with the tool's timeouts.
pub fn endpoint(addr: &str) -> Result<Endpoint, StatsError> {
    endpoint_with(addr, &ClientArgs::default())
}

/// [`endpoint`] with `--tls-ca`.
fn endpoint_with(addr: &str, client: &ClientArgs) -> Result<Endpoint, StatsError> {
    let ep = client
        .endpoint(addr)
        .map_err(|reason| StatsError::InvalidAddr {
            addr: addr.to_string(),
            reason,
        })?;
    Ok(ep.connect_timeout(CONNECT_TIMEOUT).timeout(RPC_TIMEOUT))
}

/// Asks the service at `addr` for its arm statistics (all classes, or `task_class`) and its
/// budgets (all, or `budget_key`).
pub async fn fetch(
    addr: &str,
    task_class: Option<&str>,
    budget_key: Option<&str>,
) -> Result<Snapshot, StatsError> {
    fetch_with(addr, task_class, budget_key, &ClientArgs::default()).await
}

/// [`fetch`] with `--tls-ca` and `--api-key`.
pub async fn fetch_with(
    addr: &str,
    task_class: Option<&str>,
    budget_key: Option<&str>,
    client: &ClientArgs,
) -> Result<Snapshot, StatsError> {
    let bearer = client.bearer().map_err(|reason| StatsError::InvalidAddr {
        addr: addr.to_string(),
        reason,
    })?;
    let ep = endpoint_with(addr, client)?;
    let shown = ep.uri().to_string();
    let shown = shown.trim_end_matches('/').to_string();
    let channel = ep.connect().await.map_err(|e| StatsError::Unreachable {
        addr: shown.clone(),
        detail: error_chain(&e),
    })?;
    let mut client = RouteClient::new(channel);

    let class = task_class.unwrap_or_default();
    let stats = client
        .get_arm_stats(request(
            proto::GetArmStatsRequest {
                task_class: class.to_string(),
                model: String::new(),
            },
            bearer.as_ref(),
        ))
        .await
        .map_err(|s| match s.code() {
            Code::NotFound if !class.is_empty() => StatsError::UnknownTaskClass {
                addr: shown.clone(),
                class: class.to_string(),
                detail: one_line(s.message()),
            },
            _ => rpc_error("GetArmStats", &shown, &s),
        })?
        .into_inner();
    let (arms, objectives, paired, cache) =
        (stats.arms, stats.objectives, stats.paired, stats.cache);

    let key = budget_key.unwrap_or_default();
    let budgets = client
        .get_budgets(request(
            proto::GetBudgetsRequest {
                budget_key: key.to_string(),
            },
            bearer.as_ref(),
        ))
        .await
        .map_err(|s| match s.code() {
            Code::NotFound if !key.is_empty() => StatsError::UnknownBudgetKey {
                addr: shown.clone(),
                key: key.to_string(),
                detail: one_line(s.message()),
            },
            _ => rpc_error("GetBudgets", &shown, &s),
        })?
        .into_inner()
        .budgets;
    Ok(Snapshot {
        arms,
        budgets,
        objectives,
        paired,
        cache,
    })
}

fn rpc_error(rpc: &'static str, addr: &str, s: &tonic::Status) -> StatsError {
    match s.code() {
        // The connection was made but the service went away (or never spoke gRPC).
        Code::Unavailable => StatsError::Unreachable {
            addr: addr.to_string(),
            detail: one_line(s.message()),
        },
        code => StatsError::Rpc {
            rpc,
            addr: addr.to_string(),
            code,
            detail: one_line(s.message()),
        },
    }
}

/// An error and its sources on one line ("transport error: tcp connect error: Connection
/// refused"), skipping a source whose text its parent already shows.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last().is_none_or(|p| !p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    one_line(&parts.join(": "))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The subcommand: fetch, render and print; on failure one line on stderr and exit code 2.
pub fn run(args: StatsArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard stats: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let fetched = runtime.block_on(fetch_with(
        &args.addr,
        args.task_class.as_deref(),
        args.budget_key.as_deref(),
        &args.client,
    ));
    let snapshot = match fetched {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchyard stats: {e}");
            return ExitCode::from(2);
        }
    };
    // No colours are ever written, so only the width depends on whether stdout is a terminal.
    let width = args
        .width
        .or_else(|| comfy_table::Table::new().width())
        .unwrap_or(DEFAULT_WIDTH);
    let mut text = render(&snapshot.arms, &snapshot.budgets, &View::now(width));
    text.push_str(&render_objectives(&snapshot.objectives));
    text.push_str(&paired::render_paired(&snapshot.paired));
    text.push_str(&render_cache(&snapshot.cache));
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // `switchyard stats | head` closing the pipe early is not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard stats: cannot write to stdout: {e}");
            ExitCode::from(2)
        }
    }
}
