//! Shadow traffic: on a share of a class's decisions (`shadow.fraction`), Route also names a
//! second model for the caller to run off the user's path on the same request and report with
//! Feedback `shadow = true`.
//!
//! A shadow outcome is evidence for its own arm (posteriors and breaker) but never the decision's
//! outcome: it is logged as a shadow event and folded into the decision record's `shadow_call`,
//! so off-policy estimates of the decision stay right, and it never enters a class's `min_cost`
//! accounting (achieved quality). Shadow calls cost money: each reserves its own amount in the
//! decision's budget (reservation id [`shadow_reservation_id`]) and settles there, and none is
//! issued while that budget is paced above x1 or at its cap.
//!
//! Paired comparisons: a decision with a shadow keeps both calls' results ([`PairSides`]) in its
//! pending record; each difference (shadow minus chosen: realised quality, charged cost, latency
//! of successes) is added to its (class, model, shadow model) [`PairStats`] once both sides of it
//! are known. On restart these are recomputed from the decision log (its records keep both
//! sides), by [`Engine::restore_pairs`]; decisions the log has trimmed drop out of them.

use std::collections::BTreeMap;

use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::budget::BudgetState;
use crate::config::experiment::ShadowModels;
use crate::config::TaskClassConfig;
use crate::interval::MeanVar;
use crate::policy::Outcome;
use crate::record::DecisionRecord;

use super::*;

/// The budget reservation of decision `decision_id`'s shadow call.
pub fn shadow_reservation_id(decision_id: &str) -> String {
    format!("{decision_id}/shadow")
}

/// What one call of a shadowed decision reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub outcome: Option<Outcome>,
    pub latency_ms: Option<f64>,
    /// As charged: reported, else from the price table at the reported tokens.
    pub cost_usd: Option<f64>,
    pub quality: Option<f64>,
}

impl Side {
    /// The reported quality score, 0 for a failed call (as the `min_cost` accounting counts it).
    pub fn realised_quality(&self) -> Option<f64> {
        match self.outcome {
            Some(o) if !o.is_success() => Some(0.0),
            _ => self.quality,
        }
    }

    /// The cost of a reported call.
    pub fn cost(&self) -> Option<f64> {
        self.outcome.and(self.cost_usd)
    }

    /// The latency of a successful call.
    pub fn success_latency(&self) -> Option<f64> {
        match self.outcome {
            Some(o) if o.is_success() => self.latency_ms,
            _ => None,
        }
    }
}

/// Both calls of a shadowed decision: the decided model's and the shadow's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PairSides {
    pub primary: Side,
    pub shadow: Side,
}

type Metric = fn(&Side) -> Option<f64>;

/// The paired metrics, in [`PairStats`] order: quality, cost, latency.
const METRICS: [Metric; 3] = [Side::realised_quality, Side::cost, Side::success_latency];

impl PairSides {
    fn diff(&self, m: Metric) -> Option<f64> {
        Some(m(&self.shadow)? - m(&self.primary)?)
    }
}

/// Differences shadow minus chosen on the same requests, for one (class, model, shadow model).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PairStats {
    pub quality: MeanVar,
    pub cost_usd: MeanVar,
    pub latency_ms: MeanVar,
}

impl PairStats {
    /// Adds each difference that `after` knows and `before` did not (each counted once).
    pub fn add_completed(&mut self, before: &PairSides, after: &PairSides) {
        let accs = [&mut self.quality, &mut self.cost_usd, &mut self.latency_ms];
        for (acc, m) in accs.into_iter().zip(METRICS) {
            if before.diff(m).is_none() {
                if let Some(d) = after.diff(m) {
                    acc.push(d);
                }
            }
        }
    }
}

/// Paired comparisons keyed by (task class, decided model, shadow model).
pub type Pairs = BTreeMap<(String, String, String), PairStats>;

/// One entry of [`Engine::paired_stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct PairedSummary {
    pub task_class: String,
    pub model: String,
    pub shadow_model: String,
    pub stats: PairStats,
}

/// What [`Engine::pick_shadow`] needs of a decision being made.
pub(super) struct ShadowAsk<'a> {
    pub decision_id: &'a str,
    /// Index of the chosen arm in the class.
    pub chosen: usize,
    /// Class model indices the breakers let through (closed).
    pub closed: &'a [usize],
    pub budget_key: Option<&'a str>,
    /// The budget's pacing multiplier now (1 without a budget).
    pub pace: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Whether `output_tokens` is the request's bound (else a typical size).
    pub max_output_given: bool,
}

impl Engine {
    /// The shadow model of a decision, if it gets one: drawn with the class's fraction (the draw
    /// is made on every decision, so the share holds), among models with a closed breaker other
    /// than the chosen one, and only when the budget is neither paced nor at its cap and the
    /// shadow call's reservation fits.
    pub(super) fn pick_shadow<R: Rng + ?Sized>(
        &mut self,
        class: &TaskClassConfig,
        ask: &ShadowAsk<'_>,
        now_ms: u64,
        rng: &mut R,
    ) -> Option<ModelRef> {
        let cfg = class.shadow.as_ref()?;
        if rng.random::<f64>() >= cfg.fraction || ask.pace > 1.0 {
            return None;
        }
        let open: Vec<usize> = ask
            .closed
            .iter()
            .copied()
            .filter(|&i| i != ask.chosen)
            .collect();
        let index = match &cfg.models {
            ShadowModels::Listed(list) => {
                let listed: Vec<usize> = open
                    .into_iter()
                    .filter(|&i| list.contains(&class.models[i]))
                    .collect();
                *listed.choose(rng)?
            }
            ShadowModels::Explore => {
                let arms = &self.classes.get(&class.name)?.arms;
                open.into_iter().min_by(|&a, &b| {
                    evidence(&arms[a])
                        .total_cmp(&evidence(&arms[b]))
                        .then(a.cmp(&b))
                })?
            }
        };
        let model = self.config.models.get(&class.models[index])?;
        if let Some(key) = ask.budget_key {
            let budget = self.config.budgets.get(key)?;
            let ledger = self.ledgers.get_mut(key)?;
            if ledger.state(budget, now_ms) == BudgetState::Exhausted {
                return None;
            }
            let list = model.cost_usd(ask.input_tokens, ask.output_tokens);
            let amount = if ask.max_output_given {
                list
            } else {
                list * RESERVATION_SAFETY_FACTOR
            };
            let id = shadow_reservation_id(ask.decision_id);
            ledger.try_reserve(budget, &id, amount, now_ms).ok()?;
        }
        Some(ModelRef {
            model: model.id.clone(),
            provider: model.provider.clone(),
        })
    }

    /// Notes what a Feedback reported on the pending record of a shadowed decision, and adds the
    /// paired differences it completes.
    pub(super) fn record_sides(
        &mut self,
        decision_id: &str,
        model: &str,
        shadow: bool,
        reported: Side,
    ) {
        let Some(p) = self.pending.get(decision_id) else {
            return;
        };
        let Some(shadow_model) = p.shadow_model().map(str::to_string) else {
            return;
        };
        if !shadow && model != p.model() {
            return; // a fallback's result pairs with nothing
        }
        let Some((key, before, after)) = self.pending.change_full(decision_id, |p| {
            let before = p.sides;
            let side = if shadow {
                &mut p.sides.shadow
            } else {
                &mut p.sides.primary
            };
            if reported.outcome.is_some() {
                side.outcome = reported.outcome;
                side.latency_ms = reported.latency_ms;
                side.cost_usd = reported.cost_usd;
            }
            if reported.quality.is_some() {
                side.quality = reported.quality;
            }
            let key = (
                p.decision.task_class.clone(),
                p.decision.model.clone(),
                shadow_model,
            );
            (key, before, p.sides)
        }) else {
            return;
        };
        self.pairs
            .entry(key)
            .or_default()
            .add_completed(&before, &after);
    }

    /// Paired comparisons of every class, or of `task_class`.
    pub fn paired_stats(&self, task_class: &str) -> Vec<PairedSummary> {
        self.pairs
            .iter()
            .filter(|((c, _, _), _)| task_class.is_empty() || c == task_class)
            .map(|((c, m, s), stats)| PairedSummary {
                task_class: c.clone(),
                model: m.clone(),
                shadow_model: s.clone(),
                stats: *stats,
            })
            .collect()
    }

    /// Recomputes the paired comparisons from logged decisions (at start-up, from the decision
    /// log): every record with a shadow call contributes its completed differences.
    pub fn restore_pairs<'a>(&mut self, records: impl IntoIterator<Item = &'a DecisionRecord>) {
        self.pairs.clear();
        for r in records {
            let Some(s) = &r.shadow_call else { continue };
            let sides = PairSides {
                primary: Side {
                    outcome: r.outcome,
                    latency_ms: r.latency_ms,
                    cost_usd: r.charged_usd,
                    quality: r.quality,
                },
                shadow: Side {
                    outcome: s.outcome,
                    latency_ms: s.latency_ms,
                    cost_usd: s.charged_usd,
                    quality: s.quality,
                },
            };
            self.pairs
                .entry((r.task_class.clone(), r.model.clone(), s.model.clone()))
                .or_default()
                .add_completed(&PairSides::default(), &sides);
        }
    }
}

/// How much outcome evidence an arm holds after decay (the effective sample size of its success
/// posterior, as GetArmStats' `decayed_pulls`): the `explore` shadow goes to the arm with the least.
fn evidence(arm: &crate::policy::Arm) -> f64 {
    arm.success.evidence()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(outcome: Outcome, latency: f64, cost: f64, quality: Option<f64>) -> Side {
        Side {
            outcome: Some(outcome),
            latency_ms: Some(latency),
            cost_usd: Some(cost),
            quality,
        }
    }

    #[test]
    fn each_difference_is_counted_once_when_both_sides_know_it() {
        let mut st = PairStats::default();
        let mut sides = PairSides::default();
        let step = |st: &mut PairStats, sides: &mut PairSides, f: &dyn Fn(&mut PairSides)| {
            let before = *sides;
            f(sides);
            st.add_completed(&before, sides);
        };
        step(&mut st, &mut sides, &|s| {
            s.primary = side(Outcome::Success, 100.0, 0.01, None)
        });
        assert_eq!(st.cost_usd.n, 0);
        step(&mut st, &mut sides, &|s| {
            s.shadow = side(Outcome::Success, 300.0, 0.002, None)
        });
        assert_eq!((st.cost_usd.n, st.latency_ms.n, st.quality.n), (1, 1, 0));
        assert!((st.latency_ms.mean - 200.0).abs() < 1e-12);
        assert!((st.cost_usd.mean + 0.008).abs() < 1e-12);
        step(&mut st, &mut sides, &|s| s.primary.quality = Some(0.9));
        step(&mut st, &mut sides, &|s| s.shadow.quality = Some(0.6));
        assert_eq!((st.cost_usd.n, st.quality.n), (1, 1));
        assert!((st.quality.mean + 0.3).abs() < 1e-12);
        // A failed shadow counts quality 0 and no latency.
        let failed = PairSides {
            primary: side(Outcome::Success, 1.0, 1.0, Some(0.5)),
            shadow: side(Outcome::Error, 1.0, 0.0, None),
        };
        let mut f = PairStats::default();
        f.add_completed(&PairSides::default(), &failed);
        assert_eq!((f.quality.n, f.latency_ms.n), (1, 0));
        assert!((f.quality.mean + 0.5).abs() < 1e-12);
    }
}
