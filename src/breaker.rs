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

use serde::{Deserialize, Serialize};

/// Default weighted consecutive-failure score that trips the breaker: five
/// hard failures in a row is linkerd2-proxy's default for consecutive-failure
/// accrual, enough to ignore a blip yet trip within seconds of a real outage.
pub const DEFAULT_CONSECUTIVE_FAILURES: f64 = 5.0;

/// Default weighted failure rate that trips the breaker: when at least half
/// of the recent calls fail, the model is more often wrong than right and
/// routing elsewhere is the better bet.
pub const DEFAULT_FAILURE_RATE_THRESHOLD: f64 = 0.5;

/// Default length of the failure-rate window in seconds: one minute reacts
/// within a minute to a degraded model while averaging over enough calls that
/// a few unlucky ones do not trip it.
pub const DEFAULT_WINDOW_SECS: f64 = 60.0;

/// Default minimum number of calls in the window before the failure rate may
/// trip the breaker: below 20 calls a rate is too noisy (2 failures out of 3
/// is not evidence of an outage).
pub const DEFAULT_MIN_REQUESTS: u32 = 20;

/// Default first open duration in seconds: five seconds is long enough for a
/// briefly overloaded provider to shed load and short enough that a transient
/// failure costs little capacity.
pub const DEFAULT_COOLDOWN_SECS: f64 = 5.0;

/// Default factor applied to the cooldown on each re-open: doubling is the
/// usual exponential backoff, reaching the cap in a handful of re-opens.
pub const DEFAULT_COOLDOWN_MULTIPLIER: f64 = 2.0;

/// Default cap on the open duration in seconds: five minutes bounds how long
/// a recovered model stays unused, and is also how long the breaker must stay
/// closed before the backoff resets.
pub const DEFAULT_MAX_COOLDOWN_SECS: f64 = 300.0;

/// Default number of probes admitted at once while half-open: a few parallel
/// probes confirm recovery quickly without sending a burst to a model that
/// may still be down.
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 3;

/// Default number of probe successes that close the breaker: two successes
/// rule out a single lucky call, and being below `half_open_probes` lets one
/// probe still be slow without stalling the recovery.
pub const DEFAULT_SUCCESSES_TO_CLOSE: u32 = 2;

/// Default time in seconds after which an admitted probe that never reported
/// frees its slot: thirty seconds is beyond a normal LLM call's latency, so
/// a lost probe is assumed dead and half-open can never stall forever.
pub const DEFAULT_PROBE_TIMEOUT_SECS: f64 = 30.0;

/// Default weight of an error: a hard failure is the unit of failure.
pub const DEFAULT_ERROR_WEIGHT: f64 = 1.0;

/// Default weight of a timeout: the caller got nothing, as bad as an error.
pub const DEFAULT_TIMEOUT_WEIGHT: f64 = 1.0;

/// Default weight of a rate-limited answer: the model works but our quota is
/// exhausted, a softer signal than an error that should only trip the breaker
/// when it persists.
pub const DEFAULT_RATE_LIMITED_WEIGHT: f64 = 0.5;

/// Default weight of a soft failure (latency far above the model's own
/// distribution): an answer did arrive, so it counts half of an error.
pub const DEFAULT_SOFT_FAILURE_WEIGHT: f64 = 0.5;

/// Number of time buckets the failure-rate window is split into. The window
/// slides one bucket (`window_secs / WINDOW_BUCKETS`) at a time, so it covers
/// between 90% and 100% of `window_secs`, with memory fixed at ten buckets.
pub const WINDOW_BUCKETS: usize = 10;

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

/// Tuning of a breaker. Loaded from configuration (missing fields take their
/// defaults, unknown fields are rejected so typos surface) and checked with
/// [`BreakerConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Weighted consecutive-failure score at which the breaker trips.
    pub consecutive_failures: f64,
    /// Weighted failure rate (failures / calls in the window) at which the
    /// breaker trips, in (0, 1].
    pub failure_rate_threshold: f64,
    /// Length of the sliding failure-rate window in seconds.
    pub window_secs: f64,
    /// Minimum calls in the window before the failure rate may trip.
    pub min_requests: u32,
    /// First open duration in seconds.
    pub cooldown_secs: f64,
    /// Factor applied to the open duration on each re-open (>= 1).
    pub cooldown_multiplier: f64,
    /// Cap on the open duration, and clean closed time that resets the
    /// backoff, in seconds.
    pub max_cooldown_secs: f64,
    /// Probes admitted at once while half-open.
    pub half_open_probes: u32,
    /// Probe successes needed to close (<= `half_open_probes`).
    pub successes_to_close: u32,
    /// Seconds after which an unreported probe frees its slot.
    pub probe_timeout_secs: f64,
    /// Failure weight of [`CallOutcome::Error`].
    pub error_weight: f64,
    /// Failure weight of [`CallOutcome::Timeout`].
    pub timeout_weight: f64,
    /// Failure weight of [`CallOutcome::RateLimited`].
    pub rate_limited_weight: f64,
    /// Failure weight of [`CallOutcome::SoftFailure`].
    pub soft_failure_weight: f64,
}

impl Default for BreakerConfig {
    /// The configuration made of the `DEFAULT_*` constants of this module.
    fn default() -> Self {
        Self {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            failure_rate_threshold: DEFAULT_FAILURE_RATE_THRESHOLD,
            window_secs: DEFAULT_WINDOW_SECS,
            min_requests: DEFAULT_MIN_REQUESTS,
            cooldown_secs: DEFAULT_COOLDOWN_SECS,
            cooldown_multiplier: DEFAULT_COOLDOWN_MULTIPLIER,
            max_cooldown_secs: DEFAULT_MAX_COOLDOWN_SECS,
            half_open_probes: DEFAULT_HALF_OPEN_PROBES,
            successes_to_close: DEFAULT_SUCCESSES_TO_CLOSE,
            probe_timeout_secs: DEFAULT_PROBE_TIMEOUT_SECS,
            error_weight: DEFAULT_ERROR_WEIGHT,
            timeout_weight: DEFAULT_TIMEOUT_WEIGHT,
            rate_limited_weight: DEFAULT_RATE_LIMITED_WEIGHT,
            soft_failure_weight: DEFAULT_SOFT_FAILURE_WEIGHT,
        }
    }
}

impl BreakerConfig {
    /// Checks the configuration: `Ok(())` if usable, otherwise a message that
    /// names the first bad field (as `breaker.<field>`) and its value.
    /// Non-finite and negative numbers are rejected, as are thresholds and
    /// durations that would make the breaker trip at once or never recover.
    pub fn validate(&self) -> Result<(), String> {
        let floats = [
            ("consecutive_failures", self.consecutive_failures),
            ("failure_rate_threshold", self.failure_rate_threshold),
            ("window_secs", self.window_secs),
            ("cooldown_secs", self.cooldown_secs),
            ("cooldown_multiplier", self.cooldown_multiplier),
            ("max_cooldown_secs", self.max_cooldown_secs),
            ("probe_timeout_secs", self.probe_timeout_secs),
            ("error_weight", self.error_weight),
            ("timeout_weight", self.timeout_weight),
            ("rate_limited_weight", self.rate_limited_weight),
            ("soft_failure_weight", self.soft_failure_weight),
        ];
        for (name, value) in floats {
            if !value.is_finite() {
                return Err(format!(
                    "breaker.{name} must be a finite number (got {value})"
                ));
            }
            if value < 0.0 {
                return Err(format!("breaker.{name} must be >= 0 (got {value})"));
            }
        }
        for (name, value) in [
            ("consecutive_failures", self.consecutive_failures),
            ("cooldown_secs", self.cooldown_secs),
            ("probe_timeout_secs", self.probe_timeout_secs),
        ] {
            if value <= 0.0 {
                return Err(format!("breaker.{name} must be > 0 (got {value})"));
            }
        }
        if self.failure_rate_threshold <= 0.0 || self.failure_rate_threshold > 1.0 {
            return Err(format!(
                "breaker.failure_rate_threshold must be in (0, 1] (got {})",
                self.failure_rate_threshold
            ));
        }
        let min_window_secs = WINDOW_BUCKETS as f64 / 1000.0;
        if self.window_secs < min_window_secs {
            return Err(format!(
                "breaker.window_secs must be >= {min_window_secs} (one millisecond per bucket) (got {})",
                self.window_secs
            ));
        }
        if self.cooldown_multiplier < 1.0 {
            return Err(format!(
                "breaker.cooldown_multiplier must be >= 1 (got {})",
                self.cooldown_multiplier
            ));
        }
        if self.max_cooldown_secs < self.cooldown_secs {
            return Err(format!(
                "breaker.max_cooldown_secs must be >= breaker.cooldown_secs (got {} < {})",
                self.max_cooldown_secs, self.cooldown_secs
            ));
        }
        for (name, value) in [
            ("min_requests", self.min_requests),
            ("half_open_probes", self.half_open_probes),
            ("successes_to_close", self.successes_to_close),
        ] {
            if value == 0 {
                return Err(format!("breaker.{name} must be >= 1 (got 0)"));
            }
        }
        if self.successes_to_close > self.half_open_probes {
            return Err(format!(
                "breaker.successes_to_close must be <= breaker.half_open_probes (got {} > {})",
                self.successes_to_close, self.half_open_probes
            ));
        }
        Ok(())
    }

    /// The open duration in milliseconds for a breaker at backoff `level`
    /// (number of failure-driven opens since the backoff last reset):
    /// `cooldown_secs * cooldown_multiplier^level`, capped at
    /// `max_cooldown_secs`.
    pub fn cooldown_ms(&self, level: u32) -> u64 {
        let exponent = i32::try_from(level).unwrap_or(i32::MAX).min(4096);
        let secs = self.cooldown_secs * self.cooldown_multiplier.powi(exponent);
        let capped = if secs.is_nan() {
            self.max_cooldown_secs
        } else {
            secs.min(self.max_cooldown_secs)
        };
        secs_to_ms(capped)
    }
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

/// One time bucket of the failure-rate window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
struct Bucket {
    /// Absolute bucket number (`now_ms / bucket_ms`) this bucket holds.
    epoch: u64,
    /// Calls recorded in the bucket.
    calls: u32,
    /// Sum of failure weights recorded in the bucket.
    failures: f64,
}

/// Sliding failure-rate window made of [`WINDOW_BUCKETS`] time buckets.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct Window {
    /// Width of one bucket in ms (0 until the first record).
    bucket_ms: u64,
    /// Latest bucket number seen; time going backwards is treated as this.
    head_epoch: u64,
    /// Ring of buckets, indexed by `epoch % WINDOW_BUCKETS`.
    buckets: [Bucket; WINDOW_BUCKETS],
}

impl Window {
    fn bucket_ms_for(cfg: &BreakerConfig) -> u64 {
        secs_to_ms(cfg.window_secs)
            .div_ceil(WINDOW_BUCKETS as u64)
            .max(1)
    }

    fn record(&mut self, now_ms: u64, weight: f64, cfg: &BreakerConfig) {
        let bucket_ms = Self::bucket_ms_for(cfg);
        if self.bucket_ms != bucket_ms {
            // First use, or the window length changed: old buckets are in
            // other units, start afresh.
            *self = Window {
                bucket_ms,
                ..Window::default()
            };
        }
        let epoch = (now_ms / bucket_ms).max(self.head_epoch);
        self.head_epoch = epoch;
        let bucket = &mut self.buckets[(epoch % WINDOW_BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures += weight;
    }

    /// (calls, weighted failures) in the window ending at `now_ms`.
    fn totals(&self, now_ms: u64, cfg: &BreakerConfig) -> (u64, f64) {
        if self.bucket_ms == 0 || self.bucket_ms != Self::bucket_ms_for(cfg) {
            return (0, 0.0);
        }
        let current = (now_ms / self.bucket_ms).max(self.head_epoch);
        self.buckets
            .iter()
            .filter(|b| b.epoch.saturating_add(WINDOW_BUCKETS as u64) > current)
            .fold((0, 0.0), |(calls, failures), b| {
                (calls + u64::from(b.calls), failures + b.failures)
            })
    }

    fn clear(&mut self) {
        self.buckets = Default::default();
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

/// Seconds to whole milliseconds, saturating; NaN and negatives give 0.
fn secs_to_ms(secs: f64) -> u64 {
    let ms = secs * 1000.0;
    if ms.is_nan() || ms <= 0.0 {
        0
    } else {
        ms.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BreakerState::{Closed, HalfOpen, Open};
    use CallOutcome::{Error, RateLimited, SoftFailure, Success, Timeout};

    fn cfg() -> BreakerConfig {
        BreakerConfig::default()
    }

    /// Config where only the failure rate can trip.
    fn rate_cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 1000.0,
            ..cfg()
        }
    }

    fn tr(from: BreakerState, to: BreakerState, at_ms: u64, cause: TransitionCause) -> Transition {
        Transition {
            from,
            to,
            at_ms,
            cause,
        }
    }

    /// Trips a fresh breaker by 5 errors at `t`; returns it open until t+5000.
    fn tripped(t: u64) -> Breaker {
        let c = cfg();
        let mut b = Breaker::new();
        for _ in 0..4 {
            assert_eq!(b.record(Error, t, &c), None);
        }
        assert_eq!(
            b.record(Error, t, &c),
            Some(tr(Closed, Open, t, TransitionCause::ConsecutiveFailures))
        );
        b
    }

    /// Drives a breaker that is half-open at `t` to closed at `t`.
    fn close_at(b: &mut Breaker, t: u64) {
        let c = cfg();
        assert_eq!(b.admit(t, &c), Admission::Probe);
        assert_eq!(b.admit(t, &c), Admission::Probe);
        assert_eq!(b.record(Success, t, &c), None);
        let closed = b.record(Success, t, &c).expect("closes");
        assert_eq!(closed.to, Closed);
    }

    #[test]
    fn new_breaker_is_closed_and_allows() {
        let mut b = Breaker::new();
        assert_eq!(b, Breaker::default());
        assert_eq!(b.state(0), Closed);
        assert_eq!(b.admit(1_000, &cfg()), Admission::Allowed);
        assert!(b.would_admit(1_000, &cfg()));
        assert_eq!(b.since_ms(), 0);
        assert_eq!(b.open_until_ms(1_000), None);
        assert_eq!(b.recent_failure_rate(1_000, &cfg()), 0.0);
        assert_eq!(b.total_opens(), 0);
    }

    #[test]
    fn consecutive_errors_trip_at_threshold() {
        let c = cfg();
        let mut b = Breaker::new();
        for i in 0..4 {
            assert_eq!(b.record(Error, 1_000 + i, &c), None);
            assert_eq!(b.state(1_000 + i), Closed);
        }
        assert_eq!(b.consecutive_failure_score(), 4.0);
        let t = b.record(Timeout, 1_004, &c);
        assert_eq!(
            t,
            Some(tr(
                Closed,
                Open,
                1_004,
                TransitionCause::ConsecutiveFailures
            ))
        );
        assert!(t.is_some_and(|t| t.is_open() && !t.is_recovery()));
        assert_eq!(b.state(1_004), Open);
        assert_eq!(b.open_until_ms(1_004), Some(6_004));
        assert_eq!(b.since_ms(), 1_004);
        assert_eq!(b.total_opens(), 1);
        assert_eq!(b.reopen_count(1_004, &c), 1);
    }

    #[test]
    fn rate_limited_counts_half() {
        let c = cfg();
        let mut b = Breaker::new();
        for i in 0..9 {
            assert_eq!(b.record(RateLimited, i, &c), None);
        }
        assert_eq!(b.consecutive_failure_score(), 4.5);
        assert_eq!(b.state(9), Closed);
        assert_eq!(
            b.record(RateLimited, 9, &c),
            Some(tr(Closed, Open, 9, TransitionCause::ConsecutiveFailures))
        );
    }

    #[test]
    fn soft_failures_and_mixed_weights_sum() {
        let c = cfg();
        let mut b = Breaker::new();
        // 1 + 0.5 + 1 + 0.5 + 1 = 4.0, then +0.5 = 4.5, then +0.5 = 5.0.
        for o in [Error, SoftFailure, Timeout, RateLimited, Error, SoftFailure] {
            assert_eq!(b.record(o, 0, &c), None);
        }
        assert_eq!(b.consecutive_failure_score(), 4.5);
        assert_eq!(
            b.record(SoftFailure, 7, &c),
            Some(tr(Closed, Open, 7, TransitionCause::ConsecutiveFailures))
        );
    }

    #[test]
    fn fractional_weights_reach_threshold_despite_rounding() {
        let c = BreakerConfig {
            consecutive_failures: 1.0,
            error_weight: 0.1,
            ..cfg()
        };
        let mut b = Breaker::new();
        for _ in 0..9 {
            assert_eq!(b.record(Error, 0, &c), None);
        }
        assert!(b.record(Error, 0, &c).is_some());
    }

    #[test]
    fn success_resets_consecutive_score() {
        let c = cfg();
        let mut b = Breaker::new();
        for _ in 0..4 {
            assert_eq!(b.record(Error, 0, &c), None);
        }
        assert_eq!(b.record(Success, 1, &c), None);
        assert_eq!(b.consecutive_failure_score(), 0.0);
        for _ in 0..4 {
            assert_eq!(b.record(Error, 2, &c), None);
        }
        assert_eq!(b.state(2), Closed);
        assert!(b.record(Error, 3, &c).is_some());
    }

    #[test]
    fn zero_weight_outcome_neither_fails_nor_resets() {
        let c = BreakerConfig {
            rate_limited_weight: 0.0,
            ..cfg()
        };
        let mut b = Breaker::new();
        for _ in 0..4 {
            b.record(Error, 0, &c);
        }
        for _ in 0..10 {
            assert_eq!(b.record(RateLimited, 0, &c), None);
        }
        assert_eq!(b.consecutive_failure_score(), 4.0);
        assert_eq!(b.recent_calls(0, &c), 14);
        assert!(b.record(Error, 0, &c).is_some());
    }

    #[test]
    fn failure_rate_trips_only_after_min_requests() {
        let c = rate_cfg();
        let mut b = Breaker::new();
        // S, F, S, F, ...: 19 calls hold 9 failures; the 20th (a failure)
        // makes 10/20 = 0.5 with min_requests reached.
        for i in 0..19u64 {
            let o = if i % 2 == 0 { Success } else { Error };
            assert_eq!(b.record(o, 1_000 + i, &c), None, "call {i}");
        }
        assert_eq!(b.recent_calls(1_018, &c), 19);
        assert_eq!(b.state(1_018), Closed);
        assert_eq!(
            b.record(Error, 1_019, &c),
            Some(tr(Closed, Open, 1_019, TransitionCause::FailureRate))
        );
        assert_eq!(b.recent_failure_rate(1_019, &c), 0.5);
        assert_eq!(b.open_until_ms(1_019), Some(6_019));
    }

    #[test]
    fn high_rate_below_min_requests_does_not_trip() {
        let c = BreakerConfig {
            consecutive_failures: 1000.0,
            min_requests: 20,
            ..cfg()
        };
        let mut b = Breaker::new();
        for _ in 0..19 {
            assert_eq!(b.record(Error, 0, &c), None);
        }
        assert_eq!(b.recent_failure_rate(0, &c), 1.0);
        assert_eq!(b.state(0), Closed);
        assert!(b.record(Error, 0, &c).is_some());
    }

    #[test]
    fn success_never_trips_by_rate() {
        let c = rate_cfg();
        let mut b = Breaker::new();
        for _ in 0..19 {
            b.record(Error, 0, &c);
        }
        // 20 calls, 19 failures, but the 20th is a success: no trip on it.
        assert_eq!(b.record(Success, 0, &c), None);
        assert_eq!(b.state(0), Closed);
    }

    fn ten_failures_then(t2: u64) -> (Breaker, Option<Transition>) {
        let c = rate_cfg();
        let mut b = Breaker::new();
        for _ in 0..10 {
            assert_eq!(b.record(Error, 0, &c), None);
        }
        for _ in 0..10 {
            assert_eq!(b.record(Success, t2, &c), None);
        }
        let t = b.record(Error, t2, &c);
        (b, t)
    }

    #[test]
    fn old_buckets_leave_the_window() {
        let c = rate_cfg();
        // Window 60 s = 10 buckets of 6 s. At 59_999 (bucket 9) bucket 0 is
        // still inside: 21 calls, 11 failures -> rate 0.524 trips.
        let (b, t) = ten_failures_then(59_999);
        assert_eq!(
            t,
            Some(tr(Closed, Open, 59_999, TransitionCause::FailureRate))
        );
        assert_eq!(b.recent_calls(59_999, &c), 21);
        // At 60_000 (bucket 10) bucket 0 has left: 11 calls, no trip.
        let (b, t) = ten_failures_then(60_000);
        assert_eq!(t, None);
        assert_eq!(b.state(60_000), Closed);
        assert_eq!(b.recent_calls(60_000, &c), 11);
        assert_eq!(b.recent_failure_rate(60_000, &c), 1.0 / 11.0);
        // Everything has left by bucket 20.
        assert_eq!(b.recent_calls(120_000, &c), 0);
        assert_eq!(b.recent_failure_rate(120_000, &c), 0.0);
    }

    #[test]
    fn failure_rate_is_weighted() {
        let c = rate_cfg();
        let mut b = Breaker::new();
        b.record(RateLimited, 0, &c);
        b.record(SoftFailure, 0, &c);
        b.record(Error, 0, &c);
        b.record(Success, 0, &c);
        assert_eq!(b.recent_calls(0, &c), 4);
        assert_eq!(b.recent_failure_rate(0, &c), 2.0 / 4.0);
    }

    #[test]
    fn time_going_backwards_counts_into_latest_bucket() {
        let c = rate_cfg();
        let mut b = Breaker::new();
        b.record(Error, 100_000, &c);
        b.record(Error, 10, &c);
        assert_eq!(b.recent_calls(100_000, &c), 2);
        assert_eq!(b.recent_calls(0, &c), 2);
    }

    #[test]
    fn window_length_change_restarts_window() {
        let c = rate_cfg();
        let mut b = Breaker::new();
        b.record(Error, 0, &c);
        let c2 = BreakerConfig {
            window_secs: 30.0,
            ..rate_cfg()
        };
        assert_eq!(b.recent_calls(0, &c2), 0);
        b.record(Success, 0, &c2);
        assert_eq!(b.recent_calls(0, &c2), 1);
        assert_eq!(b.recent_failure_rate(0, &c2), 0.0);
    }

    #[test]
    fn open_rejects_until_cooldown_then_half_opens() {
        let c = cfg();
        let mut b = tripped(10_000);
        for now in [10_000, 12_000, 14_999] {
            assert_eq!(
                b.admit(now, &c),
                Admission::Rejected {
                    retry_at_ms: 15_000
                }
            );
            assert!(!b.would_admit(now, &c));
            assert_eq!(b.state(now), Open);
        }
        assert_eq!(b.poll(14_999), None);
        // Lazily half-open at exactly open_until.
        assert_eq!(b.state(15_000), HalfOpen);
        assert_eq!(b.open_until_ms(15_000), None);
        assert!(b.would_admit(15_000, &c));
        assert_eq!(b.since_ms(), 10_000);
        assert_eq!(
            b.poll(15_500),
            Some(tr(Open, HalfOpen, 15_000, TransitionCause::CooldownElapsed))
        );
        assert_eq!(b.since_ms(), 15_000);
        assert_eq!(b.poll(15_500), None);
    }

    #[test]
    fn outcomes_while_open_do_not_close() {
        let c = cfg();
        let mut b = tripped(0);
        for _ in 0..10 {
            assert_eq!(b.record(Success, 1_000, &c), None);
        }
        assert_eq!(b.record(Error, 1_000, &c), None);
        assert_eq!(b.state(4_999), Open);
        assert_eq!(b.open_until_ms(4_999), Some(5_000));
    }

    #[test]
    fn half_open_admits_exactly_n_probes() {
        let c = cfg();
        let mut b = tripped(0);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        assert_eq!(b.admit(5_100, &c), Admission::Probe);
        assert!(b.would_admit(5_150, &c));
        assert_eq!(b.admit(5_200, &c), Admission::Probe);
        assert_eq!(b.probes_in_flight(5_200, &c), 3);
        assert!(!b.would_admit(5_300, &c));
        // Retry when the oldest probe times out (5_000 + 30_000).
        assert_eq!(
            b.admit(5_300, &c),
            Admission::Rejected {
                retry_at_ms: 35_000
            }
        );
        assert_eq!(b.state(5_300), HalfOpen);
    }

    #[test]
    fn would_admit_takes_no_slot() {
        let c = cfg();
        let mut b = tripped(0);
        for _ in 0..10 {
            assert!(b.would_admit(5_000, &c));
        }
        for _ in 0..3 {
            assert_eq!(b.admit(5_000, &c), Admission::Probe);
        }
        assert!(!b.would_admit(5_000, &c));
    }

    #[test]
    fn probe_timeouts_free_slots() {
        let c = cfg();
        let mut b = tripped(0);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        assert_eq!(b.admit(6_000, &c), Admission::Probe);
        assert_eq!(b.admit(7_000, &c), Admission::Probe);
        assert_eq!(
            b.admit(34_999, &c),
            Admission::Rejected {
                retry_at_ms: 35_000
            }
        );
        assert_eq!(b.probes_in_flight(35_000, &c), 2);
        assert!(b.would_admit(35_000, &c));
        assert_eq!(b.admit(35_000, &c), Admission::Probe);
        assert_eq!(
            b.admit(35_000, &c),
            Admission::Rejected {
                retry_at_ms: 36_000
            }
        );
        // Once every probe has timed out, late reports move nothing.
        assert_eq!(b.probes_in_flight(65_000, &c), 0);
        assert_eq!(b.record(Error, 65_000, &c), None);
        assert_eq!(b.state(65_000), HalfOpen);
    }

    #[test]
    fn successes_to_close_close_it() {
        let c = cfg();
        let mut b = tripped(0);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        assert_eq!(b.record(Success, 5_400, &c), None);
        assert_eq!(b.state(5_400), HalfOpen);
        assert_eq!(b.probes_in_flight(5_400, &c), 2);
        let t = b.record(Success, 5_500, &c);
        assert_eq!(
            t,
            Some(tr(
                HalfOpen,
                Closed,
                5_500,
                TransitionCause::ProbesSucceeded
            ))
        );
        assert!(t.is_some_and(|t| t.is_recovery()));
        assert_eq!(b.state(5_500), Closed);
        assert_eq!(b.since_ms(), 5_500);
        assert_eq!(b.admit(5_500, &c), Admission::Allowed);
        // Old failures were dropped from the window on close.
        assert_eq!(b.recent_calls(5_500, &c), 0);
        assert_eq!(b.consecutive_failure_score(), 0.0);
        // The third probe reporting late counts as a normal closed call.
        assert_eq!(b.record(Error, 5_600, &c), None);
        assert_eq!(b.consecutive_failure_score(), 1.0);
    }

    #[test]
    fn outcomes_without_outstanding_probe_move_nothing() {
        let c = cfg();
        let mut b = tripped(0);
        // Half-open, but nothing admitted: late reports from pre-trip calls.
        assert_eq!(b.record(Success, 5_000, &c), None);
        assert_eq!(b.record(Success, 5_000, &c), None);
        assert_eq!(b.record(Error, 5_000, &c), None);
        assert_eq!(b.state(5_000), HalfOpen);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        assert_eq!(b.record(Success, 5_000, &c), None);
        assert_eq!(b.record(Success, 5_000, &c), None);
        assert_eq!(b.state(5_000), HalfOpen);
    }

    #[test]
    fn probe_failure_reopens_with_doubling_cooldown_capped() {
        let c = cfg();
        let mut b = tripped(0);
        let mut now = 5_000;
        let expected_secs = [10, 20, 40, 80, 160, 300, 300];
        for (n, secs) in expected_secs.iter().enumerate() {
            assert_eq!(b.state(now), HalfOpen);
            assert_eq!(b.admit(now, &c), Admission::Probe);
            let t = b.record(Error, now + 1, &c);
            assert_eq!(
                t,
                Some(tr(HalfOpen, Open, now + 1, TransitionCause::ProbeFailed))
            );
            let until = now + 1 + secs * 1_000;
            assert_eq!(b.open_until_ms(now + 1), Some(until), "re-open {n}");
            assert_eq!(b.state(until - 1), Open);
            assert_eq!(b.reopen_count(now + 1, &c), n as u32 + 2);
            now = until;
        }
        assert_eq!(b.total_opens(), 8);
    }

    #[test]
    fn soft_failure_probe_reopens() {
        let c = cfg();
        let mut b = tripped(0);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        assert_eq!(b.record(Success, 5_100, &c), None);
        assert_eq!(
            b.record(SoftFailure, 5_200, &c),
            Some(tr(HalfOpen, Open, 5_200, TransitionCause::ProbeFailed))
        );
        assert_eq!(b.open_until_ms(5_200), Some(15_200));
    }

    #[test]
    fn tripping_soon_after_closing_grows_backoff() {
        let c = cfg();
        let mut b = tripped(0);
        close_at(&mut b, 5_000);
        assert_eq!(b.reopen_count(5_000, &c), 1);
        // Trip again 299.999 s after closing: still within the streak.
        let t = 5_000 + 299_999;
        for _ in 0..5 {
            b.record(Error, t, &c);
        }
        assert_eq!(b.open_until_ms(t), Some(t + 10_000));
        assert_eq!(b.reopen_count(t, &c), 2);
    }

    #[test]
    fn backoff_resets_after_clean_period() {
        let c = cfg();
        let mut b = tripped(0);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        b.record(Error, 5_000, &c); // re-open for 10 s, level 2
        close_at(&mut b, 15_000);
        assert_eq!(b.reopen_count(15_000 + 299_999, &c), 2);
        assert_eq!(b.next_cooldown_ms(15_000 + 299_999, &c), 20_000);
        let t = 15_000 + 300_000;
        assert_eq!(b.reopen_count(t, &c), 0);
        assert_eq!(b.next_cooldown_ms(t, &c), 5_000);
        for _ in 0..5 {
            b.record(Error, t, &c);
        }
        assert_eq!(b.open_until_ms(t), Some(t + 5_000));
        assert_eq!(b.reopen_count(t, &c), 1);
    }

    #[test]
    fn force_down_holds_until_ttl_and_ignores_successes() {
        let c = cfg();
        let mut b = Breaker::new();
        assert_eq!(
            b.force_down(60_000, 1_000),
            Some(tr(Closed, Open, 1_000, TransitionCause::ForcedDown))
        );
        assert!(b.forced_down(1_000));
        for now in [1_000, 30_000, 59_999] {
            assert_eq!(b.record(Success, now, &c), None);
            assert_eq!(b.state(now), Open);
            assert_eq!(
                b.admit(now, &c),
                Admission::Rejected {
                    retry_at_ms: 60_000
                }
            );
        }
        assert_eq!(b.open_until_ms(59_999), Some(60_000));
        assert_eq!(b.state(60_000), HalfOpen);
        assert!(!b.forced_down(60_000));
        assert_eq!(
            b.poll(60_000),
            Some(tr(Open, HalfOpen, 60_000, TransitionCause::ForcedExpired))
        );
        // Forcing did not grow the backoff: a failed probe opens for 5 s.
        assert_eq!(b.reopen_count(60_000, &c), 0);
        assert_eq!(b.admit(60_000, &c), Admission::Probe);
        b.record(Timeout, 60_001, &c);
        assert_eq!(b.open_until_ms(60_001), Some(65_001));
    }

    #[test]
    fn forced_episode_keeps_backoff_streak_or_clean_reset() {
        let c = cfg();
        // Forced down 1 s after closing: the streak (level 1) carries over.
        let mut b = tripped(0);
        close_at(&mut b, 5_000);
        b.force_down(70_000, 6_000);
        assert_eq!(b.reopen_count(70_000, &c), 1);
        assert_eq!(b.admit(70_000, &c), Admission::Probe);
        b.record(Error, 70_000, &c);
        assert_eq!(b.open_until_ms(70_000), Some(80_000));
        // Forced down after 300 s closed cleanly: the backoff has reset.
        let mut b = tripped(0);
        close_at(&mut b, 5_000);
        b.force_down(400_000, 305_000);
        assert_eq!(b.reopen_count(400_000, &c), 0);
        assert_eq!(b.admit(400_000, &c), Admission::Probe);
        b.record(Error, 400_000, &c);
        assert_eq!(b.open_until_ms(400_000), Some(405_000));
        // ... and the next failed probe doubles again.
        assert_eq!(b.admit(405_000, &c), Admission::Probe);
        b.record(Error, 405_000, &c);
        assert_eq!(b.open_until_ms(405_000), Some(415_000));
    }

    #[test]
    fn force_down_while_open_or_half_open() {
        let c = cfg();
        // Over a failure-driven open: no transition, the later end wins.
        let mut b = tripped(0);
        assert_eq!(b.force_down(3_000, 1_000), None);
        assert_eq!(b.open_until_ms(1_000), Some(5_000));
        assert_eq!(b.force_down(20_000, 1_000), None);
        assert_eq!(b.open_until_ms(1_000), Some(20_000));
        assert!(b.forced_down(1_000));
        assert_eq!(b.reopen_count(1_000, &c), 1);
        assert_eq!(b.total_opens(), 1);
        // From half-open: outstanding probes are dropped.
        let mut b = tripped(0);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        assert_eq!(
            b.force_down(9_000, 6_000),
            Some(tr(HalfOpen, Open, 6_000, TransitionCause::ForcedDown))
        );
        assert_eq!(b.record(Success, 6_500, &c), None);
        assert_eq!(b.state(8_999), Open);
        // A ttl already past is ignored.
        let mut b = Breaker::new();
        assert_eq!(b.force_down(1_000, 1_000), None);
        assert_eq!(b.state(1_000), Closed);
    }

    #[test]
    fn clear_forced_goes_half_open() {
        let c = cfg();
        let mut b = Breaker::new();
        b.set_degraded(100_000);
        b.force_down(60_000, 1_000);
        assert_eq!(
            b.clear_forced(2_000),
            Some(tr(Open, HalfOpen, 2_000, TransitionCause::ForcedClear))
        );
        assert_eq!(b.state(2_000), HalfOpen);
        assert!(!b.degraded(2_000));
        assert_eq!(b.since_ms(), 2_000);
        assert_eq!(b.admit(2_000, &c), Admission::Probe);
        assert_eq!(b.admit(2_000, &c), Admission::Probe);
        b.record(Success, 2_100, &c);
        assert_eq!(
            b.record(Success, 2_200, &c),
            Some(tr(
                HalfOpen,
                Closed,
                2_200,
                TransitionCause::ProbesSucceeded
            ))
        );
        // Nothing forced: no transition, failure-driven open keeps running.
        assert_eq!(b.clear_forced(3_000), None);
        let mut b = tripped(0);
        assert_eq!(b.clear_forced(1_000), None);
        assert_eq!(b.open_until_ms(1_000), Some(5_000));
        // Forced ttl already over: already half-open, nothing to clear.
        let mut b = Breaker::new();
        b.force_down(5_000, 0);
        assert_eq!(b.clear_forced(5_000), None);
        assert_eq!(b.state(5_000), HalfOpen);
    }

    #[test]
    fn degraded_expires() {
        let mut b = Breaker::new();
        assert!(!b.degraded(0));
        b.set_degraded(10_000);
        assert!(b.degraded(9_999));
        assert_eq!(b.degraded_until_ms(9_999), Some(10_000));
        assert!(!b.degraded(10_000));
        assert_eq!(b.degraded_until_ms(10_000), None);
        assert_eq!(b.state(5_000), Closed);
        b.set_degraded(0);
        assert!(!b.degraded(5_000));
    }

    #[test]
    fn validate_accepts_defaults() {
        assert_eq!(BreakerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_messages() {
        let cases: Vec<(BreakerConfig, &str)> = vec![
            (
                BreakerConfig {
                    successes_to_close: 5,
                    ..cfg()
                },
                "breaker.successes_to_close must be <= breaker.half_open_probes (got 5 > 3)",
            ),
            (
                BreakerConfig {
                    cooldown_secs: f64::NAN,
                    ..cfg()
                },
                "breaker.cooldown_secs must be a finite number (got NaN)",
            ),
            (
                BreakerConfig {
                    window_secs: f64::INFINITY,
                    ..cfg()
                },
                "breaker.window_secs must be a finite number (got inf)",
            ),
            (
                BreakerConfig {
                    rate_limited_weight: -0.5,
                    ..cfg()
                },
                "breaker.rate_limited_weight must be >= 0 (got -0.5)",
            ),
            (
                BreakerConfig {
                    consecutive_failures: 0.0,
                    ..cfg()
                },
                "breaker.consecutive_failures must be > 0 (got 0)",
            ),
            (
                BreakerConfig {
                    probe_timeout_secs: 0.0,
                    ..cfg()
                },
                "breaker.probe_timeout_secs must be > 0 (got 0)",
            ),
            (
                BreakerConfig {
                    failure_rate_threshold: 1.5,
                    ..cfg()
                },
                "breaker.failure_rate_threshold must be in (0, 1] (got 1.5)",
            ),
            (
                BreakerConfig {
                    window_secs: 0.005,
                    ..cfg()
                },
                "breaker.window_secs must be >= 0.01 (one millisecond per bucket) (got 0.005)",
            ),
            (
                BreakerConfig {
                    cooldown_multiplier: 0.5,
                    ..cfg()
                },
                "breaker.cooldown_multiplier must be >= 1 (got 0.5)",
            ),
            (
                BreakerConfig {
                    max_cooldown_secs: 1.0,
                    ..cfg()
                },
                "breaker.max_cooldown_secs must be >= breaker.cooldown_secs (got 1 < 5)",
            ),
            (
                BreakerConfig {
                    min_requests: 0,
                    ..cfg()
                },
                "breaker.min_requests must be >= 1 (got 0)",
            ),
            (
                BreakerConfig {
                    half_open_probes: 0,
                    ..cfg()
                },
                "breaker.half_open_probes must be >= 1 (got 0)",
            ),
            (
                BreakerConfig {
                    successes_to_close: 0,
                    ..cfg()
                },
                "breaker.successes_to_close must be >= 1 (got 0)",
            ),
        ];
        for (c, msg) in cases {
            assert_eq!(c.validate(), Err(msg.to_string()));
        }
    }

    #[test]
    fn cooldown_ms_grows_and_caps() {
        let c = cfg();
        assert_eq!(c.cooldown_ms(0), 5_000);
        assert_eq!(c.cooldown_ms(1), 10_000);
        assert_eq!(c.cooldown_ms(5), 160_000);
        assert_eq!(c.cooldown_ms(6), 300_000);
        assert_eq!(c.cooldown_ms(u32::MAX), 300_000);
    }

    #[test]
    fn serde_round_trip_keeps_behaviour() {
        let c = cfg();
        let mut b = tripped(0);
        b.set_degraded(50_000);
        assert_eq!(b.admit(5_000, &c), Admission::Probe);
        assert_eq!(b.record(Success, 5_100, &c), None);
        assert_eq!(b.admit(5_200, &c), Admission::Probe);
        let json = serde_json::to_string(&b).expect("serialize");
        let mut back: Breaker = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, b);
        assert!(back.degraded(5_300));
        assert_eq!(
            back.record(Success, 5_300, &c),
            Some(tr(
                HalfOpen,
                Closed,
                5_300,
                TransitionCause::ProbesSucceeded
            ))
        );

        let json = serde_json::to_string(&c).expect("serialize");
        let back: BreakerConfig = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, c);

        let t = tr(Closed, Open, 7, TransitionCause::FailureRate);
        let json = serde_json::to_string(&t).expect("serialize");
        assert_eq!(serde_json::from_str::<Transition>(&json).ok(), Some(t));
    }

    #[test]
    fn config_defaults_missing_fields_and_rejects_unknown() {
        let c: BreakerConfig =
            serde_json::from_str(r#"{"cooldown_secs": 1.5}"#).expect("partial config");
        assert_eq!(
            c,
            BreakerConfig {
                cooldown_secs: 1.5,
                ..cfg()
            }
        );
        assert!(serde_json::from_str::<BreakerConfig>(r#"{"cooldwn_secs": 1}"#).is_err());
    }
}
