//! `[anomaly]`: cost anomaly alerts (see `crate::spend::anomaly` for the detector).

use serde::Deserialize;

use crate::validation::FieldError;

/// Sigmas above the baseline an hour's spend must reach to fire: 4 keeps a quiet month of
/// hourly noise (720 hours) free of false alarms while a doubling of a steady spend still fires.
pub const DEFAULT_THRESHOLD_SIGMAS: f64 = 4.0;
/// Least excess over the baseline, USD, that fires: a spike of cents is noise, not a finance event.
pub const DEFAULT_MIN_USD: f64 = 1.0;
/// Half-life of the baseline, hours: three days, long enough that a spike of a few hours barely
/// moves it, short enough that a lasting change of traffic becomes the new normal within a week.
pub const DEFAULT_HALF_LIFE_HOURS: f64 = 72.0;
/// Hours of history before a baseline may fire: a day, so the spread is estimated first.
pub const DEFAULT_WARMUP_HOURS: u32 = 24;
/// Half-life of an hour-of-day factor, in days (occurrences of that hour): a week, so a weekday
/// pattern that shifts is followed within days while one odd day barely moves it.
pub const DEFAULT_SEASONAL_HALF_LIFE_DAYS: f64 = 7.0;

/// `anomaly.seasonality`: whether the baseline expects a daily cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Seasonality {
    /// A level x hour-of-day (UTC) factor model: a quiet night is judged against nights, a busy
    /// afternoon against afternoons.
    Daily,
    /// One level for every hour: the daily cycle counts as spread.
    None,
}

/// The detector's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    pub enabled: bool,
    /// `anomaly.threshold`: sigmas above the baseline level.
    pub threshold: f64,
    /// `anomaly.min_usd`: least excess over the baseline level, USD.
    pub min_usd: f64,
    pub half_life_hours: f64,
    pub warmup_hours: u32,
    /// `anomaly.seasonality`: `"daily"` (default) or `"none"`.
    pub seasonality: Seasonality,
    /// `anomaly.seasonal_half_life_days`: how fast an hour-of-day factor follows change.
    pub seasonal_half_life_days: f64,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            enabled: true,
            threshold: DEFAULT_THRESHOLD_SIGMAS,
            min_usd: DEFAULT_MIN_USD,
            half_life_hours: DEFAULT_HALF_LIFE_HOURS,
            warmup_hours: DEFAULT_WARMUP_HOURS,
            seasonality: Seasonality::Daily,
            seasonal_half_life_days: DEFAULT_SEASONAL_HALF_LIFE_DAYS,
        }
    }
}

impl AnomalyConfig {
    /// Checks every field; the error names it (the loader prefixes `anomaly.`).
    pub fn validate(self) -> Result<Self, FieldError> {
        if !(self.threshold.is_finite() && self.threshold >= 1.0) {
            return Err(FieldError::new(
                "threshold",
                format!("must be a number of sigmas >= 1, got {}", self.threshold),
            ));
        }
        if !(self.min_usd.is_finite() && self.min_usd >= 0.0) {
            return Err(FieldError::new(
                "min_usd",
                format!("must be a finite amount >= 0 USD, got {}", self.min_usd),
            ));
        }
        if !(self.half_life_hours.is_finite() && (1.0..=8760.0).contains(&self.half_life_hours)) {
            return Err(FieldError::new(
                "half_life_hours",
                format!("must be in [1, 8760] hours, got {}", self.half_life_hours),
            ));
        }
        if !(self.seasonal_half_life_days.is_finite()
            && (1.0..=365.0).contains(&self.seasonal_half_life_days))
        {
            return Err(FieldError::new(
                "seasonal_half_life_days",
                format!(
                    "must be in [1, 365] days, got {}",
                    self.seasonal_half_life_days
                ),
            ));
        }
        if self.warmup_hours > 8760 {
            return Err(FieldError::new(
                "warmup_hours",
                format!("must be at most 8760 hours, got {}", self.warmup_hours),
            ));
        }
        Ok(self)
    }
}
