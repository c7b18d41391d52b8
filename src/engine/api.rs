//! The engine's request and answer types (Route, Feedback, ReportHealth), free of any transport.

use serde::{Deserialize, Serialize};

use crate::breaker::Transition;
use crate::policy::{Means, Outcome, Weights};

use super::*;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteInput {
    pub task_class: String,
    pub request_id: String,
    pub candidates: Vec<String>,
    pub max_latency_ms: f64,
    pub max_cost_usd: f64,
    pub input_tokens: i64,
    pub max_output_tokens: i64,
    pub budget_key: String,
    pub weights: Option<Weights>,
    /// Decide under `min_cost` at this target instead of the class's own (in (0, 1]).
    pub quality_target: Option<f64>,
    /// Value the trade-off in money for this request: USD per unit of quality, USD per second.
    pub value_usd_per_quality: Option<f64>,
    pub value_usd_per_second: Option<f64>,
    /// The prompt as plain text (empty when not sent); see [`ChatMessage`] for chat prompts.
    pub prompt: String,
    pub messages: Vec<ChatMessage>,
    /// The prompt's size under every tokenizer, when the caller counted it already (the server
    /// does, before it takes the engine's lock); else Route counts when it needs to.
    pub prompt_tokens: Option<crate::prompt::tokens::PromptTokens>,
    /// The task classes the caller may use (its tenant's), which the classifier keeps to;
    /// `None` = every class.
    pub allowed_classes: Option<std::collections::BTreeSet<String>>,
    /// The classifier rule that chose `task_class`, when the server classified the request
    /// before looking the response cache up ([`Engine::classify`]); never sent by a caller.
    pub classified_by: Option<String>,
    /// Labels for spend reports (bounded: `crate::spend::tags`).
    pub tags: std::collections::BTreeMap<String, String>,
    /// The prompt's embedding for a semantic response cache (empty when not sent).
    pub embedding: Vec<f32>,
}

/// One message of a chat prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A model and its provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub model: String,
    pub provider: String,
}

/// What the router expects of the chosen model for this request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub quality: f64,
    pub success_rate: f64,
    pub latency_p95_ms: f64,
}

impl From<Means> for Expected {
    /// Always finite (bounded inputs keep the means finite; this is the last guard, since a
    /// non-finite estimate is neither a useful answer nor storable in the pending record).
    fn from(m: Means) -> Self {
        let finite = |x: f64| {
            if x.is_finite() {
                x
            } else if x > 0.0 {
                f64::MAX
            } else {
                0.0
            }
        };
        Expected {
            cost_usd: finite(m.cost_usd),
            latency_ms: finite(m.latency_ms),
            quality: finite(m.quality),
            success_rate: finite(m.success),
            latency_p95_ms: finite(m.latency_p95_ms),
        }
    }
}

/// One routing decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub id: String,
    pub task_class: String,
    pub model: String,
    pub provider: String,
    pub fallbacks: Vec<ModelRef>,
    pub propensity: f64,
    pub expected: Expected,
    pub reason: Reason,
    pub policy: String,
    /// The models the policy chose among (for off-policy evaluation of logged traffic).
    pub eligible: Vec<String>,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub budget_key: Option<String>,
    /// Token counts the decision assumed (the request's estimates or the class's typical ones).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// True when answering a repeated request_id.
    pub replayed: bool,
    /// The quality target the decision was made under (`min_cost`), whose accounting its chosen
    /// model's outcome and score enter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_target: Option<f64>,
    /// The output-length limit the caller is to apply (the class's `max_output_tokens`
    /// governance); `None` when the class has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// The classifier rule that chose the task class of a request sent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classified_by: Option<String>,
    /// The request's tags (a Feedback's tags are merged in).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Shadow traffic: the model the caller runs off the user's path on this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ModelRef>,
    /// The A/B experiment group, when the class runs an experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_group: Option<ExperimentGroup>,
    /// The stored response that answered the request (reason `cache_hit`): in memory only, like
    /// the cache (a decision read back after a restart has none).
    #[serde(skip)]
    pub cache_hit: Option<crate::cache::Hit>,
}

/// A Feedback report. `None` means the field was absent. Serializable: cluster mode keeps a
/// Feedback it cannot apply yet in its outbox (`crate::cluster::outbox`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackInput {
    pub decision_id: String,
    pub model: String,
    pub outcome: Option<Outcome>,
    pub latency_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    pub quality: Option<f64>,
    /// Labels merged into the decision's tags (the Feedback's value wins).
    pub tags: std::collections::BTreeMap<String, String>,
    /// Reports the decision's shadow call (its `model` may be empty).
    pub shadow: bool,
}

/// What Feedback did.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackResult {
    /// What this feedback charged to its budget, USD (`None`: nothing), for the cluster's
    /// shared ledger.
    pub settled_usd: Option<f64>,
    /// Everything reported was already counted; nothing changed.
    pub duplicate: bool,
    pub arm: ArmSummary,
    /// Budget alert thresholds this feedback's spend crossed (each fires once per period); the
    /// caller delivers them, the engine does no I/O.
    pub alerts: Vec<BudgetAlert>,
    /// What this feedback added to the arm (for metrics): the outcome, latency and cost of a new
    /// outcome (cost as reported, else from the price table), and a new quality score.
    pub counted: Counted,
    /// The decision had expired or been evicted: its spend was charged from its tombstone (the
    /// arm learns nothing from a late report).
    pub late: bool,
    /// How far this Feedback's spend pushed its budget past the limit (cost beyond the
    /// reservation that the headroom did not cover), USD; 0 in the normal case.
    pub overrun_usd: f64,
    /// The budget the decision was charged to, if any.
    pub budget_key: Option<String>,
}

/// The new observations one Feedback contributed; all `None` for a duplicate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counted {
    pub outcome: Option<Outcome>,
    pub latency_ms: Option<f64>,
    pub cost_usd: Option<f64>,
    pub quality: Option<f64>,
}

/// A breaker state change of one model, for the caller to log or count.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelTransition {
    pub model: String,
    pub transition: Transition,
}

/// An outside health signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthSignal {
    Healthy,
    Degraded,
    Down,
}

/// A ReportHealth request: a model or a whole provider.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthInput {
    pub model: String,
    pub provider: String,
    pub state: Option<HealthSignal>,
    /// 0 = the configured default.
    pub ttl_secs: i64,
    pub reason: String,
}

/// What ReportHealth did.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthResult {
    pub models: Vec<String>,
    pub until_ms: u64,
}
