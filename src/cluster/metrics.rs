//! The cluster's series in the service's prometheus-client registry.
//!
//! The figures live in the [`Cluster`] (atomic counters, and state read under its lock), which
//! exists only in cluster mode and is made after the registry; so the registry holds a
//! [`ClusterCollector`] from the start, and `serve` attaches the cluster to it. Without a cluster
//! the collector encodes nothing, so a single node exports no `switchyard_cluster_*` series.
//! Every series is documented in README.md ("Running replicas").

use std::fmt;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::*;

/// Encodes the attached cluster's series at each scrape.
#[derive(Clone, Default)]
pub struct ClusterCollector(Arc<OnceLock<Arc<Cluster>>>);

impl fmt::Debug for ClusterCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClusterCollector")
            .field(&self.0.get().map(|c| c.config.replica_id.clone()))
            .finish()
    }
}

impl ClusterCollector {
    /// Exports `cluster`'s series from now on (the first cluster attached stays).
    pub fn attach(&self, cluster: Arc<Cluster>) {
        let _ = self.0.set(cluster);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget_key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    claim: String,
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: &AtomicU64) -> fmt::Result {
    let c = ConstCounter::new(v.load(Ordering::Relaxed));
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn by_budget(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(String, f64)],
) -> fmt::Result {
    if values.is_empty() {
        return Ok(());
    }
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (key, v) in values {
        let labels = BudgetLabels {
            budget_key: key.clone(),
        };
        ConstGauge::new(*v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ClusterCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(c) = self.0.get() else {
            return Ok(());
        };
        let (live, queued, allowance, fallback_spent) = {
            let st = c.state();
            let fallback: Vec<(String, f64, f64)> = st
                .budgets
                .iter()
                .filter_map(|(k, v)| {
                    v.allowance_usd
                        .map(|a| (k.clone(), a, v.fallback_spent_usd))
                })
                .collect();
            (
                st.live_replicas as f64,
                st.outbox.len() as f64,
                fallback
                    .iter()
                    .map(|(k, a, _)| (k.clone(), *a))
                    .collect::<Vec<_>>(),
                fallback
                    .iter()
                    .map(|(k, _, s)| (k.clone(), *s))
                    .collect::<Vec<_>>(),
            )
        };
        let e = &mut enc;
        gauge(
            e,
            "switchyard_cluster_redis_up",
            "1 while Redis answers and nothing is queued for it",
            f64::from(u8::from(c.is_up())),
        )?;
        gauge(
            e,
            "switchyard_cluster_live_replicas",
            "Live replicas at the last heartbeat",
            live,
        )?;
        gauge(
            e,
            "switchyard_cluster_queued_operations",
            "Decisions and settlements queued for Redis",
            queued,
        )?;
        gauge(
            e,
            "switchyard_cluster_deferred_feedback",
            "Feedback in the outbox, accepted while its decision could not be found in Redis",
            c.outbox.len() as f64,
        )?;
        by_budget(
            e,
            "switchyard_cluster_fallback_allowance_usd",
            "While Redis is down: what this replica may reserve of the budget, USD",
            &allowance,
        )?;
        by_budget(
            e,
            "switchyard_cluster_fallback_spent_usd",
            "While Redis is down: what this replica reserved or charged of its allowance, USD",
            &fallback_spent,
        )?;
        let k = &c.counters;
        let f = &c.feedback_counters;
        for (name, help, v) in [
            ("switchyard_cluster_redis_errors", "Redis calls that failed or timed out", &k.redis_errors),
            ("switchyard_cluster_fallback_reservations", "Reservations admitted from a fallback allowance", &k.fallback_reservations),
            ("switchyard_cluster_fallback_refusals", "Requests refused because the fallback allowance was spent", &k.fallback_refusals),
            ("switchyard_cluster_shared_refusals", "Requests refused by the shared budget", &k.shared_refusals),
            ("switchyard_cluster_replayed_operations", "Queued operations replayed into Redis", &k.replayed_ops),
            ("switchyard_cluster_evidence_syncs", "Evidence merges with the shared totals", &k.evidence_syncs),
            ("switchyard_cluster_health_signals_received", "Health signals applied from other replicas", &k.health_signals_received),
            ("switchyard_cluster_feedback_claims_lost", "Feedback whose outcome or quality another replica (or an earlier Feedback) claimed first: answered as a duplicate", &f.claims_lost),
            ("switchyard_cluster_deferred_feedback_accepted", "Feedback accepted into the outbox while its decision could not be found in Redis", &f.deferred_accepted),
            ("switchyard_cluster_deferred_feedback_applied", "Deferred Feedback applied once Redis answered again", &f.deferred_applied),
            ("switchyard_cluster_deferred_feedback_dropped", "Deferred Feedback dropped: its decision was found nowhere, or the engine refused it (logged)", &f.deferred_dropped),
        ] {
            counter(e, name, help, v)?;
        }
        let mut claims = e.encode_descriptor(
            "switchyard_cluster_cost_anomaly_claims",
            "Cost anomalies this replica saw in the shared totals: claimed (it delivered the alert) or lost (another replica did)",
            None,
            MetricType::Counter,
        )?;
        for (claim, v) in [("won", &c.spend.claimed), ("lost", &c.spend.lost)] {
            ConstCounter::new(v.load(Ordering::Relaxed)).encode(claims.encode_family(
                &ClaimLabels {
                    claim: claim.to_string(),
                },
            )?)?;
        }
        Ok(())
    }
}
