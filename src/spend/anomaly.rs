//! Cost anomaly detection: per budget key and per model, the spend of each clock hour against that
//! scope's own baseline, an exponentially weighted mean and variance of past hourly spend.
//!
//! The baseline follows West/Finch's incremental EW statistics (T. Finch, "Incremental calculation
//! of weighted mean and variance", 2009): with `a = 1 - 2^(-1/half_life_hours)`, after each
//! closed hour `x`: `d = x - level; level += a*d; var = (1-a)*(var + a*d*d)`, with `a` at least
//! `1/(n+1)` for the n-th hour, so the first hours give the plain mean and variance (Welford) and
//! a new baseline starts at its own level. Hours without spend close as 0, so a scope that falls
//! quiet lowers its baseline.
//!
//! The current hour fires as soon as its running sum exceeds `level + threshold*sigma` by at least
//! `min_usd`, so a spike is caught within the hour it starts, not at its end. Three guards keep a
//! quiet period quiet and make a spike fire once:
//! - a warm-up of `warmup_hours` closed hours before any firing (the spread must be known);
//! - sigma is at least [`MIN_SIGMA_FRACTION`] of the level (a perfectly steady spend would
//!   otherwise fire on any wobble);
//! - once fired, the scope stays alarmed until an hour closes back within the threshold, and an
//!   anomalous hour enters the baseline clipped at the threshold (winsorised), so a long spike
//!   fires once and a lasting change becomes the new normal gradually.
//!
//! Pure: time is passed in. Restart: baselines are persisted with the rollup (see the module doc of
//! [`crate::spend`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use crate::config::AnomalyConfig;

pub const HOUR_MS: u64 = 3_600_000;
/// Least sigma, as a fraction of the level: a steady spend of $100/h is not anomalous at $101.
pub const MIN_SIGMA_FRACTION: f64 = 0.1;
/// Most empty hours folded in one step: after two weeks of silence a baseline is ~0 anyway.
const MAX_GAP_HOURS: u64 = 24 * 14;

/// What a baseline watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    BudgetKey,
    Model,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::BudgetKey => "budget_key",
            Scope::Model => "model",
        }
    }
}

/// A spike: one hour's spend far above its scope's baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spike {
    pub scope: Scope,
    /// The budget key or model.
    pub name: String,
    pub hour_start_ms: u64,
    /// When the spend that crossed the threshold settled.
    pub at_ms: u64,
    /// The hour's spend so far, USD.
    pub hour_usd: f64,
    /// The baseline's level and spread, USD per hour.
    pub baseline_usd: f64,
    pub sigma_usd: f64,
    /// How many sigmas above the level the hour is.
    pub sigmas: f64,
}

/// One scope's baseline and its current hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The current hour (hours since the Unix epoch) and its spend so far.
    pub hour: u64,
    pub hour_usd: f64,
    pub level: f64,
    pub var: f64,
    /// Hours closed into the baseline.
    pub hours: u32,
    /// Fired and not yet back within the threshold.
    pub alarmed: bool,
}

impl Baseline {
    /// The effective sigma (with the floor).
    pub fn sigma(&self) -> f64 {
        self.var
            .max(0.0)
            .sqrt()
            .max(MIN_SIGMA_FRACTION * self.level)
    }

    fn limit(&self, cfg: &AnomalyConfig) -> f64 {
        self.level + cfg.threshold * self.sigma()
    }

    fn warm(&self, cfg: &AnomalyConfig) -> bool {
        self.hours >= cfg.warmup_hours
    }

    /// Folds one finished hour of spend `x` into the baseline.
    fn close(&mut self, x: f64, cfg: &AnomalyConfig) {
        let limit = self.limit(cfg);
        let x = if self.warm(cfg) {
            if x <= limit {
                self.alarmed = false;
            }
            x.min(limit)
        } else {
            x
        };
        // Equal weights until the EW weight is the larger (a running mean and variance first), so
        // a new baseline starts at its first hour instead of climbing from 0.
        let a = (1.0 - 0.5f64.powf(1.0 / cfg.half_life_hours)).max(1.0 / f64::from(self.hours + 1));
        let d = x - self.level;
        self.level += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
        self.hours = self.hours.saturating_add(1);
    }

    /// Moves to the hour of `now_ms`, closing the hours in between (a clock going backwards
    /// stays in the current hour).
    pub fn advance(&mut self, now_ms: u64, cfg: &AnomalyConfig) {
        let h = now_ms / HOUR_MS;
        if self.hours == 0 && self.hour == 0 && self.hour_usd == 0.0 {
            self.hour = h;
            return;
        }
        if h <= self.hour {
            return;
        }
        let x = std::mem::take(&mut self.hour_usd);
        self.close(x, cfg);
        for _ in 0..(h - self.hour - 1).min(MAX_GAP_HOURS) {
            self.close(0.0, cfg);
        }
        self.hour = h;
    }

    /// Adds `usd` spent at `now_ms`; returns the spike when this spend makes the hour one.
    pub fn add(
        &mut self,
        scope: Scope,
        name: &str,
        usd: f64,
        cfg: &AnomalyConfig,
        now_ms: u64,
    ) -> Option<Spike> {
        self.advance(now_ms, cfg);
        if usd.is_finite() && usd > 0.0 {
            self.hour_usd += usd;
        }
        let excess = self.hour_usd - self.level;
        if self.alarmed
            || !self.warm(cfg)
            || self.hour_usd <= self.limit(cfg)
            || excess < cfg.min_usd
        {
            return None;
        }
        self.alarmed = true;
        let sigma = self.sigma();
        Some(Spike {
            scope,
            name: name.to_string(),
            hour_start_ms: self.hour * HOUR_MS,
            at_ms: now_ms,
            hour_usd: self.hour_usd,
            baseline_usd: self.level,
            sigma_usd: sigma,
            sigmas: if sigma > 0.0 {
                excess / sigma
            } else {
                f64::INFINITY
            },
        })
    }
}

/// Every scope's baseline, with those changed since the store last took them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detectors {
    baselines: BTreeMap<(Scope, String), Baseline>,
    dirty: BTreeSet<(Scope, String)>,
}

impl Detectors {
    pub fn restore(b: impl IntoIterator<Item = ((Scope, String), Baseline)>) -> Detectors {
        Detectors {
            baselines: b.into_iter().collect(),
            dirty: BTreeSet::new(),
        }
    }

    /// Adds spend to one scope's baseline.
    pub fn add(
        &mut self,
        scope: Scope,
        name: &str,
        usd: f64,
        cfg: &AnomalyConfig,
        now_ms: u64,
    ) -> Option<Spike> {
        let key = (scope, name.to_string());
        let b = self.baselines.entry(key.clone()).or_default();
        let spike = b.add(scope, name, usd, cfg, now_ms);
        self.dirty.insert(key);
        spike
    }

    pub fn get(&self, scope: Scope, name: &str) -> Option<&Baseline> {
        self.baselines.get(&(scope, name.to_string()))
    }

    pub fn take_changes(&mut self) -> Vec<((Scope, String), Baseline)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|k| self.baselines.get(&k).map(|b| (k.clone(), b.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn cfg() -> AnomalyConfig {
        AnomalyConfig::default()
    }

    #[test]
    fn ew_statistics_match_the_closed_form_of_a_constant_series() {
        let c = cfg();
        let mut b = Baseline::default();
        for h in 0..2000u64 {
            b.add(Scope::Model, "m", 10.0, &c, h * HOUR_MS);
        }
        assert!((b.level - 10.0).abs() < 1e-6, "{b:?}");
        assert!(b.var < 1e-6, "{b:?}");
        // Half-life: one step from 0 towards 1 covers 1 - 2^(-1/h) of the way.
        let mut z = Baseline {
            hours: 1000,
            ..Baseline::default()
        };
        let cold = AnomalyConfig {
            warmup_hours: u32::MAX, // no clipping at the (zero) threshold
            ..c.clone()
        };
        z.close(1.0, &cold);
        assert!((z.level - (1.0 - 0.5f64.powf(1.0 / 72.0))).abs() < 1e-12);
    }

    #[test]
    fn a_spike_fires_once_within_its_hour_and_never_in_noise() {
        let c = cfg();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut b = Baseline::default();
        let mut fired = Vec::new();
        // Four quiet weeks of ~$20/h in 12 calls an hour, then a 6-hour spike at 5x.
        for h in 0..(24 * 28 + 30) {
            let spike = (24 * 28..24 * 28 + 6).contains(&h);
            for i in 0..12u64 {
                let usd = rng.random_range(1.0..2.4) * if spike { 5.0 } else { 1.0 };
                let t = h * HOUR_MS + i * 300_000;
                if let Some(s) = b.add(Scope::Model, "m", usd, &c, t) {
                    fired.push(s);
                }
            }
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        let s = &fired[0];
        assert_eq!(s.hour_start_ms, 24 * 28 * HOUR_MS);
        assert!(s.at_ms < s.hour_start_ms + HOUR_MS / 2, "{s:?}");
        assert!(s.sigmas > c.threshold);
    }

    #[test]
    fn warm_up_and_min_usd_hold_fire_and_an_alarm_rearms_after_a_normal_hour() {
        let mut c = cfg();
        let mut b = Baseline::default();
        assert!(b.add(Scope::Model, "m", 1000.0, &c, 0).is_none(), "warm-up");
        let mut b = Baseline::default();
        for h in 0..48 {
            b.add(Scope::Model, "m", 0.01, &c, h * HOUR_MS);
        }
        assert!(
            b.add(Scope::Model, "m", 0.5, &c, 48 * HOUR_MS).is_none(),
            "below min_usd"
        );
        c.min_usd = 0.1;
        assert!(b
            .add(Scope::Model, "m", 0.5, &c, 48 * HOUR_MS + 1)
            .is_some());
        assert!(
            b.add(Scope::Model, "m", 5.0, &c, 49 * HOUR_MS).is_none(),
            "still alarmed"
        );
        b.add(Scope::Model, "m", 0.01, &c, 50 * HOUR_MS);
        b.add(Scope::Model, "m", 0.01, &c, 51 * HOUR_MS);
        assert!(!b.alarmed);
        assert!(b
            .add(Scope::Model, "m", 5.0, &c, 51 * HOUR_MS + 1)
            .is_some());
    }

    #[test]
    fn silence_lowers_the_baseline_and_detectors_hand_out_changes() {
        let c = cfg();
        let mut d = Detectors::default();
        for h in 0..48 {
            d.add(Scope::BudgetKey, "team", 10.0, &c, h * HOUR_MS);
        }
        assert_eq!(d.take_changes().len(), 1);
        assert!(d.take_changes().is_empty());
        let before = d.get(Scope::BudgetKey, "team").map(|b| b.level).unwrap();
        d.add(Scope::BudgetKey, "team", 0.0, &c, 200 * HOUR_MS);
        let after = d.get(Scope::BudgetKey, "team").map(|b| b.level).unwrap();
        assert!(after < before * 0.5, "{before} -> {after}");
    }
}
