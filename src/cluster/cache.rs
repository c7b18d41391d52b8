//! The response cache in Redis (cluster mode): entries are shared by every replica.
//!
//! Keys, under the cluster's prefix:
//! - `cache:e:<id>`: one entry, a hash of its class, tenant, model, preview (for invalidation) and
//!   `rec`, the prost `crate::cache::Record`; it expires by `PEXPIRE` when its TTL runs out. The
//!   id of an exact entry is `x` and the hex of its key, so a request names it; a semantic entry's
//!   is `s` and the decision that stored it.
//! - `cache:index`: a sorted set of every entry id by expiry time, bounded by the sum of the
//!   caching classes' `max_entries` (past it the entries nearest their expiry go first).
//! - `cache:log`: a stream of what replicas did (`put` with the entry id, `inv` with an
//!   invalidation's class, prefix and tag), capped at [`STREAM_LEN`] entries.
//!
//! What waits on Redis: an exact lookup that misses locally asks Redis once (bounded by
//! `cluster.redis_timeout_ms`; an error or timeout is a miss, never an error). Storing, pulling
//! and invalidating do not wait in a request: a Feedback's entry is written by a spawned task,
//! and every `cluster.sync_interval_ms` each replica reads the stream from its cursor, adopts the
//! semantic entries other replicas stored into its own similarity index (Debian's Redis has no
//! vector search) and applies their invalidations. InvalidateCache deletes
//! the matching entries in Redis in one script (which also broadcasts it), so the other replicas
//! drop theirs within a sync interval.
//!
//! Shared or per replica: the entries in Redis are shared; each replica's index and its counters
//! are its own. On start (and when its cursor fell behind the stream's cap) a replica loads every
//! semantic entry from the index; exact entries come on demand. While Redis is unreachable the
//! cache is local only (counted in `switchyard_cache_redis_local_only_total`): entries stored
//! meanwhile stay on their replica, invalidations are queued and sent when Redis answers again.

use std::sync::LazyLock;

use prost::Message;
use redis::Script;

use super::*;
use crate::cache::Record;

/// Entries the stream keeps (approximately: `MAXLEN ~`): a replica further behind reloads.
pub const STREAM_LEN: u64 = 100_000;

/// Stream entries read, and entries loaded, per round trip.
const BATCH: usize = 1000;

/// KEYS: entry, index, stream. ARGV: id, class, tenant, model, preview, record, ms left, expiry
/// ms, now ms, bound of the index, origin replica, stream cap, entry key prefix.
const STORE: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'class', ARGV[2], 'tenant', ARGV[3], 'model', ARGV[4],
  'preview', ARGV[5], 'rec', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[8], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[9])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[10])
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #gone, 2 do redis.call('DEL', ARGV[13] .. gone[i]) end
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[12], '*', 'op', 'put', 'origin', ARGV[11],
  'id', ARGV[1])
return 1
"#;

/// KEYS: index, stream. ARGV: class ('' = all), normalised prefix, tag kind ('', model, tenant,
/// class), tag value, origin replica, entry key prefix, stream cap, the tag as sent. Deletes the
/// matching entries, broadcasts the invalidation; returns how many were deleted.
const INVALIDATE: &str = r#"
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local k = ARGV[6] .. id
  local f = redis.call('HMGET', k, 'class', 'tenant', 'model', 'preview')
  if not f[1] then
    redis.call('ZREM', KEYS[1], id)
  else
    local ok = (ARGV[1] == '' or f[1] == ARGV[1]) and string.sub(f[4], 1, #ARGV[2]) == ARGV[2]
    if ok and ARGV[3] == 'model' then ok = f[3] == ARGV[4] end
    if ok and ARGV[3] == 'tenant' then ok = f[2] == ARGV[4] end
    if ok and ARGV[3] == 'class' then ok = f[1] == ARGV[4] end
    if ok then
      redis.call('DEL', k)
      redis.call('ZREM', KEYS[1], id)
      n = n + 1
    end
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'op', 'inv', 'origin', ARGV[5],
  'class', ARGV[1], 'prefix', ARGV[2], 'tag', ARGV[8])
return n
"#;

static STORE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(STORE));
static INVALIDATE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(INVALIDATE));

/// An InvalidateCache request as every replica applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    pub class: String,
    /// As sent (each replica normalises it the same way).
    pub prefix: String,
    pub tag: String,
}

/// What another replica did, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum Pulled {
    /// An entry it stored (still in Redis when read).
    Put(Record),
    Invalidate(Invalidation),
    /// This replica fell behind the stream's cap: drop local entries, then take these puts.
    Reset,
}

/// A stream entry: its id and its fields and values in turn.
type StreamEntry = (String, Vec<String>);

/// A replica's place in the stream.
#[derive(Debug, Default)]
pub struct CacheSync {
    /// The last stream id read; `None` until the first load.
    cursor: Option<(u64, u64)>,
    /// Whether the cursor is an entry read (not an empty stream's 0-0).
    seen: bool,
}

fn parse_id(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn field<'a>(fields: &'a [String], name: &str) -> &'a str {
    fields
        .chunks_exact(2)
        .find(|kv| kv[0] == name)
        .map_or("", |kv| kv[1].as_str())
}

impl Cluster {
    fn cache_entry_prefix(&self) -> String {
        self.key(&["cache", "e", ""])
    }

    /// Writes `r` (stored by this replica) with what is left of its TTL at `now_ms`, and
    /// announces it; `max_entries` bounds the shared index.
    pub async fn cache_put(
        &self,
        r: &Record,
        max_entries: u64,
        now_ms: u64,
    ) -> Result<(), ClusterError> {
        let expiry = r.stored_ms.saturating_add(r.ttl_ms);
        let left = expiry.saturating_sub(now_ms);
        if left == 0 {
            return Ok(());
        }
        let id = r.shared_id();
        let mut inv = STORE_SCRIPT.prepare_invoke();
        inv.key(self.key(&["cache", "e", &id]))
            .key(self.key(&["cache", "index"]))
            .key(self.key(&["cache", "log"]))
            .arg(&id)
            .arg(&r.class)
            .arg(&r.tenant)
            .arg(&r.model)
            .arg(&r.preview)
            .arg(r.encode_to_vec())
            .arg(left)
            .arg(expiry)
            .arg(now_ms)
            .arg(max_entries.max(1))
            .arg(&self.config.replica_id)
            .arg(STREAM_LEN)
            .arg(self.cache_entry_prefix());
        self.call(|mut con| async move {
            let _: i64 = inv.invoke_async(&mut con).await?;
            Ok(())
        })
        .await
    }

    /// The entry named `id`, if Redis holds it (one round trip).
    pub async fn cache_get(&self, id: &str) -> Result<Option<Record>, ClusterError> {
        let key = self.key(&["cache", "e", id]);
        let bytes: Option<Vec<u8>> = self
            .call(|mut con| async move {
                Ok(redis::cmd("HGET")
                    .arg(key)
                    .arg("rec")
                    .query_async(&mut con)
                    .await?)
            })
            .await?;
        Ok(bytes.and_then(|b| decode(id, &b)))
    }

    /// Deletes the entries `i` selects from Redis and tells the other replicas; returns how
    /// many Redis held.
    pub async fn cache_invalidate(&self, i: &Invalidation) -> Result<u64, ClusterError> {
        let (kind, value) = i.tag.split_once(':').unwrap_or(("", ""));
        let mut inv = INVALIDATE_SCRIPT.prepare_invoke();
        inv.key(self.key(&["cache", "index"]))
            .key(self.key(&["cache", "log"]))
            .arg(&i.class)
            .arg(crate::cache::embed::words(&i.prefix))
            .arg(kind)
            .arg(value)
            .arg(&self.config.replica_id)
            .arg(self.cache_entry_prefix())
            .arg(STREAM_LEN)
            .arg(&i.tag);
        self.call(|mut con| async move { Ok(inv.invoke_async(&mut con).await?) })
            .await
    }

    /// What other replicas did since the last pull at `now_ms` (on the first pull: every
    /// semantic entry in Redis).
    pub async fn cache_pull(
        &self,
        sync: &mut CacheSync,
        now_ms: u64,
    ) -> Result<Vec<Pulled>, ClusterError> {
        let log = self.key(&["cache", "log"]);
        let Some(cursor) = sync.cursor else {
            return self.cache_load(sync, now_ms, false).await;
        };
        let from = format!("({}-{}", cursor.0, cursor.1);
        let (entries, first): (Vec<StreamEntry>, Vec<StreamEntry>) = self
            .call(|mut con| async move {
                Ok(redis::pipe()
                    .cmd("XRANGE")
                    .arg(&log)
                    .arg(from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(BATCH)
                    .cmd("XRANGE")
                    .arg(&log)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut con)
                    .await?)
            })
            .await?;
        let oldest = first.first().and_then(|(id, _)| parse_id(id));
        if sync.seen && oldest.is_some_and(|o| o > cursor) {
            tracing::warn!(
                "response cache: this replica fell behind the shared stream; reloading entries"
            );
            return self.cache_load(sync, now_ms, true).await;
        }
        let mut out = Vec::new();
        let mut wanted = Vec::new();
        for (id, fields) in &entries {
            if let Some(p) = parse_id(id) {
                sync.cursor = Some(p);
                sync.seen = true;
            }
            if field(fields, "origin") == self.config.replica_id {
                continue;
            }
            match field(fields, "op") {
                // Exact entries are asked for by the request that needs them.
                "put" if field(fields, "id").starts_with('s') => {
                    wanted.push(field(fields, "id").to_string());
                    out.push(None);
                }
                "inv" => out.push(Some(Pulled::Invalidate(Invalidation {
                    class: field(fields, "class").to_string(),
                    prefix: field(fields, "prefix").to_string(),
                    tag: field(fields, "tag").to_string(),
                }))),
                _ => {}
            }
        }
        let mut records = self.cache_records(&wanted).await?.into_iter();
        Ok(out
            .into_iter()
            .filter_map(|p| match p {
                Some(p) => Some(p),
                None => records.next().flatten().map(Pulled::Put),
            })
            .collect())
    }

    /// Every semantic entry in Redis, after noting the stream's end as the cursor.
    async fn cache_load(
        &self,
        sync: &mut CacheSync,
        now_ms: u64,
        reset: bool,
    ) -> Result<Vec<Pulled>, ClusterError> {
        let (log, index) = (self.key(&["cache", "log"]), self.key(&["cache", "index"]));
        let (last, ids): (Vec<StreamEntry>, Vec<String>) = self
            .call(|mut con| async move {
                Ok(redis::pipe()
                    .cmd("XREVRANGE")
                    .arg(&log)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .cmd("ZRANGEBYSCORE")
                    .arg(&index)
                    .arg(now_ms)
                    .arg("+inf")
                    .query_async(&mut con)
                    .await?)
            })
            .await?;
        let semantic: Vec<String> = ids.into_iter().filter(|i| i.starts_with('s')).collect();
        let mut out: Vec<Pulled> = Vec::new();
        if reset {
            out.push(Pulled::Reset);
        }
        for chunk in semantic.chunks(BATCH) {
            out.extend(
                self.cache_records(chunk)
                    .await?
                    .into_iter()
                    .flatten()
                    .map(Pulled::Put),
            );
        }
        let end = last.first().and_then(|(id, _)| parse_id(id));
        sync.seen = end.is_some();
        sync.cursor = Some(end.unwrap_or((0, 0)));
        Ok(out)
    }

    /// The records of `ids` (`None` for one Redis no longer holds), in one round trip.
    async fn cache_records(&self, ids: &[String]) -> Result<Vec<Option<Record>>, ClusterError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET")
                .arg(self.key(&["cache", "e", id]))
                .arg("rec");
        }
        let raw: Vec<Option<Vec<u8>>> = self
            .call(|mut con| async move { Ok(pipe.query_async(&mut con).await?) })
            .await?;
        Ok(ids
            .iter()
            .zip(raw)
            .map(|(id, b)| b.and_then(|b| decode(id, &b)))
            .collect())
    }
}

/// A record from Redis; `None` (logged) when it does not decode.
fn decode(id: &str, bytes: &[u8]) -> Option<Record> {
    match Record::decode(bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(id, error = %e, "unreadable response cache entry in redis; ignored");
            None
        }
    }
}

/// One sync of the cache with Redis (every `cluster.sync_interval_ms`): sends the invalidations
/// queued during an outage, then applies what other replicas did.
pub async fn sync(cluster: &Cluster, sync: &mut CacheSync, shared: &crate::server::Shared) {
    if !shared.caches() {
        return;
    }
    let mut queued = shared.cache_outbox_take().into_iter();
    while let Some(i) = queued.next() {
        if let Err(e) = cluster.cache_invalidate(&i).await {
            tracing::debug!(error = %e, "queued cache invalidation not sent yet");
            shared.cache_outbox_requeue(std::iter::once(i).chain(queued).collect());
            return;
        }
    }
    match cluster.cache_pull(sync, crate::time::now_ms()).await {
        Ok(pulled) => shared.cache_apply_pulled(pulled),
        Err(e) => tracing::debug!(error = %e, "response cache pull failed"),
    }
}
