//! Breaker tuning: the configuration table, its defaults (each with the reason for its value)
//! and its validation, kept apart from the state machine that reads it.

use serde::{Deserialize, Serialize};

use super::WINDOW_BUCKETS;
use crate::validation::FieldError;

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
    /// Failure weight of [`CallOutcome::Error`](super::CallOutcome::Error).
    pub error_weight: f64,
    /// Failure weight of [`CallOutcome::Timeout`](super::CallOutcome::Timeout).
    pub timeout_weight: f64,
    /// Failure weight of [`CallOutcome::RateLimited`](super::CallOutcome::RateLimited).
    pub rate_limited_weight: f64,
    /// Failure weight of [`CallOutcome::SoftFailure`](super::CallOutcome::SoftFailure).
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
    /// Checks the configuration: `Ok(())` if usable, otherwise the first bad field (its name
    /// inside the `breaker` table) with its value and what would be right. Non-finite and
    /// negative numbers are rejected, as are thresholds and durations that would make the breaker
    /// trip at once or never recover.
    pub fn validate(&self) -> Result<(), FieldError> {
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
                return Err(FieldError::new(
                    name,
                    format!("must be a finite number (got {value})"),
                ));
            }
            if value < 0.0 {
                return Err(FieldError::new(name, format!("must be >= 0 (got {value})")));
            }
        }
        for (name, value) in [
            ("consecutive_failures", self.consecutive_failures),
            ("cooldown_secs", self.cooldown_secs),
            ("probe_timeout_secs", self.probe_timeout_secs),
        ] {
            if value <= 0.0 {
                return Err(FieldError::new(name, format!("must be > 0 (got {value})")));
            }
        }
        if self.failure_rate_threshold <= 0.0 || self.failure_rate_threshold > 1.0 {
            return Err(FieldError::new(
                "failure_rate_threshold",
                format!("must be in (0, 1] (got {})", self.failure_rate_threshold),
            ));
        }
        let min_window_secs = WINDOW_BUCKETS as f64 / 1000.0;
        if self.window_secs < min_window_secs {
            return Err(FieldError::new(
                "window_secs",
                format!(
                    "must be >= {min_window_secs} (one millisecond per bucket) (got {})",
                    self.window_secs
                ),
            ));
        }
        if self.cooldown_multiplier < 1.0 {
            return Err(FieldError::new(
                "cooldown_multiplier",
                format!("must be >= 1 (got {})", self.cooldown_multiplier),
            ));
        }
        if self.max_cooldown_secs < self.cooldown_secs {
            return Err(FieldError::new(
                "max_cooldown_secs",
                format!(
                    "must be >= cooldown_secs (got {} < {})",
                    self.max_cooldown_secs, self.cooldown_secs
                ),
            ));
        }
        for (name, value) in [
            ("min_requests", self.min_requests),
            ("half_open_probes", self.half_open_probes),
            ("successes_to_close", self.successes_to_close),
        ] {
            if value == 0 {
                return Err(FieldError::new(name, "must be >= 1 (got 0)"));
            }
        }
        if self.successes_to_close > self.half_open_probes {
            return Err(FieldError::new(
                "successes_to_close",
                format!(
                    "must be <= half_open_probes (got {} > {})",
                    self.successes_to_close, self.half_open_probes
                ),
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

/// Seconds to whole milliseconds, saturating; NaN and negatives give 0.
pub(super) fn secs_to_ms(secs: f64) -> u64 {
    let ms = secs * 1000.0;
    if ms.is_nan() || ms <= 0.0 {
        0
    } else {
        ms.round() as u64
    }
}
