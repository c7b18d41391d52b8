//! The background task of a replica: heartbeats (and reconnection with replay after an
//! outage, then the deferred Feedback of the outbox), health signals out and in every
//! [`HEALTH_POLL_MS`](super::health::HEALTH_POLL_MS), and evidence, budget figures and the response
//! cache every `cluster.sync_interval_ms`.

use std::sync::Arc;
use std::time::Duration;

use super::evidence::EvidenceSync;
use super::health::HEALTH_POLL_MS;
use super::*;
use crate::config::LIVE_HEARTBEATS;
use crate::engine::Engine;
use crate::server::Shared;

impl Cluster {
    /// Registers this replica and counts the live ones.
    pub async fn heartbeat(&self, now_ms: u64) -> Result<usize, ClusterError> {
        let key = self.key(&["replicas"]);
        let id = self.config.replica_id.clone();
        let stale = now_ms.saturating_sub(LIVE_HEARTBEATS * self.config.heartbeat_ms);
        let (n,): (usize,) = self
            .call(|mut con| async move {
                Ok(redis::pipe()
                    .cmd("ZADD")
                    .arg(&key)
                    .arg(now_ms)
                    .arg(&id)
                    .ignore()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(stale)
                    .ignore()
                    .cmd("ZCARD")
                    .arg(&key)
                    .query_async(&mut con)
                    .await?)
            })
            .await?;
        Ok(n.max(1))
    }
}

/// Runs until aborted.
pub async fn run(cluster: Arc<Cluster>, shared: Arc<Shared>) {
    let with_engine = {
        let shared = Arc::clone(&shared);
        move |g: &mut dyn FnMut(&mut Engine)| shared.with_engine(|e, _| g(e))
    };
    let mut tick = tokio::time::interval(Duration::from_millis(HEALTH_POLL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut evidence = EvidenceSync::default();
    let mut cache_sync = super::cache::CacheSync::default();
    let mut cursor = String::from("0");
    let (mut last_beat, mut last_sync) = (0u64, 0u64);
    loop {
        tick.tick().await;
        let now = crate::time::now_ms();
        let hb = cluster.config.heartbeat_ms;
        if !cluster.is_up() || now.saturating_sub(last_beat) >= hb {
            last_beat = now;
            match cluster.heartbeat(now).await {
                Ok(live) => {
                    cluster.state().live_replicas = live;
                    if !cluster.is_up() {
                        match cluster.replay().await {
                            Ok(alerts) => {
                                shared.publish_alerts(&alerts);
                                let _ = cluster.refresh_budgets(budget_asks(&shared)).await;
                                cluster.end_outage();
                            }
                            Err(e) => tracing::debug!(error = %e, "replay to redis failed"),
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
        }
        let back_for = cluster.outbox.note_up(cluster.is_up(), now);
        if !cluster.is_up() {
            continue;
        }
        // A settlement queued by a Feedback that saw Redis down while the queue was being
        // replayed (it missed that replay): replayed now.
        if !cluster.state().outbox.is_empty() {
            match cluster.replay().await {
                Ok(alerts) => shared.publish_alerts(&alerts),
                Err(e) => tracing::debug!(error = %e, "replay to redis failed"),
            }
        }
        // After the first evidence sync since start: that sync adopts the shared totals in place
        // of this replica's evidence, which would drop what a replayed Feedback taught it.
        if !cluster.outbox.is_empty() && cluster.state().synced_ms > 0 {
            crate::server::relay::replay_outbox(&shared, &cluster, back_for).await;
        }
        let _ = cluster.send_signals().await;
        if let Ok(signals) = cluster.poll_signals(&mut cursor).await {
            glue::apply_signals(&cluster, &shared, signals);
        }
        if now.saturating_sub(last_sync) >= cluster.config.sync_interval_ms {
            last_sync = now;
            if let Err(e) = cluster.sync_evidence(&mut evidence, &with_engine).await {
                tracing::debug!(error = %e, "evidence sync failed");
            }
            let _ = cluster.refresh_budgets(budget_asks(&shared)).await;
            if let Err(e) = super::spend::sync(&cluster, &shared).await {
                tracing::debug!(error = %e, "spend sync failed");
            }
            super::cap::share_figures(&cluster, &shared, None);
            super::cache::sync(&cluster, &mut cache_sync, &shared).await;
        }
    }
}

/// Every budget's current period, as an ask of nothing.
fn budget_asks(shared: &Shared) -> Vec<BudgetAsk> {
    let now = crate::time::now_ms();
    shared.with_engine(|e, _| {
        e.config()
            .budgets
            .iter()
            .map(|(k, b)| glue::ask(k, b, now, 0.0))
            .collect()
    })
}
