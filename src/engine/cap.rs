//! Budgets in cluster mode: `on_cap = "cheapest"` acting on the cluster-wide figures, and pacing
//! on the cluster-wide spend.
//!
//! On one node the cap rule is a map `g` over the policy's candidates: `g(i) = i` when candidate
//! i's reservation fits the remaining budget, else the cheapest candidate (by expected cost)
//! whose reservation fits; the served model's logged propensity is the policy's probability of
//! every choice that `g` sends to it ([`floor::served_propensity`]). In cluster mode the remaining
//! budget lives in Redis, and two steps apply the same rule:
//!
//! 1. here, at Route, on the shared figures this replica last saw ([`SharedBudget`]; refreshed
//!    every `cluster.sync_interval_ms` and by every admission's reply), giving `g0` (identity
//!    when nothing fits on those figures: a stale view never refuses on its own);
//! 2. in the admission script, on the figures of record at that instant: the reservation of
//!    `g0(chosen)` if it fits, else the first of the alternatives (cheapest first) that fits,
//!    giving `g1`; the script returns the room it saw ([`Room`]).
//!
//! The model served is `g1(g0(chosen))`, and both maps are known once the script answered, so the
//! logged propensity is exact: the sum of the policy's probabilities over the choices that the
//! composed map sends to the served model ([`CapPlan::resolve`]). The decision is logged only
//! then (a decision refused by the shared budget is not logged at all); when step 2 substituted,
//! the pending decision is rewritten (model, expected figures, fallbacks, reason
//! `budget_exhausted`, the pull moved to the served arm) and written to Redis in one more round
//! trip. Refused only when even the cheapest reservation does not fit.
//!
//! State: the shared figures ([`SharedBudget`]) are a per-replica copy of shared (Redis) state,
//! not persisted, empty after a restart until the first sync; plans ([`CapPlan`]) live from Route's
//! decision to its admission (microseconds to one Redis timeout), are per replica and never
//! persisted (a plan left behind by a failed call is dropped after [`PLAN_TTL_MS`]).

use std::collections::BTreeMap;

use crate::budget::{BudgetConfig, Ledger, OnCap};
use crate::policy::floor;

use super::budgeting::{by_cost, pacing_reason, reservation_usd, BudgetRequest};
use super::*;

/// A plan not taken within this long belongs to a call that failed between deciding and
/// admitting; it is dropped.
pub const PLAN_TTL_MS: u64 = 60_000;

/// A budget's cluster-wide figures as this replica last saw them in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SharedBudget {
    /// Start of the period the figures belong to (Unix ms).
    pub period_start_ms: u64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
}

/// The room a budget had at one admission: a reservation `a` fits when `used + a <= limit`, the
/// comparison the admission script makes (same operands, same order: both sides agree to the
/// last bit, so the map recomputed here is the one the script applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Room {
    /// Spent + reserved (shared), or the fallback share used (Redis down), USD.
    pub used_usd: f64,
    /// The limit, or the fallback share, USD.
    pub limit_usd: f64,
}

impl Room {
    pub fn fits(&self, amount_usd: f64) -> bool {
        amount_usd.is_finite() && amount_usd >= 0.0 && self.used_usd + amount_usd <= self.limit_usd
    }
}

/// The cap rule as a map: `map[i]` is the candidate served when candidate i is asked for: i when
/// its reservation fits, else the first of `order` (cheapest first) that fits, `None` when none
/// does.
pub fn serve_map(
    amounts: &[f64],
    order: &[usize],
    fits: impl Fn(f64) -> bool,
) -> Vec<Option<usize>> {
    let ok: Vec<bool> = amounts.iter().map(|&a| fits(a)).collect();
    let cheapest = order
        .iter()
        .copied()
        .find(|&i| ok.get(i).copied().unwrap_or(false));
    (0..amounts.len())
        .map(|i| if ok[i] { Some(i) } else { cheapest })
        .collect()
}

/// What the shared admission of one decision needs to apply the cap rule as the local one does.
#[derive(Debug, Clone, PartialEq)]
pub struct CapPlan {
    pub decision_id: String,
    pub budget_key: String,
    /// The policy's probability of each candidate.
    pub probs: Vec<f64>,
    /// Each candidate's reservation, USD.
    pub amounts: Vec<f64>,
    /// Candidates cheapest first (by expected cost): the order of substitution.
    pub order: Vec<usize>,
    /// The local step `g0` (on the shared figures last seen).
    pub first: Vec<usize>,
    /// The policy's choice.
    pub chosen: usize,
    /// Each candidate's arm index in its class, model, and expected figures (to rewrite the
    /// decision when the shared step substitutes).
    pub arms: Vec<usize>,
    pub models: Vec<ModelRef>,
    pub expected: Vec<Expected>,
    /// Candidates by posterior-mean utility whose breaker is closed (the fallback ranking).
    pub ranked: Vec<usize>,
    pub max_fallbacks: usize,
    pub created_ms: u64,
}

impl CapPlan {
    /// The candidate asked for first: `g0(chosen)`.
    pub fn served_first(&self) -> usize {
        self.first.get(self.chosen).copied().unwrap_or(self.chosen)
    }

    /// The reservation asked for first, and the alternatives (cheapest first) the admission may
    /// take instead.
    pub fn asks(&self) -> (f64, Vec<f64>) {
        let first = self
            .amounts
            .get(self.served_first())
            .copied()
            .unwrap_or(0.0);
        let alternatives = self
            .order
            .iter()
            .filter_map(|&i| self.amounts.get(i).copied())
            .collect();
        (first, alternatives)
    }

    /// The candidate of the `k`-th alternative (0-based) of [`CapPlan::asks`].
    pub fn alternative(&self, k: usize) -> Option<usize> {
        self.order.get(k).copied()
    }

    /// The probability that `served` is served under the composed rule `g1 . g0`, where `g1` is
    /// the rule on `room`, the figures of record at the admission.
    pub fn propensity(&self, room: Room, served: usize) -> f64 {
        let second = serve_map(&self.amounts, &self.order, |a| room.fits(a));
        let composed = |i: usize| {
            let k = self.first.get(i).copied().unwrap_or(i);
            second.get(k).copied().flatten()
        };
        if self.probs.len() != self.amounts.len() {
            return 1.0;
        }
        floor::served_propensity(&self.probs, served, |i| composed(i).unwrap_or(usize::MAX))
    }
}

/// The local step in cluster mode (see the module docs): the choice served on the shared figures
/// last seen, with its provisional propensity, and the plan for the admission. `None` when the
/// rule does not apply (another `on_cap`, or no probabilities to map): the single-node path runs.
pub(super) fn plan_shared(
    ledger: &mut Ledger,
    shared: Option<&SharedBudget>,
    budget: &BudgetConfig,
    req: &BudgetRequest<'_, '_>,
    choice: Chosen,
) -> Option<(Chosen, CapPlan)> {
    if budget.on_cap != OnCap::Cheapest || req.probs.len() != req.candidates.len() {
        return None;
    }
    ledger.roll(budget, req.now_ms);
    let local_used = ledger.spent_usd() + ledger.reserved_usd();
    let shared_used = shared
        .filter(|s| s.period_start_ms == ledger.period_start_ms())
        .map_or(0.0, |s| s.spent_usd + s.reserved_usd);
    let room = Room {
        used_usd: local_used.max(shared_used),
        limit_usd: budget.limit_usd,
    };
    let amounts: Vec<f64> = (0..req.candidates.len())
        .map(|i| reservation_usd(req, i))
        .collect();
    let order = by_cost(req);
    let first: Vec<usize> = serve_map(&amounts, &order, |a| room.fits(a))
        .into_iter()
        .enumerate()
        .map(|(i, g)| g.unwrap_or(i))
        .collect();
    let served = first[choice.index];
    let chosen = if served == choice.index {
        pacing_reason(req, choice)
    } else {
        Chosen {
            index: served,
            propensity: choice.propensity,
            reason: Reason::BudgetExhausted,
        }
    };
    let chosen = Chosen {
        propensity: floor::served_propensity(req.probs, served, |i| first[i]),
        ..chosen
    };
    let plan = CapPlan {
        decision_id: req.id.to_string(),
        budget_key: budget.key.clone(),
        probs: req.probs.to_vec(),
        amounts,
        order,
        first,
        chosen: choice.index,
        arms: Vec::new(),
        models: Vec::new(),
        expected: Vec::new(),
        ranked: Vec::new(),
        max_fallbacks: 0,
        created_ms: req.now_ms,
    };
    Some((chosen, plan))
}

/// Keeps `plan` until its admission, dropping plans left behind.
pub(super) fn keep_plan(plans: &mut BTreeMap<String, CapPlan>, plan: CapPlan) {
    let now = plan.created_ms;
    if plans.len() >= 64 {
        plans.retain(|_, p| p.created_ms.saturating_add(PLAN_TTL_MS) > now);
    }
    plans.insert(plan.decision_id.clone(), plan);
}

impl Engine {
    /// Records a budget's cluster-wide figures as last seen in Redis (cluster mode).
    pub fn set_shared_budget(&mut self, key: &str, figures: SharedBudget) {
        self.shared_budgets.insert(key.to_string(), figures);
    }

    /// The cluster-wide figures last seen of budget `key`.
    pub fn shared_budget(&self, key: &str) -> Option<SharedBudget> {
        self.shared_budgets.get(key).copied()
    }

    /// Takes the plan of decision `id` (made in cluster mode under `on_cap = "cheapest"`).
    pub fn take_cap_plan(&mut self, id: &str) -> Option<CapPlan> {
        self.cap_plans.remove(id)
    }

    /// Whether decision `id` waits for its shared admission (its log record is written then).
    pub(super) fn awaits_admission(&self, id: &str) -> bool {
        self.cap_plans.contains_key(id)
    }

    /// The pacing multiplier of `budget` now: on the cluster-wide committed spend when this
    /// replica has seen it for the current period, else on the local ledger.
    pub(super) fn pace(&self, budget: Option<&BudgetConfig>, now_ms: u64) -> f64 {
        let Some(b) = budget else {
            return 1.0;
        };
        match self.ledgers.get(&b.key) {
            Some(ledger) => self.pace_with(b, ledger, now_ms),
            None => 1.0,
        }
    }

    /// [`Engine::pace`] with `b`'s local ledger given.
    pub(super) fn pace_with(&self, b: &BudgetConfig, ledger: &Ledger, now_ms: u64) -> f64 {
        match self.shared_committed(b, ledger, now_ms) {
            Some(committed) => ledger.pacing_multiplier_of(b, now_ms, committed),
            None => ledger.pacing_multiplier(b, now_ms),
        }
    }

    /// Cluster-wide spent + reserved of `b`'s period containing `now_ms`, when seen (at least the
    /// local figure: a settlement here may be newer than the last look at Redis).
    pub(super) fn shared_committed(
        &self,
        b: &BudgetConfig,
        ledger: &Ledger,
        now_ms: u64,
    ) -> Option<f64> {
        let s = self.shared_budgets.get(&b.key)?;
        let start = if now_ms >= ledger.period_end_ms() {
            Ledger::new(b, now_ms).period_start_ms()
        } else {
            ledger.period_start_ms()
        };
        if s.period_start_ms != start {
            return None;
        }
        let local = if start == ledger.period_start_ms() {
            ledger.spent_usd() + ledger.reserved_usd()
        } else {
            0.0
        };
        Some((s.spent_usd + s.reserved_usd).max(local))
    }

    /// Settles decision `plan.decision_id` on candidate `served` with its exact `propensity`
    /// once the shared admission answered: rewrites the pending decision when the candidate
    /// differs from the one decided locally, and logs the decision. `None` when the decision is
    /// no longer pending.
    pub fn serve_capped(
        &mut self,
        plan: &CapPlan,
        served: usize,
        propensity: f64,
        now_ms: u64,
    ) -> Option<Decision> {
        let mut p = self.pending.full(&plan.decision_id)?;
        let d = &mut p.decision;
        d.propensity = propensity;
        let before = plan.served_first();
        if served != before {
            if let (Some(model), Some(expected)) =
                (plan.models.get(served), plan.expected.get(served))
            {
                d.model = model.model.clone();
                d.provider = model.provider.clone();
                d.expected = *expected;
                d.reason = Reason::BudgetExhausted;
                d.fallbacks = plan
                    .ranked
                    .iter()
                    .filter(|&&i| i != served)
                    .take(plan.max_fallbacks)
                    .filter_map(|&i| plan.models.get(i).cloned())
                    .collect();
                if d.shadow.as_ref().is_some_and(|s| s.model == d.model) {
                    d.shadow = None;
                }
                let class = d.task_class.clone();
                if let Some(state) = self.classes.get_mut(&class) {
                    if let Some(a) = plan.arms.get(before).and_then(|&i| state.arms.get_mut(i)) {
                        a.pulls = a.pulls.saturating_sub(1);
                        a.share = (a.share_at(now_ms) - 1.0).max(0.0);
                        a.share_at_ms = a.share_at_ms.max(now_ms);
                    }
                    if let Some(a) = plan.arms.get(served).and_then(|&i| state.arms.get_mut(i)) {
                        a.record_pull(now_ms);
                    }
                }
                self.note_class(&class);
            }
        }
        let decision = p.decision.clone();
        self.pending
            .change_full(&plan.decision_id, |full| *full = p)?;
        if let Some(p) = self.pending.get(&plan.decision_id).cloned() {
            self.log(|| Logged::Decision(p));
        }
        Some(decision)
    }
}

#[cfg(test)]
#[path = "cap_tests.rs"]
mod tests;
