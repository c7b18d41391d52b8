//! Drives the engine: one policy over one world with one seed, in simulated time. Requests arrive,
//! `Engine::route` decides, the world answers, and the outcome goes back through `Engine::feedback`
//! when the simulated call completes (after its latency), so feedback is delayed as in production.
//!
//! [`run_many`] runs policies x seeds on worker threads; every run has its own RNG streams derived
//! from (base seed, seed index), and results are collected in (policy, seed) order, so reports do
//! not depend on the thread count.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::metrics::{Recorder, RunMetrics};
use super::scenario::Scenario;
use super::trace::LoggedDecision;
use super::truth::{ScenarioTruth, TraceData, World};
use super::{mix_seed, SimError, SIM_EPOCH_MS};
use crate::config::Config;
use crate::engine::{Engine, FeedbackInput, Reason, RouteInput};
use crate::policy::objective::Objective;
use crate::policy::PolicyKind;

/// How often (in requests) the simulator lets the engine drop expired pending decisions, as the
/// service's housekeeping does.
pub const EXPIRE_EVERY: u64 = 1024;

/// A policy to simulate: the oracle, or the engine with a policy kind and setting overrides.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicySpec {
    /// Picks the best model per request given the true parameters (a reference, not the engine).
    Oracle,
    Engine {
        /// The text it was parsed from, e.g. `thompson:half_life_secs=600`.
        label: String,
        kind: PolicyKind,
        /// (setting, value) pairs applied to `[policy]`.
        overrides: Vec<(String, f64)>,
        /// The objective every task class is run under (`objective=min_cost:quality_target=T`),
        /// `None` = each class's own.
        objective: Option<Objective>,
    },
}

/// Settings a policy spec may override.
pub const POLICY_SETTINGS: [&str; 8] = [
    "half_life_secs",
    "prior_strength",
    "propensity_samples",
    "ucb_exploration",
    "epsilon",
    "violation_penalty",
    "min_propensity",
    "quality_step",
];

impl PolicySpec {
    /// Parses `oracle`, `KIND` or `KIND:setting=value:setting=value` (value `inf` for no decay);
    /// `objective=min_cost:quality_target=T` (or `objective=utility`) sets every class's objective.
    pub fn parse(text: &str) -> Result<PolicySpec, SimError> {
        let text = text.trim();
        if text == "oracle" {
            return Ok(PolicySpec::Oracle);
        }
        let (kind_text, rest) = text.split_once(':').unwrap_or((text, ""));
        let kind = PolicyKind::parse(kind_text).ok_or_else(|| {
            let names: Vec<_> = PolicyKind::ALL.iter().map(|k| k.as_str()).collect();
            SimError::new(
                format!("policy {text:?}"),
                format!(
                    "unknown policy {kind_text:?}; expected oracle or one of {}",
                    names.join(", ")
                ),
            )
        })?;
        let mut overrides = Vec::new();
        let mut objective_name = None;
        let mut quality_target = None;
        for part in rest.split(':').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                SimError::new(
                    format!("policy {text:?}"),
                    format!("expected setting=value, got {part:?}"),
                )
            })?;
            let k = k.trim();
            if k == "objective" {
                objective_name = Some(v.trim().to_string());
                continue;
            }
            if k == "quality_target" {
                quality_target = Some(v.trim().parse::<f64>().map_err(|_| {
                    SimError::new(
                        format!("policy {text:?}.quality_target"),
                        format!("not a number: {v:?}"),
                    )
                })?);
                continue;
            }
            if !POLICY_SETTINGS.contains(&k) {
                return Err(SimError::new(
                    format!("policy {text:?}"),
                    format!(
                        "unknown setting {k:?}; expected one of {}",
                        POLICY_SETTINGS.join(", ")
                    ),
                ));
            }
            let v: f64 = v.trim().parse().map_err(|_| {
                SimError::new(
                    format!("policy {text:?}.{k}"),
                    format!("not a number: {v:?}"),
                )
            })?;
            overrides.push((k.to_string(), v));
        }
        let ctx = format!("policy {text:?}");
        let objective = match (objective_name.as_deref(), quality_target) {
            (None, None) => None,
            (Some("utility"), None) => Some(Objective::Utility),
            (Some("min_cost"), Some(t)) if t.is_finite() && t > 0.0 && t <= 1.0 => {
                Some(Objective::MinCost { quality_target: t })
            }
            (Some("min_cost"), Some(t)) => {
                return Err(SimError::new(
                    ctx,
                    format!("quality_target must be in (0, 1], got {t}"),
                ))
            }
            (Some("min_cost"), None) => {
                return Err(SimError::new(
                    ctx,
                    "objective=min_cost needs quality_target=T, T in (0, 1], e.g. 0.95",
                ))
            }
            (None | Some("utility"), Some(_)) => {
                return Err(SimError::new(
                    ctx,
                    "quality_target applies with objective=min_cost only",
                ))
            }
            (Some(other), _) => {
                return Err(SimError::new(
                    ctx,
                    format!("objective must be utility or min_cost, got {other:?}"),
                ))
            }
        };
        Ok(PolicySpec::Engine {
            label: text.to_string(),
            kind,
            overrides,
            objective,
        })
    }

    pub fn label(&self) -> &str {
        match self {
            PolicySpec::Oracle => "oracle",
            PolicySpec::Engine { label, .. } => label,
        }
    }

    /// The config with this policy's kind and overrides, re-validated through the config loader's
    /// rules (the same bounds as `[policy]` in a file).
    pub fn apply(&self, mut config: Config) -> Result<Config, SimError> {
        let PolicySpec::Engine {
            kind,
            overrides,
            label,
            objective,
        } = self
        else {
            return Ok(config);
        };
        config.policy.settings.kind = *kind;
        if let Some(o) = objective {
            for class in config.task_classes.values_mut() {
                let c = Arc::make_mut(class);
                c.objective = *o;
                if matches!(o, Objective::MinCost { .. }) {
                    c.value_usd_per_quality = None;
                }
            }
        }
        let ctx = |k: &str| format!("policy {label:?}.{k}");
        for (k, v) in overrides {
            let v = *v;
            let positive = || {
                if v.is_finite() && v > 0.0 {
                    Ok(v)
                } else {
                    Err(SimError::new(ctx(k), format!("must be > 0, got {v}")))
                }
            };
            let non_negative = || {
                if v.is_finite() && v >= 0.0 {
                    Ok(v)
                } else {
                    Err(SimError::new(ctx(k), format!("must be >= 0, got {v}")))
                }
            };
            match k.as_str() {
                "half_life_secs" if v.is_infinite() && v > 0.0 => {
                    config.policy.half_life_secs = None
                }
                "half_life_secs" => config.policy.half_life_secs = Some(positive()?),
                "prior_strength" => config.policy.prior_strength = positive()?,
                "propensity_samples" => {
                    config.policy.settings.propensity_samples =
                        positive()?.round().min(100_000.0) as u32
                }
                "ucb_exploration" => config.policy.settings.ucb_exploration = non_negative()?,
                "epsilon" if (0.0..=1.0).contains(&v) => config.policy.settings.epsilon = v,
                "epsilon" => {
                    return Err(SimError::new(ctx(k), format!("must be in [0, 1], got {v}")))
                }
                "violation_penalty" => config.policy.violation_penalty = non_negative()?,
                "min_propensity" if (0.0..1.0).contains(&v) => config.policy.min_propensity = v,
                "min_propensity" => {
                    return Err(SimError::new(ctx(k), format!("must be in [0, 1), got {v}")))
                }
                "quality_step" => config.policy.quality_step = positive()?,
                _ => return Err(SimError::new(ctx(k), "unknown setting")),
            }
        }
        Ok(config)
    }
}

/// What a simulation runs over.
#[derive(Debug, Clone)]
pub enum Source {
    Scenario(Arc<ScenarioTruth>),
    Trace(Arc<TraceData>),
}

impl Source {
    pub fn scenario(scenario: Scenario) -> Result<Source, SimError> {
        Ok(Source::Scenario(ScenarioTruth::new(scenario)?))
    }

    pub fn name(&self) -> String {
        match self {
            Source::Scenario(s) => s.scenario.name.clone(),
            Source::Trace(t) => t.name.clone(),
        }
    }

    /// A fresh world for one seed (a trace is the same for every seed; only the policy's RNG differs).
    pub fn world(&self, seed: u64) -> Box<dyn World> {
        match self {
            Source::Scenario(s) => Box::new(s.world(seed)),
            Source::Trace(t) => Box::new(t.world()),
        }
    }

    /// A copy with a different service config (for tuning over a trace); scenarios keep theirs.
    pub fn config(&self) -> Config {
        self.world(0).config().clone()
    }
}

/// Options of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunOptions {
    /// Keep every decision as logged traffic (for `--log-out` and off-policy tests).
    pub log_decisions: bool,
}

/// One run's result: metrics and, if asked, the logged decisions.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub metrics: RunMetrics,
    pub logged: Vec<LoggedDecision>,
    /// Engine decisions made (0 for the oracle).
    pub decisions: u64,
}

/// A feedback waiting for its simulated call to complete.
#[derive(Debug)]
struct Due {
    at_ms: u64,
    seq: u64,
    feedback: FeedbackInput,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

/// Runs one policy over `world` with `seed`.
pub fn run_one(
    world: &mut dyn World,
    policy: &PolicySpec,
    seed: u64,
    options: RunOptions,
) -> Result<RunOutput, SimError> {
    let config = policy.apply(world.config().clone())?;
    let classes = world.classes().to_vec();
    let events = world.events();
    let event_secs: Vec<f64> = events.iter().map(|(t, _)| *t).collect();
    let mut recorder = Recorder::new(
        policy.label(),
        seed,
        &classes,
        world.duration_ms(),
        &event_secs,
        world.accounting(),
    );
    let mut engine = Engine::new(config, SIM_EPOCH_MS);
    let mut rng = SmallRng::seed_from_u64(mix_seed(seed, &[3]));
    let mut due: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut logged = Vec::new();
    let mut decisions = 0u64;
    let max_models = classes
        .iter()
        .map(|c| c.config.models.len())
        .max()
        .unwrap_or(0);
    let mut utilities = vec![0.0; max_models];
    // One reusable route input per class (no per-request allocation of the class name).
    let mut inputs: Vec<RouteInput> = classes
        .iter()
        .map(|c| RouteInput {
            task_class: c.config.name.clone(),
            ..Default::default()
        })
        .collect();

    let deliver = |engine: &mut Engine,
                   due: &mut BinaryHeap<Reverse<Due>>,
                   recorder: &mut Recorder,
                   until_ms: u64| {
        while due.peek().is_some_and(|Reverse(d)| d.at_ms <= until_ms) {
            let Some(Reverse(d)) = due.pop() else { break };
            if let Err(e) = engine.feedback(&d.feedback, SIM_EPOCH_MS + d.at_ms) {
                tracing::debug!(error = %e, "feedback refused");
                recorder.feedback_rejected();
            }
        }
    };

    while let Some(req) = world.next_request() {
        let now_ms = SIM_EPOCH_MS + req.t_ms;
        deliver(&mut engine, &mut due, &mut recorder, req.t_ms);
        if req.index % EXPIRE_EVERY == 0 {
            engine.expire(now_ms);
        }
        let class = &classes[req.class];
        let n = class.config.models.len();
        world.utilities(&req, &mut utilities[..n]);
        let (chosen, decision) = match policy {
            PolicySpec::Oracle => {
                let k = crate::policy::argmax(utilities[..n].iter().copied());
                (k, None)
            }
            PolicySpec::Engine { .. } => {
                let input = &mut inputs[req.class];
                input.input_tokens = req.input_tokens as i64;
                input.candidates.clear();
                if req.eligible != class.all_mask {
                    input.candidates.extend(
                        class
                            .config
                            .models
                            .iter()
                            .enumerate()
                            .filter(|(k, _)| req.is_eligible(*k))
                            .map(|(_, m)| m.clone()),
                    );
                }
                let d = match engine.route(input, now_ms, &mut rng) {
                    Ok(d) => d,
                    // A budget at its cap refusing a request is an outcome to count, not a failure
                    // of the run.
                    Err(crate::engine::EngineError::ResourceExhausted(_)) => {
                        recorder.refused();
                        continue;
                    }
                    Err(e) => {
                        return Err(SimError::new(
                            format!(
                                "policy {:?}, seed {seed}, request {}",
                                policy.label(),
                                req.index
                            ),
                            format!("route failed: {e}"),
                        ))
                    }
                };
                decisions += 1;
                let k = class
                    .config
                    .models
                    .iter()
                    .position(|m| *m == d.model)
                    .ok_or_else(|| {
                        SimError::new(
                            format!("policy {:?}", policy.label()),
                            format!(
                                "engine chose {:?}, not a model of class {:?}",
                                d.model, class.config.name
                            ),
                        )
                    })?;
                (k, Some(d))
            }
        };
        let outcome = world.outcome(&req, chosen);
        let reason = decision
            .as_ref()
            .map_or(Reason::Oracle, |d| d.reason)
            .as_str();
        recorder.record(&req, chosen, &utilities[..n], &outcome, class, reason);
        if let Some(d) = decision {
            let ok = outcome.status.is_success();
            if options.log_decisions {
                logged.push(LoggedDecision {
                    t_ms: now_ms,
                    outcome: Some(outcome.status),
                    latency_ms: outcome.latency_ms,
                    cost_usd: Some(outcome.cost_usd),
                    quality: ok.then_some(outcome.quality),
                    ..LoggedDecision::of(&d)
                });
            }
            let done_ms = req.t_ms + outcome.latency_ms.unwrap_or(0.0).ceil() as u64;
            seq += 1;
            due.push(Reverse(Due {
                at_ms: done_ms,
                seq,
                feedback: FeedbackInput {
                    decision_id: d.id,
                    outcome: Some(outcome.status),
                    latency_ms: outcome.latency_ms,
                    input_tokens: Some(req.input_tokens as i64),
                    output_tokens: Some(outcome.output_tokens as i64),
                    cost_usd: Some(outcome.cost_usd),
                    quality: ok.then_some(outcome.quality),
                    ..Default::default()
                },
            }));
        }
    }
    deliver(&mut engine, &mut due, &mut recorder, u64::MAX);
    Ok(RunOutput {
        metrics: recorder.finish(),
        logged,
        decisions,
    })
}

/// The seed of run `index` under `base_seed`.
pub fn run_seed(base_seed: u64, index: usize) -> u64 {
    mix_seed(base_seed, &[index as u64])
}

/// Runs every policy over `seeds` seeds on `threads` worker threads; returns per policy its runs in
/// seed order. `progress` is called after each run.
pub fn run_many(
    source: &Source,
    policies: &[PolicySpec],
    seeds: usize,
    base_seed: u64,
    threads: usize,
    progress: &(dyn Fn() + Sync),
) -> Result<Vec<Vec<RunMetrics>>, SimError> {
    let jobs: Vec<(usize, usize)> = (0..policies.len())
        .flat_map(|p| (0..seeds).map(move |s| (p, s)))
        .collect();
    let results: Mutex<Vec<Option<Result<RunMetrics, SimError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(jobs.len().max(1)) {
            scope.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(p, s)) = jobs.get(j) else { break };
                let seed = run_seed(base_seed, s);
                let mut world = source.world(seed);
                let r = run_one(world.as_mut(), &policies[p], seed, RunOptions::default())
                    .map(|o| o.metrics);
                if let Ok(mut guard) = results.lock() {
                    guard[j] = Some(r);
                }
                progress();
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| SimError::new("simulation", "a worker thread panicked"))?;
    let mut out: Vec<Vec<RunMetrics>> = vec![Vec::with_capacity(seeds); policies.len()];
    for (r, &(p, _)) in results.into_iter().zip(&jobs) {
        let r = r.ok_or_else(|| SimError::new("simulation", "a run did not finish"))??;
        out[p].push(r);
    }
    Ok(out)
}
