//! Proto <-> engine types at the transport edge, and the one place engine errors become statuses.

use tonic::{Code, Status};

use super::security::ReloadError;
use crate::auth::AuthError;
use crate::breaker::BreakerState;
use crate::budget::{BudgetState, OnCap, Period};
use crate::engine::PairedSummary;
use crate::engine::{
    ArmSummary, BudgetSummary, ChatMessage, Decision, EngineError, FeedbackInput, HealthInput,
    HealthSignal, ModelRef, ObjectiveSummary, RouteInput,
};
use crate::policy::{Outcome, Weights};
use crate::proto;

/// Maps an engine error to its gRPC status; the message is the engine's, which names the field.
pub fn status(e: EngineError) -> Status {
    let code = match &e {
        EngineError::InvalidArgument { .. } => Code::InvalidArgument,
        EngineError::NotFound(_) => Code::NotFound,
        EngineError::FailedPrecondition(_) => Code::FailedPrecondition,
        EngineError::ResourceExhausted(_) => Code::ResourceExhausted,
        EngineError::Unavailable(_) => Code::Unavailable,
    };
    // Engine messages echo input through `validation::echo`; this cut is the last guard, so a
    // grpc-message stays far below any client's metadata limit.
    let mut message = e.to_string();
    if let Some((cut, _)) = message.char_indices().nth(MAX_STATUS_CHARS) {
        message.truncate(cut);
        message.push_str("...");
    }
    Status::new(code, message)
}

/// Maps an auth refusal to its gRPC status.
pub fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Unauthenticated(m) => Status::unauthenticated(m),
        AuthError::PermissionDenied(m) => Status::permission_denied(m),
    }
}

/// Maps a refused reload to its gRPC status.
pub fn reload_status(e: ReloadError) -> Status {
    let code = match &e {
        ReloadError::Invalid(_) | ReloadError::Tls(_) => Code::InvalidArgument,
        ReloadError::RestartNeeded(_) => Code::FailedPrecondition,
    };
    Status::new(code, e.to_string())
}

/// Longest status message sent, in characters.
pub const MAX_STATUS_CHARS: usize = 2000;

impl From<proto::RouteRequest> for RouteInput {
    fn from(r: proto::RouteRequest) -> Self {
        RouteInput {
            task_class: r.task_class,
            request_id: r.request_id,
            candidates: r.candidates,
            max_latency_ms: r.max_latency_ms,
            max_cost_usd: r.max_cost_usd,
            input_tokens: r.input_tokens,
            max_output_tokens: r.max_output_tokens,
            budget_key: r.budget_key,
            weights: r.weights.map(|w| Weights {
                quality: w.quality,
                cost: w.cost,
                latency: w.latency,
            }),
            quality_target: r.quality_target,
            value_usd_per_quality: r.value_usd_per_quality,
            value_usd_per_second: r.value_usd_per_second,
            prompt: r.prompt,
            messages: r
                .messages
                .into_iter()
                .map(|m| ChatMessage {
                    role: m.role,
                    content: m.content,
                })
                .collect(),
            prompt_tokens: None,
            allowed_classes: None,
            classified_by: None,
            tags: r.tags.into_iter().collect(),
            embedding: r.embedding,
        }
    }
}

impl TryFrom<proto::FeedbackRequest> for FeedbackInput {
    type Error = Status;

    fn try_from(r: proto::FeedbackRequest) -> Result<Self, Status> {
        let outcome = match proto::Outcome::try_from(r.outcome) {
            Ok(proto::Outcome::Unspecified) => None,
            Ok(proto::Outcome::Success) => Some(Outcome::Success),
            Ok(proto::Outcome::Error) => Some(Outcome::Error),
            Ok(proto::Outcome::Timeout) => Some(Outcome::Timeout),
            Ok(proto::Outcome::RateLimited) => Some(Outcome::RateLimited),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "outcome: unknown value {}; expected SUCCESS, ERROR, TIMEOUT or RATE_LIMITED",
                    r.outcome
                )))
            }
        };
        Ok(FeedbackInput {
            decision_id: r.decision_id,
            model: r.model,
            outcome,
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost_usd: r.cost_usd,
            quality: r.quality,
            tags: r.tags.into_iter().collect(),
            shadow: r.shadow,
        })
    }
}

fn model_ref(m: ModelRef) -> proto::ModelRef {
    proto::ModelRef {
        model: m.model,
        provider: m.provider,
    }
}

impl From<Decision> for proto::RouteResponse {
    fn from(d: Decision) -> Self {
        // A cache hit names no model to call: the one that produced the answer is in `cache_hit`.
        let (model, provider) = match &d.cache_hit {
            Some(_) => (String::new(), String::new()),
            None => (d.model, d.provider),
        };
        proto::RouteResponse {
            cache_hit: d.cache_hit.map(|h| proto::CacheHit {
                response: h.response.to_string(),
                model: h.model,
                provider: h.provider,
                age_ms: to_i64(h.age_ms),
                source_decision_id: h.source_decision_id,
                similarity: h.similarity,
                saved_cost_usd: h.saved_cost_usd,
                saved_latency_ms: h.saved_latency_ms,
            }),
            decision_id: d.id,
            model,
            provider,
            fallbacks: d.fallbacks.into_iter().map(model_ref).collect(),
            propensity: d.propensity,
            expected: Some(proto::Expected {
                cost_usd: d.expected.cost_usd,
                latency_ms: d.expected.latency_ms,
                quality: d.expected.quality,
                success_rate: d.expected.success_rate,
                latency_p95_ms: d.expected.latency_p95_ms,
            }),
            reason: d.reason.as_str().to_string(),
            policy: d.policy,
            task_class: d.task_class,
            replayed: d.replayed,
            expires_at_unix_ms: to_i64(d.expires_ms),
            budget_key: d.budget_key.unwrap_or_default(),
            input_tokens: to_i64(d.input_tokens),
            max_output_tokens: d.max_output_tokens.map_or(0, to_i64),
            classified_by: d.classified_by.unwrap_or_default(),
            shadow: d.shadow.map(model_ref),
            experiment_group: d
                .experiment_group
                .map(|g| g.as_str().to_string())
                .unwrap_or_default(),
        }
    }
}

impl From<PairedSummary> for proto::PairedComparison {
    fn from(p: PairedSummary) -> Self {
        proto::PairedComparison {
            task_class: p.task_class,
            model: p.model,
            shadow_model: p.shadow_model,
            quality_diff: Some(p.stats.quality.interval().into()),
            cost_diff_usd: Some(p.stats.cost_usd.interval().into()),
            latency_diff_ms: Some(p.stats.latency_ms.interval().into()),
        }
    }
}

fn to_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl From<ArmSummary> for proto::ArmStats {
    fn from(a: ArmSummary) -> Self {
        let ng = |p: crate::policy::posterior::NormalGammaParams| proto::NormalGammaParams {
            mu: p.mu,
            kappa: p.kappa,
            alpha: p.alpha,
            beta: p.beta,
        };
        let beta = |b: crate::engine::BetaSummary| proto::BetaParams {
            alpha: b.alpha,
            beta: b.beta,
            mean: b.mean,
        };
        proto::ArmStats {
            task_class: a.task_class,
            model: a.model,
            provider: a.provider,
            pulls: a.pulls,
            decayed_pulls: a.decayed_pulls,
            successes: a.successes,
            failures: a.failures,
            success_posterior: Some(beta(a.success)),
            quality_posterior: Some(beta(a.quality)),
            latency_posterior: Some(ng(a.latency)),
            cost_posterior: Some(ng(a.cost)),
            success_rate_mean: a.success.mean,
            quality_mean: a.quality.mean,
            latency_mean_ms: a.latency_mean_ms,
            latency_p50_ms: a.latency_p50_ms,
            latency_p95_ms: a.latency_p95_ms,
            cost_mean_usd: a.cost_mean_usd,
            traffic_share: a.traffic_share,
            // Cluster fields are filled by the handler (the engine does not know the cluster).
            served_by: String::new(),
            cluster_wide: false,
            cluster_synced_unix_ms: 0,
            live_replicas: 0,
            breaker_state: match a.breaker.state {
                BreakerState::Closed => proto::BreakerState::Closed,
                BreakerState::Open => proto::BreakerState::Open,
                BreakerState::HalfOpen => proto::BreakerState::HalfOpen,
            } as i32,
            breaker_until_unix_ms: a.breaker.open_until_ms.map(to_i64).unwrap_or(0),
            breaker_since_unix_ms: to_i64(a.breaker.since_ms),
            recent_failure_rate: a.breaker.recent_failure_rate,
            degraded: a.breaker.degraded,
            last_feedback_unix_ms: to_i64(a.last_feedback_ms),
            quality_reports: a.quality_reports,
            failure_cost_mean_usd: a.failure_cost_mean_usd,
            zero_cost_share: a.zero_cost_share,
        }
    }
}

impl From<ObjectiveSummary> for proto::ClassObjective {
    fn from(o: ObjectiveSummary) -> Self {
        proto::ClassObjective {
            task_class: o.task_class,
            objective: "min_cost".to_string(),
            quality_target: o.quality_target,
            class_target: o.class_target,
            achieved_share: o.achieved_share.unwrap_or(0.0),
            realised_quality: o.realised_quality.unwrap_or(0.0),
            usd_per_quality: o.usd_per_quality.unwrap_or(0.0),
            decisions: o.decisions,
        }
    }
}

impl TryFrom<proto::ReportHealthRequest> for HealthInput {
    type Error = Status;

    fn try_from(r: proto::ReportHealthRequest) -> Result<Self, Status> {
        let state = match proto::HealthState::try_from(r.state) {
            Ok(proto::HealthState::Unspecified) => None,
            Ok(proto::HealthState::Healthy) => Some(HealthSignal::Healthy),
            Ok(proto::HealthState::Degraded) => Some(HealthSignal::Degraded),
            Ok(proto::HealthState::Down) => Some(HealthSignal::Down),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "state: unknown value {}; expected HEALTHY, DEGRADED or DOWN",
                    r.state
                )))
            }
        };
        Ok(HealthInput {
            model: r.model,
            provider: r.provider,
            state,
            ttl_secs: r.ttl_seconds,
            reason: r.reason,
        })
    }
}

impl From<BudgetSummary> for proto::Budget {
    fn from(b: BudgetSummary) -> Self {
        let state = match b.state {
            BudgetState::Ok => proto::BudgetState::BudgetOk,
            BudgetState::Pacing => proto::BudgetState::BudgetPacing,
            BudgetState::Exhausted => proto::BudgetState::BudgetExhausted,
        };
        proto::Budget {
            budget_key: b.budget_key,
            period: match b.period {
                Period::Daily => "daily",
                Period::Weekly => "weekly",
                Period::Monthly => "monthly",
            }
            .to_string(),
            limit_usd: b.limit_usd,
            spent_usd: b.spent_usd,
            reserved_usd: b.reserved_usd,
            period_start_unix_ms: to_i64(b.period_start_ms),
            period_end_unix_ms: to_i64(b.period_end_ms),
            pacing_multiplier: b.pacing_multiplier,
            state: state as i32,
            on_cap: match b.on_cap {
                OnCap::Cheapest => "cheapest",
                OnCap::Reject => "reject",
            }
            .to_string(),
            previous_period_spent_usd: b.previous_period_spent_usd,
            time_zone: b.time_zone,
            alert_thresholds_crossed: b.alert_thresholds_crossed,
            alert_thresholds: b.alert_thresholds,
            // Cluster fields are filled by the handler.
            cluster_shared: false,
            fallback: false,
            fallback_allowance_usd: 0.0,
            fallback_spent_usd: 0.0,
            served_by: String::new(),
        }
    }
}

impl From<crate::cache::CacheStats> for proto::CacheStats {
    fn from(s: crate::cache::CacheStats) -> Self {
        proto::CacheStats {
            hit_rate: s.hit_rate(),
            task_class: s.task_class,
            mode: s.mode.to_string(),
            entries: s.entries,
            max_entries: s.max_entries,
            lookups: s.lookups,
            hits: s.hits,
            saved_cost_usd: s.saved_cost_usd,
            saved_latency_ms: s.saved_latency_ms,
            stored: s.stored,
            evicted: s.evicted,
            expired: s.expired,
            invalidated: s.invalidated,
            bytes: s.bytes,
            restored: s.restored,
            shared_hits: s.shared_hits,
            adopted: s.adopted,
        }
    }
}
