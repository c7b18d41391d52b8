//! Circuit breakers as the engine sees them: which candidates a request may use, outside health
//! signals, active probes, and the transitions handed to the caller.

use crate::breaker::{Breaker, BreakerState, CallOutcome, Transition};
use crate::config::{AllOpen, TaskClassConfig};

use super::*;

/// Which of a request's candidates the breakers let through.
pub(super) struct Gate {
    /// Indices (into the class's models) the policy may choose among; fallbacks come from these.
    pub closed: Vec<usize>,
    /// A choice the breakers impose: a half-open probe, or the least-bad model when all are open.
    pub forced: Option<(usize, Reason)>,
    /// Indices of requested models whose breaker reports them degraded (their quality is
    /// discounted): noted while the gate holds each breaker, so the policy looks none up again.
    pub degraded: Vec<usize>,
}

impl Gate {
    /// The pool the decision and its fallbacks come from: a forced pick first, then the closed.
    pub fn eligible(&self) -> Vec<usize> {
        let forced = self.forced.map(|f| f.0);
        forced
            .into_iter()
            .chain(self.closed.iter().copied().filter(|&i| Some(i) != forced))
            .collect()
    }
}

impl Engine {
    /// Takes the breaker transitions since the last call (one event per state change).
    pub fn take_transitions(&mut self) -> Vec<ModelTransition> {
        std::mem::take(&mut self.transitions)
    }

    /// Applies time-driven breaker changes (cooldowns ending, health ttls expiring).
    pub fn poll_breakers(&mut self, now_ms: u64) {
        for (model, b) in self.breakers.iter_mut() {
            if let Some(t) = b.poll(now_ms) {
                self.transitions.push(ModelTransition {
                    model: model.clone(),
                    transition: t,
                });
            }
        }
    }

    /// A model's breaker.
    pub fn breaker(&self, model: &str) -> Option<&Breaker> {
        self.breakers.get(model)
    }

    /// Splits the requested models by breaker: closed ones are eligible; a half-open one with a free
    /// probe slot takes this request as its probe; when nothing is closed or probing, the configured
    /// all-open behaviour applies.
    pub(super) fn breaker_gate(
        &mut self,
        class: &TaskClassConfig,
        requested: &[usize],
        now_ms: u64,
    ) -> Result<Gate, EngineError> {
        let cfg = &self.config.breaker;
        let mut closed = Vec::new();
        let mut probe = None;
        let mut soonest: Option<(u64, usize)> = None;
        let mut degraded = Vec::new();
        let slots = self
            .classes
            .get(&class.name)
            .map_or(&[][..], |s| s.breaker_slots.as_slice());
        for &i in requested {
            let model = &class.models[i];
            let slot = slots.get(i).copied().flatten();
            let Some(b) = slot.and_then(|s| self.breakers.at_mut(s)) else {
                closed.push(i);
                continue;
            };
            if let Some(t) = b.poll(now_ms) {
                self.transitions.push(ModelTransition {
                    model: model.clone(),
                    transition: t,
                });
            }
            if b.degraded(now_ms) {
                degraded.push(i);
            }
            match b.state(now_ms) {
                BreakerState::Closed => closed.push(i),
                BreakerState::HalfOpen if probe.is_none() && b.would_admit(now_ms, cfg) => {
                    probe = Some(i)
                }
                _ => {
                    let retry = b.open_until_ms(now_ms).unwrap_or(now_ms);
                    if soonest.is_none_or(|(t, _)| retry < t) {
                        soonest = Some((retry, i));
                    }
                }
            }
        }
        if let Some(p) = probe {
            return Ok(Gate {
                closed,
                forced: Some((p, Reason::BreakerProbe)),
                degraded,
            });
        }
        if !closed.is_empty() {
            return Ok(Gate {
                closed,
                forced: None,
                degraded,
            });
        }
        match (self.config.health.all_open, soonest) {
            (AllOpen::LeastBad, Some((_, i))) => Ok(Gate {
                closed,
                forced: Some((i, Reason::AllBreakersOpen)),
                degraded,
            }),
            _ => {
                let list: Vec<String> = requested
                    .iter()
                    .map(|&i| {
                        let m = &class.models[i];
                        let until = self
                            .breakers
                            .get(m)
                            .and_then(|b| b.open_until_ms(now_ms))
                            .unwrap_or(now_ms);
                        format!("{m} (may reopen at {})", format_ms(until))
                    })
                    .collect();
                Err(EngineError::Unavailable(format!(
                    "every candidate's circuit breaker is open for task_class {:?}: {}",
                    class.name,
                    list.join(", ")
                )))
            }
        }
    }

    /// Applies an outside health signal to one model or to every model of a provider.
    pub fn report_health(
        &mut self,
        input: &HealthInput,
        now_ms: u64,
    ) -> Result<HealthResult, EngineError> {
        // Health signals may touch arms of any class (rare: mark them all).
        self.dirty_classes.extend(self.classes.keys().cloned());
        let models: Vec<String> =
            match (input.model.is_empty(), input.provider.is_empty()) {
                (false, true) => {
                    if !self.config.models.contains_key(&input.model) {
                        return Err(EngineError::NotFound(format!(
                            "model {:?} is not configured",
                            input.model
                        )));
                    }
                    vec![input.model.clone()]
                }
                (true, false) => {
                    let ms: Vec<String> = self
                        .config
                        .models
                        .values()
                        .filter(|m| m.provider == input.provider)
                        .map(|m| m.id.clone())
                        .collect();
                    if ms.is_empty() {
                        return Err(EngineError::NotFound(format!(
                            "provider {:?} serves none of the configured models",
                            input.provider
                        )));
                    }
                    ms
                }
                _ => return Err(invalid(
                    "model",
                    "set exactly one of model or provider (a provider's signal applies to all its \
                     models)",
                )),
            };
        let Some(signal) = input.state else {
            return Err(invalid("state", "must be HEALTHY, DEGRADED or DOWN"));
        };
        if input.ttl_secs < 0 {
            return Err(invalid(
                "ttl_seconds",
                format!("must be >= 0 (0 = the default), got {}", input.ttl_secs),
            ));
        }
        let ttl_secs = if input.ttl_secs == 0 {
            self.config.health.default_ttl_secs
        } else {
            input.ttl_secs as f64
        };
        let until_ms = now_ms.saturating_add((ttl_secs * 1000.0) as u64);
        for m in &models {
            let Some(b) = self.breakers.get_mut(m) else {
                continue;
            };
            let t = match signal {
                HealthSignal::Down => b.force_down(until_ms, now_ms),
                HealthSignal::Degraded => {
                    b.set_degraded(until_ms);
                    None
                }
                HealthSignal::Healthy => {
                    b.set_degraded(now_ms);
                    b.clear_forced(now_ms)
                }
            };
            if let Some(t) = t {
                self.transitions.push(ModelTransition {
                    model: m.clone(),
                    transition: t,
                });
            }
        }
        Ok(HealthResult { models, until_ms })
    }

    /// Feeds one active health probe of `provider` to its models' breakers: a failure counts as an
    /// error for each; a success counts as a half-open probe success where a breaker is half-open.
    pub fn record_probe(&mut self, provider: &str, ok: bool, now_ms: u64) {
        self.dirty_classes.extend(self.classes.keys().cloned());
        let cfg = self.config.breaker.clone();
        let models: Vec<String> = self
            .config
            .models
            .values()
            .filter(|m| m.provider == provider)
            .map(|m| m.id.clone())
            .collect();
        for m in models {
            let Some(b) = self.breakers.get_mut(&m) else {
                continue;
            };
            let t = if ok {
                if b.state(now_ms) == BreakerState::HalfOpen
                    && matches!(b.admit(now_ms, &cfg), crate::breaker::Admission::Probe)
                {
                    b.record(CallOutcome::Success, now_ms, &cfg)
                } else {
                    None
                }
            } else {
                b.record(CallOutcome::Error, now_ms, &cfg)
            };
            if let Some(t) = t {
                self.on_transition(&m, t);
            }
        }
    }

    /// Records a transition and, when a breaker closes after an outage, weakens the model's old
    /// latency and success evidence in every class so the router re-learns.
    pub(super) fn on_transition(&mut self, model: &str, t: Transition) {
        if t.is_recovery() {
            let factor = self.config.health.recovery_evidence_factor;
            for (name, class) in &self.config.task_classes {
                if let (Some(i), Some(state)) = (
                    class.models.iter().position(|m| m == model),
                    self.classes.get_mut(name),
                ) {
                    state.arms[i].weaken_health_evidence(factor);
                }
            }
        }
        self.transitions.push(ModelTransition {
            model: model.to_string(),
            transition: t,
        });
    }
}
