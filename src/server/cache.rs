//! The response cache at the service edge: looks a Route up before the engine decides, keeps a
//! routed miss as a candidate, hands Feedback's response to the cache, answers InvalidateCache,
//! and exports the cache's metrics.
//!
//! The cache sits behind its own mutex, never held together with the engine's: a semantic lookup
//! scans the class's vectors, and that must not stall other classes' routing.

use std::sync::{Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tonic::{Request, Response, Status};

use super::*;
use crate::cache::{CacheStats, Hit, Query, Reported, ResponseCache, Stored};
use crate::config::TaskClassConfig;
use crate::engine::{Decision, FeedbackResult, Reason};

/// The cache's bounds that come from the rest of the config: candidates wait as long as their
/// decisions accept feedback, and are as many at most.
pub fn candidate_bounds(config: &Config) -> (u64, usize) {
    (
        (config.limits.pending_ttl_secs * 1000.0) as u64,
        config.limits.max_pending,
    )
}

/// A cache for `config`'s classes.
pub fn new_cache(config: &Config) -> Mutex<ResponseCache> {
    let (ttl, max) = candidate_bounds(config);
    Mutex::new(ResponseCache::new(config.task_classes.values(), ttl, max))
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
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request's cache key and, on a hit, the stored response. Counts the lookup.
    pub(super) fn cache_lookup(
        &self,
        input: &RouteInput,
        tenant: &str,
    ) -> Result<(Option<Query>, Option<Hit>), Status> {
        let mut cache = self.cache();
        let Some(q) = cache.query(input, tenant).map_err(status)? else {
            return Ok((None, None));
        };
        let hit = cache.lookup(&q, now_ms());
        drop(cache);
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
        if self.cache().report(reported, now_ms()) == Stored::Stored {
            self.metrics.cache.stored(&r.arm.task_class);
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
    }

    /// Every caching class's counters.
    pub(super) fn cache_stats(&self) -> Vec<CacheStats> {
        self.cache().stats()
    }
}

impl RouteService {
    /// Feedback on a decision the cache answered: checked and noted by the engine, learned from
    /// by nothing. `None` when the decision is not a live cache hit.
    pub(super) fn hit_feedback(
        &self,
        caller: Option<&Principal>,
        input: &FeedbackInput,
    ) -> Option<Result<proto::FeedbackResponse, Status>> {
        let result = self.shared.with_engine(|engine, _| {
            let pending = engine.pending(&input.decision_id)?;
            if let (Some(p), Reason::CacheHit) = (caller, pending.decision.reason) {
                // A hit is its tenant's when looked up under it (a hit read back after a restart
                // has no tenant left: only a key without a tenant may rate it).
                let hit = pending.decision.cache_hit.as_ref();
                let tenant = hit.map(|h| h.tenant.as_str()).filter(|t| !t.is_empty());
                if let Err(e) = p.check_decision(tenant) {
                    return Some(Err(convert::auth_status(e)));
                }
            }
            let class = pending.decision.task_class.clone();
            let r = engine.hit_feedback(input, now_ms())?;
            Some(r.map(|r| (class, r)).map_err(status))
        })?;
        Some(result.map(|(class, r)| {
            self.shared.metrics.cache.hit_feedback(&class, r.quality);
            proto::FeedbackResponse {
                accepted: true,
                duplicate: r.duplicate,
                arm: None,
                late: false,
            }
        }))
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
