//! Decisions the response cache answered: no model is called, so such a decision has propensity
//! 1, reserves and charges no budget, counts no pull and adds no evidence to any arm, and stays
//! out of the objectives' accounting (and of off-policy evaluation). It is still a decision with
//! an id, pending like any other, so the caller can report satisfaction with the stored answer.

use rand::Rng;

use crate::cache::Hit;

use super::*;

/// What a Feedback on a cache hit did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HitFeedback {
    /// Everything reported was already counted.
    pub duplicate: bool,
    /// A satisfaction score reported for the first time.
    pub quality: Option<f64>,
}

impl Engine {
    /// Records a decision answered by `hit` (the request is validated as Route would; a repeated
    /// request_id replays its pending decision instead).
    pub fn route_hit<R: Rng + ?Sized>(
        &mut self,
        input: &RouteInput,
        hit: Hit,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Decision, EngineError> {
        let class = self.class(&input.task_class)?.clone();
        check_id("request_id", &input.request_id)?;
        if let Some(replay) = self.replay(input, &class.name, now_ms)? {
            return Ok(replay);
        }
        // A request Route would refuse is refused on a hit too.
        self.request_scoring(&class, input)?;
        tokens("input_tokens", input.input_tokens)?;
        tokens("max_output_tokens", input.max_output_tokens)?;
        self.candidate_indices(&class, &input.candidates)?;
        budget_for(&self.config, &class, &input.budget_key)?;
        route::request_money(input)?;
        let ttl_ms = (self.config.limits.pending_ttl_secs * 1000.0) as u64;
        let decision = Decision {
            id: format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>()),
            task_class: class.name.clone(),
            model: hit.model.clone(),
            provider: hit.provider.clone(),
            fallbacks: Vec::new(),
            propensity: 1.0,
            expected: Expected {
                cost_usd: 0.0,
                latency_ms: 0.0,
                quality: 0.0,
                success_rate: 1.0,
                latency_p95_ms: 0.0,
            },
            reason: Reason::CacheHit,
            policy: "cache".to_string(),
            eligible: Vec::new(),
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
            budget_key: None,
            input_tokens: 0,
            output_tokens: 0,
            replayed: false,
            quality_target: None,
            shadow: None,
            experiment_group: None,
            cache_hit: Some(hit),
            max_output_tokens: None,
            classified_by: input.classified_by.clone(),
            tags: input.tags.clone(),
        };
        let evicted = self.pending.insert(
            PendingDecision {
                decision: decision.clone(),
                request_id: (!input.request_id.is_empty()).then(|| input.request_id.clone()),
                outcomes: Vec::new(),
                failed: Vec::new(),
                qualities: Vec::new(),
                tenant: None,
                sides: Default::default(),
            },
            self.config.limits.max_pending,
        );
        self.bury(&evicted, now_ms);
        Ok(decision)
    }

    /// Feedback on a cache hit (satisfaction with the stored answer): `None` when the decision is
    /// not a live cache hit. Checks the report like any Feedback and notes it on the decision;
    /// no arm, breaker, budget or objective sees it.
    pub fn hit_feedback(
        &mut self,
        input: &FeedbackInput,
        now_ms: u64,
    ) -> Option<Result<HitFeedback, EngineError>> {
        let pending = self
            .pending
            .live(&input.decision_id, now_ms)
            .filter(|p| p.reason() == Reason::CacheHit)?;
        let model = pending.model();
        if !input.model.is_empty() && input.model != *model {
            return Some(Err(invalid(
                "model",
                format!(
                    "decision {:?} was answered from the cache (stored from model {model:?}); \
                     omit model or send {model:?}",
                    input.decision_id
                ),
            )));
        }
        if input.outcome.is_none() && input.quality.is_none() {
            return Some(Err(invalid(
                "outcome",
                "a Feedback must carry an outcome, a quality score, or both",
            )));
        }
        if let Some(q) = input.quality {
            if !(q.is_finite() && (0.0..=1.0).contains(&q)) {
                return Some(Err(invalid(
                    "quality",
                    format!("must be a score in [0, 1], got {q}"),
                )));
            }
        }
        let outcome_new =
            input.outcome.is_some() && !pending.outcomes().iter().any(|m| **m == *model);
        let quality_new =
            input.quality.is_some() && !pending.qualities().iter().any(|m| **m == *model);
        let model = model.to_string();
        self.pending.change(&input.decision_id, |p, names| {
            if outcome_new {
                p.mark_outcome(&model, false, names);
            }
            if quality_new {
                p.mark_quality(&model, names);
            }
        });
        Some(Ok(HitFeedback {
            duplicate: !(outcome_new || quality_new),
            quality: input.quality.filter(|_| quality_new),
        }))
    }
}
