//! Feedback: validate a report, update the arm and breaker, settle the budget.

use std::sync::Arc;

use crate::breaker::CallOutcome;
use crate::policy::{Observation, Outcome};

use super::*;

impl Engine {
    /// Records what happened to a routed request.
    pub fn feedback(
        &mut self,
        input: &FeedbackInput,
        now_ms: u64,
    ) -> Result<FeedbackResult, EngineError> {
        if input.decision_id.is_empty() {
            return Err(invalid(
                "decision_id",
                "is required: pass the decision_id that Route returned",
            ));
        }
        check_id("decision_id", &input.decision_id)?;
        let ttl = self.config.limits.pending_ttl_secs;
        let pending = self
            .pending
            .by_id
            .get(&input.decision_id)
            .filter(|p| p.decision.expires_ms > now_ms)
            .ok_or_else(|| {
                EngineError::NotFound(format!(
                    "decision_id {:?} is unknown or expired (decisions accept feedback for {ttl} s)",
                    input.decision_id
                ))
            })?;
        let class = self.class(&pending.decision.task_class)?.clone();
        self.dirty_classes.insert(class.name.clone());
        self.pending.dirty.insert(input.decision_id.clone());
        let model_id = if input.model.is_empty() {
            pending.decision.model.clone()
        } else {
            input.model.clone()
        };
        let Some(arm_index) = class.models.iter().position(|m| *m == model_id) else {
            return Err(invalid(
                "model",
                format!(
                    "model {model_id:?} is not a model of task_class {:?}; report the model \
                     actually called, one of: {}",
                    class.name,
                    class.models.join(", ")
                ),
            ));
        };
        let model = self
            .config
            .models
            .get(&model_id)
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
            .map(|v| non_negative("latency_ms", v))
            .transpose()?;
        input
            .ttft_ms
            .map(|v| non_negative("ttft_ms", v))
            .transpose()?;
        let in_tokens = input
            .input_tokens
            .map(|v| tokens("input_tokens", v))
            .transpose()?
            .flatten();
        let out_tokens = input
            .output_tokens
            .map(|v| tokens("output_tokens", v))
            .transpose()?
            .flatten();
        let cost = input
            .cost_usd
            .map(|v| non_negative("cost_usd", v))
            .transpose()?;
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
        if quality.is_some() && input.outcome.is_none() && pending.failed.contains(&model_id) {
            return Err(EngineError::FailedPrecondition(format!(
                "model {model_id:?} failed on decision {:?}; a quality score rates a successful \
                 answer",
                input.decision_id
            )));
        }

        let outcome_new = input
            .outcome
            .is_some_and(|_| !pending.outcomes.contains(&model_id));
        let quality_new = quality.is_some() && !pending.qualities.contains(&model_id);
        let (dec_in, dec_out) = (
            pending.decision.input_tokens,
            pending.decision.output_tokens,
        );
        let budget_key = pending.decision.budget_key.clone();

        // Cost: as reported, else from the price table when tokens are known.
        let cost_usd = cost.or_else(|| {
            (in_tokens.is_some() || out_tokens.is_some())
                .then(|| model.cost_usd(in_tokens.unwrap_or(0), out_tokens.unwrap_or(0)))
        });
        let scale = cost_scale(
            &model,
            &class,
            in_tokens.unwrap_or(dec_in),
            out_tokens.unwrap_or(dec_out),
        );

        let scoring = class_scoring(&self.config, &class, None);
        let half_life = self.config.policy.half_life_secs;
        let Some(state) = self.classes.get_mut(&class.name) else {
            return Err(EngineError::NotFound(format!(
                "task_class {:?} has no learned state",
                class.name
            )));
        };
        let arm = &mut state.arms[arm_index];
        arm.decay_to(now_ms, half_life);
        let soft_factor = self.config.health.soft_failure_latency_factor;
        let call = input.outcome.map(|o| match o {
            Outcome::Success => {
                let slow = soft_factor > 0.0
                    && arm.latency.n >= 5.0
                    && latency_ms
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
        if let (true, Some(outcome)) = (outcome_new, input.outcome) {
            let obs = Observation {
                outcome,
                latency_ms,
                output_tokens: out_tokens,
                cost_usd,
                cost_usd_typical: cost_usd.map(|c| c / scale),
                quality,
            };
            arm.observe_outcome(&obs, &scoring, now_ms);
        }
        if let (true, Some(q)) = (quality_new, quality) {
            arm.observe_quality(q, now_ms);
        }
        if let (true, Some(call)) = (outcome_new, call) {
            let cfg = &self.config.breaker;
            let t = self
                .breakers
                .get_mut(&model_id)
                .and_then(|b| b.record(call, now_ms, cfg));
            if let Some(t) = t {
                self.on_transition(&model_id, t);
            }
        }
        if let Some(p) = self.pending.by_id.get_mut(&input.decision_id) {
            let p = Arc::make_mut(p);
            if outcome_new {
                p.outcomes.push(model_id.clone());
                if input.outcome.is_some_and(|o| !o.is_success()) {
                    p.failed.push(model_id.clone());
                }
            }
            if quality_new {
                p.qualities.push(model_id.clone());
            }
        }
        // Budget hook: the first outcome of each model settles its spend.
        let alerts = match (budget_key, input.outcome) {
            (Some(key), Some(outcome)) if outcome_new => {
                let estimate = if outcome == Outcome::RateLimited {
                    0.0 // a rate-limited call is refused before any tokens are billed
                } else {
                    model.cost_usd(dec_in, dec_out)
                };
                self.settle_budget(&key, &input.decision_id, cost_usd, estimate, now_ms)
            }
            _ => Vec::new(),
        };
        let arm = self.summary(&class.name, arm_index, now_ms)?;
        let counted = Counted {
            outcome: input.outcome.filter(|_| outcome_new),
            latency_ms: latency_ms.filter(|_| outcome_new),
            cost_usd: cost_usd.filter(|_| outcome_new),
            quality: quality.filter(|_| quality_new),
        };
        Ok(FeedbackResult {
            duplicate: !(outcome_new || quality_new),
            arm,
            alerts,
            counted,
        })
    }
}
