//! The hindsight cost/quality frontier of a full-information trace: for each quality level, the
//! least mean cost per request of a *static class-level* routing (every request of a class goes to
//! one model, or to a two-model mix), and where each simulated policy sits against it.
//!
//! Per class c (traffic share w_c), each model m has a mean quality q_cm (0 for a failed call) and
//! mean cost c_cm over the records. A class's least cost at quality q is its lower convex hull of
//! the points (q_cm, c_cm) ([`crate::policy::objective::least_cost_mix`] for one class). Over
//! classes the problem min sum_c w_c C_c(q_c) s.t. sum_c w_c q_c >= Q is separable and convex, so
//! it is solved greedily: start every class at its cheapest model and take hull segments in order
//! of increasing marginal cost per unit of quality (dC / dq, the same in every class once weighted)
//! until the traffic-weighted quality reaches Q. At most one class ends inside a segment, that is
//! with a two-model mix; the others use one model each.
//!
//! The reference is the best single model: the model (offered in every class) with the highest
//! traffic-weighted quality; targets and shares are relative to its quality and cost.

use std::collections::BTreeMap;

use serde::Serialize;

use super::trace::FullInfoRecord;

/// A point of the frontier: mean quality and least mean cost per request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrontierPoint {
    pub quality: f64,
    pub cost_usd: f64,
}

/// One hull segment of one class, weighted by the class's traffic share.
#[derive(Debug, Clone, Copy)]
struct Segment {
    dq: f64,
    dc: f64,
}

/// The frontier of one trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frontier {
    /// Best single model, its mean quality and mean cost per request.
    pub best_model: String,
    pub best_quality: f64,
    pub best_cost_usd: f64,
    /// Traffic-weighted quality of each class's best model (the reference of quality targets).
    pub class_best_quality: f64,
    /// Vertices of the frontier, by increasing quality (linear in between).
    pub points: Vec<FrontierPoint>,
    /// Requests in the trace.
    pub requests: usize,
}

/// Per (class, model): quality sum, cost sum, count.
type Sums = BTreeMap<String, BTreeMap<String, (f64, f64, f64)>>;

impl Frontier {
    /// Builds the frontier of `records` (None when empty).
    pub fn of(records: &[FullInfoRecord]) -> Option<Frontier> {
        let mut sums: Sums = BTreeMap::new();
        let mut class_n: BTreeMap<String, f64> = BTreeMap::new();
        for r in records {
            *class_n.entry(r.task_class.clone()).or_default() += 1.0;
            let class = sums.entry(r.task_class.clone()).or_default();
            for (m, o) in &r.outcomes {
                let q = if o.status.is_success() {
                    o.quality
                } else {
                    0.0
                };
                let e = class.entry(m.clone()).or_default();
                e.0 += q;
                e.1 += o.cost_usd;
                e.2 += 1.0;
            }
        }
        let total: f64 = class_n.values().sum();
        if total == 0.0 {
            return None;
        }
        // Per class: share and hull of (quality, cost) means.
        let mut start = FrontierPoint {
            quality: 0.0,
            cost_usd: 0.0,
        };
        let mut segments = Vec::new();
        let mut class_best_quality = 0.0;
        let mut single: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
        for (class, models) in &sums {
            let w = class_n.get(class).copied().unwrap_or(0.0) / total;
            let pts: Vec<(f64, f64)> = models.values().map(|(q, c, n)| (q / n, c / n)).collect();
            for (m, (q, c, n)) in models {
                let e = single.entry(m.as_str()).or_default();
                e.0 += w * q / n;
                e.1 += w * c / n;
                e.2 += w;
            }
            let hull = lower_hull(&pts);
            let Some(first) = hull.first() else { continue };
            start.quality += w * first.0;
            start.cost_usd += w * first.1;
            class_best_quality += w * hull.last().map_or(first.0, |p| p.0);
            for pair in hull.windows(2) {
                segments.push(Segment {
                    dq: w * (pair[1].0 - pair[0].0),
                    dc: w * (pair[1].1 - pair[0].1),
                });
            }
        }
        segments.sort_by(|a, b| (a.dc / a.dq).total_cmp(&(b.dc / b.dq)));
        let mut points = vec![start];
        let mut at = start;
        for s in segments {
            at = FrontierPoint {
                quality: at.quality + s.dq,
                cost_usd: at.cost_usd + s.dc,
            };
            points.push(at);
        }
        // Best single model among those offered in every class (share 1).
        let (best_model, (best_quality, best_cost_usd, _)) = single
            .into_iter()
            .filter(|(_, (_, _, w))| (*w - 1.0).abs() < 1e-9)
            .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0).then(b.1 .1.total_cmp(&a.1 .1)))?;
        Some(Frontier {
            best_model: best_model.to_string(),
            best_quality,
            best_cost_usd,
            class_best_quality,
            points,
            requests: records.len(),
        })
    }

    /// Least mean cost per request reaching mean quality `q` (None above the frontier's top).
    pub fn cost_at(&self, q: f64) -> Option<f64> {
        let first = self.points.first()?;
        if q <= first.quality {
            return Some(first.cost_usd);
        }
        // Rounding: the class-best reference is the top vertex summed in another order.
        let q = q.min(self.points.last().map_or(q, |p| p.quality.max(q - 1e-9)));
        self.points.windows(2).find_map(|p| {
            (q <= p[1].quality).then(|| {
                let x = (q - p[0].quality) / (p[1].quality - p[0].quality);
                p[0].cost_usd + x * (p[1].cost_usd - p[0].cost_usd)
            })
        })
    }

    /// Where a policy with mean quality `quality` and mean cost per request `cost_usd` sits.
    pub fn place(&self, policy: &str, quality: f64, cost_usd: f64) -> Placement {
        let frontier = self.cost_at(quality.min(self.class_best_quality));
        Placement {
            policy: policy.to_string(),
            quality_share: quality / self.best_quality,
            cost_share: cost_usd / self.best_cost_usd,
            frontier_cost_usd: frontier,
            cost_overhead: frontier.filter(|f| *f > 0.0).map(|f| cost_usd / f),
        }
    }

    /// Frontier cost at each quality target (a share of the class-best reference quality), as
    /// (target, cost per request, cost as a share of the best single model's).
    pub fn at_targets(&self, targets: &[f64]) -> Vec<(f64, Option<f64>, Option<f64>)> {
        targets
            .iter()
            .map(|&t| {
                let c = self.cost_at(t * self.class_best_quality);
                (t, c, c.map(|c| c / self.best_cost_usd))
            })
            .collect()
    }
}

/// A policy on the frontier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    pub policy: String,
    /// Mean quality over the best single model's.
    pub quality_share: f64,
    /// Mean cost over the best single model's.
    pub cost_share: f64,
    /// Least cost per request of static class-level routing at the policy's quality.
    pub frontier_cost_usd: Option<f64>,
    /// The policy's cost over that frontier cost.
    pub cost_overhead: Option<f64>,
}

/// Lower convex hull of (quality, cost) points that matter for "least cost at quality >= q": from
/// the cheapest point (best quality among equally cheap) up to the highest-quality point (cheapest
/// among equally good), keeping only points where cost rises with quality at increasing slope.
fn lower_hull(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = points.to_vec();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    // Drop points dominated by a cheaper point of at least their quality.
    let mut kept: Vec<(f64, f64)> = Vec::new();
    for p in pts.iter().rev() {
        if kept.last().is_none_or(|k| p.1 < k.1) {
            kept.push(*p);
        }
    }
    kept.reverse();
    let mut hull: Vec<(f64, f64)> = Vec::new();
    for p in kept {
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            // Remove b if it lies on or above the segment a -> p.
            let cross = (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
            if cross <= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    hull
}

#[cfg(test)]
mod tests {
    use super::super::trace::ModelOutcome;
    use super::*;
    use crate::policy::objective::{least_cost_mix, ArmValue};
    use crate::policy::Outcome;

    fn record(class: &str, outcomes: &[(&str, f64, f64)]) -> FullInfoRecord {
        FullInfoRecord {
            t_ms: 0,
            task_class: class.to_string(),
            input_tokens: 100,
            outcomes: outcomes
                .iter()
                .map(|&(m, q, c)| {
                    (
                        m.to_string(),
                        ModelOutcome {
                            status: Outcome::Success,
                            quality: q,
                            latency_ms: None,
                            cost_usd: c,
                            output_tokens: 10,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn one_class_frontier_matches_the_two_model_mix() {
        let models = [
            ("a", 0.5, 1.0),
            ("b", 0.7, 4.0),
            ("c", 0.9, 10.0),
            ("d", 0.6, 8.0),
        ];
        let f = Frontier::of(&[record("x", &models)]).unwrap_or_else(|| panic!("frontier"));
        assert_eq!(f.best_model, "c");
        let arms: Vec<ArmValue> = models
            .iter()
            .map(|&(_, quality, cost_usd)| ArmValue {
                quality,
                cost_usd,
                ..Default::default()
            })
            .collect();
        for q in [0.5, 0.6, 0.75, 0.8, 0.9] {
            let want = least_cost_mix(&arms, q).map(|m| m.0);
            let got = f.cost_at(q);
            assert!(
                (got.unwrap_or(f64::NAN) - want.unwrap_or(f64::NAN)).abs() < 1e-12,
                "{q}: {got:?} vs {want:?}"
            );
        }
        assert_eq!(f.cost_at(0.95), None);
    }

    #[test]
    fn quality_target_scenario_makes_the_trade_off_real() {
        use super::super::scenario::Scenario;
        use super::super::truth::{generate_trace, ScenarioTruth};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("simulations/scenarios/quality_target.toml");
        let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let models = &scenario.config.models;
        assert!(models.len() >= 6);
        let truth = ScenarioTruth::new(scenario.clone()).unwrap_or_else(|e| panic!("{e}"));
        let records = generate_trace(&truth, 1);
        let f = Frontier::of(&records).unwrap_or_else(|| panic!("frontier"));
        // At least 3 models dearer than the best quality per dollar (list prices, qa-sized call).
        let price = |m: &crate::config::ModelConfig| m.cost_usd(600, 300);
        let q_of = |id: &str| scenario.truth.get(id).map_or(0.0, |t| t.quality);
        let best_value = models
            .iter()
            .max_by(|a, b| (q_of(a.0) / price(a.1)).total_cmp(&(q_of(b.0) / price(b.1))))
            .map(|(_, m)| price(m))
            .unwrap_or(f64::MAX);
        assert!(models.values().filter(|m| price(m) > best_value).count() >= 3);
        let share = f.at_targets(&[0.95])[0].2.unwrap_or(f64::NAN);
        assert!(
            share <= 0.40,
            "frontier at 95% costs {share} of the best model"
        );
        // The frontier is reachable up to the class-best quality.
        assert!(f.at_targets(&[1.0])[0].1.is_some());
    }

    #[test]
    fn classes_combine_by_marginal_cost() {
        // Class x: upgrading a -> b costs 1 per 0.2 quality (5 per unit); class y: a -> b costs 9
        // per 0.3 (30 per unit). Reaching the middle, x upgrades first.
        let x = record("x", &[("a", 0.5, 1.0), ("b", 0.7, 2.0)]);
        let y = record("y", &[("a", 0.6, 1.0), ("b", 0.9, 10.0)]);
        let f = Frontier::of(&[x, y]).unwrap_or_else(|| panic!("frontier"));
        assert!((f.class_best_quality - 0.8).abs() < 1e-12);
        assert_eq!(f.best_model, "b");
        assert!((f.best_cost_usd - 6.0).abs() < 1e-12);
        // Start: both a, quality 0.55, cost 1. x upgraded: quality 0.65, cost 1.5.
        assert!((f.cost_at(0.55).unwrap_or(0.0) - 1.0).abs() < 1e-12);
        assert!((f.cost_at(0.65).unwrap_or(0.0) - 1.5).abs() < 1e-12);
        assert!((f.cost_at(0.8).unwrap_or(0.0) - 6.0).abs() < 1e-12);
        let p = f.place("p", 0.65, 3.0);
        assert!((p.cost_overhead.unwrap_or(0.0) - 2.0).abs() < 1e-12);
        assert!((p.quality_share - 0.65 / 0.8).abs() < 1e-12);
        assert!((p.cost_share - 0.5).abs() < 1e-12);
    }
}
