//! The router core: arms, policy and pending decisions. Synchronous and pure: it knows nothing of
//! gRPC, storage, clocks or threads. Callers pass `now_ms` (Unix milliseconds) and an RNG; the service
//! wraps it behind a lock, the simulator drives it with simulated time, so both run one decision path.
//!
//! Every input is validated here, once, before anything touches a posterior: a bad value is answered
//! with an [`EngineError`] that names the field and says what would be right.
//!
//! One concept per file: this one holds the [`Engine`] itself, its construction and restore, and
//! the change set it hands out ([`Changes`]: copies of what changed plus the new event-log entries,
//! so the store never reads engine internals); `route.rs` and `feedback.rs` are the two calls as
//! short sequences of named steps, `gate.rs` the breakers, `budgeting.rs` the budget glue,
//! `stats.rs` the read models, `reason.rs` the decision reasons.

mod api;
#[cfg(test)]
mod bounds_tests;
mod breakers;
mod budgeting;
mod cache_hit;
mod cap;
mod claims;
mod cluster;
mod compact;
mod error;
mod experiment;
mod feedback;
mod gate;
mod pending;
#[cfg(test)]
mod pending_tests;
mod prompted;
mod reason;
mod reload;
mod route;
mod shadow;
#[cfg(test)]
mod shadow_tests;
mod spending;
mod stats;
mod tenant;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::breaker::Breaker;
use crate::budget::Ledger;
use crate::config::{Config, ModelConfig, TaskClassConfig};
use crate::policy::objective::QualityTargetState;
use crate::policy::pool::DrawPool;
use crate::policy::{Arm, Scoring, Weights};

use crate::record::{DecisionRecord, Event};
pub use crate::time::format_ms;
use crate::validation::echo;
pub use api::*;
pub use breakers::Breakers;
pub use budgeting::*;
pub use cache_hit::HitFeedback;
pub use cap::{serve_map, CapPlan, Room, SharedBudget};
pub use claims::Fact;
use compact::Names;
pub use compact::{CompactPending, DecisionKey, Shape as PendingShape, SharedPending};
pub use error::*;
pub use experiment::{stable_unit, ExperimentGroup};
use gate::*;
pub use pending::*;
pub use prompted::{count_prompt, Classification};
pub use reason::Reason;
pub use reload::Reconfigured;
use route::Chosen;
pub use shadow::{shadow_reservation_id, PairSides, PairStats, PairedSummary, Side};
use shadow::{Pairs, ShadowAsk};
pub use stats::*;
pub use tenant::DecisionOwner;
use validate::*;

/// Learned state of one task class: one arm per configured model, in config order.
#[derive(Debug, Clone, PartialEq)]
struct ClassState {
    arms: Vec<Arm>,
    /// Utility of each arm's priors under the class's weights (static-best baseline).
    prior_utility: Vec<f64>,
    /// Each arm's model as configured, parallel to `arms`: Route reads it for every candidate,
    /// which by name in the config's `BTreeMap` was a walk of string comparisons per model.
    /// Made with the state, so a reload (which builds new states) replaces it.
    models: Vec<ModelConfig>,
    /// Each arm's breaker, as its place in the engine's [`Breakers`] (made with them, so a
    /// reload replaces both together).
    breaker_slots: Vec<Option<usize>>,
}

/// The most pending decisions [`Engine::presize_pending`] makes room for (the default
/// `limits.max_pending` is 100,000): about 11 MB of id map and order, taken once (the map
/// reached that size by doubling before).
pub const PRESIZED_PENDING: usize = 1 << 17;

/// The router core.
#[derive(Debug, Clone)]
pub struct Engine {
    config: Config,
    classes: BTreeMap<String, ClassState>,
    pending: Pending,
    /// One breaker per model (providers fail as a whole, models across classes share one).
    breakers: Breakers,
    /// Breaker transitions not yet taken by the caller.
    transitions: Vec<ModelTransition>,
    /// Spend ledger per budget key (plain data, serde-serializable for the store).
    ledgers: BTreeMap<String, Ledger>,
    /// Task classes whose arms changed since the last [`Engine::take_changes`].
    dirty_classes: BTreeSet<String>,
    /// Set when nothing ever takes the changes (no data dir, [`Engine::untracked`]): Route and
    /// Feedback then skip noting their class and decision as changed, which would only be
    /// discarded.
    untracked: bool,
    /// Thompson's pools of posterior draws per class, parallel to its arms (derived state: never
    /// persisted, refilled on first use).
    pools: BTreeMap<String, Vec<DrawPool>>,
    /// The `min_cost` objective's primal-dual state per class, by quality target in basis points
    /// ([`target_key`]): the class's own target and any a request asked for.
    objectives: BTreeMap<String, Targets>,
    /// Whether decisions, outcomes and quality scores are logged into [`Engine::take_changes`]
    /// (the service with a data dir; off for the simulator, which keeps no log).
    log_events: bool,
    /// XORed into the two random words of each new decision id ([`Engine::salt_decision_ids`]).
    id_salt: (u64, u64),
    /// Events not yet taken.
    events: Vec<Logged>,
    /// Arms of models a reload removed from their class, by (task class, model): kept so that
    /// re-adding the model brings its history back.
    retired: BTreeMap<(String, String), Arm>,
    /// The spend rollup and cost anomaly baselines (`spending.rs`).
    spend: crate::spend::SpendState,
    /// Cost anomalies not yet taken by the caller.
    spikes: Vec<crate::spend::Spike>,
    /// Shadow traffic's paired comparisons (recomputed from the decision log on restart).
    pairs: Pairs,
    /// Cluster mode: budgets' cluster-wide figures last seen, and decisions awaiting their shared
    /// admission (`cap.rs`; per replica, not persisted).
    shared_budgets: BTreeMap<String, SharedBudget>,
    cap_plans: BTreeMap<String, CapPlan>,
}

/// One class's objective states, by quality target in basis points.
pub type Targets = BTreeMap<u32, QualityTargetState>;

/// The key of a quality target in [`Targets`]: basis points (0.95 -> 9500).
pub fn target_key(target: f64) -> u32 {
    (target * 10_000.0).round() as u32
}

/// What changed since the last [`Engine::take_changes`], copied out for the store: the arms of
/// changed classes, changed pending decisions (`None`: gone), every breaker (few, one per model,
/// and changed by most calls), the ledgers that changed (each tracks it: a ledger holds every
/// live reservation of its budget key, so copying the unchanged ones each cycle cost the more
/// the more decisions were pending) and the new events. The engine hands these
/// out; the store persists them without reading the engine.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// (task class, model, arm) of every arm of a changed class.
    pub arms: Vec<(String, String, Arm)>,
    /// By id key (formatting ids as text under the engine lock cost more than the rest).
    pub pending: Vec<(DecisionKey, Option<SharedPending>)>,
    pub breakers: Vec<(String, Breaker)>,
    pub ledgers: Vec<(String, Ledger)>,
    pub events: Vec<Logged>,
    /// The objective states of changed classes.
    pub objectives: Vec<(String, Targets)>,
    /// Changed spend rollup rows and anomaly baselines.
    pub spend: crate::spend::SpendChanges,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.arms.is_empty()
            && self.pending.is_empty()
            && self.events.is_empty()
            && self.spend.is_empty()
    }
}

/// Buffers for [`Engine::take_changes_into`], allocated before the engine lock is taken.
#[derive(Debug, Default)]
pub struct ChangeBuffers {
    /// The next cycle's event log: empty, with the capacity the caller expects it to need.
    pub events: Vec<Logged>,
    /// Receives the changed pending decisions (emptied first).
    pub pending: Vec<(DecisionKey, Option<SharedPending>)>,
}

/// An event-log entry as the engine hands it out. A new decision is its shared pending record,
/// turned into its [`DecisionRecord`] by [`Logged::into_event`] off the engine lock (the copy is
/// the larger part of the cost).
#[derive(Debug, Clone)]
pub enum Logged {
    Decision(SharedPending),
    Event(Event),
}

impl Logged {
    pub fn into_event(self) -> Event {
        match self {
            Logged::Decision(p) => Event::Decision(Box::new(DecisionRecord::of(&p.decision()))),
            Logged::Event(e) => e,
        }
    }
}

/// Persisted engine state, as the store reads it back at start-up.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Arms by (task class, model).
    pub arms: BTreeMap<(String, String), Arm>,
    pub pending: RestoredPending,
    pub breakers: BTreeMap<String, Breaker>,
    pub ledgers: BTreeMap<String, Ledger>,
    /// Objective states by task class.
    pub objectives: BTreeMap<String, Targets>,
    /// The spend rollup and anomaly baselines.
    pub spend: crate::spend::SpendState,
}

impl Engine {
    /// An engine with every arm at its priors, as of `now_ms`.
    pub fn new(config: Config, now_ms: u64) -> Self {
        let breakers: Breakers = config
            .models
            .keys()
            .map(|m| (m.clone(), Breaker::new()))
            .collect();
        let mut classes = BTreeMap::new();
        for (name, class) in &config.task_classes {
            let scoring = class_scoring(&config, class, None);
            let mut arms = Vec::with_capacity(class.models.len());
            let mut prior_utility = Vec::with_capacity(class.models.len());
            let mut models = Vec::with_capacity(class.models.len());
            for model_id in &class.models {
                let Some(model) = config.models.get(model_id) else {
                    continue; // config validation guarantees presence
                };
                let arm = Arm::new(&config.arm_prior(class, model), now_ms);
                prior_utility.push(scoring.utility(&arm.means(1.0).into()));
                arms.push(arm);
                models.push(model.clone());
            }
            let breaker_slots = models.iter().map(|m| breakers.slot(&m.id)).collect();
            classes.insert(
                name.clone(),
                ClassState {
                    arms,
                    prior_utility,
                    models,
                    breaker_slots,
                },
            );
        }
        let ledgers = config
            .budgets
            .iter()
            .map(|(k, b)| (k.clone(), Ledger::new(b, now_ms)))
            .collect();
        let config_classes = classes.keys().cloned().collect();
        Engine {
            config,
            classes,
            pending: Pending::default(),
            breakers,
            transitions: Vec::new(),
            ledgers,
            // Nothing of a new engine is persisted yet.
            dirty_classes: config_classes,
            untracked: false,
            pools: BTreeMap::new(),
            objectives: BTreeMap::new(),
            log_events: false,
            id_salt: (0, 0),
            events: Vec::new(),
            retired: BTreeMap::new(),
            spend: Default::default(),
            spikes: Vec::new(),
            pairs: Pairs::new(),
            shared_budgets: BTreeMap::new(),
            cap_plans: BTreeMap::new(),
        }
    }

    /// Rebuilds an engine from persisted state: arms, breakers and ledgers that still exist in
    /// `config` take their persisted values, new ones start at priors, and pending decisions are
    /// re-inserted in creation order (expired ones are then dropped). Returns warnings for
    /// persisted items the config no longer has (they are dropped).
    pub fn restore(config: Config, parts: Restored, now_ms: u64) -> (Self, Vec<String>) {
        let mut engine = Engine::new(config, now_ms);
        let mut warnings = Vec::new();
        for ((class, model), arm) in parts.arms {
            let idx = engine
                .config
                .task_classes
                .get(&class)
                .and_then(|c| c.models.iter().position(|m| *m == model));
            match (idx, engine.classes.get_mut(&class)) {
                (Some(i), Some(state)) if i < state.arms.len() => state.arms[i] = arm,
                _ => warnings.push(format!(
                    "dropped persisted arm ({class}, {model}): no longer in the config"
                )),
            }
        }
        for (model, b) in parts.breakers {
            match engine.breakers.get_mut(&model) {
                Some(slot) => *slot = b,
                None => warnings.push(format!(
                    "dropped persisted breaker of {model}: no longer in the config"
                )),
            }
        }
        for (key, l) in parts.ledgers {
            match engine.ledgers.get_mut(&key) {
                Some(slot) => *slot = l,
                None => warnings.push(format!(
                    "dropped persisted budget ledger {key}: no longer in the config"
                )),
            }
        }
        for (class, targets) in parts.objectives {
            if engine.classes.contains_key(&class) {
                engine.objectives.insert(class, targets);
            } else {
                warnings.push(format!(
                    "dropped persisted objective state of {class}: no longer in the config"
                ));
            }
        }
        engine.spend = parts.spend;
        // Read back compact, with their own name table (which this new engine's empty one
        // becomes); put in creation order (ties by id) and inserted oldest first, so the newest
        // are kept within `max_pending`.
        let (names, mut pending) = parts.pending.into_parts();
        engine.pending.names = names;
        pending.retain(|c| {
            let known = engine.config.task_classes.contains_key(c.task_class());
            if !known {
                warnings.push(format!(
                    "dropped pending decision {}: task class {} no longer in the config",
                    c.id(),
                    c.task_class()
                ));
            }
            known
        });
        pending.sort_unstable_by(|a, b| (a.created_ms(), a.key()).cmp(&(b.created_ms(), b.key())));
        let max = engine.config.limits.max_pending;
        engine.presize_pending();
        for c in pending {
            let evicted = engine.pending.insert_restored(c, max);
            engine.bury(&evicted, now_ms);
        }
        // What was just read back is already persisted and not noted as changed; what eviction
        // and expiry drop is. Arms are rewritten once (new arms of a changed config start at
        // priors and must be persisted).
        engine.expire(now_ms);
        (engine, warnings)
    }

    /// Mixes `salt` into every decision id from now on. Ids are drawn from the RNG the caller
    /// passes, which `policy.seed` fixes: a seeded service would hand out the ids of its last run
    /// again after a restart (the data dir still holds those decisions, some pending), and seeded
    /// replicas each other's ids. The service salts each process's ids from OS entropy; the
    /// policy's own draws, and so its choices, stay those the seed fixes.
    pub fn salt_decision_ids(&mut self, salt: (u64, u64)) {
        self.id_salt = salt;
    }

    /// Logs decisions, outcomes and quality scores as events in [`Engine::take_changes`] from now on.
    pub fn log_events(&mut self) {
        self.log_events = true;
    }

    /// Copies out what changed since the last call (for the store) and starts tracking afresh.
    pub fn take_changes(&mut self) -> Changes {
        let buffers = ChangeBuffers {
            events: Vec::with_capacity(self.events.len()),
            pending: Vec::new(),
        };
        self.take_changes_into(buffers)
    }

    /// [`Engine::take_changes`] into buffers the caller allocated before it took the engine lock:
    /// `events` becomes the next cycle's event log (its capacity is what the log can take before
    /// a Route regrows it under the lock) and `pending` receives the changed pending decisions.
    /// The writer sizes both from its last cycle. Allocating them here instead, on the writer's
    /// thread under the lock, now and then took the allocator's slow path: 6.5-10.4 ms for an
    /// event log of a few hundred entries, while every Route waited (docs/performance-history.md).
    pub fn take_changes_into(&mut self, buffers: ChangeBuffers) -> Changes {
        if self.untracked {
            self.discard_changes();
            return Changes::default();
        }
        let ChangeBuffers {
            events: next_events,
            pending: mut pending_buffer,
        } = buffers;
        let spend = self.spend.take_changes();
        if self.dirty_classes.is_empty()
            && !self.pending.has_changes()
            && self.events.is_empty()
            && spend.is_empty()
        {
            return Changes::default();
        }
        let mut arms = Vec::new();
        let mut objectives = Vec::new();
        for class in std::mem::take(&mut self.dirty_classes) {
            for (model, arm) in self.class_arms(&class) {
                arms.push((class.clone(), model.to_string(), arm.clone()));
            }
            if let Some(t) = self.objectives.get(&class) {
                objectives.push((class.clone(), t.clone()));
            }
        }
        self.pending.take_changes_into(&mut pending_buffer);
        Changes {
            arms,
            pending: pending_buffer,
            breakers: self
                .breakers
                .iter()
                .map(|(k, b)| (k.clone(), b.clone()))
                .collect(),
            // Only the ledgers that changed: one holds every live reservation of its key.
            ledgers: self
                .ledgers
                .iter_mut()
                .filter_map(|(k, l)| l.take_changed().then(|| (k.clone(), l.clone())))
                .collect(),
            events: std::mem::replace(&mut self.events, next_events),
            objectives,
            spend,
        }
    }

    /// Logged events not yet taken by [`Engine::take_changes`]: how far the store's writer is
    /// behind.
    pub fn unpersisted(&self) -> usize {
        self.events.len()
    }

    /// The objective states of a task class, by quality target in basis points.
    pub fn class_objectives(&self, class: &str) -> Option<&Targets> {
        self.objectives.get(class)
    }

    /// Stops noting what changed, for an engine whose changes nothing persists (the service
    /// without a data dir): Route and Feedback no longer note their decision and class, and
    /// [`Engine::take_changes`] answers nothing.
    pub fn untracked(&mut self) {
        self.discard_changes();
        self.untracked = true;
        self.pending.untracked();
    }

    /// Notes that the arms of `class` changed (unless the engine is [`Engine::untracked`]).
    fn note_class(&mut self, class: &str) {
        if !self.untracked && !self.dirty_classes.contains(class) {
            self.dirty_classes.insert(class.to_string());
        }
    }

    /// Forgets what changed (nothing persists it), without copying it.
    pub fn discard_changes(&mut self) {
        self.dirty_classes.clear();
        self.pending.clear_changes();
        self.events.clear();
        self.spend.clear_changes();
    }

    /// Logs an event, when logging is on.
    fn log(&mut self, e: impl FnOnce() -> Logged) {
        if self.log_events {
            self.events.push(e());
        }
    }

    /// The arms of a task class as (model, arm), in config order.
    pub fn class_arms(&self, class: &str) -> Vec<(&str, &Arm)> {
        match (self.config.task_classes.get(class), self.classes.get(class)) {
            (Some(c), Some(state)) => c
                .models
                .iter()
                .map(String::as_str)
                .zip(state.arms.iter())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Every pending decision (in no particular order), expanded.
    pub fn pending_decisions(&self) -> impl Iterator<Item = PendingDecision> + '_ {
        self.pending.values().map(|p| p.expand())
    }

    /// Every model's breaker.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Every budget key's ledger.
    pub fn ledgers(&self) -> &BTreeMap<String, Ledger> {
        &self.ledgers
    }

    /// Resets the arms of `class` (only `model`'s when given) to their priors; returns how many.
    pub fn reset_arms(
        &mut self,
        class: &str,
        model: Option<&str>,
        now_ms: u64,
    ) -> Result<usize, EngineError> {
        let class_cfg = self.class(class)?.clone();
        if let Some(m) = model {
            if !class_cfg.models.iter().any(|x| x == m) {
                return Err(EngineError::NotFound(format!(
                    "model {m:?} is not a model of task class {class:?}"
                )));
            }
        }
        let Some(state) = self.classes.get_mut(class) else {
            return Ok(0);
        };
        let mut n = 0;
        for (model_id, arm) in class_cfg.models.iter().zip(state.arms.iter_mut()) {
            if model.is_some_and(|m| m != model_id) {
                continue;
            }
            if let Some(mc) = self.config.models.get(model_id) {
                *arm = Arm::new(&self.config.arm_prior(&class_cfg, mc), now_ms);
                n += 1;
            }
        }
        self.note_class(class);
        Ok(n)
    }

    /// Drops Thompson's pools of posterior draws (derived state, not persisted: a restored engine
    /// starts without them and redraws them on first use).
    pub fn drop_draw_pools(&mut self) {
        self.pools.clear();
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of decisions still accepting feedback.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// A pending decision by id, expanded (see [`Engine::pending_compact`] for a cheap look).
    pub fn pending(&self, decision_id: &str) -> Option<PendingDecision> {
        self.pending.full(decision_id)
    }

    /// A pending decision by id, in the compact form the engine holds it in.
    pub fn pending_compact(&self, decision_id: &str) -> Option<&CompactPending> {
        self.pending.get(decision_id).map(|p| &**p)
    }

    /// The spend ledger of a budget key.
    pub fn ledger(&self, budget_key: &str) -> Option<&Ledger> {
        self.ledgers.get(budget_key)
    }

    /// Drops decisions whose feedback window has passed, releasing their budget reservations, and
    /// budget reservations past their TTL; returns how many decisions were dropped.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let (n, budgeted) = self.pending.expire(now_ms);
        self.bury(&budgeted, now_ms);
        let limits = self.config.limits.tombstones();
        for (key, l) in &mut self.ledgers {
            if let Some(b) = self.config.budgets.get(key) {
                l.expire(b, now_ms);
                l.trim_tombstones(limits, now_ms);
            }
        }
        self.spend.trim(now_ms);
        n
    }

    /// Releases the live reservations of budgeted decisions that expired or were evicted, keeping
    /// a tombstone of each so that a late Feedback still charges its spend.
    pub(super) fn bury(&mut self, gone: &[SharedPending], now_ms: u64) {
        let limits = self.config.limits.tombstones();
        for p in gone {
            let Some(key) = p.budget_key() else { continue };
            if let (Some(l), Some(b)) = (self.ledgers.get_mut(key), self.config.budgets.get(key)) {
                let id = p.id();
                let models = p.offered().map(str::to_string).collect();
                l.bury(b, &id, p.task_class(), models, limits, now_ms);
                l.set_tombstone_tenant(&id, p.tenant().map(str::to_string));
                l.set_tombstone_tags(&id, p.tags());
                l.release(b, &shadow_reservation_id(&id), now_ms);
            }
        }
    }

    /// Sizes the pending decisions' id map for twice `limits.max_pending` (at most
    /// [`PRESIZED_PENDING`]) and their creation order for it, at once. Grown by doubling
    /// instead, the map became one of twice the size inside a Route, moving every decision while
    /// the engine's lock was held and every other Route waited: 0.8, 1.3 and 2.5 ms at 14k, 28k
    /// and 57k decisions, and 5 ms once full, when a bounded map's churn (a decision in, the
    /// oldest out) used up its free slots and doubled it once more. At half full, the churn
    /// leaves it as it is: no Route of 400,000 (past the bound) took over 0.5 ms. A restore sizes
    /// the maps this way before it inserts what was read back; the service calls this for a new
    /// engine; an engine for one simulation run need not.
    pub fn presize_pending(&mut self) {
        // One more: a Route inserts its decision before evicting the oldest.
        let max = self.config.limits.max_pending.min(PRESIZED_PENDING) + 1;
        self.pending.presize(2 * max, max);
    }

    pub(super) fn class(&self, name: &str) -> Result<&Arc<TaskClassConfig>, EngineError> {
        if name.is_empty() {
            return Err(invalid(
                "task_class",
                format!("is required; configured classes: {}", self.class_names()),
            ));
        }
        self.config.task_classes.get(name).ok_or_else(|| {
            EngineError::NotFound(format!(
                "task_class {} is not configured; configured classes: {}",
                echo(name),
                self.class_names()
            ))
        })
    }

    fn class_names(&self) -> String {
        self.config
            .task_classes
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The class's scoring (weights, references, SLA), with optional request weights.
pub(super) fn class_scoring(
    config: &Config,
    class: &TaskClassConfig,
    weights: Option<Weights>,
) -> Scoring {
    Scoring {
        weights: weights.unwrap_or(class.weights),
        cost_ref_usd: class.cost_ref_usd,
        latency_ref_ms: class.latency_ref_ms,
        max_latency_ms: class.max_latency_ms,
        max_cost_usd: None,
        violation_penalty: config.policy.effective_penalty(),
    }
}

/// Ratio of a request's price-table cost to the class's typical request, for one model.
pub(super) fn cost_scale(
    model: &ModelConfig,
    class: &TaskClassConfig,
    input: u64,
    output: u64,
) -> f64 {
    let typical = model.cost_usd(class.typical_input_tokens, class.typical_output_tokens);
    if typical > 0.0 {
        model.cost_usd(input, output) / typical
    } else {
        1.0
    }
}
