//! The simulation report: a table for the terminal, `summary.csv` (policy, metric, mean, ci95, n),
//! `runs.csv` (one row per policy and seed), `report.json`, and the SVG plots. Nothing in it depends
//! on wall time or thread count, so the same seed gives the same files byte for byte.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::frontier::{Frontier, Placement};
use super::metrics::{PolicySummary, RunMetrics, CURVE_POINTS, SCALAR_METRICS};
use super::offpolicy::OffPolicyResult;
use super::{plot, SimError};

/// Per-policy results of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Scenario or trace name.
    pub source: String,
    pub seeds: usize,
    pub base_seed: u64,
    pub duration_secs: f64,
    /// (time in seconds, label) of each event.
    pub events: Vec<(f64, String)>,
    /// Times of the cumulative-regret curve points.
    pub curve_times_secs: Vec<f64>,
    pub policies: Vec<PolicySummary>,
    /// Every run, per policy in seed order (runs.csv).
    #[serde(skip)]
    pub runs: Vec<Vec<RunMetrics>>,
    /// The hindsight frontier of static class-level routing and each policy's place on it, for a
    /// full-information source (frontier.csv).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontier: Option<Frontier>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<Placement>,
    /// Frontier cost per request at each of [`FRONTIER_TARGETS`] (a share of the class-best
    /// quality): (target, cost, cost over the best single model's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frontier_targets: Vec<(f64, Option<f64>, Option<f64>)>,
}

/// Quality targets at which the report reads the frontier.
pub const FRONTIER_TARGETS: [f64; 5] = [0.8, 0.85, 0.9, 0.95, 1.0];

impl Report {
    pub fn new(
        source: &str,
        base_seed: u64,
        duration_secs: f64,
        events: Vec<(f64, String)>,
        runs: Vec<Vec<RunMetrics>>,
    ) -> Report {
        let policies = runs
            .iter()
            .filter_map(|r| {
                r.first()
                    .map(|first| PolicySummary::of(&first.policy, r, &events, duration_secs))
            })
            .collect();
        Report {
            source: source.to_string(),
            seeds: runs.first().map_or(0, |r| r.len()),
            base_seed,
            duration_secs,
            curve_times_secs: (1..=CURVE_POINTS)
                .map(|i| duration_secs * i as f64 / CURVE_POINTS as f64)
                .collect(),
            events,
            policies,
            runs,
            frontier: None,
            placements: Vec::new(),
            frontier_targets: Vec::new(),
        }
    }

    /// Adds the frontier and places every policy on it by its mean quality and mean cost per
    /// request (total cost over requests served, means over seeds).
    pub fn with_frontier(mut self, frontier: Option<Frontier>) -> Report {
        let Some(f) = frontier else { return self };
        self.placements = self
            .policies
            .iter()
            .filter_map(|p| {
                let q = p.metric("mean_quality")?.mean;
                let cost = p.metric("total_cost_usd")?.mean;
                let n = p.metric("requests")?.mean;
                (n > 0.0).then(|| f.place(&p.policy, q, cost / n))
            })
            .collect();
        self.frontier_targets = f.at_targets(&FRONTIER_TARGETS);
        self.frontier = Some(f);
        self
    }

    /// The frontier section of the terminal table (empty without a frontier).
    pub fn frontier_table(&self) -> String {
        let Some(f) = &self.frontier else {
            return String::new();
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nhindsight frontier (static class-level routing, two-model mix per class); best single model {} (quality {}, cost/request {:.3e})",
            f.best_model,
            num(f.best_quality),
            f.best_cost_usd
        );
        for (t, c, share) in &self.frontier_targets {
            let _ = writeln!(
                out,
                "  quality {} x class-best: cost/request {}  ({} of best model)",
                num(*t),
                c.map_or_else(|| "-".to_string(), |c| format!("{c:.3e}")),
                share.map_or_else(|| "-".to_string(), num)
            );
        }
        let _ = writeln!(
            out,
            "{:<28} {:>13} {:>11} {:>16}",
            "policy", "quality/best", "cost/best", "cost/frontier"
        );
        for p in &self.placements {
            let _ = writeln!(
                out,
                "{:<28} {:>13} {:>11} {:>16}",
                p.policy,
                num(p.quality_share),
                num(p.cost_share),
                p.cost_overhead.map_or_else(|| "-".to_string(), num)
            );
        }
        out
    }

    /// frontier.csv: the frontier's vertices, its cost at the report's targets, and placements.
    pub fn frontier_csv(&self) -> String {
        let mut out =
            String::from("kind,label,quality,cost_usd,quality_share,cost_share,cost_overhead\n");
        let Some(f) = &self.frontier else { return out };
        let opt = |v: Option<f64>| v.map_or_else(String::new, num);
        for p in &f.points {
            let _ = writeln!(out, "point,,{},{},,,", num(p.quality), num(p.cost_usd));
        }
        for (t, c, share) in &self.frontier_targets {
            let _ = writeln!(
                out,
                "target,{},{},{},,{},",
                num(*t),
                num(t * f.class_best_quality),
                opt(*c),
                opt(*share)
            );
        }
        for p in &self.placements {
            let _ = writeln!(
                out,
                "policy,{},,{},{},{},{}",
                csv(&p.policy),
                opt(p.frontier_cost_usd),
                num(p.quality_share),
                num(p.cost_share),
                opt(p.cost_overhead)
            );
        }
        out
    }

    /// A policy's summary by label.
    pub fn policy(&self, label: &str) -> Option<&PolicySummary> {
        self.policies.iter().find(|p| p.policy == label)
    }

    /// The terminal table: one row per policy, mean ± 95% half-width over seeds.
    pub fn table(&self) -> String {
        let cols = [
            ("utility", "total_utility"),
            ("regret/oracle", "regret_oracle"),
            ("regret/fixed", "regret_best_fixed"),
            ("cost_usd", "total_cost_usd"),
            ("quality", "mean_quality"),
            ("sla_viol", "sla_violations"),
            ("failures", "failures"),
            ("brk_avoid", "breaker_avoided_failures"),
            ("overrun_usd", "budget_overrun_usd"),
        ];
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} seeds (base seed {}), {:.0} s simulated; mean ± 95% CI over seeds",
            self.source, self.seeds, self.base_seed, self.duration_secs
        );
        let width = self
            .policies
            .iter()
            .map(|p| p.policy.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = write!(out, "{:width$}", "policy");
        for (h, _) in cols {
            let _ = write!(out, " {h:>20}");
        }
        out.push('\n');
        for p in &self.policies {
            let _ = write!(out, "{:width$}", p.policy);
            for (_, m) in cols {
                let s = p.metric(m).unwrap_or(super::metrics::Summary::of(&[]));
                let _ = write!(out, " {:>20}", format!("{} ± {}", num(s.mean), num(s.ci95)));
            }
            out.push('\n');
        }
        if !self.events.is_empty() {
            let _ = writeln!(
                out,
                "\nrecovery after events (seconds; * = some runs never recovered):"
            );
            let _ = write!(out, "{:width$}", "policy");
            for (_, label) in &self.events {
                let _ = write!(out, " {label:>24}");
            }
            out.push('\n');
            for p in &self.policies {
                let _ = write!(out, "{:width$}", p.policy);
                for r in &p.recovery {
                    let star = if r.not_recovered > 0 {
                        format!("*{}", r.not_recovered)
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        out,
                        " {:>24}",
                        format!("{} ± {}{star}", num(r.secs.mean), num(r.secs.ci95))
                    );
                }
                out.push('\n');
            }
        }
        out
    }

    /// summary.csv: `policy,metric,mean,ci95,n`, recovery rows as `recovery_secs:<event>`.
    pub fn summary_csv(&self) -> String {
        let mut out = String::from("policy,metric,mean,ci95,n\n");
        for p in &self.policies {
            for (name, s) in &p.metrics {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{}",
                    csv(&p.policy),
                    name,
                    s.mean,
                    s.ci95,
                    s.n
                );
            }
            for r in &p.recovery {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{}",
                    csv(&p.policy),
                    csv(&format!("recovery_secs:{}", r.event)),
                    r.secs.mean,
                    r.secs.ci95,
                    r.secs.n
                );
            }
        }
        out
    }

    /// runs.csv: one row per policy and seed.
    pub fn runs_csv(&self) -> String {
        let mut out = String::from("policy,seed");
        for (name, _) in SCALAR_METRICS {
            out.push(',');
            out.push_str(name);
        }
        out.push('\n');
        for runs in &self.runs {
            for r in runs {
                let _ = write!(out, "{},{}", csv(&r.policy), r.seed);
                for (_, f) in SCALAR_METRICS {
                    let _ = write!(out, ",{}", f(r));
                }
                out.push('\n');
            }
        }
        out
    }

    /// Writes report.json, summary.csv, runs.csv, regret.svg, cost_quality.svg and frontier.csv
    /// into `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, SimError> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| SimError::new("report.json", e.to_string()))?;
        write_files(
            dir,
            &[
                ("report.json", json),
                ("summary.csv", self.summary_csv()),
                ("runs.csv", self.runs_csv()),
                ("regret.svg", plot::regret_svg(self)),
                ("cost_quality.svg", plot::cost_quality_svg(self)),
                ("frontier.csv", self.frontier_csv()),
            ],
        )
    }
}

/// Off-policy estimates for a log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffPolicyReport {
    pub source: String,
    pub logged_decisions: usize,
    pub results: Vec<OffPolicyResult>,
}

impl OffPolicyReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} logged decisions; mean reward per request, ± 95% CI, (effective sample size)",
            self.source, self.logged_decisions
        );
        let _ = writeln!(
            out,
            "{:24} {:>28} {:>28} {:>28} {:>28}",
            "target", "replay", "ips", "snips", "dr"
        );
        for r in &self.results {
            let cell = |e: &super::offpolicy::Estimate| {
                format!("{} ± {} ({:.0})", num(e.value), num(e.ci95), e.ess)
            };
            let _ = writeln!(
                out,
                "{:24} {:>28} {:>28} {:>28} {:>28}",
                r.target,
                cell(&r.replay),
                cell(&r.ips),
                cell(&r.snips),
                cell(&r.dr)
            );
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = String::from("target,estimator,value,ci95,ess,events\n");
        for r in &self.results {
            for (name, e) in [
                ("replay", r.replay),
                ("ips", r.ips),
                ("snips", r.snips),
                ("dr", r.dr),
            ] {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{}",
                    csv(&r.target),
                    name,
                    e.value,
                    e.ci95,
                    e.ess,
                    r.events
                );
            }
        }
        out
    }

    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, SimError> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| SimError::new("offpolicy.json", e.to_string()))?;
        write_files(
            dir,
            &[("offpolicy.json", json), ("offpolicy.csv", self.csv())],
        )
    }
}

fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<Vec<PathBuf>, SimError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SimError::new(dir.display().to_string(), format!("cannot create: {e}")))?;
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| SimError::new(path.display().to_string(), format!("cannot write: {e}")))?;
        written.push(path);
    }
    Ok(written)
}

/// A number with 4 significant-ish digits, compact for the table.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
