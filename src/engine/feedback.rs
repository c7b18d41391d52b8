//! Feedback: validate a report, update the arm and breaker, mark the pending decision, settle the
//! budget and log what was new.

use std::sync::Arc;

use crate::breaker::CallOutcome;
use crate::config::{ModelConfig, TaskClassConfig};
use crate::policy::{Observation, Outcome};
use crate::record::{Event, OutcomeRecord, QualityRecord};

use super::*;

/// A validated Feedback, resolved against its pending decision.
pub(super) struct Report {
    class: Arc<TaskClassConfig>,
    pub(super) model: ModelConfig,
    arm_index: usize,
    latency_ms: Option<f64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// As reported, else from the price table when tokens are known.
    cost_usd: Option<f64>,
    pub(super) quality: Option<f64>,
    /// Whether the outcome / quality is the first reported for this model.
    pub(super) outcome_new: bool,
    pub(super) quality_new: bool,
    /// Token counts the decision assumed, and its budget.
    decided_tokens: (u64, u64),
    budget_key: Option<String>,
    /// The decision's `min_cost` target, when the report is about the decided model itself (a
    /// fallback's result says nothing about the choice).
    quality_target: Option<f64>,
    /// The decision's tags with the Feedback's merged in.
    tags: std::collections::BTreeMap<String, String>,
    /// The report is of the decision's shadow call.
    pub(super) shadow: bool,
}

impl Engine {
    /// Records what happened to a routed request.
    pub fn feedback(
        &mut self,
        input: &FeedbackInput,
        now_ms: u64,
    ) -> Result<FeedbackResult, EngineError> {
        let live = self.pending.live(&input.decision_id, now_ms).is_some();
        if !live && !input.decision_id.is_empty() {
            check_id("decision_id", &input.decision_id)?;
            crate::spend::tags::check(&input.tags).map_err(|e| invalid("tags", e.0))?;
            if input.shadow {
                return Err(EngineError::FailedPrecondition(format!(
                    "decision_id {:?} is unknown or expired; a shadow call is reported while its \
                     decision accepts feedback ({} s), and its reservation is released at expiry",
                    input.decision_id, self.config.limits.pending_ttl_secs
                )));
            }
            // Bury what expired since the last sweep, so its tombstone is found.
            self.expire(now_ms);
            if let Some(late) = self.settle_late(input, now_ms)? {
                return Ok(late);
            }
        }
        let r = self.check_feedback(input, now_ms)?;
        self.note_class(&r.class.name);
        self.pending.mark(&input.decision_id);
        self.observe(input, &r, now_ms)?;
        self.account_objective(input, &r, now_ms);
        self.mark_pending(input, &r);
        self.record_sides(
            &input.decision_id,
            &r.model.id,
            r.shadow,
            Side {
                outcome: input.outcome.filter(|_| r.outcome_new),
                latency_ms: r.latency_ms,
                cost_usd: r.cost_usd,
                quality: r.quality.filter(|_| r.quality_new),
            },
        );
        let (alerts, overrun_usd, settled_usd) = self.settle(input, &r, now_ms);
        self.log_feedback(input, &r, now_ms);
        let arm = self.summary(&r.class.name, r.arm_index, now_ms)?;
        let counted = Counted {
            outcome: input.outcome.filter(|_| r.outcome_new),
            latency_ms: r.latency_ms.filter(|_| r.outcome_new),
            cost_usd: r.cost_usd.filter(|_| r.outcome_new),
            quality: r.quality.filter(|_| r.quality_new),
        };
        Ok(FeedbackResult {
            duplicate: !(r.outcome_new || r.quality_new),
            arm,
            alerts,
            counted,
            late: false,
            overrun_usd,
            budget_key: r.budget_key.clone(),
            settled_usd,
        })
    }

    /// Validates every field and resolves the decision, class and model.
    pub(super) fn check_feedback(
        &self,
        input: &FeedbackInput,
        now_ms: u64,
    ) -> Result<Report, EngineError> {
        if input.decision_id.is_empty() {
            return Err(invalid(
                "decision_id",
                "is required: pass the decision_id that Route returned",
            ));
        }
        check_id("decision_id", &input.decision_id)?;
        let ttl = self.config.limits.pending_ttl_secs;
        // Read in place: expanding the compact record into a full decision (its strings) cost a
        // third of a Feedback's engine work.
        let pending = self
            .pending
            .live(&input.decision_id, now_ms)
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "decision_id {:?} is unknown or expired (decisions accept feedback for {ttl} s)",
                    input.decision_id
                ))
            })?;
        let class = self.class(pending.task_class())?.clone();
        let decided = pending.model();
        let model_id: &str = match (pending.shadow_model(), input.shadow) {
            (Some(s), true) if input.model.is_empty() || input.model == s => s,
            (Some(s), true) => {
                return Err(invalid(
                    "model",
                    format!(
                        "the shadow call of decision {:?} is model {:?}, not {}; report it with \
                         that model (or an empty model)",
                        input.decision_id,
                        s,
                        echo(&input.model)
                    ),
                ))
            }
            (None, true) => {
                return Err(invalid(
                    "shadow",
                    format!(
                        "decision {:?} issued no shadow call (RouteResponse.shadow was unset); \
                         report its own model with shadow = false",
                        input.decision_id
                    ),
                ))
            }
            _ if input.model.is_empty() => decided,
            _ => &input.model,
        };
        // Only the chosen model, one of its listed fallbacks or its shadow (reported as such) can
        // have been called for this decision; anything else would charge spend and credit an
        // arm the decision never offered.
        let shadow_offered = pending.shadow_model().filter(|_| input.shadow);
        let offered = pending.offered().chain(shadow_offered);
        let arm_index = match offered
            .clone()
            .any(|m| m == model_id)
            .then(|| class.models.iter().position(|m| m == model_id))
            .flatten()
        {
            Some(i) => i,
            None => {
                return Err(invalid(
                    "model",
                    format!(
                        "model {} was not offered by decision {:?}; report the model actually \
                         called, the chosen one or a listed fallback: {}",
                        echo(model_id),
                        input.decision_id,
                        offered.collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
        };
        let model = self
            .config
            .models
            .get(model_id)
            .ok_or_else(|| invalid("model", format!("model {model_id:?} is not configured")))?
            .clone();

        if input.outcome.is_none() && input.quality.is_none() {
            return Err(invalid(
                "outcome",
                "a Feedback must carry an outcome (SUCCESS, ERROR, TIMEOUT, RATE_LIMITED), a \
                 quality score, or both",
            ));
        }
        let latency_ms = input
            .latency_ms
            .map(|v| latency("latency_ms", v))
            .transpose()?;
        input.ttft_ms.map(|v| latency("ttft_ms", v)).transpose()?;
        let Reported {
            cost,
            input_tokens,
            output_tokens,
        } = reported(input, self.config.limits.max_cost_usd_per_call)?;
        let quality = match input.quality {
            Some(q) if q.is_finite() && (0.0..=1.0).contains(&q) => Some(q),
            Some(q) => {
                return Err(invalid(
                    "quality",
                    format!("must be a score in [0, 1], got {q}"),
                ))
            }
            None => None,
        };
        if let (Some(o), Some(_)) = (input.outcome, quality) {
            if !o.is_success() {
                return Err(invalid(
                    "quality",
                    format!(
                        "a quality score rates a successful answer, but outcome is {}; send the \
                         outcome alone",
                        o.as_str().to_uppercase()
                    ),
                ));
            }
        }
        let listed = |models: &[Arc<str>]| models.iter().any(|m| **m == *model_id);
        let shadow_side = pending.sides().shadow;
        let failed = if input.shadow {
            shadow_side.outcome.is_some_and(|o| !o.is_success())
        } else {
            listed(pending.failed())
        };
        let (outcome_seen, quality_seen) = if input.shadow {
            (shadow_side.outcome.is_some(), shadow_side.quality.is_some())
        } else {
            (listed(pending.outcomes()), listed(pending.qualities()))
        };
        if quality.is_some() && input.outcome.is_none() && failed {
            return Err(EngineError::FailedPrecondition(format!(
                "model {model_id:?} failed on decision {:?}; a quality score rates a successful \
                 answer",
                input.decision_id
            )));
        }
        // Cost: as reported, else from the price table when tokens are known.
        let cost_usd = cost.or_else(|| {
            (input_tokens.is_some() || output_tokens.is_some())
                .then(|| model.cost_usd(input_tokens.unwrap_or(0), output_tokens.unwrap_or(0)))
        });
        let tags = crate::spend::tags::merged(pending.tags(), &input.tags)
            .map_err(|e| invalid("tags", e.0))?;
        Ok(Report {
            tags,
            outcome_new: input.outcome.is_some() && !outcome_seen,
            quality_new: quality.is_some() && !quality_seen,
            decided_tokens: pending.tokens(),
            budget_key: pending.budget_key().map(str::to_string),
            // A shadow outcome never counts toward the class's achieved quality.
            quality_target: pending
                .quality_target()
                .filter(|_| model_id == decided && !input.shadow),
            shadow: input.shadow,
            class,
            model,
            arm_index,
            latency_ms,
            input_tokens,
            output_tokens,
            cost_usd,
            quality,
        })
    }

    /// Feeds what is new to the arm's posteriors and the model's breaker.
    fn observe(
        &mut self,
        input: &FeedbackInput,
        r: &Report,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let (dec_in, dec_out) = r.decided_tokens;
        let scale = cost_scale(
            &r.model,
            &r.class,
            r.input_tokens.unwrap_or(dec_in),
            r.output_tokens.unwrap_or(dec_out),
        );
        let scoring = class_scoring(&self.config, &r.class, None);
        let half_life = self.config.policy.half_life_secs;
        let Some(state) = self.classes.get_mut(&r.class.name) else {
            return Err(EngineError::NotFound(format!(
                "task_class {:?} has no learned state",
                r.class.name
            )));
        };
        let arm = &mut state.arms[r.arm_index];
        arm.decay_to(now_ms, half_life);
        let soft_factor = self.config.health.soft_failure_latency_factor;
        let call = input.outcome.map(|o| match o {
            Outcome::Success => {
                let slow = soft_factor > 0.0
                    && arm.latency.n >= 5.0
                    && r.latency_ms
                        .is_some_and(|l| l > soft_factor * arm.latency.predictive_p95_exp());
                if slow {
                    CallOutcome::SoftFailure
                } else {
                    CallOutcome::Success
                }
            }
            Outcome::Error => CallOutcome::Error,
            Outcome::Timeout => CallOutcome::Timeout,
            Outcome::RateLimited => CallOutcome::RateLimited,
        });
        if let (true, Some(outcome)) = (r.outcome_new, input.outcome) {
            let obs = Observation {
                outcome,
                latency_ms: r.latency_ms,
                output_tokens: r.output_tokens,
                cost_usd: r.cost_usd,
                cost_usd_typical: r.cost_usd.map(|c| c / scale),
                quality: r.quality,
            };
            arm.observe_outcome(&obs, &scoring, now_ms);
        }
        if let (true, Some(q)) = (r.quality_new, r.quality) {
            arm.observe_quality(q, now_ms);
        }
        if let (true, Some(call)) = (r.outcome_new, call) {
            let cfg = &self.config.breaker;
            let t = self
                .breakers
                .get_mut(&r.model.id)
                .and_then(|b| b.record(call, now_ms, cfg));
            if let Some(t) = t {
                self.on_transition(&r.model.id, t);
            }
        }
        Ok(())
    }

    /// Counts the decided model's realised quality (0 for a failure) in the accounting of the
    /// target it was decided under.
    fn account_objective(&mut self, input: &FeedbackInput, r: &Report, now_ms: u64) {
        let Some(t) = r.quality_target else {
            return;
        };
        let quality = match (r.outcome_new, input.outcome, r.quality_new, r.quality) {
            (true, Some(o), _, _) if !o.is_success() => Some(0.0),
            (_, _, true, Some(q)) => Some(q),
            _ => None,
        };
        if let Some(q) = quality {
            if let Some(st) = self
                .objectives
                .get_mut(&r.class.name)
                .and_then(|m| m.get_mut(&target_key(t)))
            {
                st.on_feedback(q, now_ms);
            }
        }
    }

    /// Notes on the pending decision which models' outcome, failure and quality were reported.
    fn mark_pending(&mut self, input: &FeedbackInput, r: &Report) {
        if r.shadow {
            return; // kept in the pending record's sides (`record_sides`)
        }
        self.pending.change(&input.decision_id, |p, names| {
            p.set_tags(&r.tags);
            if r.outcome_new {
                let failed = input.outcome.is_some_and(|o| !o.is_success());
                p.mark_outcome(&r.model.id, failed, names);
            }
            if r.quality_new {
                p.mark_quality(&r.model.id, names);
            }
        });
    }

    /// Budget hook: the first outcome of each model settles its spend, in its budget's ledger and
    /// in the spend rollup (the amount the ledger recorded; without a budget, the same rule).
    fn settle(
        &mut self,
        input: &FeedbackInput,
        r: &Report,
        now_ms: u64,
    ) -> (Vec<BudgetAlert>, f64, Option<f64>) {
        let (Some(outcome), true) = (input.outcome, r.outcome_new) else {
            return (Vec::new(), 0.0, None);
        };
        let estimate = if outcome == Outcome::RateLimited {
            0.0 // a rate-limited call is refused before any tokens are billed
        } else {
            r.model.cost_usd(r.decided_tokens.0, r.decided_tokens.1)
        };
        let (alerts, overrun, recorded) = match &r.budget_key {
            Some(key) => {
                let id = if r.shadow {
                    shadow_reservation_id(&input.decision_id)
                } else {
                    input.decision_id.clone()
                };
                self.settle_budget(key, &id, r.cost_usd, estimate, now_ms)
            }
            None => (Vec::new(), 0.0, None),
        };
        self.account_spend(
            spending::SpendOf {
                model: &r.model.id,
                task_class: &r.class.name,
                budget_key: r.budget_key.as_deref(),
                tags: &r.tags,
                usd: recorded.unwrap_or_else(|| r.cost_usd.unwrap_or(estimate)),
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
            },
            now_ms,
        );
        (alerts, overrun, recorded)
    }

    /// Logs the new outcome and quality score.
    fn log_feedback(&mut self, input: &FeedbackInput, r: &Report, now_ms: u64) {
        if let (true, Some(outcome)) = (r.outcome_new, input.outcome) {
            self.log(|| {
                Logged::Event(Event::Outcome(OutcomeRecord {
                    decision_id: input.decision_id.clone(),
                    t_ms: now_ms,
                    model: r.model.id.clone(),
                    outcome,
                    latency_ms: input.latency_ms,
                    cost_usd: input.cost_usd,
                    charged_usd: r.cost_usd,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    shadow: r.shadow,
                }))
            });
        }
        if let (true, Some(quality)) = (r.quality_new, r.quality) {
            self.log(|| {
                Logged::Event(Event::Quality(QualityRecord {
                    decision_id: input.decision_id.clone(),
                    t_ms: now_ms,
                    model: r.model.id.clone(),
                    quality,
                    shadow: r.shadow,
                }))
            });
        }
    }
}
