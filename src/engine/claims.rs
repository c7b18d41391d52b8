//! The engine's side of claiming a Feedback in cluster mode (`crate::cluster::claims`).
//!
//! The same Feedback may reach two replicas at once (a client retrying on another replica, a
//! load balancer duplicating). Each replica has its own copy of the pending decision, so both
//! would see the outcome as new and learn from it. Before applying a Feedback, a replica lists
//! the facts it would report for the first time ([`Engine::feedback_facts`]: the outcome or the
//! quality of one model, or of the shadow call) and claims them in Redis; the facts another
//! replica claimed first are marked on the local pending decision as already reported
//! ([`Engine::mark_claimed`]), so the engine answers them as it answers a repeated Feedback on one
//! node: a duplicate, not applied again. Pure: no I/O, no clock.

use crate::policy::Outcome;

use super::*;

/// One fact a Feedback reports for the first time, as claimed in Redis: `field` names it
/// (`o|MODEL`, `q|MODEL`, and `so|MODEL` / `sq|MODEL` for the shadow call), `value` is what was
/// reported (the outcome, or the quality score), so a replica that loses the claim can mark the
/// decision as the winner did.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub field: String,
    pub value: String,
}

fn outcome_name(o: Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn outcome_of(s: &str) -> Option<Outcome> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

impl Engine {
    /// The facts `input` would report for the first time on this replica's copy of its
    /// decision; empty when the Feedback is invalid or names no live decision (the engine then
    /// answers it as usual, and nothing was claimed).
    pub fn feedback_facts(&self, input: &FeedbackInput, now_ms: u64) -> Vec<Fact> {
        let Ok(r) = self.check_feedback(input, now_ms) else {
            return Vec::new();
        };
        let side = if r.shadow { "s" } else { "" };
        let mut out = Vec::new();
        if let (true, Some(o)) = (r.outcome_new, input.outcome) {
            out.push(Fact {
                field: format!("{side}o|{}", r.model.id),
                value: outcome_name(o),
            });
        }
        if let (true, Some(q)) = (r.quality_new, r.quality) {
            out.push(Fact {
                field: format!("{side}q|{}", r.model.id),
                value: format!("{q:.17e}"),
            });
        }
        out
    }

    /// Marks facts another replica claimed first as already reported on the pending decision
    /// `decision_id` (a no-op for a decision not pending here).
    pub fn mark_claimed(&mut self, decision_id: &str, taken: &[Fact]) {
        self.pending.change_full(decision_id, |p| {
            for f in taken {
                let Some((kind, model)) = f.field.split_once('|') else {
                    continue;
                };
                let model = model.to_string();
                match kind {
                    "o" => {
                        if !p.outcomes.contains(&model) {
                            p.outcomes.push(model.clone());
                        }
                        let failed = outcome_of(&f.value).is_some_and(|o| !o.is_success());
                        if failed && !p.failed.contains(&model) {
                            p.failed.push(model);
                        }
                    }
                    "q" if !p.qualities.contains(&model) => p.qualities.push(model),
                    "so" if p.sides.shadow.outcome.is_none() => {
                        p.sides.shadow.outcome = outcome_of(&f.value);
                    }
                    "sq" if p.sides.shadow.quality.is_none() => {
                        p.sides.shadow.quality = f.value.parse::<f64>().ok();
                    }
                    _ => {}
                }
            }
        });
    }

    /// The checks a Feedback can pass without its decision (cluster mode, Redis unreachable: the
    /// decision may have been made on another replica). A Feedback that fails them is refused
    /// now rather than accepted into the outbox and dropped later.
    pub fn check_deferrable(&self, input: &FeedbackInput) -> Result<(), EngineError> {
        if input.decision_id.is_empty() {
            return Err(invalid(
                "decision_id",
                "is required: pass the decision_id that Route returned",
            ));
        }
        check_id("decision_id", &input.decision_id)?;
        crate::spend::tags::check(&input.tags).map_err(|e| invalid("tags", e.0))?;
        if input.outcome.is_none() && input.quality.is_none() {
            return Err(invalid(
                "outcome",
                "a Feedback must carry an outcome (SUCCESS, ERROR, TIMEOUT, RATE_LIMITED), a \
                 quality score, or both",
            ));
        }
        match input.quality {
            Some(q) if !(q.is_finite() && (0.0..=1.0).contains(&q)) => Err(invalid(
                "quality",
                format!("must be a score in [0, 1], got {q}"),
            )),
            Some(_) if input.outcome.is_some_and(|o| !o.is_success()) => Err(invalid(
                "quality",
                "a quality score rates a successful answer; send the outcome alone",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip() {
        for o in [
            Outcome::Success,
            Outcome::Error,
            Outcome::Timeout,
            Outcome::RateLimited,
        ] {
            assert_eq!(outcome_of(&outcome_name(o)), Some(o));
        }
        assert_eq!(outcome_of("nonsense"), None);
    }
}
