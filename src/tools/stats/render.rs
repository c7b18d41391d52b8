//! The pure half of `switchyard stats`: arm statistics and budgets as text tables that fit the
//! width they are given, from the service's messages and a clock passed in through [`View`].

use chrono::{DateTime, Utc};
use comfy_table::{
    Cell, CellAlignment, ColumnConstraint, ContentArrangement, LineStyle, Table, TableStyle, Width,
};
use statrs::distribution::{Beta, ContinuousCDF};

use super::View;
use crate::proto;

/// Narrowest width honoured; below it columns would wrap into unreadable slivers.
pub(super) const MIN_WIDTH: u16 = 60;

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

/// Renders arm statistics (one table per task class, in the order the service listed them) and
/// budgets (one table, or a one-line note when there are none) as plain text without colours.
///
/// Each table is laid out one line per row when that fits `view.width`; otherwise related values
/// are stacked in two-line cells (model over provider, mean over interval, ...) so that a row
/// still reads across an 80-column terminal.
pub fn render(arms: &[proto::ArmStats], budgets: &[proto::Budget], view: &View) -> String {
    let mut out = cluster_note(arms, budgets);
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

/// In cluster mode: which replica answered, whether its figures are cluster-wide, and any budget
/// on its fallback share while Redis is unreachable. Empty on a single node.
pub fn cluster_note(arms: &[proto::ArmStats], budgets: &[proto::Budget]) -> String {
    let mut out = String::new();
    if let Some(a) = arms.iter().find(|a| !a.served_by.is_empty()) {
        out.push_str(&format!(
            "served by replica {} of {} live: {}\n",
            a.served_by,
            a.live_replicas,
            if a.cluster_wide {
                format!(
                    "cluster-wide figures (evidence merged at {})",
                    crate::time::format_ms(u64::try_from(a.cluster_synced_unix_ms).unwrap_or(0))
                )
            } else {
                String::from("this replica's figures only (not merged with the cluster yet)")
            }
        ));
    }
    for b in budgets.iter().filter(|b| b.fallback) {
        out.push_str(&format!(
            "budget {}: Redis unreachable, this replica spends from its fallback share: {} of {}\n",
            b.budget_key,
            usd(b.fallback_spent_usd),
            usd(b.fallback_allowance_usd)
        ));
    }
    out
}

/// One line per quality target under `min_cost`: the target, the share of the best model's
/// quality it is achieving (expected, and the mean realised score), and the current trade-off in
/// USD per unit of quality. Empty when no class has one.
pub fn render_objectives(objectives: &[proto::ClassObjective]) -> String {
    if objectives.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nobjectives (min_cost)\n");
    for o in objectives {
        let whose = if o.class_target {
            "class target"
        } else {
            "request target"
        };
        if o.decisions == 0 {
            out.push_str(&format!(
                "  {}: {whose} {} of the best model's quality, no decisions yet\n",
                o.task_class,
                percent(o.quality_target, 1)
            ));
            continue;
        }
        out.push_str(&format!(
            "  {}: {whose} {} of the best model's quality, achieving {} (mean realised quality \
             {:.3}) over {} decisions, trade-off {} per unit of quality\n",
            o.task_class,
            percent(o.quality_target, 1),
            percent(o.achieved_share, 1),
            o.realised_quality,
            o.decisions,
            usd(o.usd_per_quality)
        ));
    }
    out
}

/// The wide layout's text if no line of it is longer than `width`, else the narrow one's
/// arranged to `width`; ending in a newline.
pub(super) fn fit(
    width: u16,
    wide: impl FnOnce() -> Table,
    narrow: impl FnOnce() -> Table,
) -> String {
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
pub(super) fn tidy(t: &Table) -> String {
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
pub(super) const WIDE_STYLE: TableStyle =
    TableStyle::new().header_separator(LineStyle::none().fill('-'));

/// As [`WIDE_STYLE`], with a blank line between rows, whose cells span several lines.
pub(super) const NARROW_STYLE: TableStyle = WIDE_STYLE.row_separator(LineStyle::none().fill(' '));

/// Spaces after each cell: the gap between columns (trailing ones are trimmed).
pub(super) const COLUMN_GAP: u16 = 2;

pub(super) fn new_table(style: TableStyle, header: &[&str]) -> Table {
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
pub(super) fn fix_widths(t: &mut Table, free: &[usize], capped: &[usize], cap: u16) {
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
pub(super) struct ArmCells {
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
pub(super) fn mean_and_interval(cells: &Option<(String, String)>, sep: &str) -> String {
    match cells {
        Some((mean, interval)) => format!("{mean}{sep}{interval}"),
        None => "-".to_string(),
    }
}

pub(super) fn wide_arms(cells: &[ArmCells]) -> Table {
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
pub(super) const NARROW_BREAKER_WIDTH: u16 = 10;

pub(super) fn narrow_arms(cells: &[ArmCells]) -> Table {
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
pub(super) struct BudgetCells {
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

pub(super) fn wide_budgets(cells: &[BudgetCells]) -> Table {
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

pub(super) fn narrow_budgets(cells: &[BudgetCells]) -> Table {
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

pub(super) fn right(text: String) -> Cell {
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
pub(super) fn beta_cells(
    mean: f64,
    posterior: Option<&proto::BetaParams>,
) -> Option<(String, String)> {
    let p = posterior?;
    let (lo, hi) = beta_interval_95(p.alpha, p.beta)?;
    (mean.is_finite() && (0.0..=1.0).contains(&mean))
        .then(|| (format!("{mean:.2}"), format!("[{lo:.2}, {hi:.2}]")))
}

pub(super) fn percent(fraction: f64, decimals: usize) -> String {
    if fraction.is_finite() {
        format!("{:.*}%", decimals, fraction * 100.0)
    } else {
        "-".to_string()
    }
}

pub(super) fn millis(ms: f64) -> String {
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

pub(super) fn breaker(a: &proto::ArmStats, now_ms: i64) -> String {
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
pub(super) fn utc_time(unix_ms: i64, now_ms: i64) -> String {
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
pub(super) fn age(unix_ms: i64, now_ms: i64) -> String {
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

pub(super) fn budget_state(state: i32) -> &'static str {
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
pub(super) fn local_time(unix_ms: i64, zone: &str) -> (String, String) {
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

pub(super) fn thresholds(crossed: &[f64]) -> String {
    if crossed.is_empty() {
        return "none".to_string();
    }
    crossed
        .iter()
        .map(|f| percent(*f, 0))
        .collect::<Vec<_>>()
        .join(", ")
}
