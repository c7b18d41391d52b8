//! The cluster-wide spend rollup and cost anomaly detection (`[cluster]` and `[anomaly]`).
//!
//! A replica's engine settles spend locally (its own rollup and data dir keep what it settled)
//! and, in cluster mode, also collects it as [`Deltas`]. Every `cluster.sync_interval_ms` (and
//! before answering GetSpend) the replica adds them to Redis in one atomic step, so the shared
//! figures are the sum over replicas; GetSpend and `switchyard report spend --addr` on any
//! replica read the shared rows (the response says `cluster_wide`). Anomaly detection runs on the
//! shared hourly totals, and a spike is claimed with `SET NX` so its `cost_anomaly` alert fires on
//! exactly one replica.
//!
//! Keys (`P` = `cluster.key_prefix`), all integer sums added with `HINCRBY`:
//! - `P:spend:d:DAY` (hash, one per UTC day): fields `s|R`, `r|R`, `i|R`, `o|R` (spend in
//!   nano-USD, calls, input and output tokens) of row `R` (the JSON of model, provider, task class,
//!   budget key, tags, as the store names it); kept the rollup's retention past the day;
//! - `P:spend:h:HOUR` (hash, one per hour since the epoch): field `SCOPE|NAME` (`budget_key|team`,
//!   `model|small`), the hour's spend in nano-USD; kept [`HOUR_KEYS_RETENTION_MS`];
//! - `P:spend:batch:ID`: the marker of an added batch; `P:anomaly:base` (hash): each scope's
//!   baseline, JSON; `P:anomaly:fired:SCOPE:NAME:HOUR_START`: a spike claimed.
//!
//! # Adding without double counting
//! The deltas taken from the engine become a batch with an id unique to this process; the Lua
//! script [`APPLY`] sets the batch's marker with `SET NX` and applies the increments only if the
//! marker was new, all at once. A batch whose answer was lost (timeout, Redis down) is resent with
//! the same id until acknowledged, so it is added exactly once; spend settled meanwhile stays in
//! the engine and becomes the next batch.
//!
//! # Redis outage
//! Settlements keep being counted locally (engine rollup, data dir, the pending deltas) and are
//! added to Redis when it answers again, idempotently as above. Meanwhile GetSpend answers this
//! replica's own rollup with `cluster_wide = false` and says why, and the shared detectors wait:
//! the hours of the outage are judged when the totals arrive (a spike during an outage fires late,
//! not never, as long as the hour is still open when Redis returns; hours closed meanwhile enter
//! the baseline with the totals last read).
//!
//! # Restart
//! Everything added is in Redis: a restarted replica reports the shared figures at once, and reads
//! the baselines back from `P:anomaly:base` (every replica writes the baselines it updated each
//! sync; they are computed from the same shared totals, so which replica wrote last does not
//! matter). A stop flushes the pending deltas (best effort, bounded by the Redis timeout); a crash
//! loses from the shared figures what the replica settled since its last sync (at most one sync
//! interval; still in its own data dir's rollup).
//!
//! # Freshness
//! Shared figures include each replica's spend as of its last sync (at most
//! `cluster.sync_interval_ms` old; the answering replica flushes first). An hour is closed into a
//! baseline [`close_grace_ms`] after it ends, so the other replicas' last adds for it count.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;

use redis::Script;

use super::*;
use crate::server::Shared;
use crate::spend::anomaly::HOUR_MS;
use crate::spend::report::{self, GroupBy, SpendGroup};
use crate::spend::rollup::{day_of, DAY_MS, NANOS_PER_USD, RETENTION_DAYS};
use crate::spend::{Baseline, Deltas, Detectors, Scope, SpendKey, SpendTotals, Spike};

/// How long an hour's shared totals are kept: two weeks (a baseline is rebuilt from its snapshot,
/// not from these; they serve the hours being judged and inspection).
pub const HOUR_KEYS_RETENTION_MS: u64 = 14 * DAY_MS;
/// How long a batch marker is kept: a batch resent later than this could be added twice.
pub const BATCH_MARKER_TTL_MS: u64 = 7 * DAY_MS;
/// How long a spike's claim is kept: longer than the hour it names.
const FIRED_TTL_MS: u64 = 2 * DAY_MS;

/// Adds one batch of increments, once. KEYS[1]: the batch marker; KEYS[i] (i >= 2): the hash of
/// increment i-1. ARGV[1]: the marker's TTL (ms); then per increment: field, amount, expiry (Unix
/// ms). Returns 1 when applied, 0 when the batch was already added.
pub const APPLY: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  local j = 2 + (i - 2) * 3
  redis.call('HINCRBY', KEYS[i], ARGV[j], ARGV[j + 1])
  redis.call('PEXPIREAT', KEYS[i], ARGV[j + 2])
end
return 1
"#;

/// The column letters of a shared row's four sums.
const SUMS: [&str; 4] = ["s", "r", "i", "o"];

/// A batch of deltas and the id it is added under.
#[derive(Debug, Clone)]
struct Batch {
    id: String,
    deltas: Deltas,
}

/// This replica's side of the shared spend.
#[derive(Debug, Default)]
struct Inner {
    /// Sent and not acknowledged: resent with its id before anything newer.
    unacked: Option<Batch>,
    seq: u64,
    /// The detectors over the shared hourly totals.
    detectors: Detectors,
    /// Whether the baselines were read back from Redis.
    loaded: bool,
}

/// The shared spend's state on one replica (held by [`Cluster`]).
pub struct SharedSpend {
    /// Held across the Redis exchange: one batch in flight per replica, in order.
    inner: tokio::sync::Mutex<Inner>,
    /// Unique to this process, so batch ids never repeat across restarts of a replica id.
    nonce: String,
    apply: Script,
    /// Spikes this replica saw and claimed, and saw already claimed by another replica.
    pub(super) claimed: AtomicU64,
    pub(super) lost: AtomicU64,
}

impl Default for SharedSpend {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        SharedSpend {
            inner: tokio::sync::Mutex::new(Inner::default()),
            nonce: format!("{nanos:x}.{}", std::process::id()),
            apply: Script::new(APPLY),
            claimed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for SharedSpend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSpend")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// How long after an hour ends its shared total is still read before the hour is closed into a
/// baseline: two sync intervals and a Redis timeout, so every live replica's last add landed.
pub fn close_grace_ms(c: &ClusterConfig) -> u64 {
    2 * c.sync_interval_ms + c.redis_timeout_ms
}

/// One increment of a batch: (hash key, field, amount, expiry at, Unix ms).
type Incr = (String, String, u64, u64);

impl Cluster {
    /// The increments of `d`, under this cluster's keys.
    fn increments(&self, d: &Deltas) -> Vec<Incr> {
        let mut out = Vec::new();
        for (k, t) in &d.rows {
            let Ok(dims) = k.dims_json() else { continue };
            let dims = String::from_utf8_lossy(&dims);
            let key = self.key(&["spend", "d", &k.day.to_string()]);
            let expiry = (u64::from(k.day) + u64::from(RETENTION_DAYS) + 2) * DAY_MS;
            let sums = [t.spend_nusd, t.requests, t.input_tokens, t.output_tokens];
            for (col, v) in SUMS.iter().zip(sums) {
                if v > 0 {
                    out.push((key.clone(), format!("{col}|{dims}"), v, expiry));
                }
            }
        }
        for ((hour, scope, name), v) in &d.hours {
            let key = self.key(&["spend", "h", &hour.to_string()]);
            let expiry = (hour + 1) * HOUR_MS + HOUR_KEYS_RETENTION_MS;
            out.push((key, format!("{}|{name}", scope.as_str()), *v, expiry));
        }
        out
    }

    /// Adds one batch to Redis (a no-op if it was added before).
    async fn add_batch(&self, b: &Batch) -> Result<(), ClusterError> {
        let incrs = self.increments(&b.deltas);
        if incrs.is_empty() {
            return Ok(());
        }
        let mut inv = self.spend.apply.prepare_invoke();
        inv.key(self.key(&["spend", "batch", &b.id]))
            .arg(BATCH_MARKER_TTL_MS);
        for (key, field, amount, expiry) in &incrs {
            inv.key(key).arg(field).arg(*amount).arg(*expiry);
        }
        // 0: added before (a resend whose first answer was lost).
        let _added: i64 = self
            .call(|mut con| async move { Ok(inv.invoke_async(&mut con).await?) })
            .await?;
        Ok(())
    }

    /// Adds what this replica settled since the last flush to the shared figures: first a batch
    /// left unacknowledged (same id, so at most once), then the engine's new deltas. On failure
    /// the batch waits for the next flush.
    pub async fn flush_spend(&self, shared: &Shared) -> Result<(), ClusterError> {
        let mut inner = self.spend.inner.lock().await;
        self.flush_locked(&mut inner, shared).await
    }

    async fn flush_locked(&self, inner: &mut Inner, shared: &Shared) -> Result<(), ClusterError> {
        let mut took = false;
        loop {
            let batch = match inner.unacked.take() {
                Some(b) => b,
                None if took => return Ok(()),
                None => {
                    took = true;
                    let deltas = shared.with_engine(|e, _| e.take_spend_deltas());
                    if deltas.is_empty() {
                        return Ok(());
                    }
                    inner.seq += 1;
                    Batch {
                        id: format!(
                            "{}.{}.{}",
                            self.config.replica_id, self.spend.nonce, inner.seq
                        ),
                        deltas,
                    }
                }
            };
            if let Err(e) = self.add_batch(&batch).await {
                inner.unacked = Some(batch);
                return Err(e);
            }
        }
    }

    /// The shared rollup rows of the UTC days `[since_day, until_day)` (within the retention
    /// before `now_ms`), in one round trip.
    pub async fn shared_spend_rows(
        &self,
        since_day: u32,
        until_day: u32,
        now_ms: u64,
    ) -> Result<Vec<(SpendKey, SpendTotals)>, ClusterError> {
        let today = day_of(now_ms);
        let lo = since_day.max(today.saturating_sub(RETENTION_DAYS + 1));
        let hi = until_day.min(today.saturating_add(2));
        if lo >= hi {
            return Ok(Vec::new());
        }
        let days: Vec<u32> = (lo..hi).collect();
        let mut pipe = redis::pipe();
        for d in &days {
            pipe.cmd("HGETALL")
                .arg(self.key(&["spend", "d", &d.to_string()]));
        }
        let hashes: Vec<HashMap<String, u64>> = self
            .call(|mut con| async move { Ok(pipe.query_async(&mut con).await?) })
            .await?;
        let mut rows: BTreeMap<SpendKey, SpendTotals> = BTreeMap::new();
        for (day, h) in days.into_iter().zip(hashes) {
            for (field, v) in h {
                let Some((col, dims)) = field.split_once('|') else {
                    continue;
                };
                let key = SpendKey::from_dims(day, dims.as_bytes()).map_err(|e| {
                    ClusterError::Protocol(format!("unreadable shared spend row: {e}"))
                })?;
                let t = rows.entry(key).or_default();
                match col {
                    "s" => t.spend_nusd = v,
                    "r" => t.requests = v,
                    "i" => t.input_tokens = v,
                    "o" => t.output_tokens = v,
                    _ => {}
                }
            }
        }
        Ok(rows.into_iter().collect())
    }

    /// Reads the baselines back (once), then judges the shared hourly totals at `now_ms`:
    /// the previous hour's while it is within its grace, then the current one (which closes the
    /// previous). Returns the spikes this replica claimed, to deliver.
    async fn judge(
        &self,
        inner: &mut Inner,
        cfg: &crate::config::AnomalyConfig,
        now_ms: u64,
    ) -> Result<Vec<Spike>, ClusterError> {
        let base_key = self.key(&["anomaly", "base"]);
        if !inner.loaded {
            let k = base_key.clone();
            let all: HashMap<String, String> = self
                .call(|mut con| async move {
                    Ok(redis::cmd("HGETALL").arg(&k).query_async(&mut con).await?)
                })
                .await?;
            inner.detectors = Detectors::restore(all.into_iter().filter_map(|(k, v)| {
                let id: (Scope, String) = serde_json::from_str(&k).ok()?;
                let b: Baseline = serde_json::from_str(&v).ok()?;
                Some((id, b))
            }));
            inner.loaded = true;
        }
        let hour = now_ms / HOUR_MS;
        let in_grace = now_ms - hour * HOUR_MS < close_grace_ms(&self.config);
        let hours: Vec<u64> = if in_grace {
            vec![hour.saturating_sub(1)]
        } else {
            vec![hour.saturating_sub(1), hour]
        };
        let mut pipe = redis::pipe();
        for h in &hours {
            pipe.cmd("HGETALL")
                .arg(self.key(&["spend", "h", &h.to_string()]));
        }
        let totals: Vec<HashMap<String, u64>> = self
            .call(|mut con| async move { Ok(pipe.query_async(&mut con).await?) })
            .await?;
        let mut spikes = Vec::new();
        for (h, fields) in hours.iter().zip(totals) {
            let mut seen: Vec<(Scope, String)> = Vec::new();
            for (field, nusd) in fields {
                let Some(id) = parse_scope(&field) else {
                    continue;
                };
                let usd = nusd as f64 / NANOS_PER_USD;
                spikes.extend(inner.detectors.observe(id.0, &id.1, *h, usd, cfg, now_ms));
                seen.push(id);
            }
            if *h == hour {
                // Scopes without spend this hour: their past hours close (as 0).
                let idle: Vec<(Scope, String)> = inner
                    .detectors
                    .scopes()
                    .filter(|id| !seen.contains(id))
                    .cloned()
                    .collect();
                for (scope, name) in idle {
                    spikes.extend(inner.detectors.observe(scope, &name, *h, 0.0, cfg, now_ms));
                }
            }
        }
        let changed = inner.detectors.take_changes();
        if !changed.is_empty() {
            let mut pipe = redis::pipe();
            for (id, b) in &changed {
                if let (Ok(k), Ok(v)) = (serde_json::to_string(id), serde_json::to_string(b)) {
                    pipe.cmd("HSET").arg(&base_key).arg(k).arg(v).ignore();
                }
            }
            let () = self
                .call(|mut con| async move { Ok(pipe.query_async(&mut con).await?) })
                .await?;
        }
        let mut claimed = Vec::new();
        for s in spikes {
            let key = self.key(&[
                "anomaly",
                "fired",
                s.scope.as_str(),
                &s.name,
                &s.hour_start_ms.to_string(),
            ]);
            let won: Option<String> = self
                .call(|mut con| async move {
                    Ok(redis::cmd("SET")
                        .arg(&key)
                        .arg(&self.config.replica_id)
                        .arg("NX")
                        .arg("PX")
                        .arg(FIRED_TTL_MS)
                        .query_async(&mut con)
                        .await?)
                })
                .await?;
            if won.is_some() {
                self.spend.claimed.fetch_add(1, Ordering::Relaxed);
                claimed.push(s);
            } else {
                self.spend.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(claimed)
    }
}

/// `SCOPE|NAME` of an hour hash's field.
fn parse_scope(field: &str) -> Option<(Scope, String)> {
    let (scope, name) = field.split_once('|')?;
    let scope = match scope {
        "budget_key" => Scope::BudgetKey,
        "model" => Scope::Model,
        _ => return None,
    };
    Some((scope, name.to_string()))
}

/// The sync step (every `cluster.sync_interval_ms`): adds this replica's spend, then judges the
/// shared hourly totals and delivers the spikes this replica claimed.
pub async fn sync(cluster: &Cluster, shared: &Shared) -> Result<(), ClusterError> {
    let mut inner = cluster.spend.inner.lock().await;
    cluster.flush_locked(&mut inner, shared).await?;
    let cfg = shared.with_engine(|e, _| e.config().anomaly.clone());
    if !cfg.enabled {
        return Ok(());
    }
    let spikes = cluster
        .judge(&mut inner, &cfg, crate::time::now_ms())
        .await?;
    drop(inner);
    shared.publish_anomalies(&spikes);
    Ok(())
}

/// At a stop in cluster mode: adds what is pending (best effort, bounded by the Redis timeout).
pub async fn flush_on_stop(shared: &Shared) {
    let Some(cluster) = &shared.cluster else {
        return;
    };
    if let Err(e) = cluster.flush_spend(shared).await {
        tracing::warn!(error = %e, "spend settled since the last sync was not added to the shared figures");
    }
}

/// What GetSpend answers in cluster mode.
pub struct SpendAnswer {
    pub groups: Vec<SpendGroup>,
    /// True when the groups are the shared (cluster-wide) figures.
    pub cluster_wide: bool,
    /// What the figures cover, in a sentence.
    pub detail: String,
}

/// GetSpend: the shared figures (after adding this replica's pending spend), or, while Redis is
/// unreachable, this replica's own rollup, saying so.
pub async fn report(
    cluster: &Cluster,
    shared: &Shared,
    since_ms: u64,
    until_ms: u64,
    by: &[GroupBy],
    visible: impl Fn(&str) -> bool,
) -> SpendAnswer {
    let (lo, hi) = report::day_range(since_ms, until_ms);
    let rows = match cluster.flush_spend(shared).await {
        Ok(()) => {
            cluster
                .shared_spend_rows(lo, hi, crate::time::now_ms())
                .await
        }
        Err(e) => Err(e),
    };
    match rows {
        Ok(rows) => SpendAnswer {
            groups: report::group(
                rows.iter()
                    .map(|(k, t)| (k, t))
                    .filter(|(k, _)| visible(&k.budget_key)),
                by,
            ),
            cluster_wide: true,
            detail: format!(
                "cluster-wide: every replica's spend as of its last sync (at most {} ms old), \
                 served by replica {}",
                cluster.config.sync_interval_ms, cluster.config.replica_id
            ),
        },
        Err(e) => SpendAnswer {
            groups: shared.with_engine(|eng, _| eng.spend_report(since_ms, until_ms, by, visible)),
            cluster_wide: false,
            detail: format!(
                "replica {} only: the shared store is unreachable ({e}); its spend is added when \
                 the store answers again",
                cluster.config.replica_id
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_fields_parse_back_and_unknown_scopes_are_skipped() {
        assert_eq!(
            parse_scope("model|gpt|4"),
            Some((Scope::Model, String::from("gpt|4")))
        );
        assert_eq!(
            parse_scope("budget_key|team"),
            Some((Scope::BudgetKey, String::from("team")))
        );
        assert_eq!(parse_scope("user|x"), None);
        assert_eq!(parse_scope("model"), None);
    }
}
