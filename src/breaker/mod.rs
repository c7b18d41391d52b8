//! Per-model circuit breaker: a pure state machine (`Closed` -> `Open` ->
//! `HalfOpen` -> `Closed`) modelled on linkerd2-proxy's failure accrual. It
//! does no I/O, reads no clock, spawns nothing and draws no random numbers:
//! every method that depends on time takes `now_ms` (Unix milliseconds) from
//! the caller, so the same inputs always give the same outputs and tests can
//! drive it with plain `u64` values.
//!
//! How it works:
//! - **Closed**: every call is [`Admission::Allowed`]. Failures are weighted
//!   by kind ([`CallOutcome`]). The breaker trips to `Open` when the weighted
//!   *consecutive*-failure score reaches [`BreakerConfig::consecutive_failures`]
//!   (a success resets it), or when the weighted failure *rate* over a sliding
//!   time window reaches [`BreakerConfig::failure_rate_threshold`] once the
//!   window holds at least [`BreakerConfig::min_requests`] calls. The window is
//!   [`WINDOW_BUCKETS`] fixed time buckets, so memory is bounded.
//! - **Open**: every call is rejected until the cooldown ends. The cooldown
//!   starts at [`BreakerConfig::cooldown_secs`] and is multiplied by
//!   [`BreakerConfig::cooldown_multiplier`] on every re-open (a failed probe,
//!   or tripping again within `max_cooldown_secs` of closing), capped at
//!   [`BreakerConfig::max_cooldown_secs`]. Once closed cleanly for
//!   `max_cooldown_secs` the backoff starts over.
//! - **HalfOpen**: entered lazily once `now_ms >= open_until`. Up to
//!   [`BreakerConfig::half_open_probes`] calls are admitted as
//!   [`Admission::Probe`]; [`BreakerConfig::successes_to_close`] probe
//!   successes close the breaker, any probe failure re-opens it. A probe that
//!   never reports frees its slot after [`BreakerConfig::probe_timeout_secs`].
//!
//! Outside health signals: [`Breaker::force_down`] (DOWN with a ttl) holds the
//! breaker open until the ttl, [`Breaker::clear_forced`] (HEALTHY) lifts it
//! into `HalfOpen`, and [`Breaker::set_degraded`] (DEGRADED) is only
//! remembered with its expiry for the router to lower the model's weight.
//!
//! Every state change made by a method returns one [`Transition`], so the
//! caller can log exactly one event per change. Changes that happen purely by
//! the passage of time (cooldown or forced ttl elapsed) are applied lazily:
//! [`Breaker::state`] already reports them, and [`Breaker::poll`] returns them
//! as a `Transition` if the caller wants to log them too. A transition whose
//! [`Transition::is_recovery`] is true (`HalfOpen` -> `Closed`) means the model
//! just came back after an outage: the caller may weaken the model's old
//! evidence at that point.
//!
//! Because outcomes carry no probe id, an outcome reported while `HalfOpen` is
//! taken as the result of the oldest outstanding probe. An outcome reported
//! while no probe is outstanding (a call admitted before the breaker opened
//! that reports late, or a probe that already timed out) is counted in the
//! failure-rate window but does not move the state.

mod config;
#[cfg(test)]
mod tests;
mod window;

use serde::{Deserialize, Serialize};

pub use config::*;
pub use window::WINDOW_BUCKETS;

use config::secs_to_ms;
use window::Window;

/// Tolerance used when comparing accumulated weighted scores and rates with
/// their thresholds, so that fractional weights such as 0.1 summed ten times
/// still reach 1.0 despite floating-point rounding.
pub const SCORE_EPSILON: f64 = 1e-9;

/// State of a breaker as seen by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    /// Healthy: every call is admitted.
    Closed,
    /// Tripped (or forced down): every call is rejected until it may half-open.
    Open,
    /// Testing recovery: a bounded number of probe calls is admitted.
    HalfOpen,
}

/// Result of one call, as reported by the caller to [`Breaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallOutcome {
    /// The call succeeded.
    Success,
    /// The call failed (weight `error_weight`).
    Error,
    /// The call timed out (weight `timeout_weight`).
    Timeout,
    /// The provider rate-limited the call (weight `rate_limited_weight`).
    RateLimited,
    /// The call answered but with latency far above the model's own
    /// distribution, as judged by the caller (weight `soft_failure_weight`).
    /// In half-open it is a probe failure like any other failure.
    SoftFailure,
}

impl CallOutcome {
    /// The failure weight of this outcome under `cfg`: 0 for `Success`, the
    /// matching `*_weight` field otherwise (negative or NaN weights count 0).
    /// An outcome of weight 0 is neither a success nor a failure: it does not
    /// reset the consecutive score and does not fail a probe.
    pub fn weight(self, cfg: &BreakerConfig) -> f64 {
        let raw = match self {
            CallOutcome::Success => 0.0,
            CallOutcome::Error => cfg.error_weight,
            CallOutcome::Timeout => cfg.timeout_weight,
            CallOutcome::RateLimited => cfg.rate_limited_weight,
            CallOutcome::SoftFailure => cfg.soft_failure_weight,
        };
        raw.max(0.0)
    }
}

/// Answer of [`Breaker::admit`] for one prospective call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admission {
    /// Closed: send the call normally.
    Allowed,
    /// Half-open: send the call as a probe; a probe slot was taken and is
    /// freed when its outcome is recorded or after `probe_timeout_secs`.
    Probe,
    /// Do not send the call. `retry_at_ms` is the earliest time admission may
    /// change: the end of the open period, or when the oldest outstanding
    /// probe times out.
    Rejected {
        /// Earliest Unix-millisecond time at which a call may be admitted.
        retry_at_ms: u64,
    },
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransitionCause {
    /// Closed -> Open: the weighted consecutive-failure score reached
    /// `consecutive_failures`.
    ConsecutiveFailures,
    /// Closed -> Open: the weighted failure rate in the window reached
    /// `failure_rate_threshold` with at least `min_requests` calls.
    FailureRate,
    /// Open -> HalfOpen: the cooldown elapsed.
    CooldownElapsed,
    /// HalfOpen -> Open: a probe failed.
    ProbeFailed,
    /// HalfOpen -> Closed: `successes_to_close` probes succeeded.
    ProbesSucceeded,
    /// Closed/HalfOpen -> Open: an outside DOWN signal.
    ForcedDown,
    /// Open -> HalfOpen: the ttl of an outside DOWN signal elapsed.
    ForcedExpired,
    /// Open -> HalfOpen: an outside HEALTHY signal lifted a forced DOWN.
    ForcedClear,
}

/// One state change of a breaker, returned by the method that caused it so
/// the caller can log one event per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// State before the change.
    pub from: BreakerState,
    /// State after the change.
    pub to: BreakerState,
    /// Unix-millisecond time of the change (for time-driven changes, the
    /// moment the cooldown or ttl ended, not when it was noticed).
    pub at_ms: u64,
    /// Why the state changed.
    pub cause: TransitionCause,
}

impl Transition {
    /// True when this transition closes the breaker after an outage
    /// (`HalfOpen` -> `Closed`): the model just recovered, and the caller may
    /// weaken the evidence it gathered about the model before the outage.
    pub fn is_recovery(&self) -> bool {
        self.to == BreakerState::Closed && self.from != BreakerState::Closed
    }

    /// True when this transition opens the breaker (the model stops
    /// receiving traffic).
    pub fn is_open(&self) -> bool {
        self.to == BreakerState::Open && self.from != BreakerState::Open
    }
}

/// Internal state, with the data each state needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
enum Phase {
    #[default]
    Closed,
    Open {
        /// When the breaker may half-open.
        until_ms: u64,
        /// Opened (or held) by an outside DOWN signal.
        forced: bool,
    },
    HalfOpen {
        /// Admission times of outstanding probes, oldest first.
        probes: Vec<u64>,
        /// Probe successes so far.
        successes: u32,
    },
}

impl Phase {
    fn state(&self) -> BreakerState {
        match self {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// The circuit breaker of one model. Cheap to clone and serializable so a
/// store can persist it; a new (or default) breaker is `Closed`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Breaker {
    phase: Phase,
    since_ms: u64,
    consecutive_score: f64,
    window: Window,
    backoff_level: u32,
    /// Length of the last `Closed` period when it ended by a forced DOWN,
    /// so the clean-period backoff reset still applies to the next
    /// failure-driven open; 0 once used.
    closed_for_ms: u64,
    total_opens: u64,
    degraded_until_ms: u64,
}

impl Breaker {
    /// A closed breaker with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state at `now_ms`: an `Open` breaker whose open period (cooldown
    /// or forced ttl) has ended reads as `HalfOpen`, without mutating.
    pub fn state(&self, now_ms: u64) -> BreakerState {
        match self.phase {
            Phase::Open { until_ms, .. } if now_ms >= until_ms => BreakerState::HalfOpen,
            ref phase => phase.state(),
        }
    }

    /// Applies a pending time-driven change (open period over -> `HalfOpen`)
    /// and returns it, with `at_ms` the moment the period ended and cause
    /// `CooldownElapsed` or `ForcedExpired`. `admit`, `record`, `force_down`
    /// and `clear_forced` apply it silently, so a caller that logs every
    /// change calls `poll` before them.
    pub fn poll(&mut self, now_ms: u64) -> Option<Transition> {
        let Phase::Open { until_ms, forced } = self.phase else {
            return None;
        };
        if now_ms < until_ms {
            return None;
        }
        let cause = if forced {
            TransitionCause::ForcedExpired
        } else {
            TransitionCause::CooldownElapsed
        };
        Some(self.change(Self::half_open(), until_ms, cause))
    }

    /// Decides whether a call may be sent at `now_ms`: `Allowed` when closed,
    /// `Probe` when half-open with a free probe slot (the slot is taken), and
    /// `Rejected` with the earliest time admission may change otherwise.
    pub fn admit(&mut self, now_ms: u64, cfg: &BreakerConfig) -> Admission {
        self.poll(now_ms);
        let timeout_ms = secs_to_ms(cfg.probe_timeout_secs);
        match &mut self.phase {
            Phase::Closed => Admission::Allowed,
            Phase::Open { until_ms, .. } => Admission::Rejected {
                retry_at_ms: *until_ms,
            },
            Phase::HalfOpen { probes, .. } => {
                prune_probes(probes, now_ms, timeout_ms);
                if probes.len() < probe_slots(cfg) {
                    probes.push(now_ms);
                    Admission::Probe
                } else {
                    Admission::Rejected {
                        retry_at_ms: probes
                            .iter()
                            .map(|t| t.saturating_add(timeout_ms))
                            .min()
                            .unwrap_or(now_ms),
                    }
                }
            }
        }
    }

    /// Whether [`Breaker::admit`] would admit a call (as `Allowed` or
    /// `Probe`) at `now_ms`, without taking a probe slot: for building
    /// fallback lists.
    pub fn would_admit(&self, now_ms: u64, cfg: &BreakerConfig) -> bool {
        match &self.phase {
            Phase::Closed => true,
            Phase::Open { until_ms, .. } => now_ms >= *until_ms && probe_slots(cfg) > 0,
            Phase::HalfOpen { .. } => self.probes_in_flight(now_ms, cfg) < probe_slots(cfg),
        }
    }

    /// Records the outcome of a call finished at `now_ms` and returns the
    /// state change it caused, if any. Closed: a success resets the
    /// consecutive score, a failure adds its weight and may trip the breaker.
    /// Open: only counted in the window (successes do not close it).
    /// HalfOpen: the outcome of the oldest outstanding probe; a success counts
    /// toward closing, a failure of non-zero weight re-opens with a longer
    /// cooldown; with no probe outstanding it moves nothing.
    pub fn record(
        &mut self,
        outcome: CallOutcome,
        now_ms: u64,
        cfg: &BreakerConfig,
    ) -> Option<Transition> {
        self.poll(now_ms);
        let weight = outcome.weight(cfg);
        self.window.record(now_ms, weight, cfg);
        let timeout_ms = secs_to_ms(cfg.probe_timeout_secs);
        match &mut self.phase {
            Phase::Closed => {
                if outcome == CallOutcome::Success {
                    self.consecutive_score = 0.0;
                    return None;
                }
                if weight <= 0.0 {
                    return None;
                }
                self.consecutive_score += weight;
                let cause = if self.consecutive_score >= cfg.consecutive_failures - SCORE_EPSILON {
                    TransitionCause::ConsecutiveFailures
                } else {
                    let (calls, failures) = self.window.totals(now_ms, cfg);
                    let rate = failures / calls.max(1) as f64;
                    if calls >= u64::from(cfg.min_requests)
                        && rate >= cfg.failure_rate_threshold - SCORE_EPSILON
                    {
                        TransitionCause::FailureRate
                    } else {
                        return None;
                    }
                };
                Some(self.open_for_failure(now_ms, cfg, cause))
            }
            Phase::Open { .. } => None,
            Phase::HalfOpen { probes, successes } => {
                prune_probes(probes, now_ms, timeout_ms);
                if probes.is_empty() {
                    return None;
                }
                probes.remove(0);
                if outcome == CallOutcome::Success {
                    *successes = successes.saturating_add(1);
                    if *successes >= cfg.successes_to_close {
                        self.consecutive_score = 0.0;
                        self.window.clear();
                        return Some(self.change(
                            Phase::Closed,
                            now_ms,
                            TransitionCause::ProbesSucceeded,
                        ));
                    }
                    None
                } else if weight > 0.0 {
                    Some(self.open_for_failure(now_ms, cfg, TransitionCause::ProbeFailed))
                } else {
                    None
                }
            }
        }
    }

    /// Outside DOWN signal: holds the breaker `Open` until `until_ms`, then it
    /// half-opens. It does not grow the backoff and never shortens an open
    /// period already running (the later end wins). Returns the transition
    /// when the breaker was not already open; a ttl already past
    /// (`until_ms <= now_ms`) is ignored.
    pub fn force_down(&mut self, until_ms: u64, now_ms: u64) -> Option<Transition> {
        self.poll(now_ms);
        if until_ms <= now_ms {
            return None;
        }
        if let Phase::Open {
            until_ms: current, ..
        } = self.phase
        {
            self.phase = Phase::Open {
                until_ms: current.max(until_ms),
                forced: true,
            };
            return None;
        }
        Some(self.change(
            Phase::Open {
                until_ms,
                forced: true,
            },
            now_ms,
            TransitionCause::ForcedDown,
        ))
    }

    /// Outside HEALTHY signal: lifts a forced DOWN still in force by moving
    /// the breaker to `HalfOpen` (not `Closed`), so probes confirm the model
    /// really works before it gets full traffic; it also clears the degraded
    /// mark. An open period caused by failures alone is left running.
    pub fn clear_forced(&mut self, now_ms: u64) -> Option<Transition> {
        self.poll(now_ms);
        self.degraded_until_ms = 0;
        match self.phase {
            Phase::Open { forced: true, .. } => {
                Some(self.change(Self::half_open(), now_ms, TransitionCause::ForcedClear))
            }
            _ => None,
        }
    }

    /// Outside DEGRADED signal: marks the model degraded until `until_ms`
    /// (the latest signal wins; a time in the past clears the mark). It does
    /// not change the breaker state; the router reads it via `degraded`.
    pub fn set_degraded(&mut self, until_ms: u64) {
        self.degraded_until_ms = until_ms;
    }

    /// Whether the model is marked degraded at `now_ms`.
    pub fn degraded(&self, now_ms: u64) -> bool {
        now_ms < self.degraded_until_ms
    }

    /// When the degraded mark expires, if it is in force at `now_ms`.
    pub fn degraded_until_ms(&self, now_ms: u64) -> Option<u64> {
        self.degraded(now_ms).then_some(self.degraded_until_ms)
    }

    /// Whether the breaker is held open by an outside DOWN signal at `now_ms`.
    pub fn forced_down(&self, now_ms: u64) -> bool {
        matches!(self.phase, Phase::Open { until_ms, forced: true } if now_ms < until_ms)
    }

    /// Unix-millisecond time of the last applied transition (0 for a breaker
    /// that never changed state). A pending time-driven half-open is not
    /// included until it is applied (see [`Breaker::poll`]).
    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }

    /// When the breaker may half-open, if it is `Open` at `now_ms`.
    pub fn open_until_ms(&self, now_ms: u64) -> Option<u64> {
        match self.phase {
            Phase::Open { until_ms, .. } if now_ms < until_ms => Some(until_ms),
            _ => None,
        }
    }

    /// Weighted failures divided by calls in the window ending at `now_ms`
    /// (0 when the window is empty). The window is cleared when the breaker
    /// closes after an outage.
    pub fn recent_failure_rate(&self, now_ms: u64, cfg: &BreakerConfig) -> f64 {
        let (calls, failures) = self.window.totals(now_ms, cfg);
        if calls == 0 {
            0.0
        } else {
            failures / calls as f64
        }
    }

    /// Number of calls in the window ending at `now_ms`.
    pub fn recent_calls(&self, now_ms: u64, cfg: &BreakerConfig) -> u64 {
        self.window.totals(now_ms, cfg).0
    }

    /// Current weighted consecutive-failure score (reset by a success).
    pub fn consecutive_failure_score(&self) -> f64 {
        self.consecutive_score
    }

    /// Backoff level at `now_ms`: the number of failure-driven opens since
    /// the backoff last reset (0 after `max_cooldown_secs` closed cleanly).
    /// The next failure-driven open lasts `cfg.cooldown_ms(level)`.
    pub fn reopen_count(&self, now_ms: u64, cfg: &BreakerConfig) -> u32 {
        let clean_ms = secs_to_ms(cfg.max_cooldown_secs);
        let closed_for_ms = match self.phase {
            Phase::Closed => now_ms.saturating_sub(self.since_ms),
            _ => self.closed_for_ms,
        };
        if closed_for_ms >= clean_ms {
            0
        } else {
            self.backoff_level
        }
    }

    /// Duration in milliseconds of the next failure-driven open at `now_ms`.
    pub fn next_cooldown_ms(&self, now_ms: u64, cfg: &BreakerConfig) -> u64 {
        cfg.cooldown_ms(self.reopen_count(now_ms, cfg))
    }

    /// Total number of transitions into `Open` over the breaker's life
    /// (failure-driven and forced).
    pub fn total_opens(&self) -> u64 {
        self.total_opens
    }

    /// Probes admitted and neither reported nor timed out at `now_ms`.
    pub fn probes_in_flight(&self, now_ms: u64, cfg: &BreakerConfig) -> usize {
        let timeout_ms = secs_to_ms(cfg.probe_timeout_secs);
        match &self.phase {
            Phase::HalfOpen { probes, .. } => probes
                .iter()
                .filter(|&&t| probe_alive(t, now_ms, timeout_ms))
                .count(),
            _ => 0,
        }
    }

    fn half_open() -> Phase {
        Phase::HalfOpen {
            probes: Vec::new(),
            successes: 0,
        }
    }

    /// Opens for a failure (trip or failed probe) with the backoff cooldown
    /// and grows the backoff.
    fn open_for_failure(
        &mut self,
        now_ms: u64,
        cfg: &BreakerConfig,
        cause: TransitionCause,
    ) -> Transition {
        let level = self.reopen_count(now_ms, cfg);
        self.backoff_level = level.saturating_add(1);
        self.consecutive_score = 0.0;
        let until_ms = now_ms.saturating_add(cfg.cooldown_ms(level));
        let transition = self.change(
            Phase::Open {
                until_ms,
                forced: false,
            },
            now_ms,
            cause,
        );
        self.closed_for_ms = 0;
        transition
    }

    fn change(&mut self, to: Phase, at_ms: u64, cause: TransitionCause) -> Transition {
        let from = self.phase.state();
        let to_state = to.state();
        if from == BreakerState::Closed {
            self.closed_for_ms = at_ms.saturating_sub(self.since_ms);
        }
        if to_state == BreakerState::Open {
            self.total_opens = self.total_opens.saturating_add(1);
        }
        self.phase = to;
        self.since_ms = at_ms;
        Transition {
            from,
            to: to_state,
            at_ms,
            cause,
        }
    }
}

/// Probe slots per half-open period as a `usize`.
fn probe_slots(cfg: &BreakerConfig) -> usize {
    usize::try_from(cfg.half_open_probes).unwrap_or(usize::MAX)
}

/// Whether a probe admitted at `admitted_ms` still holds its slot.
fn probe_alive(admitted_ms: u64, now_ms: u64, timeout_ms: u64) -> bool {
    now_ms < admitted_ms.saturating_add(timeout_ms)
}

fn prune_probes(probes: &mut Vec<u64>, now_ms: u64, timeout_ms: u64) {
    probes.retain(|&t| probe_alive(t, now_ms, timeout_ms));
}
