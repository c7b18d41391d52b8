//! A budget's settings and their validation.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::{
    Period, DEFAULT_ALERT_THRESHOLDS, DEFAULT_PACING_GAIN, DEFAULT_PACING_MAX_MULTIPLIER,
    DEFAULT_PACING_MIN_MULTIPLIER, DEFAULT_PACING_WARMUP_FRACTION, DEFAULT_RESERVATION_TTL_SECS,
};
use crate::validation::FieldError;

/// What the router does once the budget is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCap {
    /// Keep serving, but only the cheapest eligible model may be routed (the
    /// caller enforces this; the ledger just reports [`Exhausted`](super::Exhausted)).
    Cheapest,
    /// Reject requests until the period resets.
    Reject,
}

/// Budget settings of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// The key (tenant, API key, ...) this budget applies to.
    pub key: String,
    /// Length of a budget period.
    pub period: Period,
    /// Spend limit per period, USD; finite and > 0.
    pub limit_usd: f64,
    /// Time zone whose local midnights bound the periods.
    pub time_zone: Tz,
    /// Behaviour at the cap.
    pub on_cap: OnCap,
    /// Fractions of the limit whose crossing by settled spend raises an
    /// alert, each in (0, 1], any order, no duplicates.
    pub alert_thresholds: Vec<f64>,
    /// Seconds a reservation may stay unsettled before it expires.
    pub reservation_ttl_secs: f64,
    /// Upper bound of the pacing multiplier (>= 1).
    pub pacing_max_multiplier: f64,
    /// Lower bound of the pacing multiplier, in (0, 1].
    pub pacing_min_multiplier: f64,
    /// Exponent applied to the spend/time ratio (>= 0; 0 disables pacing).
    pub pacing_gain: f64,
    /// Leading fraction of the period without pacing, in [0, 1).
    pub pacing_warmup_fraction: f64,
}

impl BudgetConfig {
    /// A config with the given key, period and limit, UTC periods,
    /// [`OnCap::Cheapest`] and every other setting at its `DEFAULT_*` value.
    pub fn new(key: impl Into<String>, period: Period, limit_usd: f64) -> Self {
        Self {
            key: key.into(),
            period,
            limit_usd,
            time_zone: Tz::UTC,
            on_cap: OnCap::Cheapest,
            alert_thresholds: DEFAULT_ALERT_THRESHOLDS.to_vec(),
            reservation_ttl_secs: DEFAULT_RESERVATION_TTL_SECS,
            pacing_max_multiplier: DEFAULT_PACING_MAX_MULTIPLIER,
            pacing_min_multiplier: DEFAULT_PACING_MIN_MULTIPLIER,
            pacing_gain: DEFAULT_PACING_GAIN,
            pacing_warmup_fraction: DEFAULT_PACING_WARMUP_FRACTION,
        }
    }

    /// Checks every setting: `Ok(())` if usable, otherwise the first bad field (its name inside
    /// the budget's table, e.g. `limit_usd` or `alert_thresholds[2]`) with its value and what
    /// would be right.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.key.trim().is_empty() {
            return Err(FieldError::new(
                "key",
                format!("must not be empty (got {:?})", self.key),
            ));
        }
        if !(self.limit_usd.is_finite() && self.limit_usd > 0.0) {
            return Err(FieldError::new(
                "limit_usd",
                format!("must be finite and > 0 (got {})", self.limit_usd),
            ));
        }
        for (i, &t) in self.alert_thresholds.iter().enumerate() {
            let field = format!("alert_thresholds[{i}]");
            if !(t.is_finite() && t > 0.0 && t <= 1.0) {
                return Err(FieldError::new(
                    field,
                    format!("must be in (0, 1] (got {t})"),
                ));
            }
            if self.alert_thresholds[..i].contains(&t) {
                return Err(FieldError::new(
                    field,
                    format!("duplicates value {t}; list each threshold once"),
                ));
            }
        }
        if !(self.reservation_ttl_secs.is_finite() && self.reservation_ttl_secs > 0.0) {
            return Err(FieldError::new(
                "reservation_ttl_secs",
                format!("must be finite and > 0 (got {})", self.reservation_ttl_secs),
            ));
        }
        if !(self.pacing_max_multiplier.is_finite() && self.pacing_max_multiplier >= 1.0) {
            return Err(FieldError::new(
                "pacing_max_multiplier",
                format!(
                    "must be finite and >= 1 (got {})",
                    self.pacing_max_multiplier
                ),
            ));
        }
        if !(self.pacing_min_multiplier > 0.0 && self.pacing_min_multiplier <= 1.0) {
            return Err(FieldError::new(
                "pacing_min_multiplier",
                format!("must be in (0, 1] (got {})", self.pacing_min_multiplier),
            ));
        }
        if !(self.pacing_gain.is_finite() && self.pacing_gain >= 0.0) {
            return Err(FieldError::new(
                "pacing_gain",
                format!("must be finite and >= 0 (got {})", self.pacing_gain),
            ));
        }
        if !(self.pacing_warmup_fraction >= 0.0 && self.pacing_warmup_fraction < 1.0) {
            return Err(FieldError::new(
                "pacing_warmup_fraction",
                format!("must be in [0, 1) (got {})", self.pacing_warmup_fraction),
            ));
        }
        Ok(())
    }

    /// The valid alert thresholds, ascending and deduplicated.
    pub fn sorted_thresholds(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .alert_thresholds
            .iter()
            .copied()
            .filter(|t| t.is_finite() && *t > 0.0 && *t <= 1.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    }
}
