//! The simulated world: what each model really does at a given time. A [`World`] yields requests in
//! simulated time, the true expected utility of every eligible model for each request (what the
//! oracle maximises), and sampled outcomes.
//!
//! Two worlds: [`ScenarioWorld`] samples from a scenario's distributions (Poisson arrivals,
//! log-normal latency and tokens, Beta quality, Bernoulli errors) with the events applied;
//! [`TraceWorld`] replays a full-information trace, where every model's realised outcome is known, so
//! the oracle is exact.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, StandardNormal};

use super::scenario::{Accounting, EventKind, Scenario};
use super::trace::{FullInfoRecord, ModelOutcome};
use super::{mix_seed, SimError};
use crate::config::{Config, TaskClassConfig};
use crate::policy::Outcome;

/// Most models a task class may have in the simulator (eligibility is a bit mask).
pub const MAX_CLASS_MODELS: usize = 64;

/// One simulated request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimRequest {
    /// Position in the stream (0, 1, 2, ...).
    pub index: u64,
    /// Milliseconds since the start of the simulation.
    pub t_ms: u64,
    /// Index of the task class in [`World::classes`].
    pub class: usize,
    pub input_tokens: u64,
    /// Bit k set = the class's k-th model may be chosen.
    pub eligible: u64,
}

impl SimRequest {
    pub fn is_eligible(&self, k: usize) -> bool {
        self.eligible & (1u64 << k) != 0
    }
}

/// A task class as the simulator scores it: the service's weights and reference scales.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassInfo {
    pub config: TaskClassConfig,
    /// All of the class's models eligible.
    pub all_mask: u64,
}

impl ClassInfo {
    fn new(config: &TaskClassConfig) -> Result<Self, SimError> {
        let n = config.models.len();
        if n > MAX_CLASS_MODELS {
            return Err(SimError::new(
                format!("task_classes.{}.models", config.name),
                format!(
                    "the simulator handles at most {MAX_CLASS_MODELS} models per class, got {n}"
                ),
            ));
        }
        Ok(ClassInfo {
            config: config.clone(),
            all_mask: if n == 64 { u64::MAX } else { (1u64 << n) - 1 },
        })
    }

    /// Realised utility of an outcome, on the scale the engine scores (without caps or penalties):
    /// w_q x quality (0 when failed) - w_c x cost / cost_ref - w_l x latency / latency_ref. A missing
    /// latency contributes nothing.
    pub fn realised_utility(&self, o: &ModelOutcome) -> f64 {
        let c = &self.config;
        let q = if o.status.is_success() {
            o.quality
        } else {
            0.0
        };
        c.weights.quality * q
            - c.weights.cost * o.cost_usd / c.cost_ref_usd
            - c.weights.latency * o.latency_ms.unwrap_or(0.0) / c.latency_ref_ms
    }
}

fn classes_of(config: &Config) -> Result<Vec<ClassInfo>, SimError> {
    config
        .task_classes
        .values()
        .map(|c| ClassInfo::new(c))
        .collect()
}

/// A simulated world: requests, true utilities, outcomes.
pub trait World: Send {
    /// The service config the engine runs.
    fn config(&self) -> &Config;
    /// Task classes in config (name) order.
    fn classes(&self) -> &[ClassInfo];
    /// The next request, in non-decreasing time.
    fn next_request(&mut self) -> Option<SimRequest>;
    /// True expected utility of each of the class's models for `req` into `out` (length = the
    /// class's model count); ineligible models get `f64::NEG_INFINITY`.
    fn utilities(&self, req: &SimRequest, out: &mut [f64]);
    /// The outcome of calling the class's `k`-th model on `req`.
    fn outcome(&mut self, req: &SimRequest, k: usize) -> ModelOutcome;
    /// Events as (time in seconds, label), in time order.
    fn events(&self) -> Vec<(f64, String)>;
    /// Length of the simulation in milliseconds.
    fn duration_ms(&self) -> u64;
    /// The spend limit overrun is measured against, if any.
    fn accounting(&self) -> Option<Accounting>;
}

/// What one model does during one epoch (a stretch of time between events).
#[derive(Debug, Clone, PartialEq)]
struct ModelState {
    available: bool,
    down: bool,
    /// Mean quality per class index.
    quality: Vec<f64>,
    quality_sd: f64,
    latency_median_ms: f64,
    latency_sigma: f64,
    output_tokens_median: Option<f64>,
    output_tokens_sigma: f64,
    error_rate: f64,
    failure_billed_share: f64,
    input_usd_per_mtok: f64,
    output_usd_per_mtok: f64,
}

impl ModelState {
    fn failure_rate(&self) -> f64 {
        if self.down {
            1.0
        } else {
            self.error_rate
        }
    }

    fn output_median(&self, class: &TaskClassConfig) -> f64 {
        self.output_tokens_median
            .unwrap_or(class.typical_output_tokens as f64)
    }
}

#[derive(Debug, Clone)]
struct Epoch {
    start_ms: u64,
    /// By model id (the scenario's truth order).
    models: Vec<ModelState>,
    /// Per class, per class model: utility = a - b x input_tokens.
    util_a: Vec<Vec<f64>>,
    util_b: Vec<Vec<f64>>,
    /// Per class: eligible mask.
    eligible: Vec<u64>,
}

/// The scenario's truth, resolved into epochs; shared by all runs of a scenario.
#[derive(Debug)]
pub struct ScenarioTruth {
    pub scenario: Scenario,
    classes: Vec<ClassInfo>,
    /// Per class, per class model: index into the truth's model list.
    class_models: Vec<Vec<usize>>,
    epochs: Vec<Epoch>,
    /// Cumulative class shares of the traffic mix, per class index.
    mix_cdf: Vec<(f64, usize)>,
    duration_ms: u64,
}

impl ScenarioTruth {
    pub fn new(scenario: Scenario) -> Result<Arc<Self>, SimError> {
        let classes = classes_of(&scenario.config)?;
        let ids: Vec<&String> = scenario.truth.keys().collect();
        let class_names: Vec<&String> = scenario.config.task_classes.keys().collect();
        let class_models: Vec<Vec<usize>> = classes
            .iter()
            .map(|c| {
                c.config
                    .models
                    .iter()
                    .map(|m| ids.iter().position(|id| *id == m).unwrap_or(0))
                    .collect()
            })
            .collect();
        let base: Vec<ModelState> = scenario
            .truth
            .iter()
            .map(|(id, t)| ModelState {
                available: !scenario
                    .events
                    .iter()
                    .any(|e| matches!(&e.kind, EventKind::NewModel { model } if model == id)),
                down: false,
                quality: class_names
                    .iter()
                    .map(|c| t.quality_by_class.get(*c).copied().unwrap_or(t.quality))
                    .collect(),
                quality_sd: t.quality_sd,
                latency_median_ms: t.latency_median_ms,
                latency_sigma: t.latency_sigma,
                output_tokens_median: t.output_tokens_median,
                output_tokens_sigma: t.output_tokens_sigma,
                error_rate: t.error_rate,
                failure_billed_share: t.failure_billed_share,
                input_usd_per_mtok: t.input_usd_per_mtok,
                output_usd_per_mtok: t.output_usd_per_mtok,
            })
            .collect();

        let duration_ms = (scenario.traffic.duration_secs * 1000.0) as u64;
        let mut change_points = vec![0.0];
        for e in &scenario.events {
            change_points.push(e.at_secs);
            if let Some(d) = e.duration_secs {
                change_points.push(e.at_secs + d);
            }
        }
        change_points.sort_by(f64::total_cmp);
        change_points.dedup();
        let mut epochs = Vec::new();
        for t in change_points {
            let mut models = base.clone();
            for e in &scenario.events {
                let starts = matches!(e.kind, EventKind::NewModel { .. }) && t >= e.at_secs;
                if !(starts || e.active_at(t)) {
                    continue;
                }
                for (i, (id, truth)) in scenario.truth.iter().enumerate() {
                    let m = &mut models[i];
                    match &e.kind {
                        EventKind::PriceChange {
                            model,
                            input_usd_per_mtok,
                            output_usd_per_mtok,
                        } if model == id => {
                            m.input_usd_per_mtok = *input_usd_per_mtok;
                            m.output_usd_per_mtok = *output_usd_per_mtok;
                        }
                        EventKind::LatencySpike { target, factor }
                            if target.hits(id, &truth.provider) =>
                        {
                            m.latency_median_ms *= factor
                        }
                        EventKind::ErrorBurst { target, error_rate }
                            if target.hits(id, &truth.provider) =>
                        {
                            m.error_rate = *error_rate
                        }
                        EventKind::Outage { target } if target.hits(id, &truth.provider) => {
                            m.down = true
                        }
                        EventKind::NewModel { model } if model == id => m.available = true,
                        EventKind::QualityChange {
                            model,
                            task_class,
                            quality,
                        } if model == id => {
                            for (c, name) in class_names.iter().enumerate() {
                                if task_class.as_ref().is_none_or(|tc| tc == *name) {
                                    m.quality[c] = *quality;
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            let mut util_a = Vec::new();
            let mut util_b = Vec::new();
            let mut eligible = Vec::new();
            for (c, class) in classes.iter().enumerate() {
                let cc = &class.config;
                let w = cc.weights;
                let mut a = Vec::new();
                let mut b = Vec::new();
                let mut mask = 0u64;
                for (k, &mi) in class_models[c].iter().enumerate() {
                    let m = &models[mi];
                    if m.available {
                        mask |= 1 << k;
                    }
                    let ok = 1.0 - m.failure_rate();
                    let out_mean =
                        m.output_median(cc) * (0.5 * m.output_tokens_sigma.powi(2)).exp();
                    let latency_mean = m.latency_median_ms * (0.5 * m.latency_sigma.powi(2)).exp();
                    a.push(
                        w.quality * ok * m.quality[c]
                            - w.cost * ok * out_mean * m.output_usd_per_mtok
                                / 1e6
                                / cc.cost_ref_usd
                            - w.latency * latency_mean / cc.latency_ref_ms,
                    );
                    let billed = ok + (1.0 - ok) * m.failure_billed_share;
                    b.push(w.cost * billed * m.input_usd_per_mtok / 1e6 / cc.cost_ref_usd);
                }
                if mask == 0 {
                    mask = class.all_mask; // every model is "new": make them all eligible
                }
                util_a.push(a);
                util_b.push(b);
                eligible.push(mask);
            }
            epochs.push(Epoch {
                start_ms: (t * 1000.0) as u64,
                models,
                util_a,
                util_b,
                eligible,
            });
        }

        let mut mix_cdf = Vec::new();
        let mut acc = 0.0;
        for (name, share) in &scenario.traffic.mix {
            acc += share;
            if let Some(c) = class_names.iter().position(|n| *n == name) {
                mix_cdf.push((acc, c));
            }
        }
        Ok(Arc::new(ScenarioTruth {
            scenario,
            classes,
            class_models,
            epochs,
            mix_cdf,
            duration_ms,
        }))
    }

    fn epoch_at(&self, t_ms: u64) -> &Epoch {
        let i = self.epochs.partition_point(|e| e.start_ms <= t_ms);
        &self.epochs[i.saturating_sub(1)]
    }

    /// A world for one seed.
    pub fn world(self: &Arc<Self>, seed: u64) -> ScenarioWorld {
        ScenarioWorld {
            truth: Arc::clone(self),
            seed,
            traffic_rng: SmallRng::seed_from_u64(mix_seed(seed, &[1])),
            next_index: 0,
            t_secs: 0.0,
        }
    }
}

/// One seed's run through a scenario.
#[derive(Debug)]
pub struct ScenarioWorld {
    truth: Arc<ScenarioTruth>,
    seed: u64,
    traffic_rng: SmallRng,
    next_index: u64,
    t_secs: f64,
}

/// A log-normal draw with the given median and sigma.
fn log_normal<R: Rng + ?Sized>(rng: &mut R, median: f64, sigma: f64) -> f64 {
    let z: f64 = StandardNormal.sample(rng);
    median * (sigma * z).exp()
}

impl World for ScenarioWorld {
    fn config(&self) -> &Config {
        &self.truth.scenario.config
    }

    fn classes(&self) -> &[ClassInfo] {
        &self.truth.classes
    }

    fn next_request(&mut self) -> Option<SimRequest> {
        let traffic = &self.truth.scenario.traffic;
        let gap: f64 = Exp::new(traffic.requests_per_sec)
            .map(|d| d.sample(&mut self.traffic_rng))
            .unwrap_or(1.0);
        self.t_secs += gap;
        let t_ms = (self.t_secs * 1000.0) as u64;
        if t_ms >= self.truth.duration_ms {
            return None;
        }
        let u: f64 = self.traffic_rng.random();
        let class = self
            .truth
            .mix_cdf
            .iter()
            .find(|(cdf, _)| u < *cdf)
            .or(self.truth.mix_cdf.last())
            .map_or(0, |(_, c)| *c);
        let typical = self.truth.classes[class].config.typical_input_tokens as f64;
        let input_tokens = log_normal(&mut self.traffic_rng, typical, traffic.input_tokens_sigma)
            .round()
            .max(1.0) as u64;
        let index = self.next_index;
        self.next_index += 1;
        Some(SimRequest {
            index,
            t_ms,
            class,
            input_tokens,
            eligible: self.truth.epoch_at(t_ms).eligible[class],
        })
    }

    fn utilities(&self, req: &SimRequest, out: &mut [f64]) {
        let epoch = self.truth.epoch_at(req.t_ms);
        let (a, b) = (&epoch.util_a[req.class], &epoch.util_b[req.class]);
        for (k, o) in out.iter_mut().enumerate() {
            *o = if req.is_eligible(k) {
                a[k] - b[k] * req.input_tokens as f64
            } else {
                f64::NEG_INFINITY
            };
        }
    }

    fn outcome(&mut self, req: &SimRequest, k: usize) -> ModelOutcome {
        let truth = &self.truth;
        let mi = truth.class_models[req.class][k];
        let m = &truth.epoch_at(req.t_ms).models[mi];
        let class = &truth.classes[req.class].config;
        // Each (request, model) has its own stream: every policy sees the same outcome for it.
        let mut rng = SmallRng::seed_from_u64(mix_seed(self.seed, &[2, req.index, mi as u64]));
        let latency_ms = log_normal(&mut rng, m.latency_median_ms, m.latency_sigma);
        let failed = rng.random::<f64>() < m.failure_rate();
        if failed {
            return ModelOutcome {
                status: Outcome::Error,
                quality: 0.0,
                latency_ms: Some(latency_ms),
                cost_usd: m.failure_billed_share * req.input_tokens as f64 * m.input_usd_per_mtok
                    / 1e6,
                output_tokens: 0,
            };
        }
        let output_tokens = log_normal(&mut rng, m.output_median(class), m.output_tokens_sigma)
            .round()
            .max(1.0) as u64;
        let mean = m.quality[req.class];
        let quality = beta_with_mean_sd(&mut rng, mean, m.quality_sd);
        ModelOutcome {
            status: Outcome::Success,
            quality,
            latency_ms: Some(latency_ms),
            cost_usd: (req.input_tokens as f64 * m.input_usd_per_mtok
                + output_tokens as f64 * m.output_usd_per_mtok)
                / 1e6,
            output_tokens,
        }
    }

    fn events(&self) -> Vec<(f64, String)> {
        // Both edges of a temporary event: recovering when it ends matters as much (traffic should
        // come back to the model that recovered).
        let mut out = Vec::new();
        for e in &self.truth.scenario.events {
            out.push((e.at_secs, e.label()));
            if let Some(d) = e.duration_secs {
                out.push((
                    e.at_secs + d,
                    format!("{}:end@{}s", e.label(), e.at_secs + d),
                ));
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    fn duration_ms(&self) -> u64 {
        self.truth.duration_ms
    }

    fn accounting(&self) -> Option<Accounting> {
        self.truth.scenario.accounting
    }
}

/// A Beta draw with the given mean and standard deviation (method of moments); the mean itself when
/// the sd is 0 or the mean is 0 or 1.
pub fn beta_with_mean_sd<R: Rng + ?Sized>(rng: &mut R, mean: f64, sd: f64) -> f64 {
    let var_max = mean * (1.0 - mean);
    if sd <= 0.0 || var_max <= 0.0 {
        return mean;
    }
    // Cap the variance below mean (1 - mean) so both parameters stay positive.
    let var = (sd * sd).min(0.9 * var_max);
    let k = var_max / var - 1.0;
    Beta::new(mean * k, (1.0 - mean) * k)
        .map(|b| b.sample(rng))
        .unwrap_or(mean)
}

/// A full-information trace with its service config, shared by all runs over it.
#[derive(Debug)]
pub struct TraceData {
    pub name: String,
    pub config: Config,
    classes: Vec<ClassInfo>,
    /// Per record: class index and eligible mask (models of the class with an outcome).
    index: Vec<(usize, u64)>,
    /// Per record, per class model: the outcome, if any.
    outcomes: Vec<Vec<Option<ModelOutcome>>>,
    times_ms: Vec<u64>,
    input_tokens: Vec<u64>,
    /// The trace's hindsight cost/quality frontier (see [`super::frontier`]).
    pub frontier: Option<super::frontier::Frontier>,
}

impl TraceData {
    /// Checks the records against the config: every task class configured, every model of a record
    /// known to its class (others are ignored with a warning), at least one per record.
    pub fn new(
        name: &str,
        config: Config,
        records: &[FullInfoRecord],
    ) -> Result<Arc<Self>, SimError> {
        super::trace::validate_full_info(records)?;
        let classes = classes_of(&config)?;
        let class_names: Vec<&String> = config.task_classes.keys().collect();
        let t0 = records.first().map_or(0, |r| r.t_ms);
        let mut index = Vec::with_capacity(records.len());
        let mut outcomes = Vec::with_capacity(records.len());
        let mut ignored: BTreeMap<String, usize> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            let Some(c) = class_names.iter().position(|n| **n == r.task_class) else {
                return Err(SimError::new(
                    format!("record {} (task_class)", i + 1),
                    format!(
                        "task class {:?} is not in the config; configured: {}",
                        r.task_class,
                        class_names
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            let models = &classes[c].config.models;
            let mut row = vec![None; models.len()];
            let mut mask = 0u64;
            for (m, o) in &r.outcomes {
                match models.iter().position(|x| x == m) {
                    Some(k) => {
                        row[k] = Some(o.clone());
                        mask |= 1 << k;
                    }
                    None => *ignored.entry(m.clone()).or_default() += 1,
                }
            }
            if mask == 0 {
                return Err(SimError::new(
                    format!("record {} (outcomes)", i + 1),
                    format!("no outcome for a model of task class {:?}", r.task_class),
                ));
            }
            index.push((c, mask));
            outcomes.push(row);
        }
        for (m, n) in ignored {
            tracing::warn!(model = %m, records = n, "trace model not in its task class's models; ignored");
        }
        Ok(Arc::new(TraceData {
            name: name.to_string(),
            config,
            classes,
            index,
            outcomes,
            times_ms: records.iter().map(|r| r.t_ms - t0).collect(),
            input_tokens: records.iter().map(|r| r.input_tokens).collect(),
            frontier: super::frontier::Frontier::of(records),
        }))
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn world(self: &Arc<Self>) -> TraceWorld {
        TraceWorld {
            data: Arc::clone(self),
            next: 0,
        }
    }
}

/// One pass over a full-information trace.
#[derive(Debug)]
pub struct TraceWorld {
    data: Arc<TraceData>,
    next: usize,
}

impl World for TraceWorld {
    fn config(&self) -> &Config {
        &self.data.config
    }

    fn classes(&self) -> &[ClassInfo] {
        &self.data.classes
    }

    fn next_request(&mut self) -> Option<SimRequest> {
        let i = self.next;
        let (class, eligible) = *self.data.index.get(i)?;
        self.next += 1;
        Some(SimRequest {
            index: i as u64,
            t_ms: self.data.times_ms[i],
            class,
            input_tokens: self.data.input_tokens[i],
            eligible,
        })
    }

    fn utilities(&self, req: &SimRequest, out: &mut [f64]) {
        let row = &self.data.outcomes[req.index as usize];
        let class = &self.data.classes[req.class];
        for (o, r) in out.iter_mut().zip(row) {
            *o = r
                .as_ref()
                .map_or(f64::NEG_INFINITY, |x| class.realised_utility(x));
        }
    }

    fn outcome(&mut self, req: &SimRequest, k: usize) -> ModelOutcome {
        self.data.outcomes[req.index as usize][k]
            .clone()
            .unwrap_or(ModelOutcome {
                status: Outcome::Error,
                quality: 0.0,
                latency_ms: None,
                cost_usd: 0.0,
                output_tokens: 0,
            })
    }

    fn events(&self) -> Vec<(f64, String)> {
        Vec::new()
    }

    fn duration_ms(&self) -> u64 {
        self.data.times_ms.last().map_or(0, |t| t + 1)
    }

    fn accounting(&self) -> Option<Accounting> {
        None
    }
}

/// Turns a scenario into a full-information trace for one seed: every eligible model's sampled
/// outcome per request (the same outcomes a simulation with that seed would see).
pub fn generate_trace(truth: &Arc<ScenarioTruth>, seed: u64) -> Vec<FullInfoRecord> {
    let mut world = truth.world(seed);
    let mut out = Vec::new();
    while let Some(req) = world.next_request() {
        let class = &world.classes()[req.class].config;
        let name = class.name.clone();
        let models = class.models.clone();
        let mut outcomes = BTreeMap::new();
        for (k, m) in models.into_iter().enumerate() {
            if req.is_eligible(k) {
                outcomes.insert(m, world.outcome(&req, k));
            }
        }
        out.push(FullInfoRecord {
            t_ms: req.t_ms,
            task_class: name,
            input_tokens: req.input_tokens,
            outcomes,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = r#"
[service.models.a]
provider = "p1"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0
[service.models.b]
provider = "p2"
input_usd_per_mtok = 0.1
output_usd_per_mtok = 0.2
[service.task_classes.qa]
models = ["a", "b"]
[truth.models.a]
quality = 0.8
latency_median_ms = 800.0
[truth.models.b]
quality = 0.5
latency_median_ms = 400.0
[traffic]
requests_per_sec = 5.0
duration_secs = 100.0
mix = { qa = 1.0 }
[[events]]
at_secs = 50.0
kind = "new_model"
model = "b"
[[events]]
at_secs = 20.0
duration_secs = 10.0
kind = "outage"
provider = "p1"
"#;

    #[test]
    fn a_billed_failure_costs_its_share_of_the_prompt() {
        let text = SCENARIO.replace(
            "[truth.models.a]\n",
            "[truth.models.a]\nfailure_billed_share = 0.5\n",
        );
        let s = Scenario::from_toml_str(&text, "t", "t").unwrap();
        let truth = ScenarioTruth::new(s).unwrap();
        let mut world = truth.world(9);
        let mut failures = 0;
        while let Some(req) = world.next_request() {
            let o = world.outcome(&req, 0);
            if o.status == Outcome::Error {
                failures += 1;
                // Model a: 1 USD per million input tokens, half billed.
                let want = 0.5 * req.input_tokens as f64 / 1e6;
                assert!(
                    (o.cost_usd - want).abs() < 1e-15,
                    "{} vs {want}",
                    o.cost_usd
                );
            }
        }
        assert!(failures > 0, "the outage makes a fail");
    }

    #[test]
    fn events_shape_eligibility_and_outcomes() {
        let s = Scenario::from_toml_str(SCENARIO, "t", "t").unwrap();
        let truth = ScenarioTruth::new(s).unwrap();
        let mut world = truth.world(9);
        let mut u = [0.0; 2];
        let mut seen = 0;
        while let Some(req) = world.next_request() {
            seen += 1;
            world.utilities(&req, &mut u);
            // b is only eligible from 50 s on.
            assert_eq!(
                req.is_eligible(1),
                req.t_ms >= 50_000,
                "seed 9, t {}",
                req.t_ms
            );
            assert_eq!(u[1].is_finite(), req.t_ms >= 50_000);
            let o = world.outcome(&req, 0);
            if (20_000..30_000).contains(&req.t_ms) {
                assert_eq!(
                    o.status,
                    Outcome::Error,
                    "seed 9: p1 is down at t {}",
                    req.t_ms
                );
                assert_eq!(o.cost_usd, 0.0);
            } else {
                assert_eq!(o.status, Outcome::Success, "seed 9, t {}", req.t_ms);
                assert!(o.cost_usd > 0.0 && (0.0..=1.0).contains(&o.quality));
            }
            // The same (request, model) gives the same outcome whoever asks.
            assert_eq!(o, world.outcome(&req, 0));
        }
        assert!(
            (400..600).contains(&seen),
            "seed 9: {seen} requests at 5/s for 100 s"
        );
    }

    #[test]
    fn beta_draws_keep_the_mean() {
        let mut rng = SmallRng::seed_from_u64(3);
        let n = 20_000;
        let mean = (0..n)
            .map(|_| beta_with_mean_sd(&mut rng, 0.7, 0.2))
            .sum::<f64>()
            / f64::from(n);
        assert!((mean - 0.7).abs() < 0.01, "seed 3: {mean}");
        assert_eq!(beta_with_mean_sd(&mut rng, 1.0, 0.2), 1.0);
    }
}
