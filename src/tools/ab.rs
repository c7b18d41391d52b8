//! `switchyard report ab`: an experiment's A/B report (control vs router) as text, computed
//! offline from a data dir's decision log (the service must not be running on it) or fetched
//! from a running service with the `GetAbReport` RPC. Both print the same message through the
//! pure [`render_ab`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::ab_report::ab_report;
use crate::config::Config;
use crate::proto;
use crate::proto::route_client::RouteClient;
use crate::store::Store;
use crate::tools::client::{request, ClientArgs};
use crate::tools::stats::paired::{interval, signed3, signed_ms, signed_usd};

/// `switchyard report ab`.
#[derive(Debug, Clone, clap::Args)]
pub struct AbArgs {
    /// Read this data dir's decision log (offline); exclusive with --addr.
    #[arg(long, conflicts_with = "addr")]
    pub data_dir: Option<PathBuf>,
    /// Ask the running service at host:port (GetAbReport).
    #[arg(long)]
    pub addr: Option<String>,
    /// Only this task class.
    #[arg(long)]
    pub task_class: Option<String>,
    /// Only decisions made at or after this Unix time in ms.
    #[arg(long, default_value_t = 0)]
    pub since_ms: u64,
    /// Only decisions made before this Unix time in ms (0 = no bound).
    #[arg(long, default_value_t = 0)]
    pub until_ms: u64,
    /// Offline: the service's config files, for each class's latency SLA (max_latency_ms);
    /// without them only failed calls count as SLA violations.
    #[arg(long)]
    pub config: Vec<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `report ab`: one line on stderr and exit code 2 on failure.
pub fn run(args: AbArgs) -> ExitCode {
    let report = match (&args.data_dir, &args.addr) {
        (Some(dir), _) => offline(dir, &args),
        (None, Some(addr)) => online(addr, &args),
        (None, None) => Err(
            "give --data-dir D (offline) or --addr HOST:PORT (a running \
                             service)"
                .to_string(),
        ),
    };
    match report {
        Ok(r) => {
            let text = render_ab(&r);
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard report ab: cannot write to stdout: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Err(e) => {
            eprintln!("switchyard report ab: {e}");
            ExitCode::from(2)
        }
    }
}

fn offline(dir: &std::path::Path, args: &AbArgs) -> Result<proto::GetAbReportResponse, String> {
    let sla: BTreeMap<String, f64> = if args.config.is_empty() {
        BTreeMap::new()
    } else {
        let c = Config::load_layered(&args.config).map_err(|e| format!("config error: {e}"))?;
        c.task_classes
            .iter()
            .filter_map(|(n, c)| c.max_latency_ms.map(|l| (n.clone(), l)))
            .collect()
    };
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    let until = if args.until_ms == 0 {
        u64::MAX
    } else {
        args.until_ms
    };
    let records = store
        .export(args.since_ms, until)
        .map_err(|e| e.to_string())?;
    let class = args.task_class.clone().unwrap_or_default();
    Ok(ab_report(&records, &class, &sla).into())
}

fn online(addr: &str, args: &AbArgs) -> Result<proto::GetAbReportResponse, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let bearer = args.client.bearer()?;
        let ep = args.client.endpoint(addr)?;
        let channel = ep
            .connect()
            .await
            .map_err(|e| format!("cannot reach switchyard at {addr}: {e}"))?;
        let since = i64::try_from(args.since_ms).unwrap_or(i64::MAX);
        let until = i64::try_from(args.until_ms).unwrap_or(i64::MAX);
        RouteClient::new(channel)
            .get_ab_report(request(
                proto::GetAbReportRequest {
                    task_class: args.task_class.clone().unwrap_or_default(),
                    since_unix_ms: since,
                    until_unix_ms: until,
                },
                bearer.as_ref(),
            ))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| {
                format!(
                    "GetAbReport at {addr} failed: {:?}: {}",
                    s.code(),
                    s.message()
                )
            })
    })
}

fn plain3(x: f64) -> String {
    format!("{x:.3}")
}

fn plain_usd(x: f64) -> String {
    format!("{x:.6}")
}

/// The report as text: per class, each group's line, then router minus control.
pub fn render_ab(r: &proto::GetAbReportResponse) -> String {
    if r.groups.is_empty() {
        return "no experiment decisions in the decision log (or window)\n".to_string();
    }
    let mut out = String::new();
    let mut class = "";
    for g in &r.groups {
        if g.task_class != class {
            class = &g.task_class;
            out.push_str(&format!("task class {class} (means with 95% intervals)\n"));
        }
        out.push_str(&format!(
            "  {}: {} requests, {} with outcome\n    quality {}\n    cost/request USD {}\n    \
             latency p50 {:.0} ms, p95 {:.0} ms\n    SLA violations {} (rate {})\n",
            g.group,
            g.requests,
            g.with_outcome,
            interval(g.quality.as_ref(), plain3),
            interval(g.cost_usd.as_ref(), plain_usd),
            g.latency_p50_ms,
            g.latency_p95_ms,
            g.sla_violations,
            interval(g.sla_violation_rate.as_ref(), plain3),
        ));
        if let Some(d) = r
            .differences
            .iter()
            .find(|d| d.task_class == g.task_class && g.group == "router")
        {
            out.push_str(&format!(
                "  router - control\n    quality {}\n    cost/request USD {}\n    latency ms {}\n    \
                 SLA violation rate {}\n",
                interval(d.quality.as_ref(), signed3),
                interval(d.cost_usd.as_ref(), signed_usd),
                interval(d.latency_ms.as_ref(), signed_ms),
                interval(d.sla_violation_rate.as_ref(), signed3),
            ));
        }
    }
    out
}
