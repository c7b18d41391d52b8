//! Read models: what one arm has learned, with its breaker, for GetArmStats and Feedback.

use crate::breaker::BreakerState;
use crate::policy::{self};

use super::*;

/// GetArmStats filters; empty = all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArmFilter {
    pub task_class: String,
    pub model: String,
}

/// Beta parameters and mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BetaSummary {
    pub alpha: f64,
    pub beta: f64,
    pub mean: f64,
}

/// What one arm has learned, for GetArmStats and Feedback responses.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmSummary {
    pub task_class: String,
    pub model: String,
    pub provider: String,
    pub pulls: u64,
    pub decayed_pulls: f64,
    pub successes: u64,
    pub failures: u64,
    pub quality_reports: u64,
    pub success: BetaSummary,
    pub quality: BetaSummary,
    pub latency: policy::posterior::NormalGammaParams,
    pub cost: policy::posterior::NormalGammaParams,
    pub latency_mean_ms: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub cost_mean_usd: f64,
    pub traffic_share: f64,
    pub last_feedback_ms: u64,
    pub breaker: BreakerSummary,
    /// Mean cost of a failed call at the class's typical size; share of free successes.
    pub failure_cost_mean_usd: f64,
    pub zero_cost_share: f64,
}

/// One quality target's state under `min_cost`, for GetArmStats and `switchyard stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveSummary {
    pub task_class: String,
    pub quality_target: f64,
    /// The class's own target (else one that requests asked for).
    pub class_target: bool,
    /// Mean expected quality delivered over the best arm's.
    pub achieved_share: Option<f64>,
    /// Mean realised quality score (0 for a failure).
    pub realised_quality: Option<f64>,
    /// The multiplier lambda: USD one unit of quality is worth now.
    pub usd_per_quality: Option<f64>,
    pub decisions: u64,
}

/// A model's breaker as reported in arm statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSummary {
    pub state: BreakerState,
    pub since_ms: u64,
    /// Until when it stays open; `None` when not open.
    pub open_until_ms: Option<u64>,
    pub recent_failure_rate: f64,
    pub degraded: bool,
}

impl Engine {
    /// Arm statistics, filtered by task class and/or model.
    pub fn arm_stats(
        &self,
        filter: &ArmFilter,
        now_ms: u64,
    ) -> Result<Vec<ArmSummary>, EngineError> {
        if !filter.task_class.is_empty() {
            self.class(&filter.task_class)?;
        }
        if !filter.model.is_empty() && !self.config.models.contains_key(&filter.model) {
            return Err(EngineError::NotFound(format!(
                "model {:?} is not configured; configured models: {}",
                filter.model,
                self.config
                    .models
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut out = Vec::new();
        for (name, class) in &self.config.task_classes {
            if !filter.task_class.is_empty() && *name != filter.task_class {
                continue;
            }
            for (i, m) in class.models.iter().enumerate() {
                if filter.model.is_empty() || *m == filter.model {
                    out.push(self.summary(name, i, now_ms)?);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn summary(
        &self,
        class: &str,
        index: usize,
        now_ms: u64,
    ) -> Result<ArmSummary, EngineError> {
        let missing = || EngineError::NotFound(format!("no arm {index} in task_class {class:?}"));
        let state = self.classes.get(class).ok_or_else(missing)?;
        let class_cfg = self.config.task_classes.get(class).ok_or_else(missing)?;
        let arm = state.arms.get(index).ok_or_else(missing)?;
        let model_id = class_cfg.models.get(index).ok_or_else(missing)?;
        let provider = self
            .config
            .models
            .get(model_id)
            .map(|m| m.provider.clone())
            .unwrap_or_default();
        // Decay a copy to now, so statistics read the same as the next decision would see them.
        let mut arm = arm.clone();
        arm.decay_to(now_ms, self.config.policy.half_life_secs);
        let total_share: f64 = state.arms.iter().map(|a| a.share_at(now_ms)).sum();
        let beta = |b: &policy::BetaPosterior| BetaSummary {
            alpha: b.alpha(),
            beta: b.beta(),
            mean: b.mean(),
        };
        Ok(ArmSummary {
            task_class: class.to_string(),
            model: model_id.clone(),
            provider,
            pulls: arm.pulls,
            decayed_pulls: arm.success.evidence(),
            successes: arm.successes,
            failures: arm.failures,
            quality_reports: arm.quality_reports,
            success: beta(&arm.success),
            quality: beta(&arm.quality),
            latency: arm.latency.params(),
            cost: arm.cost.params(),
            latency_mean_ms: arm.latency.mean_exp(),
            // The Student-t predictive is symmetric about mu_n: its median is exactly exp(mu_n).
            latency_p50_ms: arm.latency.mean_mu().exp(),
            latency_p95_ms: arm.latency.predictive_p95_exp(),
            cost_mean_usd: arm.cost.mean_exp(),
            traffic_share: if total_share > 0.0 {
                arm.share_at(now_ms) / total_share
            } else {
                0.0
            },
            last_feedback_ms: arm.last_feedback_ms,
            breaker: self.breaker_summary(model_id, now_ms),
            failure_cost_mean_usd: arm.failure_cost_mean(),
            zero_cost_share: arm.zero_cost_share(),
        })
    }

    /// The `min_cost` states of every class (or of `task_class` when not empty): the class's own
    /// target first (even before its first decision), then targets requests asked for.
    pub fn objective_stats(&self, task_class: &str) -> Vec<ObjectiveSummary> {
        let step = self.config.policy.quality_step;
        let mut out = Vec::new();
        for (name, class) in &self.config.task_classes {
            if !task_class.is_empty() && name != task_class {
                continue;
            }
            let states = self.objectives.get(name);
            let own = class.quality_target().map(target_key);
            let mut keys: Vec<u32> = own.into_iter().collect();
            keys.extend(
                states
                    .into_iter()
                    .flat_map(|t| t.keys().copied())
                    .filter(|k| Some(*k) != own),
            );
            for k in keys {
                let st = states.and_then(|t| t.get(&k));
                out.push(ObjectiveSummary {
                    task_class: name.clone(),
                    quality_target: f64::from(k) / 10_000.0,
                    class_target: Some(k) == own,
                    achieved_share: st.and_then(|s| s.achieved_share()),
                    realised_quality: st.and_then(|s| s.realised_quality()),
                    usd_per_quality: st.and_then(|s| s.lambda(step)),
                    decisions: st.map_or(0, |s| s.decisions),
                });
            }
        }
        out
    }

    fn breaker_summary(&self, model: &str, now_ms: u64) -> BreakerSummary {
        match self.breakers.get(model) {
            Some(b) => BreakerSummary {
                state: b.state(now_ms),
                since_ms: b.since_ms(),
                open_until_ms: b.open_until_ms(now_ms),
                recent_failure_rate: b.recent_failure_rate(now_ms, &self.config.breaker),
                degraded: b.degraded(now_ms),
            },
            None => BreakerSummary {
                state: BreakerState::Closed,
                since_ms: 0,
                open_until_ms: None,
                recent_failure_rate: 0.0,
                degraded: false,
            },
        }
    }
}
