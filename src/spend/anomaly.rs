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
//! # Daily seasonality (`anomaly.seasonality = "daily"`, the default)
//! Spend follows the working day: a night hour at a third of the afternoon's is normal, and a
//! night that suddenly costs as much as an afternoon is not. One level for all hours counts the
//! daily cycle as spread, so sigma is wide, a night-time spike is missed and a day-time one is
//! caught late. The seasonal baseline is a level x hour-of-day factor model (multiplicative
//! Holt-Winters without trend): 24 factors `f[s]` (hour of day, UTC) with mean 1, and
//! - the expected spend of an hour in slot `s` is `f[s] * level`, its limit
//!   `f[s] * (level + threshold*sigma)`;
//! - closing an hour `x` of slot `s` updates the level and variance (above) with the
//!   deseasonalised `y = x / f[s]`, then (after the first day, when the level is a day's mean)
//!   `f[s] += g*(x/level_before - f[s])` with `g = 1 - 2^(-1/seasonal_half_life_days)`, at least
//!   `1/(n+1)` for the n-th time the slot is seen (so the first day sets it directly), floored at
//!   [`MIN_SEASONAL_FACTOR`]; once every slot was seen, the factors are rescaled to mean 1 so the
//!   level stays the mean hourly spend.
//!
//! With `"none"` every factor is 1 and the model is the level/spread one above.
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
//! In cluster mode the same baseline is fed the cluster-wide hourly totals instead of one
//! replica's settlements ([`Baseline::observe_total`], see `crate::cluster::spend`).
//!
//! Pure: time is passed in. Restart: baselines are persisted with the rollup (see the module doc of
//! [`crate::spend`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use crate::config::anomaly::Seasonality;
pub use crate::config::AnomalyConfig;

pub const HOUR_MS: u64 = 3_600_000;
/// Least sigma, as a fraction of the level: a steady spend of $100/h is not anomalous at $101.
pub const MIN_SIGMA_FRACTION: f64 = 0.1;
/// Least hour-of-day factor: a slot that is always empty would otherwise deseasonalise by 0.
pub const MIN_SEASONAL_FACTOR: f64 = 0.05;
/// Slots of the daily cycle.
const SLOTS: usize = 24;
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
    /// The baseline's expectation of this hour (its level times the hour-of-day factor) and
    /// spread, USD per hour.
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
    /// The hour-of-day factors (with `seasonality = "daily"`, once the first day closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub season: Option<Season>,
}

/// The 24 hour-of-day factors (UTC) of a seasonal baseline and how often each slot closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Season {
    pub factors: Vec<f64>,
    pub seen: Vec<u32>,
}

impl Default for Season {
    fn default() -> Self {
        Season {
            factors: vec![1.0; SLOTS],
            seen: vec![0; SLOTS],
        }
    }
}

/// The hour-of-day slot (UTC) of hour `hour` since the epoch.
fn slot(hour: u64) -> usize {
    (hour % SLOTS as u64) as usize
}

impl Baseline {
    /// The effective sigma (with the floor), deseasonalised.
    pub fn sigma(&self) -> f64 {
        self.var
            .max(0.0)
            .sqrt()
            .max(MIN_SIGMA_FRACTION * self.level)
    }

    /// The seasonal factor of hour `hour` (1 without seasonality or before its slot was seen).
    pub fn factor(&self, hour: u64, cfg: &AnomalyConfig) -> f64 {
        match (&self.season, cfg.seasonality) {
            (Some(s), Seasonality::Daily) => {
                let i = slot(hour);
                match (s.seen.get(i), s.factors.get(i)) {
                    (Some(&n), Some(&f)) if n > 0 => f.max(MIN_SEASONAL_FACTOR),
                    _ => 1.0,
                }
            }
            _ => 1.0,
        }
    }

    /// The expected spend of hour `hour` and its limit, USD.
    fn expected(&self, hour: u64, cfg: &AnomalyConfig) -> (f64, f64) {
        let f = self.factor(hour, cfg);
        (
            f * self.level,
            f * (self.level + cfg.threshold * self.sigma()),
        )
    }

    fn warm(&self, cfg: &AnomalyConfig) -> bool {
        self.hours >= cfg.warmup_hours
    }

    /// Folds finished hour `hour` of spend `x` into the baseline.
    fn close(&mut self, hour: u64, x: f64, cfg: &AnomalyConfig) {
        let (_, limit) = self.expected(hour, cfg);
        let x = if self.warm(cfg) {
            if x <= limit {
                self.alarmed = false;
            }
            x.min(limit)
        } else {
            x
        };
        let f = self.factor(hour, cfg);
        let before = self.level;
        // Equal weights until the EW weight is the larger (a running mean and variance first), so
        // a new baseline starts at its first hour instead of climbing from 0.
        let a = (1.0 - 0.5f64.powf(1.0 / cfg.half_life_hours)).max(1.0 / f64::from(self.hours + 1));
        let d = x / f - self.level;
        self.level += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
        if cfg.seasonality == Seasonality::Daily && self.hours >= SLOTS as u32 && before > 0.0 {
            self.learn_season(hour, x / before, cfg);
        }
        self.hours = self.hours.saturating_add(1);
    }

    /// Moves slot `hour`'s factor towards `ratio` (this hour's spend over the level).
    fn learn_season(&mut self, hour: u64, ratio: f64, cfg: &AnomalyConfig) {
        let season = self.season.get_or_insert_with(Season::default);
        let i = slot(hour);
        let (Some(f), Some(n)) = (season.factors.get_mut(i), season.seen.get_mut(i)) else {
            return;
        };
        let g = (1.0 - 0.5f64.powf(1.0 / cfg.seasonal_half_life_days)).max(1.0 / f64::from(*n + 1));
        *f = (*f + g * (ratio - *f)).max(MIN_SEASONAL_FACTOR);
        *n = n.saturating_add(1);
        if season.seen.iter().all(|&n| n > 0) {
            let mean = season.factors.iter().sum::<f64>() / SLOTS as f64;
            if mean > 0.0 {
                for f in &mut season.factors {
                    *f = (*f / mean).max(MIN_SEASONAL_FACTOR);
                }
            }
        }
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
        self.close(self.hour, x, cfg);
        let gap = (h - self.hour - 1).min(MAX_GAP_HOURS);
        for g in 0..gap {
            self.close(h - gap + g, 0.0, cfg);
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
        self.check(scope, name, cfg, now_ms)
    }

    /// Sets hour `hour`'s spend to `total_usd`, a running total kept elsewhere (the cluster-wide
    /// sum), observed at `at_ms`; returns the spike when it makes the hour one. Totals only grow:
    /// a smaller one (read before another replica's add) changes nothing, and an hour before the
    /// current one is ignored (it was closed with the total last seen).
    pub fn observe_total(
        &mut self,
        scope: Scope,
        name: &str,
        hour: u64,
        total_usd: f64,
        cfg: &AnomalyConfig,
        at_ms: u64,
    ) -> Option<Spike> {
        let started = !(self.hours == 0 && self.hour == 0 && self.hour_usd == 0.0);
        if started && hour < self.hour {
            return None;
        }
        self.advance(hour * HOUR_MS, cfg);
        if hour == self.hour && total_usd.is_finite() && total_usd > self.hour_usd {
            self.hour_usd = total_usd;
        }
        self.check(scope, name, cfg, at_ms)
    }

    /// Whether the current hour is a spike not yet fired.
    fn check(
        &mut self,
        scope: Scope,
        name: &str,
        cfg: &AnomalyConfig,
        at_ms: u64,
    ) -> Option<Spike> {
        let (expected, limit) = self.expected(self.hour, cfg);
        let excess = self.hour_usd - expected;
        if self.alarmed || !self.warm(cfg) || self.hour_usd <= limit || excess < cfg.min_usd {
            return None;
        }
        self.alarmed = true;
        let sigma = self.factor(self.hour, cfg) * self.sigma();
        Some(Spike {
            scope,
            name: name.to_string(),
            hour_start_ms: self.hour * HOUR_MS,
            at_ms,
            hour_usd: self.hour_usd,
            baseline_usd: expected,
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

    /// Sets one scope's running hour total (see [`Baseline::observe_total`]).
    pub fn observe(
        &mut self,
        scope: Scope,
        name: &str,
        hour: u64,
        total_usd: f64,
        cfg: &AnomalyConfig,
        at_ms: u64,
    ) -> Option<Spike> {
        let key = (scope, name.to_string());
        let b = self.baselines.entry(key.clone()).or_default();
        let spike = b.observe_total(scope, name, hour, total_usd, cfg, at_ms);
        self.dirty.insert(key);
        spike
    }

    /// Every scope watched.
    pub fn scopes(&self) -> impl Iterator<Item = &(Scope, String)> {
        self.baselines.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.baselines.is_empty()
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
        z.close(0, 1.0, &cold);
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

    /// Four weeks of a strong daily cycle (nights at a fifth of afternoons), then 3x spend for
    /// three night hours. Returns the alarms as (hour, minute of the hour).
    fn night_spike(seasonality: Seasonality, seed: u64) -> Vec<(u64, u64)> {
        let c = AnomalyConfig {
            seasonality,
            ..cfg()
        };
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut b = Baseline::default();
        let mut fired = Vec::new();
        let spike = 24 * 28 + 2..24 * 28 + 5;
        for h in 0..(24 * 29) {
            let cycle = (2.0 * std::f64::consts::PI * ((h % 24) as f64 - 8.0) / 24.0).sin();
            let mean = 20.0 * (1.0 + 0.7 * cycle) * if spike.contains(&h) { 3.0 } else { 1.0 };
            for i in 0..12u64 {
                let usd = mean / 12.0 * rng.random_range(0.7..1.3);
                if let Some(s) = b.add(Scope::Model, "m", usd, &c, h * HOUR_MS + i * 300_000) {
                    fired.push((h, s.at_ms % HOUR_MS / 60_000));
                }
            }
        }
        fired
    }

    #[test]
    fn a_seasonal_baseline_catches_a_night_spike_that_one_level_misses() {
        for seed in [3, 4] {
            let daily = night_spike(Seasonality::Daily, seed);
            assert_eq!(daily.len(), 1, "seed {seed}: {daily:?}");
            assert_eq!(
                daily[0].0,
                24 * 28 + 2,
                "seed {seed}: in the spike's first hour"
            );
            let flat = night_spike(Seasonality::None, seed);
            assert!(
                flat.is_empty(),
                "seed {seed}: the daily cycle hides it: {flat:?}"
            );
        }
    }

    #[test]
    fn seasonal_factors_learn_the_cycle_with_mean_one() {
        let c = cfg();
        let mut b = Baseline::default();
        for h in 0..(24 * 21) {
            let x = if h % 24 < 12 { 5.0 } else { 15.0 };
            b.add(Scope::Model, "m", x, &c, h * HOUR_MS);
        }
        let s = b.season.clone().unwrap();
        let mean = s.factors.iter().sum::<f64>() / 24.0;
        assert!((mean - 1.0).abs() < 1e-9, "{s:?}");
        assert!((s.factors[3] - 0.5).abs() < 0.05, "{s:?}");
        assert!((s.factors[15] - 1.5).abs() < 0.05, "{s:?}");
        assert!((b.level - 10.0).abs() < 0.5, "{b:?}");
        assert!((b.factor(24 * 30 + 3, &c) - s.factors[3]).abs() < 1e-12);
        let none = AnomalyConfig {
            seasonality: Seasonality::None,
            ..c
        };
        assert_eq!(b.factor(3, &none), 1.0);
    }

    #[test]
    fn observed_totals_only_grow_close_their_hour_and_fire_once() {
        let c = AnomalyConfig {
            seasonality: Seasonality::None,
            ..cfg()
        };
        let mut b = Baseline::default();
        for h in 0..48 {
            assert!(b
                .observe_total(Scope::Model, "m", h, 10.0, &c, h * HOUR_MS)
                .is_none());
        }
        assert!((b.level - 10.0).abs() < 1e-9);
        // A stale, smaller total and an older hour change nothing.
        assert!(b.observe_total(Scope::Model, "m", 47, 3.0, &c, 0).is_none());
        assert_eq!(b.hour_usd, 10.0);
        b.observe_total(Scope::Model, "m", 48, 12.0, &c, 48 * HOUR_MS);
        b.observe_total(Scope::Model, "m", 48, 11.0, &c, 48 * HOUR_MS + 1);
        assert_eq!(b.hour_usd, 12.0);
        let s = b.observe_total(Scope::Model, "m", 48, 40.0, &c, 48 * HOUR_MS + 2);
        assert_eq!(s.map(|s| s.hour_usd), Some(40.0));
        assert!(b
            .observe_total(Scope::Model, "m", 48, 80.0, &c, 48 * HOUR_MS + 3)
            .is_none());
        // Skipping hours closes them as 0.
        b.observe_total(Scope::Model, "m", 60, 1.0, &c, 60 * HOUR_MS);
        assert_eq!(b.hours, 60);
        assert!(b.level < 10.0);
    }
}
