//! The response cache at the service edge: looks a Route up before the engine decides, keeps a
//! routed miss as a candidate, hands Feedback's response to the cache, answers InvalidateCache,
//! and exports the cache's metrics.
//!
//! The cache sits behind its own mutex, never held together with the engine's: a semantic lookup
//! scans the class's vectors, and that must not stall other classes' routing.
//!
//! With a data dir the cache's journal is written to the `cache` tree every expiry sweep and at
//! shutdown ([`Shared::persist_cache`]; why not through the writer: `crate::cache::store`). In
//! cluster mode an exact miss asks Redis, a stored entry is written there by a spawned task, and
//! InvalidateCache reaches Redis and the other replicas (`crate::cluster::cache`); with Redis down
//! each of these is local only, counted in `switchyard_cache_redis_local_only_total`.

use std::sync::{Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tonic::{Request, Response, Status};

use super::*;
use crate::cache::{CacheStats, Hit, Query, Record, Reported, ResponseCache, Stored};
use crate::cluster::cache::{Invalidation, Pulled};
use crate::config::TaskClassConfig;
use crate::engine::{Decision, FeedbackResult, HitFeedback, Reason};

/// The cache's bounds that come from the rest of the config: candidates wait as long as their
/// decisions accept feedback, and are as many at most.
pub fn candidate_bounds(config: &Config) -> (u64, usize) {
    (
        (config.limits.pending_ttl_secs * 1000.0) as u64,
        config.limits.max_pending,
    )
}

/// Invalidations kept while Redis is down (beyond them the oldest are dropped, logged).
const MAX_QUEUED_INVALIDATIONS: usize = 1000;

/// The cache and what its writes to the data dir and Redis need.
pub struct CacheCell {
    cache: Mutex<ResponseCache>,
    /// One journal write at a time, so writes reach the tree in the order they were taken.
    persisting: tokio::sync::Mutex<()>,
    /// Invalidations Redis has not taken yet (cluster mode, during an outage).
    outbox: Mutex<Vec<Invalidation>>,
}

/// A cache for `config`'s classes.
pub fn new_cache(config: &Config) -> CacheCell {
    let (ttl, max) = candidate_bounds(config);
    CacheCell {
        cache: Mutex::new(ResponseCache::new(config.task_classes.values(), ttl, max)),
        persisting: tokio::sync::Mutex::new(()),
        outbox: Mutex::new(Vec::new()),
    }
}

/// A cache for `config`'s classes holding the entries `store` kept, journaling to it.
pub fn restore_cache(config: &Config, store: &StoreSlot) -> Result<CacheCell, StoreError> {
    let cell = new_cache(config);
    let records = store.with(|s| s.load_cache())?;
    let read = records.len();
    let mut cache = lock(&cell.cache);
    cache.enable_journal();
    let restored = cache.restore(records, now_ms());
    drop(cache);
    if read > 0 {
        info!(read, restored, "response cache restored from data dir");
    }
    Ok(cell)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Sets the class (and the rule) of a request that names none from its prompt, before the
    /// cache is looked up: the lookup and the stored response use the class it is routed under.
    /// Takes the engine's lock (for its classifier) only for such a request.
    pub(super) fn classify(&self, input: &mut RouteInput) -> Result<(), Status> {
        if !input.task_class.is_empty() {
            return Ok(());
        }
        if let Some(c) = self
            .with_engine(|engine, _| engine.classify(input))
            .map_err(status)?
        {
            input.task_class = c.class;
            input.classified_by = Some(c.rule);
        }
        Ok(())
    }

    /// The cache, locked. A panic under the lock leaves at worst a miscounted entry: keep serving.
    pub(super) fn cache(&self) -> MutexGuard<'_, ResponseCache> {
        lock(&self.cache.cache)
    }

    /// Writes the cache's journal to the data dir (on a blocking thread); a failed write is
    /// retried by the next call.
    pub(super) async fn persist_cache(&self) {
        let Some(store) = &self.store else { return };
        let _one = self.cache.persisting.lock().await;
        let journal = self.cache().take_journal();
        if journal.is_empty() {
            return;
        }
        let (store, j) = (Arc::clone(store), journal.clone());
        let r = tokio::task::spawn_blocking(move || store.with(|s| s.write_cache(&j))).await;
        let error = match r {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %error, "cannot write the response cache to the data dir; retrying");
        self.cache().requeue(journal);
    }

    /// Whether any class caches (cluster mode skips the cache's Redis work otherwise).
    pub fn caches(&self) -> bool {
        self.cache().caches()
    }

    /// Invalidations queued for Redis, taken.
    pub fn cache_outbox_take(&self) -> Vec<Invalidation> {
        std::mem::take(&mut *lock(&self.cache.outbox))
    }

    /// Queues invalidations for Redis (first), keeping the newest [`MAX_QUEUED_INVALIDATIONS`].
    pub fn cache_outbox_requeue(&self, mut first: Vec<Invalidation>) {
        let mut outbox = lock(&self.cache.outbox);
        first.append(&mut outbox);
        let over = first.len().saturating_sub(MAX_QUEUED_INVALIDATIONS);
        if over > 0 {
            tracing::warn!(
                dropped = over,
                "queued response cache invalidations dropped while redis is down"
            );
        }
        *outbox = first.split_off(over);
    }

    /// Applies what other replicas did to the cache (cluster mode).
    pub fn cache_apply_pulled(&self, pulled: Vec<Pulled>) {
        let now = now_ms();
        let mut cache = self.cache();
        for p in pulled {
            match p {
                Pulled::Put(r) => {
                    cache.adopt(&r, now);
                }
                Pulled::Invalidate(i) => {
                    let n = cache.invalidate(&i.class, &i.prefix, &i.tag);
                    self.metrics.cache.invalidated(n);
                }
                Pulled::Reset => {
                    let n = cache.invalidate("", "", "");
                    self.metrics.cache.invalidated(n);
                }
            }
        }
    }

    /// Writes an entry this replica stored to Redis, off the request path (cluster mode).
    fn cache_share(&self, record: Arc<Record>) {
        let Some(c) = &self.cluster else { return };
        if !c.is_up() {
            self.metrics.cache.local_only("store");
            return;
        }
        let (c, max, metrics) = (
            Arc::clone(c),
            self.cache().max_entries(),
            Arc::clone(&self.metrics),
        );
        tokio::spawn(async move {
            if let Err(e) = c.cache_put(&record, max, now_ms()).await {
                metrics.cache.local_only("store");
                tracing::debug!(error = %e, "response cache entry not shared");
            }
        });
    }

    /// An exact miss asks Redis (cluster mode): a hit there is adopted; an error is a miss.
    async fn cache_lookup_shared(&self, q: &Query) -> Option<Hit> {
        let c = self.cluster.as_ref()?;
        let id = crate::cache::store::shared_id_of(q)?;
        if !c.is_up() {
            self.metrics.cache.local_only("lookup");
            return None;
        }
        match c.cache_get(&id).await {
            Ok(r) => r.and_then(|r| self.cache().adopt_hit(&r, now_ms())),
            Err(e) => {
                self.metrics.cache.local_only("lookup");
                tracing::debug!(error = %e, "response cache lookup in redis failed: a miss");
                None
            }
        }
    }

    /// The request's cache key under `tenant` (none: "") and, on a hit, the stored response.
    /// Counts the lookup.
    pub(super) async fn cache_lookup(
        &self,
        input: &RouteInput,
        tenant: Option<&str>,
    ) -> Result<(Option<Query>, Option<Hit>), Status> {
        let (q, hit) = {
            let mut cache = self.cache();
            let Some(q) = cache.query(input, tenant.unwrap_or("")).map_err(status)? else {
                return Ok((None, None));
            };
            let hit = cache.lookup(&q, now_ms());
            (q, hit)
        };
        let hit = match hit {
            Some(h) => Some(h),
            // Boxed, and only in cluster mode: inline, Redis's future would size every Route's.
            None if self.cluster.is_some() => Box::pin(self.cache_lookup_shared(&q)).await,
            None => None,
        };
        self.metrics.cache.lookup(&q.class, hit.as_ref());
        Ok((Some(q), hit))
    }

    /// Keeps a routed miss as a candidate for its Feedback's response.
    pub(super) fn cache_routed(&self, decision: &Decision, query: Option<Query>) {
        if let (Some(q), None, false) = (query, &decision.cache_hit, decision.replayed) {
            self.cache().remember(&decision.id, q, now_ms());
        }
    }

    /// Hands an accepted Feedback (and its response, if any) to the cache.
    pub(super) fn cache_feedback(
        &self,
        input: &FeedbackInput,
        r: &FeedbackResult,
        response: String,
    ) {
        let reported = Reported {
            decision_id: input.decision_id.clone(),
            model: r.arm.model.clone(),
            provider: r.arm.provider.clone(),
            succeeded: input.outcome.map(|o| o.is_success()),
            quality: r.counted.quality.or(input.quality),
            cost_usd: r.counted.cost_usd,
            latency_ms: r.counted.latency_ms,
            response,
        };
        let (stored, record) = self.cache().report_record(reported, now_ms());
        if stored == Stored::Stored {
            self.metrics.cache.stored(&r.arm.task_class);
        }
        if let Some(record) = record {
            self.cache_share(record);
        }
    }

    /// Applies a reloaded config to the cache; logs what it dropped.
    pub(super) fn cache_reconfigure(
        &self,
        classes: &[Arc<TaskClassConfig>],
        removed: &[(String, String)],
        bounds: (u64, usize),
    ) {
        let n = self
            .cache()
            .reconfigure(classes, removed, bounds.0, bounds.1);
        if n > 0 {
            info!(dropped = n, "response cache entries dropped by reload");
        }
        if self.cluster.is_some() {
            // Redis holds them too: dropped there (and on the other replicas) at the next sync.
            let gone = removed.iter().map(|(class, model)| Invalidation {
                class: class.clone(),
                prefix: String::new(),
                tag: format!("model:{model}"),
            });
            self.cache_outbox_requeue(gone.collect());
        }
    }

    /// Every caching class's counters.
    pub(super) fn cache_stats(&self) -> Vec<CacheStats> {
        self.cache().stats()
    }
}

/// Feedback on a decision the cache answered, in the engine under the lock its caller holds:
/// checked and noted by the engine, learned from by nothing. `None` when the decision is not a
/// live cache hit; otherwise the decision's class (for the metrics) and the engine's answer.
pub(super) fn hit_feedback_locked(
    engine: &mut Engine,
    caller: Option<&Principal>,
    input: &FeedbackInput,
) -> Option<Result<(String, HitFeedback), Status>> {
    let pending = engine.pending_compact(&input.decision_id)?;
    if let (Some(p), Reason::CacheHit) = (caller, pending.reason()) {
        // A hit is its tenant's when looked up under it (a hit read back after a restart has no
        // tenant left: only a key without a tenant may rate it).
        let hit = pending.cache_hit();
        let tenant = hit.map(|h| h.tenant.as_str()).filter(|t| !t.is_empty());
        if let Err(e) = p.check_decision(tenant) {
            return Some(Err(convert::auth_status(e)));
        }
    }
    let class = pending.task_class().to_string();
    let r = engine.hit_feedback(input, now_ms())?;
    Some(r.map(|r| (class, r)).map_err(status))
}

impl Shared {
    /// The answer to a Feedback [`hit_feedback_locked`] accepted, counted in the cache's metrics.
    pub(super) fn hit_answer(&self, class: &str, r: &HitFeedback) -> proto::FeedbackResponse {
        self.metrics.cache.hit_feedback(class, r.quality);
        proto::FeedbackResponse {
            accepted: true,
            duplicate: r.duplicate,
            arm: None,
            late: false,
            deferred: false,
        }
    }
}

impl RouteService {
    /// [`hit_feedback_locked`] under a lock of its own (cluster mode, where a Feedback that is not
    /// a hit goes on to Redis before the engine sees it).
    pub(super) fn hit_feedback(
        &self,
        caller: Option<&Principal>,
        input: &FeedbackInput,
    ) -> Option<Result<proto::FeedbackResponse, Status>> {
        let result = self
            .shared
            .with_engine(|engine, _| hit_feedback_locked(engine, caller, input))?;
        Some(result.map(|(class, r)| self.shared.hit_answer(&class, &r)))
    }

    pub(super) async fn invalidate_cache_impl(
        &self,
        request: Request<proto::InvalidateCacheRequest>,
    ) -> Result<Response<proto::InvalidateCacheResponse>, Status> {
        self.caller(Method::InvalidateCache, request.metadata())?;
        let r = request.into_inner();
        if !r.tag.is_empty()
            && !["model:", "tenant:", "class:"]
                .iter()
                .any(|p| r.tag.starts_with(p))
        {
            return Err(Status::invalid_argument(format!(
                "tag: {} is not a cache tag; tags are \"model:<id>\", \"tenant:<name>\" or \
                 \"class:<name>\"",
                crate::validation::echo(&r.tag)
            )));
        }
        let known = self.shared.cache_stats();
        if !r.task_class.is_empty() && !known.iter().any(|s| s.task_class == r.task_class) {
            let names: Vec<&str> = known.iter().map(|s| s.task_class.as_str()).collect();
            return Err(Status::not_found(format!(
                "task_class {} has no response cache; classes with one: {}",
                crate::validation::echo(&r.task_class),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
        let n = self
            .shared
            .cache()
            .invalidate(&r.task_class, &r.prefix, &r.tag);
        self.shared.metrics.cache.invalidated(n);
        self.invalidate_shared(Invalidation {
            class: r.task_class.clone(),
            prefix: r.prefix.clone(),
            tag: r.tag.clone(),
        })
        .await;
        info!(
            task_class = %r.task_class,
            prefix_chars = r.prefix.chars().count(),
            tag = %r.tag,
            invalidated = n,
            "response cache invalidated"
        );
        Ok(Response::new(proto::InvalidateCacheResponse {
            invalidated: n,
        }))
    }
}

impl RouteService {
    /// InvalidateCache in cluster mode: deletes in Redis and tells the other replicas; queued
    /// while Redis is down.
    async fn invalidate_shared(&self, i: Invalidation) {
        let Some(c) = &self.shared.cluster else {
            return;
        };
        if c.is_up() {
            match c.cache_invalidate(&i).await {
                Ok(n) => {
                    return tracing::debug!(deleted = n, "response cache invalidated in redis")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "response cache invalidation queued for redis")
                }
            }
        }
        self.shared.metrics.cache.local_only("invalidate");
        let mut outbox = lock(&self.shared.cache.outbox);
        outbox.push(i);
        if outbox.len() > MAX_QUEUED_INVALIDATIONS {
            outbox.remove(0);
            tracing::warn!("oldest queued response cache invalidation dropped while redis is down");
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ClassLabels {
    task_class: String,
}

use super::metrics::{FloatCounter, FloatGauge};

/// The response cache's series (README, "Response cache").
pub struct CacheMetrics {
    lookups: Family<ClassLabels, Counter>,
    hits: Family<ClassLabels, Counter>,
    saved_cost: Family<ClassLabels, FloatCounter>,
    saved_latency: Family<ClassLabels, FloatCounter>,
    stored: Family<ClassLabels, Counter>,
    hit_feedback: Family<ClassLabels, Counter>,
    hit_quality: Family<ClassLabels, FloatCounter>,
    invalidated: Counter,
    local_only: Family<OpLabels, Counter>,
    hit_rate: Family<ClassLabels, FloatGauge>,
    entries: Family<ClassLabels, Gauge>,
    bytes: Family<ClassLabels, Gauge>,
}

impl CacheMetrics {
    /// Registers every series in `r`.
    pub fn register(r: &mut Registry) -> Self {
        fn reg<M: prometheus_client::registry::Metric + Clone>(
            r: &mut Registry,
            name: &str,
            help: &str,
            m: M,
        ) -> M {
            r.register(name, help, m.clone());
            m
        }
        CacheMetrics {
            lookups: reg(r, "switchyard_cache_lookups", "Route requests with a prompt that looked the response cache up, by task class", Family::default()),
            hits: reg(r, "switchyard_cache_hits", "Route requests answered from the response cache, by task class", Family::default()),
            saved_cost: reg(r, "switchyard_cache_saved_cost_usd", "Cost of the stored calls that cache hits did not repeat, USD", Family::default()),
            saved_latency: reg(r, "switchyard_cache_saved_latency_seconds", "Latency of the stored calls that cache hits did not repeat", Family::default()),
            stored: reg(r, "switchyard_cache_stored", "Responses stored in the cache", Family::default()),
            hit_feedback: reg(r, "switchyard_cache_hit_feedback", "Feedback accepted for decisions the cache answered", Family::default()),
            hit_quality: reg(r, "switchyard_cache_hit_quality", "Sum of the satisfaction scores reported for cache hits (divide by ..._hit_feedback_total)", Family::default()),
            invalidated: reg(r, "switchyard_cache_invalidated", "Entries dropped by InvalidateCache", Counter::default()),
            local_only: reg(r, "switchyard_cache_redis_local_only", "Cache lookups, stores and invalidations done on the local cache alone because Redis was down or slow (cluster mode), by op", Family::default()),
            hit_rate: reg(r, "switchyard_cache_hit_rate", "Hits over lookups since start, by task class", Family::default()),
            entries: reg(r, "switchyard_cache_entries", "Entries held, by task class", Family::default()),
            bytes: reg(r, "switchyard_cache_bytes", "Estimated memory held by entries and their vectors, by task class", Family::default()),
        }
    }

    fn labels(class: &str) -> ClassLabels {
        ClassLabels {
            task_class: class.to_string(),
        }
    }

    pub fn lookup(&self, class: &str, hit: Option<&Hit>) {
        let l = Self::labels(class);
        self.lookups.get_or_create(&l).inc();
        if let Some(h) = hit {
            self.hits.get_or_create(&l).inc();
            self.saved_cost.get_or_create(&l).inc_by(h.saved_cost_usd);
            self.saved_latency
                .get_or_create(&l)
                .inc_by(h.saved_latency_ms / 1000.0);
        }
    }

    pub fn stored(&self, class: &str) {
        self.stored.get_or_create(&Self::labels(class)).inc();
    }

    pub fn hit_feedback(&self, class: &str, quality: Option<f64>) {
        let l = Self::labels(class);
        self.hit_feedback.get_or_create(&l).inc();
        if let Some(q) = quality {
            self.hit_quality.get_or_create(&l).inc_by(q);
        }
    }

    pub fn invalidated(&self, n: u64) {
        self.invalidated.inc_by(n);
    }

    pub fn local_only(&self, op: &'static str) {
        self.local_only.get_or_create(&OpLabels { op }).inc();
    }

    /// Sets the gauges from the cache's own counters (at scrape time).
    pub fn refresh(&self, stats: &[CacheStats]) {
        for s in stats {
            let l = Self::labels(&s.task_class);
            self.hit_rate.get_or_create(&l).set(s.hit_rate());
            self.entries
                .get_or_create(&l)
                .set(i64::try_from(s.entries).unwrap_or(i64::MAX));
            self.bytes
                .get_or_create(&l)
                .set(i64::try_from(s.bytes).unwrap_or(i64::MAX));
        }
    }
}
