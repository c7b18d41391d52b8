//! The engine's budget glue: which budget a request is charged to, pacing, reservations at
//! Route, settlement at Feedback and the GetBudgets read model. The ledger maths live in
//! [`crate::budget`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::budget::{BudgetConfig, BudgetState, Ledger, OnCap, Period, ReserveError};
use crate::config::{Config, ModelConfig, TaskClassConfig};
use crate::policy::{self, floor, Candidate, Outcome, Scoring};

use super::*;

/// Factor on the expected cost reserved for a request that gives no `max_output_tokens`: output
/// lengths spread about 35% around their mean (see [`crate::config::DEFAULT_COST_LOG_SD`]), so twice
/// the larger of the list-price and learned mean cost covers all but the rarest long answers; the
/// over-reservation is returned at Feedback.
pub const RESERVATION_SAFETY_FACTOR: f64 = 2.0;

/// A budget alert threshold crossed by settled spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetAlert {
    pub budget_key: String,
    /// Fraction of the limit that settled spend reached.
    pub threshold: f64,
    pub spent_usd: f64,
    pub limit_usd: f64,
    pub period_start_ms: u64,
    pub period_end_ms: u64,
    /// When the crossing was recorded.
    pub at_ms: u64,
}

/// One budget's state, for GetBudgets.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSummary {
    pub budget_key: String,
    pub period: Period,
    pub time_zone: String,
    pub on_cap: OnCap,
    pub limit_usd: f64,
    /// Settled spend of the current period.
    pub spent_usd: f64,
    /// Live reservations of routed requests still awaiting feedback.
    pub reserved_usd: f64,
    pub period_start_ms: u64,
    pub period_end_ms: u64,
    /// Factor on the cost weight of requests charged to this budget right now.
    pub pacing_multiplier: f64,
    pub state: BudgetState,
    pub previous_period_spent_usd: f64,
    /// Alert thresholds already crossed this period, ascending.
    pub alert_thresholds_crossed: Vec<f64>,
    /// Configured alert thresholds, fractions of the limit.
    pub alert_thresholds: Vec<f64>,
}

impl Engine {
    /// Charges one model call of decision `decision_id` to budget `key`: the first settlement
    /// replaces the decision's reservation; later ones (fallback models reported under the same
    /// decision) add their cost. `actual_usd` is the reported or price-table cost; when unknown, the
    /// live reservation, else `estimate_usd`. Returns the alert thresholds crossed, the overrun
    /// and the amount charged (`None` when the budget is not configured).
    pub(super) fn settle_budget(
        &mut self,
        key: &str,
        decision_id: &str,
        actual_usd: Option<f64>,
        estimate_usd: f64,
        now_ms: u64,
    ) -> (Vec<BudgetAlert>, f64, Option<f64>) {
        let (Some(budget), Some(ledger)) =
            (self.config.budgets.get(key), self.ledgers.get_mut(key))
        else {
            return (Vec::new(), 0.0, None);
        };
        let actual = actual_usd
            .or_else(|| ledger.reservation_usd(decision_id))
            .unwrap_or(estimate_usd);
        let settlement = ledger.settle(budget, decision_id, actual, now_ms);
        (
            alerts_of(key, budget, ledger, settlement.crossed, now_ms),
            settlement.overrun_usd,
            Some(settlement.recorded_usd),
        )
    }

    /// Charges a late Feedback of a decision that expired or was evicted with a live reservation:
    /// `None` when no budget keeps its tombstone. The model must be the chosen one or a listed
    /// fallback.
    pub(super) fn settle_late(
        &mut self,
        input: &FeedbackInput,
        now_ms: u64,
    ) -> Result<Option<FeedbackResult>, EngineError> {
        let Some((key, t)) = self.ledgers.iter().find_map(|(k, l)| {
            l.tombstone(&input.decision_id)
                .map(|t| (k.clone(), t.clone()))
        }) else {
            return Ok(None);
        };
        let Some(outcome) = input.outcome else {
            return Err(EngineError::FailedPrecondition(format!(
                "decision_id {:?} expired before its Feedback; a late Feedback charges spend only: \
                 send the outcome (and cost_usd or tokens)",
                input.decision_id
            )));
        };
        let model_id = if input.model.is_empty() {
            t.models.first().cloned().unwrap_or_default()
        } else {
            input.model.clone()
        };
        if !t.models.contains(&model_id) {
            return Err(invalid(
                "model",
                format!(
                    "model {} was not offered by decision {:?}; report the model actually called, \
                     the chosen one or a listed fallback: {}",
                    echo(&model_id),
                    input.decision_id,
                    t.models.join(", ")
                ),
            ));
        }
        // The decision's tags (kept in its tombstone) with the late Feedback's merged in, as for
        // a live Feedback; checked before anything is charged.
        let tags =
            crate::spend::tags::merged(&t.tags, &input.tags).map_err(|e| invalid("tags", e.0))?;
        let model = self
            .config
            .models
            .get(&model_id)
            .ok_or_else(|| invalid("model", format!("model {model_id:?} is not configured")))?
            .clone();
        let Reported {
            cost,
            input_tokens,
            output_tokens,
        } = reported(input, self.config.limits.max_cost_usd_per_call)?;
        let actual = if outcome == Outcome::RateLimited {
            Some(0.0) // refused before any tokens were billed
        } else {
            cost.or_else(|| {
                (input_tokens.is_some() || output_tokens.is_some())
                    .then(|| model.cost_usd(input_tokens.unwrap_or(0), output_tokens.unwrap_or(0)))
            })
        };
        let (Some(budget), Some(ledger)) =
            (self.config.budgets.get(&key), self.ledgers.get_mut(&key))
        else {
            return Ok(None);
        };
        let Some(late) = ledger.settle_late(budget, &input.decision_id, actual, now_ms) else {
            return Ok(None);
        };
        let alerts = alerts_of(&key, budget, ledger, late.settlement.crossed, now_ms);
        let overrun_usd = late.settlement.overrun_usd;
        let recorded_usd = late.settlement.recorded_usd;
        let settled_usd = Some(recorded_usd);
        let class = self.class(&t.task_class)?.clone();
        let arm_index = class
            .models
            .iter()
            .position(|m| *m == model_id)
            .ok_or_else(|| invalid("model", format!("model {model_id:?} left the class")))?;
        let arm = self.summary(&class.name, arm_index, now_ms)?;
        self.account_spend(
            spending::SpendOf {
                model: &model_id,
                task_class: &class.name,
                budget_key: Some(&key),
                tags: &tags,
                usd: recorded_usd,
                input_tokens,
                output_tokens,
            },
            now_ms,
        );
        Ok(Some(FeedbackResult {
            duplicate: false,
            arm,
            alerts,
            counted: Counted::default(),
            late: true,
            overrun_usd,
            budget_key: Some(key),
            settled_usd,
        }))
    }

    /// The state of every budget, or of one key (NotFound if it is not configured).
    pub fn budgets(&self, key: &str, now_ms: u64) -> Result<Vec<BudgetSummary>, EngineError> {
        if !key.is_empty() && !self.config.budgets.contains_key(key) {
            let known: Vec<&str> = self.config.budgets.keys().map(String::as_str).collect();
            return Err(EngineError::NotFound(format!(
                "budget_key {key:?} is not configured; configured budgets: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        let mut out = Vec::new();
        for (k, b) in &self.config.budgets {
            if !key.is_empty() && k != key {
                continue;
            }
            // Roll a copy, so a period that has ended reads as the fresh one that the next
            // request will open.
            let mut ledger = self
                .ledgers
                .get(k)
                .cloned()
                .unwrap_or_else(|| Ledger::new(b, now_ms));
            ledger.roll(b, now_ms);
            out.push(BudgetSummary {
                budget_key: k.clone(),
                period: b.period,
                time_zone: b.time_zone.name().to_string(),
                on_cap: b.on_cap,
                limit_usd: b.limit_usd,
                spent_usd: ledger.spent_usd(),
                reserved_usd: ledger.reserved_usd(),
                period_start_ms: ledger.period_start_ms(),
                period_end_ms: ledger.period_end_ms(),
                pacing_multiplier: self.pace_with(b, &ledger, now_ms),
                state: ledger.state(b, now_ms),
                previous_period_spent_usd: ledger.previous_period_spent_usd(),
                alert_thresholds_crossed: ledger.alerted_thresholds(),
                alert_thresholds: b.alert_thresholds.clone(),
            });
        }
        Ok(out)
    }
}

/// The alerts of thresholds `crossed` by a settlement of budget `key`.
fn alerts_of(
    key: &str,
    budget: &BudgetConfig,
    ledger: &Ledger,
    crossed: Vec<f64>,
    now_ms: u64,
) -> Vec<BudgetAlert> {
    crossed
        .into_iter()
        .map(|threshold| BudgetAlert {
            budget_key: key.to_string(),
            threshold,
            spent_usd: ledger.spent_usd(),
            limit_usd: budget.limit_usd,
            period_start_ms: ledger.period_start_ms(),
            period_end_ms: ledger.period_end_ms(),
            at_ms: now_ms,
        })
        .collect()
}

/// The budget a request is charged to: the request's `budget_key`, else the class's `budget`, else
/// none. An unknown request key is refused, listing the configured ones.
pub(super) fn budget_for<'a>(
    config: &'a Config,
    class: &TaskClassConfig,
    request_key: &str,
) -> Result<Option<&'a BudgetConfig>, EngineError> {
    check_id("budget_key", request_key)?;
    let key = if request_key.is_empty() {
        match &class.budget {
            Some(k) => k.as_str(),
            None => return Ok(None),
        }
    } else {
        request_key
    };
    match config.budgets.get(key) {
        Some(b) => Ok(Some(b)),
        None => {
            let known: Vec<&str> = config.budgets.keys().map(String::as_str).collect();
            Err(invalid(
                "budget_key",
                format!(
                    "budget {key:?} is not configured; configured budgets: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ))
        }
    }
}

/// What [`apply_budget`] needs to know about one routing decision.
pub(super) struct BudgetRequest<'a, 'c> {
    /// Decision id, also the reservation id.
    pub id: &'a str,
    pub candidates: &'a [Candidate<'c>],
    pub models: &'a [&'a ModelConfig],
    /// Scoring with the pacing multiplier applied, and without.
    pub paced: &'a Scoring,
    pub unpaced: &'a Scoring,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Whether `output_tokens` is the request's `max_output_tokens` (an upper bound).
    pub max_output_given: bool,
    pub now_ms: u64,
    /// Probability that the policy chose each candidate (for the propensity of the served one).
    pub probs: &'a [f64],
}

/// Most the learned cost estimate may exceed the list-price one in a reservation: real costs
/// run above the price table (retries, hidden reasoning tokens) by small factors, while a single
/// huge (but accepted) report can push the learned estimate arbitrarily high; bounded, such a
/// report cannot make the model's reservation larger than the budget and so take it out of
/// budgeted traffic for good. Costs above the bound are settled as reported and counted as overrun.
pub const LEARNED_RESERVATION_CAP_FACTOR: f64 = 10.0;

/// Amount reserved for routing `model` on one request. With `max_output_tokens` given, the
/// price-table cost at the request's input tokens and that bound, which the actual cost of a call
/// cannot exceed (for an accurate input estimate and price table). Without it, the larger of
/// [`RESERVATION_SAFETY_FACTOR`] x the list-price cost at the typical output size and the learned
/// cost's predictive p95 (an upper quantile, so learned costs above the reservation are rare),
/// the latter at most [`LEARNED_RESERVATION_CAP_FACTOR`] x the list-price cost.
pub(super) fn reservation_usd(req: &BudgetRequest<'_, '_>, index: usize) -> f64 {
    let model = req.models[index];
    let list = model.cost_usd(req.input_tokens, req.output_tokens);
    if req.max_output_given {
        list
    } else {
        let c = &req.candidates[index];
        let learned = c.arm.cost.predictive_p95_exp() * c.cost_scale;
        let learned = if learned.is_finite() {
            learned.min(list * LEARNED_RESERVATION_CAP_FACTOR)
        } else {
            0.0
        };
        (list * RESERVATION_SAFETY_FACTOR).max(learned)
    }
}

/// Candidate indices cheapest first (by expected cost), the order the budget substitutes in.
pub(super) fn by_cost(req: &BudgetRequest<'_, '_>) -> Vec<usize> {
    let mut by_cost: Vec<(usize, f64)> = req
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.arm.means(c.cost_scale).cost_usd))
        .collect();
    by_cost.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    by_cost.into_iter().map(|(i, _)| i).collect()
}

/// With [`OnCap::Cheapest`], the budget rule as a map: `g[i]` is the candidate served when the
/// policy chooses candidate i (i itself when its reservation fits, else the cheapest that fits).
/// `None` without substitution (another `on_cap`, or every candidate fits or none does), when the
/// policy's own probability is the served one's.
fn substitution(
    ledger: &mut Ledger,
    budget: &BudgetConfig,
    req: &BudgetRequest<'_, '_>,
) -> Option<Vec<usize>> {
    if budget.on_cap != OnCap::Cheapest || req.probs.len() != req.candidates.len() {
        return None;
    }
    ledger.roll(budget, req.now_ms);
    let remaining = ledger.remaining_usd(budget);
    let fits: Vec<bool> = (0..req.candidates.len())
        .map(|i| {
            let a = reservation_usd(req, i);
            a.is_finite() && a >= 0.0 && a <= remaining && budget.limit_usd > 0.0
        })
        .collect();
    if fits.iter().all(|&f| f) {
        return None;
    }
    let cheapest = by_cost(req).into_iter().find(|&i| fits[i])?;
    Some(
        (0..fits.len())
            .map(|i| if fits[i] { i } else { cheapest })
            .collect(),
    )
}

/// `choice` with reason [`Reason::BudgetPacing`] when pacing moved the expected-best model (by
/// posterior-mean utility) away from the one chosen without it.
pub(super) fn pacing_reason(req: &BudgetRequest<'_, '_>, mut choice: Chosen) -> Chosen {
    if req.paced.weights.cost != req.unpaced.weights.cost {
        let best = |s: &Scoring| {
            policy::rank_by_mean_utility(req.candidates, s)
                .first()
                .copied()
        };
        let unpaced_best = best(req.unpaced);
        if best(req.paced) != unpaced_best && Some(choice.index) != unpaced_best {
            choice.reason = Reason::BudgetPacing;
        }
    }
    choice
}

/// Reserves the chosen model's cost in the budget's ledger. When it does not fit: with
/// [`OnCap::Cheapest`], routes the cheapest eligible model (by expected cost) whose reservation
/// fits, reason [`Reason::BudgetExhausted`]; otherwise RESOURCE_EXHAUSTED with spent, limit and the
/// reset time. Marks the reason [`Reason::BudgetPacing`] when pacing moved the expected-best model
/// away from the one chosen without it.
pub(super) fn apply_budget(
    ledgers: &mut BTreeMap<String, Ledger>,
    budget: &BudgetConfig,
    req: &BudgetRequest<'_, '_>,
    choice: Chosen,
) -> Result<Chosen, EngineError> {
    let ledger = ledgers
        .entry(budget.key.clone())
        .or_insert_with(|| Ledger::new(budget, req.now_ms));
    let served = substitution(ledger, budget, req);
    let refused = match ledger.try_reserve(
        budget,
        req.id,
        reservation_usd(req, choice.index),
        req.now_ms,
    ) {
        Ok(()) => {
            let mut choice = choice;
            if let Some(g) = &served {
                choice.propensity = floor::served_propensity(req.probs, choice.index, |i| g[i]);
            }
            return Ok(pacing_reason(req, choice));
        }
        Err(ReserveError::Exhausted(e)) => e,
        Err(e @ ReserveError::InvalidAmount { .. }) => {
            return Err(EngineError::FailedPrecondition(format!(
                "budget {:?}: cannot reserve the cost of model {:?}: {e}",
                budget.key, req.models[choice.index].id
            )))
        }
    };
    if budget.on_cap == OnCap::Cheapest {
        for i in by_cost(req) {
            if ledger
                .try_reserve(budget, req.id, reservation_usd(req, i), req.now_ms)
                .is_ok()
            {
                let propensity = match &served {
                    Some(g) => floor::served_propensity(req.probs, i, |k| g[k]),
                    None => 1.0,
                };
                return Ok(Chosen {
                    index: i,
                    propensity,
                    reason: Reason::BudgetExhausted,
                });
            }
        }
    }
    Err(EngineError::ResourceExhausted(format!(
        "budget {:?} {refused}",
        budget.key
    )))
}
