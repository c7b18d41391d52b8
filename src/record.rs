//! The one decision record and the one event type, shared by everything that logs traffic: the
//! engine hands out [`Event`]s (through [`crate::engine::Changes`]), the store persists them, the
//! trace export folds them into [`DecisionRecord`]s (the logged-traffic format documented in
//! simulations/README.md), and the simulator writes the same records for its logged traffic.
//!
//! Depends on neither `sim` nor `server`. Later work adds fields here rather than new record types:
//! fields past `quality` are optional, written only when known, so a record without them reads
//! and writes exactly as the documented format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::{Decision, Reason};
use crate::policy::Outcome;

/// One decision and, once feedback arrived, what happened: a line of `switchyard trace export`
/// and of the simulator's logged traffic; with no outcome yet, the decision entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    pub decision_id: String,
    /// Decision time, Unix milliseconds (or milliseconds from any fixed origin).
    pub t_ms: u64,
    pub task_class: String,
    /// The policy that decided (`Decision::policy`).
    pub policy: String,
    /// The models the policy chose among.
    pub eligible: Vec<String>,
    pub model: String,
    /// Probability that the logging policy picked `model` among `eligible` in its state then.
    pub propensity: f64,
    pub reason: Reason,
    /// Outcome of the call, `null` when no feedback arrived.
    pub outcome: Option<Outcome>,
    pub latency_ms: Option<f64>,
    /// Cost as the caller reported it.
    pub cost_usd: Option<f64>,
    pub quality: Option<f64>,
    /// The budget the decision was charged to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_key: Option<String>,
    /// What the engine counted as the call's cost: as reported, else from the price table at the
    /// reported tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged_usd: Option<f64>,
    /// Cost attributed to a failed call (not yet computed by the engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_cost_usd: Option<f64>,
    /// Token counts the feedback reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Experiment arm the request was assigned to (not yet assigned by the engine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_group: Option<String>,
    /// A shadow decision: logged for evaluation, not served.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// Free-form labels (small).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The shadow call the decision issued (shadow traffic) and what it reported: evidence for
    /// its own arm, kept apart from the decision's outcome above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_call: Option<ShadowRecord>,
}

/// A decision's shadow call: the model run off the user's path on the same request, and its
/// outcome, latency, charged cost and quality once reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowRecord {
    pub model: String,
    pub outcome: Option<Outcome>,
    pub latency_ms: Option<f64>,
    pub charged_usd: Option<f64>,
    pub quality: Option<f64>,
}

impl DecisionRecord {
    /// The record of a new decision, no outcome yet.
    pub fn of(d: &Decision) -> DecisionRecord {
        DecisionRecord {
            decision_id: d.id.clone(),
            t_ms: d.created_ms,
            task_class: d.task_class.clone(),
            policy: d.policy.clone(),
            eligible: d.eligible.clone(),
            model: d.model.clone(),
            propensity: d.propensity,
            reason: d.reason,
            outcome: None,
            latency_ms: None,
            cost_usd: None,
            quality: None,
            budget_key: d.budget_key.clone(),
            charged_usd: None,
            failure_cost_usd: None,
            input_tokens: None,
            output_tokens: None,
            experiment_group: d.experiment_group.map(|g| g.as_str().to_string()),
            shadow: false,
            tags: d.tags.clone(),
            shadow_call: d.shadow.as_ref().map(|m| ShadowRecord {
                model: m.model.clone(),
                outcome: None,
                latency_ms: None,
                charged_usd: None,
                quality: None,
            }),
        }
    }

    /// Folds a model's outcome in when it is the decided model's own: a fallback's outcome says
    /// nothing about the decision's choice, so crediting it would bias off-policy estimates.
    fn apply_outcome(&mut self, o: &OutcomeRecord) {
        if o.shadow {
            if let Some(s) = self.shadow_call.as_mut().filter(|s| s.model == o.model) {
                s.outcome = Some(o.outcome);
                s.latency_ms = o.latency_ms;
                s.charged_usd = o.charged_usd;
            }
        } else if o.model == self.model {
            self.outcome = Some(o.outcome);
            self.latency_ms = o.latency_ms;
            self.cost_usd = o.cost_usd;
            self.charged_usd = o.charged_usd;
            self.input_tokens = o.input_tokens;
            self.output_tokens = o.output_tokens;
        }
    }

    /// Folds a quality score in, the decided model's only, as outcomes.
    fn apply_quality(&mut self, q: &QualityRecord) {
        if q.shadow {
            if let Some(s) = self.shadow_call.as_mut().filter(|s| s.model == q.model) {
                s.quality = Some(q.quality);
            }
        } else if q.model == self.model {
            self.quality = Some(q.quality);
        }
    }
}

/// The first outcome of one model called under a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub decision_id: String,
    pub t_ms: u64,
    pub model: String,
    pub outcome: Outcome,
    pub latency_ms: Option<f64>,
    /// As reported.
    pub cost_usd: Option<f64>,
    /// As counted: reported, else from the price table at the reported tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// The decision's shadow call, not the decision's own outcome.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

/// The first quality score of one model's answer under a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityRecord {
    pub decision_id: String,
    pub t_ms: u64,
    pub model: String,
    pub quality: f64,
    /// The decision's shadow call, not the decision's own answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Boxed: a decision record is several times the size of the other events.
    Decision(Box<DecisionRecord>),
    Outcome(OutcomeRecord),
    Quality(QualityRecord),
}

impl Event {
    /// When it happened (the event log's key).
    pub fn t_ms(&self) -> u64 {
        match self {
            Event::Decision(d) => d.t_ms,
            Event::Outcome(o) => o.t_ms,
            Event::Quality(q) => q.t_ms,
        }
    }
}

/// Folds an event log (in time order) into the logged-traffic records of the decisions made in
/// `[since_ms, until_ms)`; outcomes and qualities of other decisions are ignored.
pub fn fold(events: impl IntoIterator<Item = Event>, until_ms: u64) -> Vec<DecisionRecord> {
    let mut out: Vec<DecisionRecord> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for ev in events {
        match ev {
            Event::Decision(d) => {
                if d.t_ms < until_ms {
                    index.insert(d.decision_id.clone(), out.len());
                    out.push(*d);
                }
            }
            Event::Outcome(o) => {
                if let Some(d) = index.get(&o.decision_id).and_then(|&i| out.get_mut(i)) {
                    d.apply_outcome(&o);
                }
            }
            Event::Quality(q) => {
                if let Some(d) = index.get(&q.decision_id).and_then(|&i| out.get_mut(i)) {
                    d.apply_quality(&q);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"decision_id":"d1","t_ms":5,"task_class":"qa","policy":"thompson","eligible":["a","b"],"model":"a","propensity":0.5,"reason":"sampled","outcome":null,"latency_ms":null,"cost_usd":null,"quality":null}"#;

    #[test]
    fn the_documented_line_round_trips_unchanged() {
        let d: DecisionRecord = serde_json::from_str(LINE).unwrap();
        assert_eq!(d.outcome, None);
        assert_eq!(serde_json::to_string(&d).unwrap(), LINE);
        let ok: DecisionRecord =
            serde_json::from_str(&LINE.replace("\"outcome\":null", "\"outcome\":\"rate_limited\""))
                .unwrap();
        assert_eq!(ok.outcome, Some(Outcome::RateLimited));
        assert!(serde_json::from_str::<DecisionRecord>(&LINE.replace("t_ms", "tms")).is_err());
    }

    #[test]
    fn events_round_trip_and_fold_into_records() {
        let d: DecisionRecord = serde_json::from_str(LINE).unwrap();
        let events = vec![
            Event::Decision(Box::new(d.clone())),
            Event::Outcome(OutcomeRecord {
                decision_id: "d1".into(),
                t_ms: 6,
                model: "b".into(),
                outcome: Outcome::Error,
                latency_ms: Some(3.0),
                cost_usd: None,
                charged_usd: None,
                input_tokens: None,
                output_tokens: None,
                shadow: false,
            }),
            Event::Outcome(OutcomeRecord {
                decision_id: "d1".into(),
                t_ms: 7,
                model: "a".into(),
                outcome: Outcome::Success,
                latency_ms: Some(9.0),
                cost_usd: None,
                charged_usd: Some(0.25),
                input_tokens: Some(10),
                output_tokens: Some(20),
                shadow: false,
            }),
            Event::Quality(QualityRecord {
                decision_id: "d1".into(),
                t_ms: 8,
                model: "a".into(),
                quality: 0.75,
                shadow: false,
            }),
            Event::Quality(QualityRecord {
                decision_id: "other".into(),
                t_ms: 8,
                model: "a".into(),
                quality: 0.1,
                shadow: false,
            }),
        ];
        for e in &events {
            let json = serde_json::to_string(e).unwrap();
            assert_eq!(&serde_json::from_str::<Event>(&json).unwrap(), e, "{json}");
        }
        let folded = fold(events.clone(), u64::MAX);
        assert_eq!(folded.len(), 1);
        let r = &folded[0];
        assert_eq!(
            (r.outcome, r.latency_ms),
            (Some(Outcome::Success), Some(9.0))
        );
        assert_eq!((r.charged_usd, r.output_tokens), (Some(0.25), Some(20)));
        assert_eq!(r.quality, Some(0.75));
        assert!(fold(events, 5).is_empty());
    }
}
