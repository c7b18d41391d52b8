//! `switchyard report spend`: settled spend from the persisted rollup, grouped and rendered as a
//! table, CSV or JSON. Offline on a data dir (or a copy of one: the service must not hold it), or
//! online through a running service's `GetSpend`; both group the same rows with the same code, so
//! they print the same report.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::proto::{self, route_client::RouteClient};
use crate::spend::report::{self, Format, GroupBy, SpendGroup};
use crate::spend::SpendTotals;
use crate::tools::client::ClientArgs;

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["data_dir", "addr"])))]
pub struct SpendReportArgs {
    /// Read the rollup from this data dir (offline).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Ask a running service (GetSpend) at host:port.
    #[arg(long)]
    pub addr: Option<String>,
    /// First day: RFC 3339 or Unix ms (whole UTC days: the day containing it is in).
    #[arg(long)]
    pub since: Option<String>,
    /// End (exclusive): RFC 3339 or Unix ms; a day starting before it is in.
    #[arg(long)]
    pub until: Option<String>,
    /// Group by day, week, month, model, provider, task_class, budget_key or tag:NAME; repeat for
    /// several (in order). None: one total.
    #[arg(long)]
    pub by: Vec<String>,
    /// Only this budget key's spend.
    #[arg(long)]
    pub budget_key: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_time(flag: &str, text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis().max(0) as u64)
        .map_err(|e| format!("{flag}: {text:?} is neither RFC 3339 nor Unix milliseconds: {e}"))
}

/// Runs the command; exit 2 with a message on any error.
pub fn run(args: SpendReportArgs) -> ExitCode {
    match report_text(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard report spend: {e}");
            ExitCode::from(2)
        }
    }
}

/// The report as the command prints it.
pub fn report_text(args: &SpendReportArgs) -> Result<String, String> {
    let by = args
        .by
        .iter()
        .map(|b| b.parse::<GroupBy>().map_err(|e| format!("--by: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let since = args
        .since
        .as_deref()
        .map(|t| parse_time("--since", t))
        .transpose()?
        .unwrap_or(0);
    let until = args
        .until
        .as_deref()
        .map(|t| parse_time("--until", t))
        .transpose()?
        .unwrap_or(u64::MAX);
    let columns: Vec<String> = by.iter().map(GroupBy::column).collect();
    let groups = match (&args.data_dir, &args.addr) {
        (Some(dir), _) => {
            let store = crate::store::Store::open(dir).map_err(|e| e.to_string())?;
            let (lo, hi) = report::day_range(since, until);
            let rows = store.spend_rows(lo, hi).map_err(|e| e.to_string())?;
            let key = args.budget_key.as_deref();
            report::group(
                rows.iter()
                    .map(|(k, t)| (k, t))
                    .filter(|(k, _)| key.is_none_or(|b| k.budget_key == b)),
                &by,
            )
        }
        (None, Some(addr)) => fetch(addr, args, since, until)?,
        (None, None) => return Err("pass --data-dir or --addr".into()),
    };
    Ok(report::render(&columns, &groups, args.format))
}

fn fetch(
    addr: &str,
    args: &SpendReportArgs,
    since: u64,
    until: u64,
) -> Result<Vec<SpendGroup>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let ms = |v: u64| i64::try_from(v).unwrap_or(0);
    let mut req = tonic::Request::new(proto::GetSpendRequest {
        since_unix_ms: ms(since),
        until_unix_ms: if until == u64::MAX { 0 } else { ms(until) },
        group_by: args.by.clone(),
        budget_key: args.budget_key.clone().unwrap_or_default(),
    });
    if let Some(b) = args.client.bearer()? {
        req.metadata_mut().insert("authorization", b);
    }
    let ep = args
        .client
        .endpoint(addr)
        .map_err(|e| format!("--addr {addr:?}: {e}"))?;
    let response = runtime.block_on(async {
        let channel = ep
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        RouteClient::new(channel)
            .get_spend(req)
            .await
            .map_err(|s| format!("GetSpend failed: {:?}: {}", s.code(), s.message()))
    })?;
    Ok(response
        .into_inner()
        .rows
        .into_iter()
        .map(|r| SpendGroup {
            key: r.key,
            totals: SpendTotals {
                spend_nusd: r.spend_nusd,
                requests: r.requests,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
            },
        })
        .collect())
}
