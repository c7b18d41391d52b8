//! The cost anomaly scenario: a quiet month of traffic with a daily cycle, then a traffic spike and a
//! price spike, run through the real engine in simulated time. Reports, per injected spike, which
//! scopes (budget key, models) fired and how long after the spike began, and every alarm outside a
//! spike (a false alarm). `switchyard simulate-anomaly` prints it; a test holds it to "once per
//! spike, never in the quiet month".
//!
//! Every request is `Engine::route` then `Engine::feedback` (the settlement that feeds the rollup
//! and the detectors), so the detector sees spend exactly as the service would.

use std::fmt::Write as _;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};
use serde::Serialize;

use crate::config::anomaly::Seasonality;
use crate::config::Config;
use crate::engine::{Engine, FeedbackInput, RouteInput};
use crate::policy::Outcome;
use crate::spend::anomaly::HOUR_MS;
use crate::spend::Spike;

use super::SIM_EPOCH_MS;

/// The scenario's service: two models of different price, one class, one budget.
const SERVICE: &str = r#"
[policy]
kind = "thompson"
seed = 7
[models.small]
provider = "p1"
input_usd_per_mtok = 2.0
output_usd_per_mtok = 6.0
latency_ms = 400
latency_p95_ms = 800
quality = 0.7
[models.large]
provider = "p2"
input_usd_per_mtok = 10.0
output_usd_per_mtok = 30.0
latency_ms = 900
latency_p95_ms = 1800
quality = 0.9
[task_classes.chat]
models = ["small", "large"]
typical_input_tokens = 2000
typical_output_tokens = 800
budget = "team"
[budgets.team]
period = "monthly"
limit_usd = 1000000.0
"#;

/// What is injected.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpikeKind {
    /// Requests per hour multiplied by `factor`.
    Traffic,
    /// Every call of model `small` (the one the router serves most with) costs `factor` times its
    /// price: a provider's price change, or answers suddenly much longer.
    Price,
}

/// One injected spike.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Injected {
    pub kind: SpikeKind,
    pub start_hour: u64,
    pub hours: u64,
    pub factor: f64,
}

/// The scenario's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyScenario {
    pub seed: u64,
    /// Quiet days before the first spike.
    pub quiet_days: u64,
    /// Total simulated days.
    pub days: u64,
    /// Mean requests per hour, and the amplitude of the daily cycle (a fraction of the mean).
    pub requests_per_hour: f64,
    pub daily_amplitude: f64,
    /// The detector's `anomaly.seasonality`.
    pub seasonality: Seasonality,
    pub spikes: Vec<Injected>,
}

impl AnomalyScenario {
    /// A quiet 30-day month, then a 4x traffic spike for 3 hours on day 32 at 14:00 and a 3x price
    /// spike on model `small` for 6 hours on day 36 at 03:00 (a quiet hour of the daily cycle).
    pub fn standard(seed: u64) -> Self {
        AnomalyScenario {
            seed,
            quiet_days: 30,
            days: 40,
            requests_per_hour: 200.0,
            daily_amplitude: 0.3,
            seasonality: Seasonality::Daily,
            spikes: vec![
                Injected {
                    kind: SpikeKind::Traffic,
                    start_hour: 32 * 24 + 14,
                    hours: 3,
                    factor: 4.0,
                },
                Injected {
                    kind: SpikeKind::Price,
                    start_hour: 36 * 24 + 3,
                    hours: 6,
                    factor: 3.0,
                },
            ],
        }
    }

    /// This scenario with detector seasonality `seasonality` (`daily` or `none`) and a daily cycle
    /// of `amplitude`.
    pub fn with_cycle(mut self, seasonality: &str, amplitude: f64) -> Result<Self, String> {
        self.seasonality = match seasonality {
            "daily" => Seasonality::Daily,
            "none" => Seasonality::None,
            other => {
                return Err(format!(
                    "--seasonality {}: use daily or none",
                    crate::validation::echo(other)
                ))
            }
        };
        if !(0.0..=0.95).contains(&amplitude) {
            return Err(format!(
                "--amplitude {amplitude}: use a fraction of the mean in [0, 0.95]"
            ));
        }
        self.daily_amplitude = amplitude;
        Ok(self)
    }

    fn factor(&self, kind: SpikeKind, hour: u64) -> f64 {
        self.spikes
            .iter()
            .filter(|s| s.kind == kind && (s.start_hour..s.start_hour + s.hours).contains(&hour))
            .map(|s| s.factor)
            .product()
    }
}

/// A fired alarm, placed against the spikes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub scope: &'static str,
    pub name: String,
    /// Hours since the start of the simulation.
    pub at_hour: f64,
    /// Minutes after its spike began; `None` for a false alarm.
    pub delay_min: Option<f64>,
    pub hour_usd: f64,
    pub baseline_usd: f64,
    pub sigmas: f64,
}

/// What the run found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyReport {
    pub scenario: AnomalyScenario,
    pub requests: u64,
    pub spend_usd: f64,
    /// Detections per injected spike, in the order injected.
    pub per_spike: Vec<Vec<Detection>>,
    /// Alarms outside every spike (and the two hours after it).
    pub false_alarms: Vec<Detection>,
    /// False alarms in the quiet days.
    pub quiet_false_alarms: usize,
}

/// Hours after a spike's end whose alarms still count as detections of it (the spend of its last
/// hour is judged when that hour closes).
const GRACE_HOURS: u64 = 2;

/// Runs the scenario.
pub fn run(s: &AnomalyScenario) -> Result<AnomalyReport, String> {
    let seasonality = match s.seasonality {
        Seasonality::Daily => "daily",
        Seasonality::None => "none",
    };
    let text = format!("{SERVICE}[anomaly]\nseasonality = \"{seasonality}\"\n");
    let config = Config::from_toml_str(&text, "anomaly scenario").map_err(|e| e.to_string())?;
    let mut engine = Engine::new(config, SIM_EPOCH_MS);
    let mut rng = SmallRng::seed_from_u64(s.seed);
    let (mut requests, mut spend) = (0u64, 0.0);
    let mut spikes: Vec<Spike> = Vec::new();
    for hour in 0..s.days * 24 {
        let cycle = (2.0 * std::f64::consts::PI * ((hour % 24) as f64 - 8.0) / 24.0).sin();
        let rate = s.requests_per_hour
            * (1.0 + s.daily_amplitude * cycle)
            * s.factor(SpikeKind::Traffic, hour);
        let n = Poisson::new(rate.max(1e-9))
            .map_err(|e| e.to_string())?
            .sample(&mut rng) as u64;
        let mut times: Vec<u64> = (0..n).map(|_| rng.random_range(0..HOUR_MS)).collect();
        times.sort_unstable();
        for t in times {
            let now = SIM_EPOCH_MS + hour * HOUR_MS + t;
            let d = engine
                .route(
                    &RouteInput {
                        task_class: "chat".into(),
                        ..RouteInput::default()
                    },
                    now,
                    &mut rng,
                )
                .map_err(|e| e.to_string())?;
            let (input, output) = (rng.random_range(1500..2500), rng.random_range(500..1100));
            let price = engine
                .config()
                .models
                .get(&d.model)
                .map_or(0.0, |m| m.cost_usd(input, output));
            let factor = if d.model == "small" {
                s.factor(SpikeKind::Price, hour)
            } else {
                1.0
            };
            let quality = if d.model == "large" { 0.9 } else { 0.7 };
            let fb = FeedbackInput {
                decision_id: d.id.clone(),
                outcome: Some(Outcome::Success),
                latency_ms: Some(500.0),
                input_tokens: Some(input as i64),
                output_tokens: Some(output as i64),
                cost_usd: Some(price * factor),
                quality: Some((quality + rng.random_range(-0.1..0.1f64)).clamp(0.0, 1.0)),
                ..FeedbackInput::default()
            };
            engine.feedback(&fb, now + 500).map_err(|e| e.to_string())?;
            requests += 1;
            spend += price * factor;
            spikes.extend(engine.take_spikes());
        }
    }
    let mut per_spike = vec![Vec::new(); s.spikes.len()];
    let mut false_alarms = Vec::new();
    for sp in spikes {
        let at_ms = sp.at_ms - SIM_EPOCH_MS;
        let at_hour = at_ms as f64 / HOUR_MS as f64;
        let hit = s.spikes.iter().position(|i| {
            let start = i.start_hour * HOUR_MS;
            at_ms >= start && at_ms < (i.start_hour + i.hours + GRACE_HOURS) * HOUR_MS
        });
        let det = Detection {
            scope: sp.scope.as_str(),
            name: sp.name.clone(),
            at_hour,
            delay_min: hit
                .and_then(|i| s.spikes.get(i))
                .map(|i| (at_ms - i.start_hour * HOUR_MS) as f64 / 60_000.0),
            hour_usd: sp.hour_usd,
            baseline_usd: sp.baseline_usd,
            sigmas: sp.sigmas,
        };
        match hit.and_then(|i| per_spike.get_mut(i)) {
            Some(v) => v.push(det),
            None => false_alarms.push(det),
        }
    }
    let quiet_end = (s.quiet_days * 24) as f64;
    let quiet_false_alarms = false_alarms
        .iter()
        .filter(|d| d.at_hour < quiet_end)
        .count();
    Ok(AnomalyReport {
        scenario: s.clone(),
        requests,
        spend_usd: spend,
        per_spike,
        false_alarms,
        quiet_false_alarms,
    })
}

/// The report as text.
pub fn render(r: &AnomalyReport) -> String {
    let s = &r.scenario;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cost anomaly scenario (seed {}): {} days, {:.0} requests/h (daily cycle +-{:.0}%), \
         seasonality {:?}, {} requests, ${:.2} spent",
        s.seed,
        s.days,
        s.requests_per_hour,
        s.daily_amplitude * 100.0,
        s.seasonality,
        r.requests,
        r.spend_usd
    );
    for (i, dets) in s.spikes.iter().zip(&r.per_spike) {
        let _ = writeln!(
            out,
            "spike: {:?} x{} for {} h from day {} {:02}:00 -> {} alarm(s)",
            i.kind,
            i.factor,
            i.hours,
            i.start_hour / 24,
            i.start_hour % 24,
            dets.len()
        );
        for d in dets {
            let _ = writeln!(
                out,
                "  {}={}: after {:.0} min (hour ${:.2} vs baseline ${:.2}, {:.1} sigma)",
                d.scope,
                d.name,
                d.delay_min.unwrap_or(f64::NAN),
                d.hour_usd,
                d.baseline_usd,
                d.sigmas
            );
        }
    }
    let _ = writeln!(
        out,
        "false alarms: {} in the {} quiet days, {} in all",
        r.quiet_false_alarms,
        s.quiet_days,
        r.false_alarms.len()
    );
    for d in &r.false_alarms {
        let _ = writeln!(
            out,
            "  {}={} at hour {:.1}: ${:.2} vs baseline ${:.2}",
            d.scope, d.name, d.at_hour, d.hour_usd, d.baseline_usd
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_spike_fires_once_per_scope_and_the_quiet_month_never() {
        for seed in [1, 2] {
            let r = run(&AnomalyScenario::standard(seed)).unwrap();
            let text = render(&r);
            assert_eq!(r.false_alarms.len(), 0, "seed {seed}\n{text}");
            for dets in &r.per_spike {
                let budget: Vec<_> = dets.iter().filter(|d| d.scope == "budget_key").collect();
                assert_eq!(
                    budget.len(),
                    1,
                    "seed {seed}: the budget fires once\n{text}"
                );
                let mut scopes: Vec<_> = dets.iter().map(|d| (d.scope, &d.name)).collect();
                scopes.sort();
                let n = scopes.len();
                scopes.dedup();
                assert_eq!(scopes.len(), n, "seed {seed}: once per scope\n{text}");
                assert!(
                    dets.iter().all(|d| d.delay_min.is_some_and(|m| m < 120.0)),
                    "seed {seed}\n{text}"
                );
            }
            // The price spike is model small's: its own scope sees it.
            assert!(
                r.per_spike[1].iter().any(|d| d.name == "small"),
                "seed {seed}\n{text}"
            );
        }
    }

    #[test]
    fn on_a_strong_daily_cycle_seasonality_catches_the_night_spike_one_level_misses() {
        let with = |s: &str| {
            let scenario = AnomalyScenario::standard(1).with_cycle(s, 0.7).unwrap();
            run(&scenario).unwrap()
        };
        let (daily, none) = (with("daily"), with("none"));
        let text = format!("{}{}", render(&daily), render(&none));
        assert!(
            daily.per_spike[1].iter().any(|d| d.name == "small"),
            "{text}"
        );
        assert!(none.per_spike[1].is_empty(), "{text}");
        assert_eq!(
            daily.quiet_false_alarms + none.quiet_false_alarms,
            0,
            "{text}"
        );
        let bad = AnomalyScenario::standard(1).with_cycle("weekly", 0.3);
        assert!(bad.is_err_and(|e| e.contains("daily or none")));
        assert!(AnomalyScenario::standard(1)
            .with_cycle("none", 1.5)
            .is_err());
    }
}
