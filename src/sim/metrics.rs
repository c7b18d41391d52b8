//! Metrics of one run (one policy, one seed) and their summary over seeds (mean and a 95% Student-t
//! confidence interval).
//!
//! Regret is pseudo-regret: the true *expected* utility of the oracle's choice (the best model for the
//! request given the true parameters at that time) minus that of the policy's choice, so the oracle's
//! regret is exactly zero and the regret curve has little noise. Over a full-information trace the
//! "expected" utility is the realised one, known for every model.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::scenario::Accounting;
use super::trace::ModelOutcome;
use super::truth::{ClassInfo, SimRequest};

/// Points on the cumulative-regret curve of each run.
pub const CURVE_POINTS: usize = 100;
/// Requests in the sliding window that decides when a policy has recovered after an event.
pub const RECOVERY_WINDOW: usize = 100;
/// A policy has recovered when its windowed mean regret is back within this many utility units of
/// its level before the event (0.02 = 2% of a full quality point).
pub const RECOVERY_MARGIN: f64 = 0.02;

/// What one run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunMetrics {
    pub policy: String,
    pub seed: u64,
    pub requests: u64,
    /// Sum of realised utilities of the chosen calls.
    pub total_utility: f64,
    /// Sum of the true expected utilities of the chosen models.
    pub expected_utility: f64,
    pub regret_oracle: f64,
    pub regret_best_fixed: f64,
    pub total_cost_usd: f64,
    /// Mean quality per request (a failed call counts 0).
    pub mean_quality: f64,
    /// Successful calls slower than their class's `max_latency_ms`.
    pub sla_violations: u64,
    pub failures: u64,
    /// Decisions the engine routed away from an open breaker (reason mentions `breaker`) that then
    /// succeeded.
    pub breaker_avoided_failures: u64,
    /// Spend above `[accounting] budget_usd`, summed over periods (0 without accounting).
    pub budget_overrun_usd: f64,
    /// Per event: seconds until the windowed regret is back to its pre-event level (`None` = never).
    pub recovery_secs: Vec<Option<f64>>,
    /// Cumulative oracle regret at `CURVE_POINTS` equally spaced times.
    pub curve: Vec<f64>,
    /// Feedback the engine refused (e.g. the decision had expired); should be 0.
    pub feedback_rejected: u64,
    /// Requests the engine refused to route (a budget at its cap with no model that fits); they are
    /// not served, so they add nothing to utility, cost or quality.
    pub refused: u64,
}

/// Accumulates one run's metrics request by request.
#[derive(Debug)]
pub struct Recorder {
    m: RunMetrics,
    duration_ms: u64,
    events_ms: Vec<u64>,
    accounting: Option<Accounting>,
    /// Per class, per model: sum of true utility when eligible, and requests where it was not.
    fixed_sum: Vec<Vec<f64>>,
    fixed_missing: Vec<Vec<u64>>,
    oracle_by_class: Vec<f64>,
    quality_sum: f64,
    spend_by_period: Vec<f64>,
    trail_t_ms: Vec<u64>,
    trail_regret: Vec<f32>,
    next_curve: usize,
}

impl Recorder {
    pub fn new(
        policy: &str,
        seed: u64,
        classes: &[ClassInfo],
        duration_ms: u64,
        events_secs: &[f64],
        accounting: Option<Accounting>,
    ) -> Self {
        Recorder {
            m: RunMetrics {
                policy: policy.to_string(),
                seed,
                requests: 0,
                total_utility: 0.0,
                expected_utility: 0.0,
                regret_oracle: 0.0,
                regret_best_fixed: 0.0,
                total_cost_usd: 0.0,
                mean_quality: 0.0,
                sla_violations: 0,
                failures: 0,
                breaker_avoided_failures: 0,
                budget_overrun_usd: 0.0,
                recovery_secs: Vec::new(),
                curve: Vec::with_capacity(CURVE_POINTS),
                feedback_rejected: 0,
                refused: 0,
            },
            duration_ms: duration_ms.max(1),
            events_ms: events_secs.iter().map(|s| (s * 1000.0) as u64).collect(),
            accounting,
            fixed_sum: classes
                .iter()
                .map(|c| vec![0.0; c.config.models.len()])
                .collect(),
            fixed_missing: classes
                .iter()
                .map(|c| vec![0; c.config.models.len()])
                .collect(),
            oracle_by_class: vec![0.0; classes.len()],
            quality_sum: 0.0,
            spend_by_period: Vec::new(),
            trail_t_ms: Vec::new(),
            trail_regret: Vec::new(),
            next_curve: 0,
        }
    }

    fn curve_time(&self, i: usize) -> u64 {
        self.duration_ms * (i as u64 + 1) / CURVE_POINTS as u64
    }

    /// Records one decision: the request, the chosen model index, every model's true utility, the
    /// outcome, the class and the engine's reason.
    pub fn record(
        &mut self,
        req: &SimRequest,
        chosen: usize,
        utilities: &[f64],
        outcome: &ModelOutcome,
        class: &ClassInfo,
        reason: &str,
    ) {
        while self.next_curve < CURVE_POINTS && req.t_ms >= self.curve_time(self.next_curve) {
            self.m.curve.push(self.m.regret_oracle);
            self.next_curve += 1;
        }
        let best = utilities.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let got = utilities[chosen];
        let regret = if got.is_finite() { best - got } else { 0.0 };
        self.m.requests += 1;
        self.m.regret_oracle += regret;
        self.m.expected_utility += got;
        self.oracle_by_class[req.class] += best;
        for (k, u) in utilities.iter().enumerate() {
            if u.is_finite() {
                self.fixed_sum[req.class][k] += u;
            } else {
                self.fixed_missing[req.class][k] += 1;
            }
        }
        self.m.total_utility += class.realised_utility(outcome);
        self.m.total_cost_usd += outcome.cost_usd;
        let ok = outcome.status.is_success();
        if ok {
            self.quality_sum += outcome.quality;
            if let (Some(l), Some(max)) = (outcome.latency_ms, class.config.max_latency_ms) {
                if l > max {
                    self.m.sla_violations += 1;
                }
            }
            if reason.contains("breaker") {
                self.m.breaker_avoided_failures += 1;
            }
        } else {
            self.m.failures += 1;
        }
        if let Some(a) = self.accounting {
            let period = (req.t_ms as f64 / (a.period_secs * 1000.0)) as usize;
            if self.spend_by_period.len() <= period {
                self.spend_by_period.resize(period + 1, 0.0);
            }
            self.spend_by_period[period] += outcome.cost_usd;
        }
        if !self.events_ms.is_empty() {
            self.trail_t_ms.push(req.t_ms);
            self.trail_regret.push(regret as f32);
        }
    }

    pub fn refused(&mut self) {
        self.m.refused += 1;
    }

    pub fn feedback_rejected(&mut self) {
        self.m.feedback_rejected += 1;
    }

    /// Closes the run: curve tail, best fixed model, overrun, recovery times.
    pub fn finish(mut self) -> RunMetrics {
        while self.m.curve.len() < CURVE_POINTS {
            self.m.curve.push(self.m.regret_oracle);
        }
        let mut best_fixed = 0.0;
        for (c, sums) in self.fixed_sum.iter().enumerate() {
            // Only models eligible for every request of the class can be "always chosen".
            let best = sums
                .iter()
                .zip(&self.fixed_missing[c])
                .filter(|(_, missing)| **missing == 0)
                .map(|(s, _)| *s)
                .fold(f64::NEG_INFINITY, f64::max);
            best_fixed += if best.is_finite() {
                best
            } else {
                self.oracle_by_class[c]
            };
        }
        self.m.regret_best_fixed = best_fixed - self.m.expected_utility;
        if self.m.requests > 0 {
            self.m.mean_quality = self.quality_sum / self.m.requests as f64;
        }
        if let Some(a) = self.accounting {
            self.m.budget_overrun_usd = self
                .spend_by_period
                .iter()
                .map(|s| (s - a.budget_usd).max(0.0))
                .sum();
        }
        self.m.recovery_secs = self
            .events_ms
            .iter()
            .map(|&e| recovery_secs(&self.trail_t_ms, &self.trail_regret, e))
            .collect();
        self.m
    }
}

/// Seconds from `event_ms` to the start of the first window of [`RECOVERY_WINDOW`] requests whose
/// mean regret is within [`RECOVERY_MARGIN`] of the mean over the window before the event.
pub fn recovery_secs(t_ms: &[u64], regret: &[f32], event_ms: u64) -> Option<f64> {
    let start = t_ms.partition_point(|&t| t < event_ms);
    let before = &regret[start.saturating_sub(RECOVERY_WINDOW)..start];
    let pre = if before.is_empty() {
        0.0
    } else {
        before.iter().map(|&r| f64::from(r)).sum::<f64>() / before.len() as f64
    };
    let threshold = pre + RECOVERY_MARGIN;
    let after = &regret[start..];
    if after.len() < RECOVERY_WINDOW {
        return None;
    }
    let mut sum: f64 = after[..RECOVERY_WINDOW].iter().map(|&r| f64::from(r)).sum();
    for i in 0..=after.len() - RECOVERY_WINDOW {
        if i > 0 {
            sum += f64::from(after[i + RECOVERY_WINDOW - 1]) - f64::from(after[i - 1]);
        }
        if sum / RECOVERY_WINDOW as f64 <= threshold {
            return Some(t_ms[start + i].saturating_sub(event_ms) as f64 / 1000.0);
        }
    }
    None
}

/// Mean and 95% confidence half-width over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub ci95: f64,
    pub n: usize,
}

impl Summary {
    /// Mean and Student-t 95% half-width (0 for a single value).
    pub fn of(values: &[f64]) -> Summary {
        let n = values.len();
        if n == 0 {
            return Summary {
                mean: 0.0,
                ci95: 0.0,
                n,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        if n < 2 {
            return Summary { mean, ci95: 0.0, n };
        }
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Summary {
            mean,
            ci95: t975(n - 1) * (var / n as f64).sqrt(),
            n,
        }
    }
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom (1.96 when it cannot be computed).
pub fn t975(df: usize) -> f64 {
    StudentsT::new(0.0, 1.0, df as f64)
        .map(|t| t.inverse_cdf(0.975))
        .unwrap_or(1.96)
}

/// Reads one scalar metric of a run.
pub type MetricOf = fn(&RunMetrics) -> f64;

/// The scalar metrics reported per policy, in report order: (name, value of a run).
pub const SCALAR_METRICS: [(&str, MetricOf); 12] = [
    ("total_utility", |m| m.total_utility),
    ("regret_oracle", |m| m.regret_oracle),
    ("regret_best_fixed", |m| m.regret_best_fixed),
    ("total_cost_usd", |m| m.total_cost_usd),
    ("mean_quality", |m| m.mean_quality),
    ("sla_violations", |m| m.sla_violations as f64),
    ("failures", |m| m.failures as f64),
    ("breaker_avoided_failures", |m| {
        m.breaker_avoided_failures as f64
    }),
    ("budget_overrun_usd", |m| m.budget_overrun_usd),
    ("requests", |m| m.requests as f64),
    ("feedback_rejected", |m| m.feedback_rejected as f64),
    ("refused", |m| m.refused as f64),
];

/// One policy's results over all seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySummary {
    pub policy: String,
    pub seeds: usize,
    pub metrics: Vec<(String, Summary)>,
    /// Per event: recovery seconds (a run that never recovered counts as the time left to the end)
    /// and how many runs never recovered.
    pub recovery: Vec<RecoverySummary>,
    /// Mean cumulative regret at the curve times.
    pub curve: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoverySummary {
    pub event: String,
    pub secs: Summary,
    pub not_recovered: usize,
}

impl PolicySummary {
    /// Summarises runs of one policy (in seed order); `events` are (time, label), `duration_secs`
    /// bounds unrecovered runs.
    pub fn of(
        policy: &str,
        runs: &[RunMetrics],
        events: &[(f64, String)],
        duration_secs: f64,
    ) -> Self {
        let metrics = SCALAR_METRICS
            .iter()
            .map(|(name, f)| {
                let v: Vec<f64> = runs.iter().map(f).collect();
                (name.to_string(), Summary::of(&v))
            })
            .collect();
        let recovery = events
            .iter()
            .enumerate()
            .map(|(i, (at, label))| {
                let mut not_recovered = 0;
                let v: Vec<f64> = runs
                    .iter()
                    .map(|r| match r.recovery_secs.get(i).copied().flatten() {
                        Some(s) => s,
                        None => {
                            not_recovered += 1;
                            (duration_secs - at).max(0.0)
                        }
                    })
                    .collect();
                RecoverySummary {
                    event: label.clone(),
                    secs: Summary::of(&v),
                    not_recovered,
                }
            })
            .collect();
        let mut curve = vec![0.0; CURVE_POINTS];
        for r in runs {
            for (c, v) in curve.iter_mut().zip(&r.curve) {
                *c += v / runs.len() as f64;
            }
        }
        PolicySummary {
            policy: policy.to_string(),
            seeds: runs.len(),
            metrics,
            recovery,
            curve,
        }
    }

    /// A metric's summary by name.
    pub fn metric(&self, name: &str) -> Option<Summary> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_closed_form() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]);
        assert!((s.mean - 2.5).abs() < 1e-12);
        // sd = 1.2910, se = 0.6455, t(3) = 3.1824
        assert!((s.ci95 - 3.182_446 * 0.645_497).abs() < 1e-3, "{}", s.ci95);
    }

    #[test]
    fn recovery_finds_the_first_good_window() {
        let n = 1000;
        let t: Vec<u64> = (0..n).map(|i| i as u64 * 1000).collect();
        // Regret 0 before t = 300 s, 0.5 until 500 s, 0 after.
        let r: Vec<f32> = (0..n)
            .map(|i| if (300..500).contains(&i) { 0.5 } else { 0.0 })
            .collect();
        let s = recovery_secs(&t, &r, 300_000).unwrap();
        // The first window with mean <= 0.02 starts when at most 4 bad requests remain in it.
        assert!((196.0..=200.0).contains(&s), "{s}");
        // Regret rises at the event and never comes back: no recovery.
        let r: Vec<f32> = (0..n).map(|i| if i >= 300 { 0.5 } else { 0.0 }).collect();
        assert_eq!(recovery_secs(&t, &r, 300_000), None);
        // A constant level is the pre-event level: recovered at once.
        assert_eq!(recovery_secs(&t, &vec![0.5; n], 300_000), Some(0.0));
    }
}
