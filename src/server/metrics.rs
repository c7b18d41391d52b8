//! Prometheus metrics (OpenMetrics text) on a separate HTTP listener.
//!
//! Counters and histograms are recorded by the handlers after the engine lock is released; gauges
//! that mirror engine state (breakers, budgets, pending decisions) are read from the engine when
//! `/metrics` is scraped, so they are exact at scrape time and cost nothing per request. Every
//! series is documented in README.md ("Metrics").

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

use crate::breaker::BreakerState;
use crate::engine::{BudgetAlert, Counted, Decision, Engine, Reason};
use crate::spend::Spike;

/// The gRPC service name, as the `grpc_service` label gives it.
pub const SERVICE: &str = "switchyard.v1.Route";

/// The RPCs of `switchyard.v1.Route`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Method {
    Route,
    Feedback,
    ReportHealth,
    GetArmStats,
    GetBudgets,
    ResetArms,
    Reload,
    GetSpend,
    GetAbReport,
    InvalidateCache,
    Backup,
}

impl Method {
    /// The RPC's path, `/switchyard.v1.Route/Method` (what `[auth]` checks), without formatting
    /// one per request.
    pub fn path(self) -> &'static str {
        match self {
            Method::Route => "/switchyard.v1.Route/Route",
            Method::Feedback => "/switchyard.v1.Route/Feedback",
            Method::ReportHealth => "/switchyard.v1.Route/ReportHealth",
            Method::GetArmStats => "/switchyard.v1.Route/GetArmStats",
            Method::GetBudgets => "/switchyard.v1.Route/GetBudgets",
            Method::ResetArms => "/switchyard.v1.Route/ResetArms",
            Method::Reload => "/switchyard.v1.Route/Reload",
            Method::GetSpend => "/switchyard.v1.Route/GetSpend",
            Method::GetAbReport => "/switchyard.v1.Route/GetAbReport",
            Method::InvalidateCache => "/switchyard.v1.Route/InvalidateCache",
            Method::Backup => "/switchyard.v1.Route/Backup",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: &'static str,
    grpc_method: Method,
    grpc_code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlingLabels {
    grpc_service: &'static str,
    grpc_method: Method,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    task_class: String,
    model: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedbackLabels {
    task_class: String,
    model: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabels {
    task_class: String,
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    model: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    model: String,
    to: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget_key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnomalyLabels {
    scope: &'static str,
    name: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    budget_key: String,
    threshold: String,
}

/// Counters of `switchyard_decisions` by task class, then model, then reason. Looked up on
/// every Route, by names the config gave the decision: FxHash, not SipHash (two look-ups were
/// 0.4 k instructions of a Route).
type DecisionSeries = HashMap<String, FxMap<String, Vec<(Reason, Counter)>>, FxBuild>;
type FxBuild = rustc_hash::FxBuildHasher;
type FxMap<K, V> = HashMap<K, V, FxBuild>;

pub(super) type FloatGauge = Gauge<f64, AtomicU64>;
pub(super) type FloatCounter = Counter<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every series the service exports.
pub struct Metrics {
    registry: Registry,
    handled: Family<HandledLabels, Counter>,
    handling: HistogramFamily<HandlingLabels>,
    decisions: Family<DecisionLabels, Counter>,
    feedback: Family<FeedbackLabels, Counter>,
    model_latency: HistogramFamily<ArmLabels>,
    model_cost: Family<ArmLabels, FloatCounter>,
    model_quality: HistogramFamily<ArmLabels>,
    breaker_state: Family<BreakerLabels, Gauge>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    budget_spent: Family<BudgetLabels, FloatGauge>,
    budget_reserved: Family<BudgetLabels, FloatGauge>,
    budget_limit: Family<BudgetLabels, FloatGauge>,
    budget_pacing: Family<BudgetLabels, FloatGauge>,
    budget_alerts: Family<AlertLabels, Counter>,
    budget_overrun: Family<BudgetLabels, FloatCounter>,
    budget_overruns: Family<BudgetLabels, Counter>,
    late_feedback: Family<BudgetLabels, Counter>,
    cost_anomalies: Family<AnomalyLabels, Counter>,
    pending: Gauge,
    resident_memory: Gauge,
    store_errors: Counter,
    store_cycle: Histogram,
    store_flush: Histogram,
    store_take: Histogram,
    store_backlog: Gauge,
    store_backpressure: Counter,
    skipped_arms: Counter,
    lock_wait: Histogram,
    lock_hold: Histogram,
    /// Handles of the series every successful RPC records, by method: the same series as the
    /// families', without hashing a label set under the family's lock per request.
    ok_series: [OnceLock<(Counter, Histogram)>; 16],
    /// Handles of `decisions` by task class, model and reason (looked up by `&str`, where the
    /// family's lookup needs its labels as owned strings: three allocations per Route).
    decision_series: RwLock<DecisionSeries>,
    /// The response cache's series.
    pub cache: super::cache::CacheMetrics,
    /// Cluster mode's series (none until a cluster is attached).
    pub cluster: crate::cluster::metrics::ClusterCollector,
}

fn handling_histogram() -> Histogram {
    // 10 us .. ~1.3 s: the router's own handling time.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
}

fn lock_histogram() -> Histogram {
    // 1 us .. ~16 ms.
    Histogram::new(exponential_buckets(0.000_001, 2.0, 15))
}

fn store_histogram() -> Histogram {
    // 50 us .. ~1.6 s: a writer cycle or its flush (fsync).
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn model_latency_histogram() -> Histogram {
    // 50 ms .. ~102 s: model calls as reported.
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

fn quality_histogram() -> Histogram {
    Histogram::new([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
}

const BREAKER_STATES: [(BreakerState, &str); 3] = [
    (BreakerState::Closed, "closed"),
    (BreakerState::Open, "open"),
    (BreakerState::HalfOpen, "half_open"),
];

fn breaker_state_name(s: BreakerState) -> &'static str {
    BREAKER_STATES
        .iter()
        .find(|(k, _)| *k == s)
        .map_or("unknown", |(_, n)| n)
}

/// Registers `metric` under `name` and returns it (the registry keeps a handle to the same series).
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        Metrics {
            handled: register(
                &mut r,
                "grpc_server_handled",
                "RPCs completed by the server, by method and gRPC status code",
                Family::<HandledLabels, Counter>::default(),
            ),
            handling: register(
                &mut r,
                "grpc_server_handling_seconds",
                "Time the server spent handling an RPC, from request decoded to response ready",
                HistogramFamily::<HandlingLabels>::new_with_constructor(handling_histogram),
            ),
            decisions: register(
                &mut r,
                "switchyard_decisions",
                "Routing decisions made (replayed decisions excluded), by task class, chosen model and reason",
                Family::<DecisionLabels, Counter>::default(),
            ),
            feedback: register(
                &mut r,
                "switchyard_feedback",
                "Feedback accepted, by task class, model and outcome (quality_only: a quality score alone; duplicate: nothing new)",
                Family::<FeedbackLabels, Counter>::default(),
            ),
            model_latency: register(
                &mut r,
                "switchyard_model_latency_seconds",
                "Model call latency as reported in Feedback",
                HistogramFamily::<ArmLabels>::new_with_constructor(model_latency_histogram),
            ),
            model_cost: register(
                &mut r,
                "switchyard_model_cost_usd",
                "Model call cost in USD, as reported in Feedback or computed from the price table and reported tokens",
                Family::<ArmLabels, FloatCounter>::default(),
            ),
            model_quality: register(
                &mut r,
                "switchyard_model_quality",
                "Quality scores in [0, 1] reported in Feedback",
                HistogramFamily::<ArmLabels>::new_with_constructor(quality_histogram),
            ),
            breaker_state: register(
                &mut r,
                "switchyard_breaker_state",
                "Circuit breaker state per model: 1 for the current state, 0 for the others",
                Family::<BreakerLabels, Gauge>::default(),
            ),
            breaker_transitions: register(
                &mut r,
                "switchyard_breaker_transitions",
                "Circuit breaker state changes, by model and the state entered",
                Family::<TransitionLabels, Counter>::default(),
            ),
            budget_spent: register(
                &mut r,
                "switchyard_budget_spent_usd",
                "Settled spend of the budget's current period",
                Family::<BudgetLabels, FloatGauge>::default(),
            ),
            budget_reserved: register(
                &mut r,
                "switchyard_budget_reserved_usd",
                "Live reservations of routed requests still awaiting feedback",
                Family::<BudgetLabels, FloatGauge>::default(),
            ),
            budget_limit: register(
                &mut r,
                "switchyard_budget_limit_usd",
                "The budget's spend cap per period",
                Family::<BudgetLabels, FloatGauge>::default(),
            ),
            budget_pacing: register(
                &mut r,
                "switchyard_budget_pacing_multiplier",
                "Factor on the cost weight of requests charged to the budget (1 = on plan)",
                Family::<BudgetLabels, FloatGauge>::default(),
            ),
            budget_alerts: register(
                &mut r,
                "switchyard_budget_alerts",
                "Budget alert thresholds crossed, by budget and threshold (fraction of the limit)",
                Family::<AlertLabels, Counter>::default(),
            ),
            budget_overrun: register(
                &mut r,
                "switchyard_budget_overrun_usd",
                "Spend that settlements pushed past a budget's limit (cost beyond the reservation that the headroom did not cover), USD",
                Family::<BudgetLabels, FloatCounter>::default(),
            ),
            budget_overruns: register(
                &mut r,
                "switchyard_budget_overruns",
                "Settlements that pushed a budget past its limit",
                Family::<BudgetLabels, Counter>::default(),
            ),
            late_feedback: register(
                &mut r,
                "switchyard_late_feedback",
                "Feedback for a budgeted decision that had expired or been evicted, charged from its tombstone",
                Family::<BudgetLabels, Counter>::default(),
            ),
            cost_anomalies: register(
                &mut r,
                "switchyard_cost_anomalies",
                "Cost anomalies fired (an hour's spend far above its baseline), by scope and name",
                Family::default(),
            ),
            pending: register(
                &mut r,
                "switchyard_pending_decisions",
                "Decisions awaiting feedback",
                Gauge::default(),
            ),
            resident_memory: register(
                &mut r,
                "process_resident_memory_bytes",
                "Resident memory of the server process (Linux: VmRSS)",
                Gauge::default(),
            ),
            store_errors: register(
                &mut r,
                "switchyard_store_write_errors",
                "Writer cycles whose write or flush to the data dir failed",
                Counter::default(),
            ),
            store_cycle: register(
                &mut r,
                "switchyard_store_cycle_seconds",
                "Duration of each successful writer cycle: taking the engine's changes, encoding, \
                 committing and, when it flushes, the flush (a sync Feedback waits for up to two)",
                store_histogram(),
            ),
            store_flush: register(
                &mut r,
                "switchyard_store_flush_seconds",
                "Duration of each flush of the data dir to disk by the writer (sled's fsync)",
                store_histogram(),
            ),
            store_take: register(
                &mut r,
                "switchyard_store_take_seconds",
                "Time each writer cycle spent taking the engine's changes: waiting for the engine \
                 lock and holding it, while Routes and Feedbacks wait (the requests' own waits and \
                 holds are switchyard_engine_lock_*)",
                lock_histogram(),
            ),
            store_backlog: register(
                &mut r,
                "switchyard_store_backlog_events",
                "Logged decisions and outcomes not yet written, as the last Route saw it; past \
                 20 000 a Route waits for the writer's next cycle",
                Gauge::default(),
            ),
            store_backpressure: register(
                &mut r,
                "switchyard_store_backpressure_waits",
                "Routes that waited for a writer cycle because the backlog was past its bound \
                 (the disk, not the router, set the pace)",
                Counter::default(),
            ),
            skipped_arms: register(
                &mut r,
                "switchyard_store_skipped_arm_records",
                "Bad arm records skipped at start (each arm restarts at its priors; logged naming it)",
                Counter::default(),
            ),
            lock_wait: register(
                &mut r,
                "switchyard_engine_lock_wait_seconds",
                "Time a request waited for the engine lock",
                lock_histogram(),
            ),
            lock_hold: register(
                &mut r,
                "switchyard_engine_lock_hold_seconds",
                "Time a request held the engine lock (the engine call itself)",
                lock_histogram(),
            ),
            ok_series: std::array::from_fn(|_| OnceLock::new()),
            decision_series: RwLock::default(),
            cache: super::cache::CacheMetrics::register(&mut r),
            cluster: {
                let c = crate::cluster::metrics::ClusterCollector::default();
                r.register_collector(Box::new(c.clone()));
                c
            },
            registry: r,
        }
    }

    /// One completed RPC: its status code and handling time.
    pub fn rpc(&self, method: Method, code: tonic::Code, elapsed: Duration) {
        let ok = match self.ok_series.get(method as usize) {
            Some(slot) if code == tonic::Code::Ok => slot,
            _ => return self.rpc_labelled(method, code, elapsed),
        };
        let (handled, handling) = ok.get_or_init(|| {
            let handled = self
                .handled
                .get_or_create(&HandledLabels {
                    grpc_service: SERVICE,
                    grpc_method: method,
                    grpc_code: crate::grpc_code::code_name(code),
                })
                .clone();
            let handling = self
                .handling
                .get_or_create(&HandlingLabels {
                    grpc_service: SERVICE,
                    grpc_method: method,
                })
                .clone();
            (handled, handling)
        });
        handled.inc();
        handling.observe(elapsed.as_secs_f64());
    }

    /// [`Metrics::rpc`] through the families' label lookups.
    fn rpc_labelled(&self, method: Method, code: tonic::Code, elapsed: Duration) {
        let grpc_code = crate::grpc_code::code_name(code);
        self.handled
            .get_or_create(&HandledLabels {
                grpc_service: SERVICE,
                grpc_method: method,
                grpc_code,
            })
            .inc();
        self.handling
            .get_or_create(&HandlingLabels {
                grpc_service: SERVICE,
                grpc_method: method,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A new (not replayed) decision.
    pub fn decision(&self, d: &Decision) {
        let known = {
            let series = self
                .decision_series
                .read()
                .unwrap_or_else(|p| p.into_inner());
            series
                .get(&d.task_class)
                .and_then(|models| models.get(&d.model))
                .and_then(|reasons| reasons.iter().find(|(r, _)| *r == d.reason))
                .map(|(_, c)| c.inc())
                .is_some()
        };
        if !known {
            let c = self
                .decisions
                .get_or_create(&DecisionLabels {
                    task_class: d.task_class.clone(),
                    model: d.model.clone(),
                    reason: d.reason.as_str().to_string(),
                })
                .clone();
            let mut series = self
                .decision_series
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let reasons = series
                .entry(d.task_class.clone())
                .or_default()
                .entry(d.model.clone())
                .or_default();
            if !reasons.iter().any(|(r, _)| *r == d.reason) {
                reasons.push((d.reason, c.clone()));
            }
            c.inc();
        }
    }

    /// An accepted Feedback on `model` of `task_class`, with what it added.
    pub fn feedback(&self, task_class: &str, model: &str, duplicate: bool, counted: &Counted) {
        let outcome = match (duplicate, counted.outcome) {
            (true, _) => "duplicate",
            (false, Some(o)) => o.as_str(),
            (false, None) => "quality_only",
        };
        let arm = ArmLabels {
            task_class: task_class.to_string(),
            model: model.to_string(),
        };
        self.feedback
            .get_or_create(&FeedbackLabels {
                task_class: arm.task_class.clone(),
                model: arm.model.clone(),
                outcome,
            })
            .inc();
        if let Some(ms) = counted.latency_ms {
            self.model_latency.get_or_create(&arm).observe(ms / 1000.0);
        }
        if let Some(usd) = counted.cost_usd {
            self.model_cost.get_or_create(&arm).inc_by(usd);
        }
        if let Some(q) = counted.quality {
            self.model_quality.get_or_create(&arm).observe(q);
        }
    }

    /// A breaker state change of `model`.
    pub fn breaker_transition(&self, model: &str, to: BreakerState) {
        self.breaker_transitions
            .get_or_create(&TransitionLabels {
                model: model.to_string(),
                to: breaker_state_name(to),
            })
            .inc();
    }

    /// One request's wait for, and hold of, the engine lock.
    pub fn engine_lock(&self, wait: Duration, hold: Duration) {
        self.lock_wait.observe(wait.as_secs_f64());
        self.lock_hold.observe(hold.as_secs_f64());
    }

    /// A failed writer cycle.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// The writer's backlog as a Route saw it.
    pub fn store_backlog(&self, events: usize) {
        self.store_backlog
            .set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    /// A Route waited for the writer (backlog past its bound).
    pub fn store_backpressure(&self) {
        self.store_backpressure.inc();
    }

    /// Bad arm records skipped by the restore at start.
    pub fn skipped_arms(&self, n: u64) {
        self.skipped_arms.inc_by(n);
    }

    /// Budget alert thresholds crossed.
    pub fn budget_alerts(&self, crossed: &[BudgetAlert]) {
        for a in crossed {
            self.budget_alerts
                .get_or_create(&AlertLabels {
                    budget_key: a.budget_key.clone(),
                    threshold: a.threshold.to_string(),
                })
                .inc();
        }
    }

    /// Cost anomalies fired.
    pub fn cost_anomalies(&self, spikes: &[Spike]) {
        for s in spikes {
            self.cost_anomalies
                .get_or_create(&AnomalyLabels {
                    scope: s.scope.as_str(),
                    name: s.name.clone(),
                })
                .inc();
        }
    }

    /// A settlement of budget `key` that went past its limit by `overrun_usd`, and whether it was a
    /// late Feedback; also logged with its amount.
    pub fn budget_settled(&self, key: &str, overrun_usd: f64, late: bool) {
        let labels = BudgetLabels {
            budget_key: key.to_string(),
        };
        if late {
            self.late_feedback.get_or_create(&labels).inc();
        }
        if overrun_usd > 0.0 {
            self.budget_overrun
                .get_or_create(&labels)
                .inc_by(overrun_usd);
            self.budget_overruns.get_or_create(&labels).inc();
            tracing::warn!(
                budget_key = key,
                overrun_usd,
                late,
                "budget overrun: a settlement pushed spend past the limit"
            );
        }
    }

    /// Sets the gauges that mirror engine state; called under the engine lock at scrape time.
    pub fn refresh(&self, engine: &Engine, now_ms: u64) {
        for (model, breaker) in engine.breakers().iter() {
            let current = breaker.state(now_ms);
            for (state, name) in BREAKER_STATES {
                self.breaker_state
                    .get_or_create(&BreakerLabels {
                        model: model.clone(),
                        state: name,
                    })
                    .set(i64::from(state == current));
            }
        }
        if let Ok(budgets) = engine.budgets("", now_ms) {
            for b in budgets {
                let key = BudgetLabels {
                    budget_key: b.budget_key,
                };
                self.budget_spent.get_or_create(&key).set(b.spent_usd);
                self.budget_reserved.get_or_create(&key).set(b.reserved_usd);
                self.budget_limit.get_or_create(&key).set(b.limit_usd);
                self.budget_pacing
                    .get_or_create(&key)
                    .set(b.pacing_multiplier);
            }
        }
        self.pending
            .set(i64::try_from(engine.pending_len()).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text of every series (gauges as last refreshed).
    pub fn encode(&self) -> String {
        if let Some(rss) = resident_memory_bytes() {
            self.resident_memory
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// VmRSS of this process in bytes, from /proc (Linux only).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The writer thread's cycles, as metrics.
impl super::persist::Observe for std::sync::Arc<Metrics> {
    fn cycle(&self, times: &super::persist::CycleTimes) {
        self.store_cycle.observe(times.total.as_secs_f64());
        self.store_take.observe(times.take.as_secs_f64());
        if let Some(flush) = times.flush {
            self.store_flush.observe(flush.as_secs_f64());
        }
    }

    fn failed(&self, _: &crate::store::StoreError) {
        self.store_error();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths_name_the_service_and_the_method() {
        let all = [
            Method::Route,
            Method::Feedback,
            Method::ReportHealth,
            Method::GetArmStats,
            Method::GetBudgets,
            Method::ResetArms,
            Method::Reload,
            Method::GetSpend,
            Method::GetAbReport,
            Method::InvalidateCache,
            Method::Backup,
        ];
        for m in all {
            assert_eq!(m.path(), format!("/{}/{m:?}", crate::auth::ROUTE_SERVICE));
        }
    }

    #[test]
    fn rpc_counts_and_histograms_encode_with_ecosystem_names() {
        let m = Metrics::new();
        m.rpc(Method::Route, tonic::Code::Ok, Duration::from_micros(40));
        m.rpc(Method::Route, tonic::Code::Ok, Duration::from_micros(60));
        m.rpc(
            Method::Route,
            tonic::Code::InvalidArgument,
            Duration::from_micros(5),
        );
        let text = m.encode();
        assert!(
            text.contains(
                "grpc_server_handled_total{grpc_service=\"switchyard.v1.Route\",grpc_method=\"Route\",grpc_code=\"OK\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("grpc_code=\"INVALID_ARGUMENT\"} 1"), "{text}");
        assert!(
            text.contains(
                "grpc_server_handling_seconds_count{grpc_service=\"switchyard.v1.Route\",grpc_method=\"Route\"} 3"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn feedback_splits_duplicates_and_quality_only() {
        let m = Metrics::new();
        let counted = Counted {
            outcome: Some(crate::policy::Outcome::Success),
            latency_ms: Some(1500.0),
            cost_usd: Some(0.25),
            quality: Some(0.8),
        };
        m.feedback("qa", "a", false, &counted);
        m.feedback("qa", "a", true, &Counted::default());
        m.feedback(
            "qa",
            "a",
            false,
            &Counted {
                quality: Some(0.4),
                ..Counted::default()
            },
        );
        let text = m.encode();
        for line in [
            "switchyard_feedback_total{task_class=\"qa\",model=\"a\",outcome=\"success\"} 1",
            "switchyard_feedback_total{task_class=\"qa\",model=\"a\",outcome=\"duplicate\"} 1",
            "switchyard_feedback_total{task_class=\"qa\",model=\"a\",outcome=\"quality_only\"} 1",
            "switchyard_model_latency_seconds_count{task_class=\"qa\",model=\"a\"} 1",
            "switchyard_model_latency_seconds_sum{task_class=\"qa\",model=\"a\"} 1.5",
            "switchyard_model_cost_usd_total{task_class=\"qa\",model=\"a\"} 0.25",
            "switchyard_model_quality_count{task_class=\"qa\",model=\"a\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn resident_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let rss = resident_memory_bytes().unwrap_or(0);
            assert!(rss > 1024 * 1024, "rss {rss}");
        }
    }
}
