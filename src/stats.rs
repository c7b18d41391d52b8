//! `switchyard stats`: what a running service has learned, as terminal tables instead of JSON.
//!
//! Fetching and rendering are apart: [`fetch`] asks a service for `GetArmStats` and `GetBudgets`
//! over gRPC, [`render`] turns the answers into text and is pure (the clock and the table width
//! are passed in through [`View`]), so tests check tables built from hand-made messages. [`run`]
//! is the subcommand: fetch, render, print, and one line on stderr with exit code 2 on failure.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use comfy_table::{
    Cell, CellAlignment, ColumnConstraint, ContentArrangement, LineStyle, Table, TableStyle, Width,
};
use statrs::distribution::{Beta, ContinuousCDF};
use tonic::transport::Endpoint;
use tonic::Code;

use crate::proto;
use crate::proto::route_client::RouteClient;

/// Where `stats` looks when no `--addr` is given: the built-in default config's `server.listen`
/// (a unit test keeps the two equal).
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";

/// Table width when stdout is not a terminal and no `--width` is given: a common terminal width.
/// Tables wider than the width stack their values in two-line cells (see [`render`]).
pub const DEFAULT_WIDTH: u16 = 120;

/// Narrowest width honoured; below it columns would wrap into unreadable slivers.
const MIN_WIDTH: u16 = 60;

/// How long to wait for the TCP connection: a local service answers in milliseconds, and an
/// address that black-holes packets should fail fast with a clear message, not hang the terminal.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Deadline for each RPC; both are in-memory reads on the service.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Probability mass outside the credible intervals shown (split equally between the two tails).
const INTERVAL_MASS_OUTSIDE: f64 = 0.05;

/// Largest alpha + beta handed to statrs' Beta quantile. Its Newton iteration (AS 109) stalls for
/// shapes near 1e9 (measured: Beta(1, 1e9) does not return), so larger posteriors are scaled down
/// to this much evidence with their mean kept. At 1e6 pseudo-observations the 95% interval is at
/// most 0.002 wide, below the two decimals shown, so the scaling cannot show in the table.
const MAX_INTERVAL_EVIDENCE: f64 = 1e6;

/// Smallest shape handed to statrs: it does not return on subnormal shapes (measured:
/// Beta(1, 1e-310)), nor on Beta(1e6, 1e-300). Below 1e-12 a Beta is a point mass at 0 or 1 to
/// any precision a table shows, so raising the shape to this cannot change what is displayed.
const MIN_INTERVAL_SHAPE: f64 = 1e-12;

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

/// The endpoint of `addr` (see [`crate::client::endpoint`]) with the tool's timeouts.
pub fn endpoint(addr: &str) -> Result<Endpoint, StatsError> {
    let ep = crate::client::endpoint(addr).map_err(|reason| StatsError::InvalidAddr {
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
    let ep = endpoint(addr)?;
    let shown = ep.uri().to_string();
    let shown = shown.trim_end_matches('/').to_string();
    let channel = ep.connect().await.map_err(|e| StatsError::Unreachable {
        addr: shown.clone(),
        detail: error_chain(&e),
    })?;
    let mut client = RouteClient::new(channel);

    let class = task_class.unwrap_or_default();
    let arms = client
        .get_arm_stats(proto::GetArmStatsRequest {
            task_class: class.to_string(),
            model: String::new(),
        })
        .await
        .map_err(|s| match s.code() {
            Code::NotFound if !class.is_empty() => StatsError::UnknownTaskClass {
                addr: shown.clone(),
                class: class.to_string(),
                detail: one_line(s.message()),
            },
            _ => rpc_error("GetArmStats", &shown, &s),
        })?
        .into_inner()
        .arms;

    let key = budget_key.unwrap_or_default();
    let budgets = client
        .get_budgets(proto::GetBudgetsRequest {
            budget_key: key.to_string(),
        })
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
    Ok(Snapshot { arms, budgets })
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
    let fetched = runtime.block_on(fetch(
        &args.addr,
        args.task_class.as_deref(),
        args.budget_key.as_deref(),
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
        .or_else(|| Table::new().width())
        .unwrap_or(DEFAULT_WIDTH);
    let text = render(&snapshot.arms, &snapshot.budgets, &View::now(width));
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

/// Renders arm statistics (one table per task class, in the order the service listed them) and
/// budgets (one table, or a one-line note when there are none) as plain text without colours.
///
/// Each table is laid out one line per row when that fits `view.width`; otherwise related values
/// are stacked in two-line cells (model over provider, mean over interval, ...) so that a row
/// still reads across an 80-column terminal.
pub fn render(arms: &[proto::ArmStats], budgets: &[proto::Budget], view: &View) -> String {
    let mut out = String::new();
    if arms.is_empty() {
        out.push_str("no arms: the service has no task classes configured\n");
    }
    let mut classes: Vec<(&str, Vec<&proto::ArmStats>)> = Vec::new();
    for a in arms {
        match classes.iter_mut().find(|(c, _)| *c == a.task_class) {
            Some((_, v)) => v.push(a),
            None => classes.push((&a.task_class, vec![a])),
        }
    }
    for (i, (class, rows)) in classes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let n = rows.len();
        out.push_str(&format!(
            "task class {class} ({n} model{})\n",
            if n == 1 { "" } else { "s" }
        ));
        let cells: Vec<ArmCells> = rows.iter().map(|a| ArmCells::new(a, view)).collect();
        out.push_str(&fit(
            view.width,
            || wide_arms(&cells),
            || narrow_arms(&cells),
        ));
    }
    out.push('\n');
    if budgets.is_empty() {
        out.push_str("budgets: none configured\n");
    } else {
        let cells: Vec<BudgetCells> = budgets.iter().map(BudgetCells::new).collect();
        out.push_str("budgets\n");
        out.push_str(&fit(
            view.width,
            || wide_budgets(&cells),
            || narrow_budgets(&cells),
        ));
    }
    out
}

/// The wide layout's text if no line of it is longer than `width`, else the narrow one's
/// arranged to `width`; ending in a newline.
fn fit(width: u16, wide: impl FnOnce() -> Table, narrow: impl FnOnce() -> Table) -> String {
    let width = width.max(MIN_WIDTH);
    let text = tidy(&wide());
    if text
        .lines()
        .all(|l| l.chars().count() <= usize::from(width))
    {
        return text;
    }
    let mut t = narrow();
    t.set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width);
    tidy(&t)
}

/// The table's lines without trailing spaces, the header rule cut to the widest line.
fn tidy(t: &Table) -> String {
    let text = t.trim_fmt();
    let is_rule = |l: &str| !l.is_empty() && l.bytes().all(|b| b == b'-');
    let widest = text
        .lines()
        .filter(|l| !is_rule(l))
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len() + 1);
    for line in text.lines() {
        if is_rule(line) {
            out.push_str(&"-".repeat(widest));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Plain columns: two spaces apart, a dashed rule under the header, no borders, no colours.
const WIDE_STYLE: TableStyle = TableStyle::new().header_separator(LineStyle::none().fill('-'));

/// As [`WIDE_STYLE`], with a blank line between rows, whose cells span several lines.
const NARROW_STYLE: TableStyle = WIDE_STYLE.row_separator(LineStyle::none().fill(' '));

/// Spaces after each cell: the gap between columns (trailing ones are trimmed).
const COLUMN_GAP: u16 = 2;

fn new_table(style: TableStyle, header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(style)
        .force_no_tty()
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(Cell::new));
    for c in t.column_iter_mut() {
        c.set_padding((0, COLUMN_GAP));
    }
    t
}

/// Fixes every column but those in `free` to its content's width, so that only the free
/// columns (names) wrap when a narrow layout is squeezed; `capped` columns wrap past `cap`.
fn fix_widths(t: &mut Table, free: &[usize], capped: &[usize], cap: u16) {
    let widths = t.column_max_content_widths();
    for (i, w) in widths.into_iter().enumerate() {
        if free.contains(&i) {
            continue;
        }
        let w = if capped.contains(&i) { w.min(cap) } else { w };
        if let Some(c) = t.column_mut(i) {
            // An absolute width includes the column's padding.
            let w = w.saturating_add(COLUMN_GAP);
            c.set_constraint(ColumnConstraint::Absolute(Width::Fixed(w)));
        }
    }
}

/// One arm's values as display strings, composed by either layout.
struct ArmCells {
    model: String,
    provider: String,
    share: String,
    pulls: String,
    /// Mean and interval of the success and quality posteriors; `None` shows as "-".
    success: Option<(String, String)>,
    quality: Option<(String, String)>,
    latency: String,
    p95: String,
    cost: String,
    breaker: String,
    age: String,
}

impl ArmCells {
    fn new(a: &proto::ArmStats, view: &View) -> ArmCells {
        ArmCells {
            model: a.model.clone(),
            provider: a.provider.clone(),
            share: percent(a.traffic_share, 1),
            pulls: a.pulls.to_string(),
            success: beta_cells(a.success_rate_mean, a.success_posterior.as_ref()),
            quality: beta_cells(a.quality_mean, a.quality_posterior.as_ref()),
            latency: millis(a.latency_mean_ms),
            p95: millis(a.latency_p95_ms),
            cost: usd(a.cost_mean_usd),
            breaker: breaker(a, view.now_unix_ms),
            age: age(a.last_feedback_unix_ms, view.now_unix_ms),
        }
    }
}

/// "0.83 [0.71, 0.92]" on one line, or mean over interval on two.
fn mean_and_interval(cells: &Option<(String, String)>, sep: &str) -> String {
    match cells {
        Some((mean, interval)) => format!("{mean}{sep}{interval}"),
        None => "-".to_string(),
    }
}

fn wide_arms(cells: &[ArmCells]) -> Table {
    let mut t = new_table(
        WIDE_STYLE,
        &[
            "model",
            "provider",
            "share",
            "pulls",
            "success [95% CI]",
            "quality [95% CI]",
            "lat ms",
            "p95 ms",
            "cost/call",
            "breaker",
            "last fb",
        ],
    );
    for c in cells {
        t.add_row(vec![
            Cell::new(&c.model),
            Cell::new(&c.provider),
            right(c.share.clone()),
            right(c.pulls.clone()),
            Cell::new(mean_and_interval(&c.success, " ")),
            Cell::new(mean_and_interval(&c.quality, " ")),
            right(c.latency.clone()),
            right(c.p95.clone()),
            right(c.cost.clone()),
            Cell::new(&c.breaker),
            right(c.age.clone()),
        ]);
    }
    t
}

/// Width of the narrow layout's breaker column: "open until" / "16:10:00Z," / "degraded".
const NARROW_BREAKER_WIDTH: u16 = 10;

fn narrow_arms(cells: &[ArmCells]) -> Table {
    let mut t = new_table(
        NARROW_STYLE,
        &[
            "model\nprovider",
            "share\npulls",
            "success\n95% CI",
            "quality\n95% CI",
            "lat ms\np95 ms",
            "cost/call\nlast fb",
            "breaker",
        ],
    );
    for c in cells {
        t.add_row(vec![
            Cell::new(format!("{}\n{}", c.model, c.provider)),
            right(format!("{}\n{}", c.share, c.pulls)),
            Cell::new(mean_and_interval(&c.success, "\n")),
            Cell::new(mean_and_interval(&c.quality, "\n")),
            right(format!("{}\n{}", c.latency, c.p95)),
            right(format!("{}\n{}", c.cost, c.age)),
            Cell::new(&c.breaker),
        ]);
    }
    fix_widths(&mut t, &[0], &[6], NARROW_BREAKER_WIDTH);
    t
}

/// One budget's values as display strings, composed by either layout.
struct BudgetCells {
    key: String,
    period: String,
    spent: String,
    reserved: String,
    limit: String,
    used: String,
    pacing: String,
    state: String,
    on_cap: String,
    /// Date and time (with UTC offset) of the period's end.
    period_end: (String, String),
    alerts: String,
}

impl BudgetCells {
    fn new(b: &proto::Budget) -> BudgetCells {
        BudgetCells {
            key: b.budget_key.clone(),
            period: b.period.clone(),
            spent: usd(b.spent_usd),
            reserved: usd(b.reserved_usd),
            limit: usd(b.limit_usd),
            used: if b.limit_usd > 0.0 {
                percent(b.spent_usd / b.limit_usd, 1)
            } else {
                "-".to_string()
            },
            pacing: if b.pacing_multiplier.is_finite() {
                format!("x{:.2}", b.pacing_multiplier)
            } else {
                "-".to_string()
            },
            state: budget_state(b.state).to_string(),
            on_cap: b.on_cap.clone(),
            period_end: local_time(b.period_end_unix_ms, &b.time_zone),
            alerts: thresholds(&b.alert_thresholds_crossed),
        }
    }
}

fn wide_budgets(cells: &[BudgetCells]) -> Table {
    let mut t = new_table(
        WIDE_STYLE,
        &[
            "budget",
            "period",
            "spent",
            "reserved",
            "limit",
            "used",
            "pacing",
            "state",
            "on cap",
            "period ends",
            "alerts crossed",
        ],
    );
    for c in cells {
        t.add_row(vec![
            Cell::new(&c.key),
            Cell::new(&c.period),
            right(c.spent.clone()),
            right(c.reserved.clone()),
            right(c.limit.clone()),
            right(c.used.clone()),
            right(c.pacing.clone()),
            Cell::new(&c.state),
            Cell::new(&c.on_cap),
            Cell::new(format!("{} {}", c.period_end.0, c.period_end.1).trim_end()),
            Cell::new(&c.alerts),
        ]);
    }
    t
}

fn narrow_budgets(cells: &[BudgetCells]) -> Table {
    let mut t = new_table(
        NARROW_STYLE,
        &[
            "budget\nperiod",
            "spent\nreserved",
            "limit\nused",
            "pacing\nstate",
            "on cap",
            "period ends",
            "alerts\ncrossed",
        ],
    );
    for c in cells {
        t.add_row(vec![
            Cell::new(format!("{}\n{}", c.key, c.period)),
            right(format!("{}\n{}", c.spent, c.reserved)),
            right(format!("{}\n{}", c.limit, c.used)),
            Cell::new(format!("{}\n{}", c.pacing, c.state)),
            Cell::new(&c.on_cap),
            Cell::new(format!("{}\n{}", c.period_end.0, c.period_end.1)),
            Cell::new(c.alerts.replace(", ", ",\n")),
        ]);
    }
    fix_widths(&mut t, &[0], &[], 0);
    t
}

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

/// Equal-tailed 95% credible interval of Beta(`alpha`, `beta`): its 2.5% and 97.5% quantiles,
/// by the inverse regularised incomplete beta function (statrs, after AS 64 / AS 109). `None`
/// when the parameters are not a proper Beta (either <= 0 or not finite) or the quantiles come
/// out unusable. Posteriors with more than [`MAX_INTERVAL_EVIDENCE`] are scaled down to it, and
/// shapes are raised to at least [`MIN_INTERVAL_SHAPE`].
///
/// The mean alpha / (alpha + beta) lies inside for any posterior with both shapes >= 1, and for
/// the shapes the router's priors and evidence produce; a shape far below 1 piles the mass at 0
/// or 1 and can leave the mean outside (Beta(0.001, 1) has its 97.5% quantile at 1e-11).
pub fn beta_interval_95(alpha: f64, beta: f64) -> Option<(f64, f64)> {
    if !(alpha.is_finite() && beta.is_finite() && alpha > 0.0 && beta > 0.0) {
        return None;
    }
    let scale = (MAX_INTERVAL_EVIDENCE / (alpha + beta)).min(1.0);
    let shape = |x: f64| (x * scale).max(MIN_INTERVAL_SHAPE);
    let d = Beta::new(shape(alpha), shape(beta)).ok()?;
    let tail = INTERVAL_MASS_OUTSIDE / 2.0;
    let lo = d.inverse_cdf(tail);
    let hi = d.inverse_cdf(1.0 - tail);
    let ok = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
    // Quantiles are monotone, so an inverted pair is rounding in statrs' iteration: seen only
    // with both shapes far below 1, where both quantiles are 0 to within 1e-20.
    (ok(lo) && ok(hi)).then_some((lo.min(hi), lo.max(hi)))
}

/// The posterior mean ("0.83") and its 95% interval ("[0.71, 0.92]"); `None` for a missing or
/// improper posterior, whose mean means nothing either.
fn beta_cells(mean: f64, posterior: Option<&proto::BetaParams>) -> Option<(String, String)> {
    let p = posterior?;
    let (lo, hi) = beta_interval_95(p.alpha, p.beta)?;
    (mean.is_finite() && (0.0..=1.0).contains(&mean))
        .then(|| (format!("{mean:.2}"), format!("[{lo:.2}, {hi:.2}]")))
}

fn percent(fraction: f64, decimals: usize) -> String {
    if fraction.is_finite() {
        format!("{:.*}%", decimals, fraction * 100.0)
    } else {
        "-".to_string()
    }
}

fn millis(ms: f64) -> String {
    if ms.is_finite() && ms >= 0.0 {
        format!("{ms:.0}")
    } else {
        "-".to_string()
    }
}

/// Dollars with three significant digits below $1 ($0.000123, $0.0150), cents above ($12.34).
pub fn usd(x: f64) -> String {
    if !x.is_finite() {
        return "-".to_string();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    let a = x.abs();
    if a == 0.0 {
        "$0".to_string()
    } else if a >= 1.0 {
        format!("{sign}${a:.2}")
    } else if a < 1e-8 {
        format!("{sign}${a:.1e}")
    } else {
        // Leading zeros after the point, plus three significant digits.
        let decimals = (-a.log10()).ceil().max(0.0) as usize + 2;
        format!("{sign}${a:.decimals$}")
    }
}

fn breaker(a: &proto::ArmStats, now_ms: i64) -> String {
    let state = match proto::BreakerState::try_from(a.breaker_state) {
        Ok(proto::BreakerState::Closed) => "closed".to_string(),
        Ok(proto::BreakerState::HalfOpen) => "half-open".to_string(),
        Ok(proto::BreakerState::Open) if a.breaker_until_unix_ms > 0 => {
            format!("open until {}", utc_time(a.breaker_until_unix_ms, now_ms))
        }
        Ok(proto::BreakerState::Open) => "open".to_string(),
        Ok(proto::BreakerState::Unspecified) | Err(_) => "-".to_string(),
    };
    if a.degraded {
        format!("{state}, degraded")
    } else {
        state
    }
}

/// A UTC time of day ("14:05:09Z") when it falls on today's UTC date, else with the date.
fn utc_time(unix_ms: i64, now_ms: i64) -> String {
    let (Some(t), Some(now)) = (
        DateTime::<Utc>::from_timestamp_millis(unix_ms),
        DateTime::<Utc>::from_timestamp_millis(now_ms),
    ) else {
        return "-".to_string();
    };
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%d %H:%MZ").to_string()
    }
}

/// How long ago `unix_ms` was, coarsely ("42s ago", "7m ago", "3h ago", "12d ago"); 0 = never.
fn age(unix_ms: i64, now_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".to_string();
    }
    let secs = now_ms.saturating_sub(unix_ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn budget_state(state: i32) -> &'static str {
    match proto::BudgetState::try_from(state) {
        Ok(proto::BudgetState::BudgetOk) => "ok",
        Ok(proto::BudgetState::BudgetPacing) => "pacing",
        Ok(proto::BudgetState::BudgetExhausted) => "exhausted",
        Ok(proto::BudgetState::Unspecified) | Err(_) => "-",
    }
}

/// The period's end in the budget's own time zone (where its periods start at midnight), as
/// date and time with the UTC offset so it reads the same anywhere; UTC when the zone is unknown
/// to this build.
fn local_time(unix_ms: i64, zone: &str) -> (String, String) {
    let Some(t) = DateTime::<Utc>::from_timestamp_millis(unix_ms) else {
        return ("-".to_string(), String::new());
    };
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => {
            let t = t.with_timezone(&tz);
            (
                t.format("%Y-%m-%d").to_string(),
                t.format("%H:%M %:z").to_string(),
            )
        }
        Err(_) => (
            t.format("%Y-%m-%d").to_string(),
            t.format("%H:%M +00:00").to_string(),
        ),
    }
}

fn thresholds(crossed: &[f64]) -> String {
    if crossed.is_empty() {
        return "none".to_string();
    }
    crossed
        .iter()
        .map(|f| percent(*f, 0))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const NOW: i64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z

    fn beta(alpha: f64, beta: f64) -> proto::BetaParams {
        proto::BetaParams {
            alpha,
            beta,
            mean: alpha / (alpha + beta),
        }
    }

    fn arm(class: &str, model: &str, success: (f64, f64), quality: (f64, f64)) -> proto::ArmStats {
        let s = beta(success.0, success.1);
        let q = beta(quality.0, quality.1);
        proto::ArmStats {
            task_class: class.into(),
            model: model.into(),
            provider: "acme".into(),
            pulls: 120,
            success_rate_mean: s.mean,
            quality_mean: q.mean,
            success_posterior: Some(s),
            quality_posterior: Some(q),
            latency_mean_ms: 812.4,
            latency_p50_ms: 700.0,
            latency_p95_ms: 1990.6,
            cost_mean_usd: 0.000_123_4,
            traffic_share: 0.4237,
            breaker_state: proto::BreakerState::Closed as i32,
            last_feedback_unix_ms: NOW - 42_000,
            ..Default::default()
        }
    }

    fn view() -> View {
        View {
            now_unix_ms: NOW,
            width: DEFAULT_WIDTH,
        }
    }

    /// The rendered line of `model`'s row (model names are unique in these tests).
    fn row<'a>(text: &'a str, model: &str) -> &'a str {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(model))
            .unwrap_or_else(|| panic!("no row for {model} in:\n{text}"))
    }

    /// Parses "0.83 [0.71, 0.92]" into (mean, lo, hi).
    fn parse_interval(cell: &str) -> (f64, f64, f64) {
        let (mean, rest) = cell.split_once(" [").unwrap();
        let (lo, hi) = rest.trim_end_matches(']').split_once(", ").unwrap();
        (
            mean.parse().unwrap(),
            lo.parse().unwrap(),
            hi.parse().unwrap(),
        )
    }

    #[test]
    fn intervals_contain_the_mean_and_narrow_with_evidence() {
        let mut prev_width = f64::INFINITY;
        for n in [2.0, 5.0, 20.0, 100.0, 1000.0, 1e5] {
            for p in [0.02, 0.1, 0.5, 0.83, 0.97] {
                let (a, b) = (p * n, (1.0 - p) * n);
                let (lo, hi) = beta_interval_95(a, b).unwrap();
                let mean = a / (a + b);
                assert!(lo < mean && mean < hi, "Beta({a}, {b}): {lo} {mean} {hi}");
                assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
                if p == 0.5 {
                    assert!(hi - lo < prev_width, "n={n}: {lo}..{hi}");
                    prev_width = hi - lo;
                }
            }
        }
    }

    #[test]
    fn interval_matches_closed_forms() {
        // Beta(1, 1) is uniform: quantiles are the probabilities themselves.
        let (lo, hi) = beta_interval_95(1.0, 1.0).unwrap();
        assert!(
            (lo - 0.025).abs() < 1e-9 && (hi - 0.975).abs() < 1e-9,
            "{lo} {hi}"
        );
        // Beta(a, 1) has CDF x^a, so its q-quantile is q^(1/a).
        let (lo, hi) = beta_interval_95(3.0, 1.0).unwrap();
        assert!((lo - 0.025f64.powf(1.0 / 3.0)).abs() < 1e-9, "{lo}");
        assert!((hi - 0.975f64.powf(1.0 / 3.0)).abs() < 1e-9, "{hi}");
    }

    #[test]
    fn improper_params_have_no_interval_and_never_panic() {
        for (a, b) in [
            (0.0, 1.0),
            (1.0, 0.0),
            (-1.0, 2.0),
            (f64::NAN, 1.0),
            (1.0, f64::INFINITY),
            (f64::NEG_INFINITY, 1.0),
        ] {
            assert_eq!(beta_interval_95(a, b), None, "Beta({a}, {b})");
        }
        // Extreme but proper parameters answer (or decline) without hanging or panicking; shapes
        // near 1e9 hung statrs before they were scaled down.
        let shapes = [
            1e-12, 1e-6, 1e-3, 0.01, 0.5, 1.0, 7.0, 1e4, 1e6, 1e9, 1e12, 1e15, 1e300,
        ];
        for a in shapes {
            for b in shapes {
                if let Some((lo, hi)) = beta_interval_95(a, b) {
                    assert!(lo <= hi, "Beta({a}, {b}): {lo} {hi}");
                }
            }
        }
        // Seeded log-uniform shapes over the whole range the router can produce.
        let mut rng = SmallRng::seed_from_u64(11);
        for _ in 0..5000 {
            let a = 10f64.powf(rng.random_range(-12.0..12.0));
            let b = 10f64.powf(rng.random_range(-12.0..12.0));
            let (lo, hi) = beta_interval_95(a, b).unwrap_or_else(|| panic!("Beta({a}, {b})"));
            assert!(
                0.0 <= lo && lo <= hi && hi <= 1.0,
                "Beta({a}, {b}): {lo} {hi}"
            );
        }
        // A huge, lopsided posterior still brackets its mean (to display precision).
        let (lo, hi) = beta_interval_95(9e8, 1e8).unwrap();
        assert!(lo <= 0.9 && 0.9 <= hi && hi - lo < 0.002, "{lo} {hi}");
    }

    #[test]
    fn rendered_cells_show_mean_inside_its_interval() {
        let arms = vec![
            arm("qa", "m-small", (3.0, 1.0), (14.2, 5.8)),
            arm("qa", "m-large", (950.0, 50.0), (80.0, 20.0)),
        ];
        let text = render(&arms, &[], &view());
        for model in ["m-small", "m-large"] {
            let line = row(&text, model);
            let cells: Vec<&str> = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            let intervals: Vec<(f64, f64, f64)> = cells
                .iter()
                .filter(|c| c.contains(" ["))
                .map(|c| parse_interval(c))
                .collect();
            assert_eq!(intervals.len(), 2, "success and quality in {line:?}");
            for (mean, lo, hi) in intervals {
                assert!(lo <= mean && mean <= hi, "{line}");
                assert!(lo < hi, "{line}");
            }
        }
        // Beta(3, 1): mean 0.75, 2.5% quantile 0.025^(1/3) = 0.292, 97.5% 0.975^(1/3) = 0.992.
        assert!(
            row(&text, "m-small").contains("0.75 [0.29, 0.99]"),
            "{text}"
        );
    }

    #[test]
    fn bad_posteriors_render_a_dash_and_the_rest_of_the_row_stays() {
        let mut bad = arm("qa", "m-bad", (0.0, 1.0), (f64::NAN, 2.0));
        bad.latency_mean_ms = f64::NAN;
        bad.latency_p95_ms = f64::INFINITY;
        bad.cost_mean_usd = f64::NAN;
        let mut missing = arm("qa", "m-missing", (1.0, 1.0), (1.0, 1.0));
        missing.success_posterior = None;
        missing.quality_posterior = Some(beta(-2.0, 3.0));
        let text = render(&[bad, missing], &[], &view());
        let line = row(&text, "m-bad");
        let cells: Vec<&str> = line.split_whitespace().collect();
        // model, provider, share, pulls, success, quality, latency, p95, cost, breaker, age...
        assert_eq!(
            &cells[..10],
            &["m-bad", "acme", "42.4%", "120", "-", "-", "-", "-", "-", "closed"],
            "{text}"
        );
        assert!(!line.contains('['), "{line}");
        let line = row(&text, "m-missing");
        assert_eq!(line.split_whitespace().nth(4), Some("-"), "{line}");
        assert_eq!(line.split_whitespace().nth(5), Some("-"), "{line}");
        assert!(!line.contains('['), "{line}");
    }

    #[test]
    fn shares_are_percentages_and_costs_keep_their_digits() {
        let mut a = arm("qa", "m-a", (5.0, 1.0), (5.0, 1.0));
        a.traffic_share = 0.0;
        let mut b = arm("qa", "m-b", (5.0, 1.0), (5.0, 1.0));
        b.traffic_share = 1.0;
        b.cost_mean_usd = 0.0153;
        let text = render(
            &[a.clone(), b, arm("qa", "m-c", (5.0, 1.0), (5.0, 1.0))],
            &[],
            &view(),
        );
        assert!(row(&text, "m-a").contains(" 0.0% "), "{text}");
        assert!(row(&text, "m-b").contains(" 100.0% "), "{text}");
        assert!(row(&text, "m-c").contains(" 42.4% "), "{text}");
        assert!(row(&text, "m-c").contains("$0.000123"), "{text}");
        assert!(row(&text, "m-b").contains("$0.0153"), "{text}");
        assert!(!text.contains("0.4237"), "{text}");
    }

    #[test]
    fn usd_precision() {
        assert_eq!(usd(0.000_123_4), "$0.000123");
        assert_eq!(usd(0.0015), "$0.00150");
        assert_eq!(usd(0.5), "$0.500");
        assert_eq!(usd(250.0), "$250.00");
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(-0.25), "-$0.250");
        assert_eq!(usd(f64::NAN), "-");
        assert_eq!(usd(3e-12), "$3.0e-12");
    }

    #[test]
    fn one_table_per_class_in_service_order() {
        let arms = vec![
            arm("qa", "m-1", (2.0, 1.0), (2.0, 1.0)),
            arm("code", "m-2", (2.0, 1.0), (2.0, 1.0)),
            arm("qa", "m-3", (2.0, 1.0), (2.0, 1.0)),
        ];
        let text = render(&arms, &[], &view());
        let qa = text.find("task class qa (2 models)").unwrap();
        let code = text.find("task class code (1 model)").unwrap();
        assert!(qa < code, "{text}");
        let m3 = text.find("m-3").unwrap();
        assert!(m3 < code, "m-3 belongs to qa's table: {text}");
        assert_eq!(text.matches("success [95% CI]").count(), 2, "{text}");
    }

    #[test]
    fn breaker_states_degraded_and_open_until() {
        let mut open = arm("qa", "m-open", (2.0, 1.0), (2.0, 1.0));
        open.breaker_state = proto::BreakerState::Open as i32;
        open.breaker_until_unix_ms = NOW + 600_000; // 16:10:00Z
        let mut later = open.clone();
        later.model = "m-later".into();
        later.breaker_until_unix_ms = NOW + 2 * 86_400_000;
        let mut half = arm("qa", "m-half", (2.0, 1.0), (2.0, 1.0));
        half.breaker_state = proto::BreakerState::HalfOpen as i32;
        let mut deg = arm("qa", "m-deg", (2.0, 1.0), (2.0, 1.0));
        deg.degraded = true;
        let mut never = arm("qa", "m-never", (2.0, 1.0), (2.0, 1.0));
        never.last_feedback_unix_ms = 0;
        never.breaker_state = 42;
        let arms = [open, later, half, deg, never];
        let wide = View {
            now_unix_ms: NOW,
            width: 200,
        };
        let text = render(&arms, &[], &wide);
        assert!(
            row(&text, "m-open").contains("open until 16:10:00Z"),
            "{text}"
        );
        assert!(
            row(&text, "m-later").contains("open until 2025-11-26 16:00Z"),
            "{text}"
        );
        assert!(row(&text, "m-half").contains("half-open"), "{text}");
        assert!(row(&text, "m-deg").contains("closed, degraded"), "{text}");
        assert!(row(&text, "m-deg").contains("42s ago"), "{text}");
        assert!(row(&text, "m-never").ends_with("never"), "{text}");
        assert!(row(&text, "m-never").contains("  -  "), "{text}");
        // Stacked into the narrow layout, the state still starts on the model's line.
        let text = render(&arms, &[], &view());
        assert!(row(&text, "m-open").ends_with("open until"), "{text}");
        assert!(row(&text, "m-deg").ends_with("closed,"), "{text}");
    }

    #[test]
    fn ages_are_coarse_and_never_negative() {
        assert_eq!(age(NOW - 59_999, NOW), "59s ago");
        assert_eq!(age(NOW - 3 * 60_000, NOW), "3m ago");
        assert_eq!(age(NOW - 5 * 3_600_000, NOW), "5h ago");
        assert_eq!(age(NOW - 3 * 86_400_000, NOW), "3d ago");
        assert_eq!(age(NOW + 5_000, NOW), "0s ago");
        assert_eq!(age(0, NOW), "never");
    }

    fn budget() -> proto::Budget {
        proto::Budget {
            budget_key: "team-a".into(),
            period: "monthly".into(),
            limit_usd: 250.0,
            spent_usd: 123.456,
            reserved_usd: 0.0421,
            period_start_unix_ms: 1_761_951_600_000, // 2025-11-01T00:00+01:00
            period_end_unix_ms: 1_764_543_600_000,   // 2025-12-01T00:00+01:00
            pacing_multiplier: 1.5,
            state: proto::BudgetState::BudgetPacing as i32,
            on_cap: "cheapest".into(),
            time_zone: "Europe/Berlin".into(),
            alert_thresholds_crossed: vec![0.25, 0.5],
            alert_thresholds: vec![0.25, 0.5, 0.8],
            ..Default::default()
        }
    }

    #[test]
    fn budgets_table_shows_every_column() {
        let text = render(
            &[arm("qa", "m-1", (2.0, 1.0), (2.0, 1.0))],
            &[budget()],
            &view(),
        );
        let line = row(&text, "team-a");
        for want in [
            "monthly",
            "$123.46",
            "$0.0421",
            "$250.00",
            "49.4%",
            "x1.50",
            "pacing",
            "cheapest",
            "2025-12-01 00:00 +01:00",
            "25%, 50%",
        ] {
            assert!(line.contains(want), "{want:?} missing from {line:?}");
        }
        assert!(!text.contains("none configured"), "{text}");
    }

    #[test]
    fn no_budgets_is_one_line_and_no_table() {
        let text = render(&[arm("qa", "m-1", (2.0, 1.0), (2.0, 1.0))], &[], &view());
        assert!(text.contains("budgets: none configured\n"), "{text}");
        assert!(!text.contains("reserved"), "{text}");
        let mut b = budget();
        b.limit_usd = 0.0;
        b.time_zone = "Not/AZone".into();
        b.alert_thresholds_crossed.clear();
        let line = render(&[], &[b], &view());
        let line = row(&line, "team-a");
        assert!(line.contains("2025-11-30 23:00 +00:00"), "{line}");
        assert!(line.contains(" - "), "{line}");
        assert!(line.trim_end().ends_with("none"), "{line}");
    }

    #[test]
    fn fits_the_width_it_is_given() {
        let mut long = arm("qa", "claude-3-7-sonnet-20250219", (2.0, 1.0), (2.0, 1.0));
        long.breaker_state = proto::BreakerState::Open as i32;
        long.breaker_until_unix_ms = NOW + 2 * 86_400_000;
        long.degraded = true;
        let arms = vec![long, arm("qa", "gpt-4o-mini", (30.0, 2.0), (20.0, 8.0))];
        for width in [80u16, 100, 120] {
            let view = View {
                now_unix_ms: NOW,
                width,
            };
            let text = render(&arms, &[budget()], &view);
            for line in text.lines() {
                assert!(
                    line.chars().count() <= usize::from(width),
                    "{width}: {} columns: {line:?}\n{text}",
                    line.chars().count()
                );
            }
            assert!(text.contains("gpt-4o-mini"), "{text}");
        }
        let arms = vec![
            arm("qa", "claude-3-7-sonnet-20250219", (2.0, 1.0), (2.0, 1.0)),
            arm("qa", "gpt-4o-mini", (30.0, 2.0), (20.0, 8.0)),
        ];
        // Wide enough: one line per model (heading, header, rule, two rows; then a blank line and
        // the budget note).
        let wide = View {
            now_unix_ms: NOW,
            width: 200,
        };
        let text = render(&arms, &[], &wide);
        assert_eq!(text.lines().count(), 7, "{text}");
        assert!(
            row(&text, "gpt-4o-mini").contains("0.94 [0.83, 0.99]"),
            "{text}"
        );
        // At 120 the longest default model name no longer fits on one line with everything else:
        // values stack in two-line cells and the name stays whole, provider below it.
        let text = render(&arms, &[], &view());
        assert!(text.lines().all(|l| l.chars().count() <= 120), "{text}");
        let name = text
            .lines()
            .position(|l| l.starts_with("claude-3-7-sonnet-20250219 "));
        let name = name.unwrap_or_else(|| panic!("{text}"));
        let below = text.lines().nth(name + 1).unwrap();
        assert!(below.starts_with("acme "), "{text}");
        assert!(
            below.contains(" 120  [0.16, 0.99]  [0.16, 0.99] "),
            "{text}"
        );
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:50051",
            "http://127.0.0.1:50051",
            "localhost:1",
            "[::1]:8080",
        ] {
            assert!(endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://127.0.0.1:50051",
            "127.0.0.1",
            "",
            "http://",
            "a b:1",
            "h:1/x",
        ] {
            let e = endpoint(bad).unwrap_err();
            assert!(matches!(e, StatsError::InvalidAddr { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("host:port"), "{e}");
        }
    }

    #[test]
    fn default_addr_is_the_default_configs_listen_address() {
        let cfg = crate::config::Config::builtin().unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_ADDR);
    }
}
