//! The A/B report of an experiment (`switchyard report ab`, the `GetAbReport` RPC): per task class
//! and experiment group (control or router) the requests, realised quality, cost per request,
//! latency p50/p95 and SLA violations, each mean with a 95% interval, and router minus control
//! with Welch's interval (the groups are independent samples of the same traffic).
//!
//! Pure: it reads logged decision records (the decision log exported from a data dir, offline, or
//! by a running service) and the classes' latency SLAs; nothing is kept, so it is recomputed on
//! every call and survives restarts as the decision log does.
//!
//! Definitions, per decision of the group with the decided model's outcome reported: quality is
//! the reported score, 0 for a failed call (as `min_cost` counts it), over decisions with either;
//! cost is the charged cost (reported, else from the price table); latency is that of successes;
//! an SLA violation is a failed call or a success slower than the class's `max_latency_ms`.

use std::collections::BTreeMap;

use crate::engine::ExperimentGroup;
use crate::interval::{Interval, MeanVar};
use crate::proto;
use crate::record::DecisionRecord;

/// One experiment group of one task class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AbGroupStats {
    pub task_class: String,
    pub group: String,
    pub requests: u64,
    pub with_outcome: u64,
    pub quality: MeanVar,
    pub cost_usd: MeanVar,
    pub latency_ms: MeanVar,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub sla_violations: u64,
    /// 1 per violation, 0 per call within the SLA.
    pub sla_violation_rate: MeanVar,
}

/// Router minus control for one task class.
#[derive(Debug, Clone, PartialEq)]
pub struct AbDifference {
    pub task_class: String,
    pub quality: Interval,
    pub cost_usd: Interval,
    pub sla_violation_rate: Interval,
    pub latency_ms: Interval,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AbReport {
    /// By task class, control before router.
    pub groups: Vec<AbGroupStats>,
    /// One per class that has both groups.
    pub differences: Vec<AbDifference>,
}

/// The nearest-rank `q` quantile of sorted `xs` (0 when empty).
fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let rank = (q * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

/// The report over `records` (decisions without an experiment group are left out), for one
/// `task_class` or all (empty); `sla_ms` holds each class's `max_latency_ms` (a class without
/// one counts only failures as violations).
pub fn ab_report(
    records: &[DecisionRecord],
    task_class: &str,
    sla_ms: &BTreeMap<String, f64>,
) -> AbReport {
    let mut groups: BTreeMap<(String, ExperimentGroup), (AbGroupStats, Vec<f64>)> = BTreeMap::new();
    for r in records {
        if !task_class.is_empty() && r.task_class != task_class {
            continue;
        }
        let Some(group) = r
            .experiment_group
            .as_deref()
            .and_then(ExperimentGroup::parse)
        else {
            continue;
        };
        let (g, latencies) = groups
            .entry((r.task_class.clone(), group))
            .or_insert_with(|| {
                (
                    AbGroupStats {
                        task_class: r.task_class.clone(),
                        group: group.as_str().to_string(),
                        ..AbGroupStats::default()
                    },
                    Vec::new(),
                )
            });
        g.requests += 1;
        let Some(outcome) = r.outcome else { continue };
        g.with_outcome += 1;
        let ok = outcome.is_success();
        if let Some(q) = if ok { r.quality } else { Some(0.0) } {
            g.quality.push(q);
        }
        if let Some(c) = r.charged_usd.or(r.cost_usd) {
            g.cost_usd.push(c);
        }
        let latency = r.latency_ms.filter(|_| ok);
        if let Some(l) = latency {
            g.latency_ms.push(l);
            latencies.push(l);
        }
        let slow = match (latency, sla_ms.get(&r.task_class)) {
            (Some(l), Some(&sla)) => l > sla,
            _ => false,
        };
        let violated = !ok || slow;
        g.sla_violations += u64::from(violated);
        g.sla_violation_rate.push(if violated { 1.0 } else { 0.0 });
    }
    let mut report = AbReport::default();
    for ((_, _), (mut g, mut latencies)) in groups {
        latencies.sort_by(f64::total_cmp);
        g.latency_p50_ms = quantile(&latencies, 0.5);
        g.latency_p95_ms = quantile(&latencies, 0.95);
        report.groups.push(g);
    }
    for pair in report.groups.windows(2) {
        let (c, r) = (&pair[0], &pair[1]);
        if c.task_class == r.task_class && c.group == "control" && r.group == "router" {
            report.differences.push(AbDifference {
                task_class: c.task_class.clone(),
                quality: r.quality.minus(&c.quality),
                cost_usd: r.cost_usd.minus(&c.cost_usd),
                sla_violation_rate: r.sla_violation_rate.minus(&c.sla_violation_rate),
                latency_ms: r.latency_ms.minus(&c.latency_ms),
            });
        }
    }
    report
}

/// The report as the `GetAbReport` answer (the service and the offline `report ab` print the
/// same message).
impl From<AbReport> for proto::GetAbReportResponse {
    fn from(r: AbReport) -> Self {
        proto::GetAbReportResponse {
            groups: r
                .groups
                .into_iter()
                .map(|g| proto::AbGroup {
                    task_class: g.task_class,
                    group: g.group,
                    requests: g.requests,
                    with_outcome: g.with_outcome,
                    quality: Some(g.quality.interval().into()),
                    cost_usd: Some(g.cost_usd.interval().into()),
                    latency_p50_ms: g.latency_p50_ms,
                    latency_p95_ms: g.latency_p95_ms,
                    sla_violations: g.sla_violations,
                    sla_violation_rate: Some(g.sla_violation_rate.interval().into()),
                    latency_ms: Some(g.latency_ms.interval().into()),
                })
                .collect(),
            differences: r
                .differences
                .into_iter()
                .map(|d| proto::AbDifference {
                    task_class: d.task_class,
                    quality: Some(d.quality.into()),
                    cost_usd: Some(d.cost_usd.into()),
                    sla_violation_rate: Some(d.sla_violation_rate.into()),
                    latency_ms: Some(d.latency_ms.into()),
                })
                .collect(),
        }
    }
}

impl From<Interval> for proto::MeanInterval {
    fn from(i: Interval) -> Self {
        proto::MeanInterval {
            n: i.n,
            mean: i.mean,
            lo: i.lo,
            hi: i.hi,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Reason;
    use crate::policy::Outcome;

    fn rec(
        group: &str,
        outcome: Outcome,
        latency: f64,
        cost: f64,
        q: Option<f64>,
    ) -> DecisionRecord {
        DecisionRecord {
            decision_id: "d".into(),
            t_ms: 0,
            task_class: "qa".into(),
            policy: "thompson".into(),
            eligible: vec!["a".into()],
            model: "a".into(),
            propensity: 1.0,
            reason: Reason::Sampled,
            outcome: Some(outcome),
            latency_ms: Some(latency),
            cost_usd: None,
            quality: q,
            budget_key: None,
            charged_usd: Some(cost),
            failure_cost_usd: None,
            input_tokens: None,
            output_tokens: None,
            experiment_group: Some(group.into()),
            shadow: false,
            tags: BTreeMap::new(),
            shadow_call: None,
        }
    }

    #[test]
    fn groups_their_difference_percentiles_and_violations() {
        let mut records = Vec::new();
        for i in 0..10 {
            records.push(rec(
                "control",
                Outcome::Success,
                100.0 + i as f64,
                0.01,
                Some(0.8),
            ));
            records.push(rec(
                "router",
                Outcome::Success,
                200.0 + i as f64,
                0.002,
                Some(0.8),
            ));
        }
        records.push(rec("router", Outcome::Error, 5.0, 0.0, None));
        let sla = BTreeMap::from([("qa".to_string(), 205.0)]);
        let r = ab_report(&records, "", &sla);
        assert_eq!(r.groups.len(), 2);
        let (c, ro) = (&r.groups[0], &r.groups[1]);
        assert_eq!((c.group.as_str(), c.requests), ("control", 10));
        assert_eq!((ro.requests, ro.with_outcome, ro.quality.n), (11, 11, 11));
        // Router latencies 200..209 (the failure has none): p50 204, p95 209; 4 slow + 1 failure.
        assert_eq!((ro.latency_p50_ms, ro.latency_p95_ms), (204.0, 209.0));
        assert_eq!((ro.sla_violations, c.sla_violations), (5, 0));
        let d = &r.differences[0];
        assert!(d.cost_usd.hi < 0.0, "{d:?}");
        assert!((d.latency_ms.mean - 100.0).abs() < 1e-9);
        assert!(ab_report(&records, "other", &sla).groups.is_empty());
    }
}
