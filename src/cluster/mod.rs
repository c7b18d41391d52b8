//! Cluster mode: replicas of one config acting as one router through Redis (`[cluster]`).
//!
//! What waits on Redis and what does not:
//! - choosing a model never does: each replica decides on its local engine;
//! - Route makes one round trip, a Lua script that reserves the budget (when the request is
//!   budgeted) and records the pending decision and its idempotency key ([`budget`]);
//! - Feedback reads the pending decision (made on any replica), claims the facts it reports for
//!   the first time ([`claims`]: the same Feedback at two replicas at once is applied once),
//!   applies it locally, then settles the budget and writes the decision back in one script, and
//!   is acknowledged after that; a Feedback whose decision cannot be found because Redis is down
//!   waits in the [`outbox`] (persisted with a data dir) and is acknowledged as deferred;
//! - evidence, heartbeats and health signals move in the background ([`sync`]).
//!
//! State and where it lives (the state of record is Redis; a replica's data dir keeps its event
//! log and a warm-start copy):
//! - **shared**: budget ledgers per key and period (spent, live reservations, settled decisions,
//!   alerts already fired), pending decisions and idempotency keys, arms' evidence totals (in
//!   forward-decay units, see `crate::policy::merge`), the replica registry, health signals,
//!   response cache entries ([`cache`]; each replica keeps its own similarity index);
//! - **per replica**: breakers (opens are broadcast, not shared), Thompson draw pools, baseline
//!   policies' statistics (moving latencies, LiteLLM-style Beta), the quality-target multipliers
//!   of `min_cost` classes, the local copy of each ledger, each budget's shared figures as last
//!   seen (pacing and `on_cap = "cheapest"` read them: [`cap`], `crate::engine::cap`), and the
//!   fallback allowance below.
//!
//! On restart a replica reads everything shared back from Redis; its first evidence sync adopts
//! the shared totals instead of adding its local (restored) evidence a second time.
//!
//! When Redis is unreachable (an error or no answer within `cluster.redis_timeout_ms`) the replica
//! keeps routing on local state; a budgeted request may reserve only from a fallback allowance:
//! the remaining budget last seen, divided by the live replicas last seen, times
//! `cluster.fallback_share_factor` (never unlimited). Settlements and decisions made meanwhile are
//! queued in memory and replayed (idempotently) when Redis answers again; then the allowance is
//! dropped. The health service `switchyard.v1.Cluster` and the metrics ([`metrics`], registered in
//! the service's prometheus-client registry) show the state.

pub mod budget;
pub mod cache;
pub mod cap;
pub mod claims;
pub mod evidence;
pub mod glue;
pub mod health;
pub mod metrics;
pub mod outbox;
pub mod spend;
pub mod sync;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::ClusterConfig;

pub use budget::{Admission, BudgetAsk, Settled};

/// An error talking to Redis: unreachable, timed out, or a script failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis answered something unexpected: {0}")]
    Protocol(String),
}

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    pub redis_errors: AtomicU64,
    pub fallback_reservations: AtomicU64,
    pub fallback_refusals: AtomicU64,
    pub shared_refusals: AtomicU64,
    pub replayed_ops: AtomicU64,
    pub evidence_syncs: AtomicU64,
    pub health_signals_received: AtomicU64,
}

/// One budget as this replica last saw it in Redis, and its outage allowance.
#[derive(Debug, Clone, Default)]
pub struct BudgetView {
    pub period_start_ms: u64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub limit_usd: f64,
    /// While Redis is down: what this replica may still reserve (set when the outage is noticed).
    pub allowance_usd: Option<f64>,
    /// Reserved or charged beyond reservations during the outage.
    pub fallback_spent_usd: f64,
}

/// Work done while Redis was unreachable, replayed when it answers again.
#[derive(Debug, Clone)]
pub enum Deferred {
    /// A decision (and its reservation, admitted from the fallback allowance).
    Admit {
        pending_json: String,
        ttl_ms: u64,
        request_id: Option<String>,
        budget: Option<BudgetAsk>,
    },
    /// A settlement (and the decision's updated pending record).
    Settle {
        decision_id: String,
        model: String,
        budget: BudgetAsk,
        pending_json: Option<String>,
    },
}

/// Mutable cluster state (a `std` mutex, never held across an `.await`).
#[derive(Debug, Default)]
pub struct State {
    /// Live replicas at the last heartbeat (at least 1: this one).
    pub live_replicas: usize,
    pub budgets: BTreeMap<String, BudgetView>,
    pub outbox: Vec<Deferred>,
    /// Reservations admitted from the allowance during the outage, by decision id.
    pub outage_reservations: BTreeMap<String, f64>,
    /// When evidence was last merged (Unix ms; 0 = never).
    pub synced_ms: u64,
    /// When Redis last answered (Unix ms).
    pub redis_seen_ms: u64,
    /// Health signals waiting to be broadcast.
    pub health_out: Vec<health::Signal>,
}

/// A replica's handle on the shared store.
pub struct Cluster {
    pub config: ClusterConfig,
    con: ConnectionManager,
    up: AtomicBool,
    state: Mutex<State>,
    pub counters: Counters,
    scripts: budget::Scripts,
    /// The shared spend rollup and anomaly detectors ([`spend`]).
    spend: spend::SharedSpend,
    /// Feedback accepted while Redis was unreachable ([`outbox`]).
    pub outbox: outbox::Outbox,
    pub feedback_counters: outbox::FeedbackCounters,
    /// Feedbacks for one decision are handled one at a time on this replica.
    pub feedback_locks: claims::DecisionLocks,
}

impl Cluster {
    /// A handle that connects lazily: a replica starts (and serves from local state) even while
    /// Redis is down.
    pub fn new(config: ClusterConfig) -> Result<Self, ClusterError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let cm = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let con = ConnectionManager::new_lazy_with_config(client, cm)?;
        Ok(Cluster {
            config,
            con,
            // Down until the first heartbeat answers: budgets start on the fallback allowance.
            up: AtomicBool::new(false),
            state: Mutex::new(State {
                live_replicas: 1,
                ..State::default()
            }),
            counters: Counters::default(),
            scripts: budget::Scripts::new(),
            spend: spend::SharedSpend::default(),
            outbox: outbox::Outbox::default(),
            feedback_counters: outbox::FeedbackCounters::default(),
            feedback_locks: claims::DecisionLocks::default(),
        })
    }

    /// Whether Redis answered last time and nothing is left to replay.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A key under the cluster's prefix.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.config.key_prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// Runs one Redis exchange with the configured timeout; an error marks Redis down (the
    /// allowance of each budget is fixed at that moment).
    pub async fn call<T, F>(
        &self,
        f: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, ClusterError>
    where
        F: Future<Output = Result<T, ClusterError>>,
    {
        let ms = self.config.redis_timeout_ms;
        let out = match tokio::time::timeout(Duration::from_millis(ms), f(self.con.clone())).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Timeout(ms)),
        };
        if let Err(e) = &out {
            self.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
            if self.up.swap(false, Ordering::Relaxed) {
                tracing::warn!(error = %e, "redis unreachable: routing on local state, budgets on fallback shares");
                self.start_outage();
            }
        } else {
            self.state().redis_seen_ms = crate::time::now_ms();
        }
        out
    }

    /// Fixes each budget's outage allowance: remaining / live replicas * factor.
    fn start_outage(&self) {
        let factor = self.config.fallback_share_factor;
        let mut st = self.state();
        let live = st.live_replicas.max(1) as f64;
        for v in st.budgets.values_mut() {
            if v.allowance_usd.is_none() {
                let remaining = (v.limit_usd - v.spent_usd - v.reserved_usd).max(0.0);
                v.allowance_usd = Some(remaining / live * factor);
                v.fallback_spent_usd = 0.0;
            }
        }
    }

    /// Marks Redis reachable again (after the outbox was replayed).
    fn end_outage(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("redis reachable: shared state reconciled");
        }
        let mut st = self.state();
        st.outage_reservations.clear();
        for v in st.budgets.values_mut() {
            v.allowance_usd = None;
            v.fallback_spent_usd = 0.0;
        }
    }
}

/// Parses a number Redis returned as text.
pub(crate) fn num(s: &str) -> Result<f64, ClusterError> {
    s.trim().parse::<f64>().map_err(|_| {
        ClusterError::Protocol(format!("not a number: {}", crate::validation::echo(s)))
    })
}
