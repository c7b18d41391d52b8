//! Spend accounting: what was spent, where, and whether it is running away. Pure: no I/O, no clock;
//! the engine passes `now_ms` and calls it at settlement, the store persists what it hands out.
//!
//! - [`tags`]: the bounded free-form labels (user, feature, team) a Route or Feedback carries.
//! - [`rollup`]: settled spend summed per UTC day x model x provider x task class x budget key x
//!   tag set, kept [`rollup::RETENTION_DAYS`] days. It is its own data, independent of the event
//!   log: trimming the log by age, count or bytes never changes a report, so a month-end CSV and
//!   the ledgers agree to the cent.
//! - [`report`]: grouping of rollup rows (by day, week, month, model, ..., tag) and their table,
//!   CSV and JSON renderings; shared by `GetSpend`, `switchyard report spend` on a data dir and
//!   the same command over gRPC.
//! - [`anomaly`]: per budget key and per model, hourly spend against an EWMA baseline of its level
//!   and spread; a spike fires once.
//!
//! # Restart
//! Both the rollup rows and the anomaly baselines are engine state persisted by the store in its
//! own `spend` tree, written in the same writer cycle as the ledgers that the settlement changed:
//! only rows and baselines changed since the last cycle are rewritten. A restart reads them back,
//! so reports continue exactly and a baseline does not have to relearn (no warm-up after restart).
//!
//! # Memory
//! The engine holds the rollup's rows in memory (restored at start-up): one row per day and
//! distinct (model, provider, class, budget key, tag set) that settled spend. High-cardinality
//! tags (a user id on every request) add a row per user, model and day; the tag limits bound a
//! row's size, not the number of rows.
//!
//! # Cluster mode
//! The rollup is shared: each replica also collects what it settled as [`Deltas`] (rows and
//! per-hour spend per scope), which `crate::cluster::spend` adds to Redis every sync interval
//! (the rows are sums, so adds from replicas commute), and reports read the shared rows. The
//! anomaly detectors then run on the cluster-wide hourly totals, not on this replica's
//! settlements (its share of traffic would misjudge the level), and a spike is claimed in Redis
//! so it fires once; the local detectors stay idle. The replica's own rollup (and data dir) still
//! holds what it settled.

pub mod anomaly;
pub mod report;
pub mod rollup;
pub mod tags;

pub use anomaly::{AnomalyConfig, Baseline, Detectors, Scope, Spike};
pub use report::{GroupBy, SpendGroup};
pub use rollup::{Rollup, SpendKey, SpendTotals};

/// The engine's spend state: the rollup and the anomaly baselines, with what changed since the
/// store last took them.
#[derive(Debug, Clone, Default)]
pub struct SpendState {
    pub rollup: Rollup,
    pub detectors: Detectors,
    /// In cluster mode: what was settled since the cluster last took it (in memory only).
    pub shared: Option<Deltas>,
}

/// Spend settled on this replica and not yet added to the cluster's shared figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deltas {
    pub rows: std::collections::BTreeMap<SpendKey, SpendTotals>,
    /// Nano-USD per (hour since the epoch, scope, name): what the shared detectors judge.
    pub hours: std::collections::BTreeMap<(u64, Scope, String), u64>,
}

impl Deltas {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.hours.is_empty()
    }

    fn add(&mut self, s: &Settled<'_>, now_ms: u64) {
        let (key, totals) = rollup::row_of(s, now_ms);
        self.rows.entry(key).or_default().add(&totals);
        let hour = now_ms / anomaly::HOUR_MS;
        let mut hour_add = |scope, name: &str| {
            let v = self
                .hours
                .entry((hour, scope, name.to_string()))
                .or_default();
            *v = v.saturating_add(totals.spend_nusd);
        };
        if !s.budget_key.is_empty() {
            hour_add(Scope::BudgetKey, s.budget_key);
        }
        hour_add(Scope::Model, s.model);
    }
}

/// What changed since the last [`SpendState::take_changes`]: rows (`None`: trimmed) and baselines.
#[derive(Debug, Clone, Default)]
pub struct SpendChanges {
    pub rows: Vec<(SpendKey, Option<SpendTotals>)>,
    pub baselines: Vec<((Scope, String), Baseline)>,
}

impl SpendChanges {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.baselines.is_empty()
    }
}

/// One settled model call, as the rollup and the detectors count it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled<'a> {
    pub model: &'a str,
    pub provider: &'a str,
    pub task_class: &'a str,
    /// "" when the call was charged to no budget.
    pub budget_key: &'a str,
    pub tags: &'a std::collections::BTreeMap<String, String>,
    /// What the ledger recorded (or, without a budget, the same rule: reported, else the price
    /// table at the reported tokens, else the decision's estimate).
    pub usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl SpendState {
    /// Counts one settled call at `now_ms`; returns the spikes it revealed (at most one per
    /// scope: its budget key and its model).
    pub fn settle(&mut self, s: &Settled<'_>, cfg: &AnomalyConfig, now_ms: u64) -> Vec<Spike> {
        self.rollup.add(s, now_ms);
        let mut spikes = Vec::new();
        if let Some(d) = &mut self.shared {
            // The cluster's detectors judge the shared totals these deltas join.
            d.add(s, now_ms);
            return spikes;
        }
        if cfg.enabled {
            if !s.budget_key.is_empty() {
                spikes.extend(self.detectors.add(
                    Scope::BudgetKey,
                    s.budget_key,
                    s.usd,
                    cfg,
                    now_ms,
                ));
            }
            spikes.extend(
                self.detectors
                    .add(Scope::Model, s.model, s.usd, cfg, now_ms),
            );
        }
        spikes
    }

    /// Drops rows older than the retention (at `now_ms`).
    pub fn trim(&mut self, now_ms: u64) -> usize {
        self.rollup.trim(now_ms)
    }

    pub fn take_changes(&mut self) -> SpendChanges {
        SpendChanges {
            rows: self.rollup.take_changes(),
            baselines: self.detectors.take_changes(),
        }
    }

    pub fn clear_changes(&mut self) {
        self.rollup.take_changes();
        self.detectors.take_changes();
    }
}
