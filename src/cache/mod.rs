//! The response cache: answers a Route with a stored response instead of a model when the task
//! class caches and the prompt was seen before (exactly, or within a cosine similarity).
//!
//! # Flow
//! A Route with a prompt is looked up under its [`Query`] (see `key.rs`: tenant, class, system
//! prompt and the parameters that shape the answer). On a hit the engine records a decision with
//! reason `cache_hit`; on a miss the routed decision becomes a *candidate*: its Feedback may send
//! the model's `response`, which is stored once that model's call succeeded and (with
//! `min_quality` set) its quality reached `min_quality`, whichever Feedback brings the last of
//! the three. A candidate lives as long as its decision accepts feedback.
//!
//! # Bounds and invalidation
//! Each class holds at most `max_entries`; a new entry evicts the least recently used. Entries
//! expire `ttl_secs` after they were stored (checked on lookup and swept every second), and are
//! dropped by the admin `InvalidateCache` RPC (class, prompt prefix, tag), by a reload that
//! removes their model from the class, and all at once when a reload changes the class's mode or
//! embedding dimension.
//!
//! # State
//! The cache is pure (time is passed in; the server keeps it behind its own lock, apart from the
//! engine's). With a data dir its entries survive a restart: every insert and removal is
//! journaled and written to the data dir's `cache` tree, and a start restores the entries still
//! within their class's TTL and `max_entries` (see [`store`]). Candidates are never persisted: a
//! Feedback with a response for a decision made before the restart is accepted and not stored.
//! In cluster mode entries are also shared through Redis (see `crate::cluster::cache`): an exact
//! miss asks Redis, semantic entries are pulled into each replica's own index, invalidations
//! reach every replica.

pub mod embed;
pub mod index;
pub mod key;
pub mod simhash;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crate::config::{CacheConfig, TaskClassConfig};
use crate::engine::{EngineError, RouteInput};
pub use index::VectorSpace;
pub use key::{query, Query, QueryKey, Space};
pub use store::{Journal, Record};

/// A stored response that answered a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub response: Arc<str>,
    /// The tenant it was stored (and so looked up) under; empty without one.
    pub tenant: String,
    pub model: String,
    pub provider: String,
    pub age_ms: u64,
    pub source_decision_id: String,
    /// Cosine similarity to the stored prompt; 1 for an exact hit.
    pub similarity: f64,
    /// What the stored call cost and took (0 when its Feedback did not say).
    pub saved_cost_usd: f64,
    pub saved_latency_ms: f64,
}

/// One stored response.
#[derive(Debug, Clone)]
struct Entry {
    key: StoredKey,
    preview: String,
    tenant: String,
    response: Arc<str>,
    model: String,
    provider: String,
    source_decision_id: String,
    cost_usd: f64,
    latency_ms: f64,
    stored_ms: u64,
    /// Order keys in `by_use` and `by_age`.
    used: (u64, u64),
    aged: (u64, u64),
}

/// Where an entry's key lives.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StoredKey {
    Exact([u8; 32]),
    Row(Space, usize),
}

/// One class's entries and their indexes.
#[derive(Debug, Clone)]
struct ClassCache {
    name: String,
    config: CacheConfig,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    exact: HashMap<[u8; 32], usize>,
    lexical: VectorSpace,
    caller: VectorSpace,
    /// Slots by (last used ms, sequence): least recently used first.
    by_use: BTreeMap<(u64, u64), usize>,
    /// Slots by (stored ms, sequence): first to expire first.
    by_age: BTreeMap<(u64, u64), usize>,
    /// Slots by the decision whose Feedback stored them (an entry shared twice is kept once).
    by_source: HashMap<String, usize>,
    /// Inserts and removals not yet written to the data dir; `None` = nothing persists.
    journal: Option<Vec<store::Change>>,
    stats: Counters,
}

/// What a class's cache did since start (or since its mode changed).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counters {
    lookups: u64,
    hits: u64,
    saved_cost_usd: f64,
    saved_latency_ms: f64,
    stored: u64,
    evicted: u64,
    expired: u64,
    invalidated: u64,
    restored: u64,
    shared_hits: u64,
    adopted: u64,
}

/// One class's cache as reported by GetArmStats and the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheStats {
    pub task_class: String,
    pub mode: &'static str,
    pub entries: u64,
    pub max_entries: u64,
    pub lookups: u64,
    pub hits: u64,
    pub saved_cost_usd: f64,
    pub saved_latency_ms: f64,
    pub stored: u64,
    pub evicted: u64,
    pub expired: u64,
    pub invalidated: u64,
    /// Estimated bytes held by entries and their vectors.
    pub bytes: u64,
    /// Entries read back from the data dir at start.
    pub restored: u64,
    /// Hits found in Redis after a local miss (cluster mode).
    pub shared_hits: u64,
    /// Entries taken from other replicas through Redis (cluster mode).
    pub adopted: u64,
}

impl CacheStats {
    /// hits / lookups, 0 before any lookup.
    pub fn hit_rate(&self) -> f64 {
        if self.lookups == 0 {
            0.0
        } else {
            self.hits as f64 / self.lookups as f64
        }
    }
}

/// A routed (missed) decision whose Feedback may store a response.
#[derive(Debug, Clone)]
struct Candidate {
    query: Query,
    created_ms: u64,
    /// What Feedback said per model called for the decision.
    calls: Vec<Call>,
}

#[derive(Debug, Clone, Default)]
struct Call {
    model: String,
    succeeded: bool,
    failed: bool,
    quality: Option<f64>,
    cost_usd: Option<f64>,
    latency_ms: Option<f64>,
    response: Option<String>,
}

/// What one Feedback told the cache about a decision's call.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    pub decision_id: String,
    pub model: String,
    pub provider: String,
    /// `Some(true)` for SUCCESS, `Some(false)` for a failure, `None` without an outcome.
    pub succeeded: Option<bool>,
    pub quality: Option<f64>,
    pub cost_usd: Option<f64>,
    pub latency_ms: Option<f64>,
    /// Empty = none sent.
    pub response: String,
}

/// What became of a Feedback's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Not a candidate decision (no cache, no prompt, a hit, or made before a restart).
    NotCandidate,
    /// Kept with the candidate until the outcome or quality it still needs arrives.
    Waiting,
    /// Stored as an entry.
    Stored,
    /// Never to be stored: the call failed, its quality fell short, or the response is too big.
    Refused,
}

/// Every class's cache and the candidates awaiting Feedback.
#[derive(Debug, Clone, Default)]
pub struct ResponseCache {
    classes: BTreeMap<String, ClassCache>,
    candidates: HashMap<String, Candidate>,
    /// Candidate ids in creation order, for expiry and the count bound.
    order: VecDeque<(u64, String)>,
    /// How long a candidate waits for Feedback (the decisions' feedback window), ms.
    candidate_ttl_ms: u64,
    max_candidates: usize,
    seq: u64,
    /// Whether inserts and removals are journaled for the data dir.
    journaled: bool,
    /// Classes dropped whole since the journal was last taken (their tree range goes too).
    cleared: Vec<String>,
    /// A journal handed back after a failed write, to go first in the next take.
    held: Journal,
}

/// Bytes an entry costs beyond its strings and vector (maps, slot, counters): an estimate.
const ENTRY_OVERHEAD_BYTES: u64 = 200;

impl ClassCache {
    fn new(name: &str, config: CacheConfig, journaled: bool) -> Self {
        let dim = config.dimensions.unwrap_or(0) as usize;
        ClassCache {
            name: name.to_string(),
            by_source: HashMap::new(),
            journal: journaled.then(Vec::new),
            config,
            slots: Vec::new(),
            free: Vec::new(),
            exact: HashMap::new(),
            lexical: VectorSpace::new(embed::LEXICAL_DIM),
            caller: VectorSpace::new(dim),
            by_use: BTreeMap::new(),
            by_age: BTreeMap::new(),
            stats: Counters::default(),
        }
    }

    fn len(&self) -> usize {
        self.by_age.len()
    }

    fn space(&mut self, s: Space) -> &mut VectorSpace {
        match s {
            Space::Lexical => &mut self.lexical,
            Space::Caller => &mut self.caller,
        }
    }

    fn ttl_ms(&self) -> u64 {
        (self.config.ttl_secs * 1000.0) as u64
    }

    /// The slot matching `key`, with its similarity.
    fn find(&self, key: &QueryKey) -> Option<(usize, f64)> {
        match key {
            QueryKey::Exact(k) => self.exact.get(k).map(|&s| (s, 1.0)),
            QueryKey::Vector {
                space,
                scope,
                vector,
            } => {
                let s = match space {
                    Space::Lexical => &self.lexical,
                    Space::Caller => &self.caller,
                };
                // f32 rounding must not turn a cosine of exactly the threshold into a miss.
                let min = (self.config.similarity - 1e-6) as f32;
                s.nearest(vector, *scope, min)
                    .map(|n| (n.owner, f64::from(n.similarity).min(1.0)))
            }
        }
    }

    /// Removes the entry in `slot`; returns it.
    fn remove(&mut self, slot: usize) -> Option<Entry> {
        let e = self.slots.get_mut(slot)?.take()?;
        store::removed(self, slot, &e);
        self.by_use.remove(&e.used);
        self.by_age.remove(&e.aged);
        match e.key {
            StoredKey::Exact(k) => {
                self.exact.remove(&k);
            }
            StoredKey::Row(space, row) => {
                if let Some(moved) = self.space(space).swap_remove(row) {
                    if let Some(Some(m)) = self.slots.get_mut(moved) {
                        m.key = StoredKey::Row(space, row);
                    }
                }
            }
        }
        self.free.push(slot);
        Some(e)
    }

    /// Drops expired entries; returns how many.
    fn expire(&mut self, now_ms: u64) -> u64 {
        let ttl = self.ttl_ms();
        let mut n = 0;
        while let Some((&(stored, _), &slot)) = self.by_age.iter().next() {
            if stored.saturating_add(ttl) > now_ms {
                break;
            }
            self.remove(slot);
            n += 1;
        }
        self.stats.expired += n;
        n
    }

    /// Evicts the least recently used entries until there is room for `room` more.
    fn make_room(&mut self, room: usize) {
        let max = self.config.max_entries as usize;
        while self.len() + room > max {
            let Some((_, &slot)) = self.by_use.iter().next() else {
                break;
            };
            self.remove(slot);
            self.stats.evicted += 1;
        }
    }

    /// Stores `entry` under `query`; returns its record (what the data dir and Redis hold).
    fn insert(&mut self, query: Query, mut entry: Entry, seq: u64) -> Arc<Record> {
        // A response for the same exact key replaces the old one. A vector is not searched for
        // here (that would make every store a scan): its request missed when it was routed.
        if let QueryKey::Exact(k) = &query.key {
            if let Some(&slot) = self.exact.get(k) {
                self.remove(slot);
            }
        }
        self.make_room(1);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        entry.key = match &query.key {
            QueryKey::Exact(k) => {
                self.exact.insert(*k, slot);
                StoredKey::Exact(*k)
            }
            QueryKey::Vector {
                space,
                scope,
                vector,
            } => {
                let row = self.space(*space).push(vector, *scope, slot);
                StoredKey::Row(*space, row)
            }
        };
        entry.used = (entry.stored_ms, seq);
        entry.aged = (entry.stored_ms, seq);
        self.by_use.insert(entry.used, slot);
        self.by_age.insert(entry.aged, slot);
        let record = store::inserted(self, slot, &query, &entry);
        self.slots[slot] = Some(entry);
        record
    }

    fn stats(&self, name: &str) -> CacheStats {
        let c = self.stats;
        let strings: u64 = self
            .slots
            .iter()
            .flatten()
            .map(|e| (e.response.len() + e.preview.len() + e.model.len() + e.tenant.len()) as u64)
            .sum();
        let vectors = self.lexical.bytes() + self.caller.bytes();
        CacheStats {
            task_class: name.to_string(),
            mode: self.config.mode.as_str(),
            entries: self.len() as u64,
            max_entries: self.config.max_entries,
            lookups: c.lookups,
            hits: c.hits,
            saved_cost_usd: c.saved_cost_usd,
            saved_latency_ms: c.saved_latency_ms,
            stored: c.stored,
            evicted: c.evicted,
            expired: c.expired,
            invalidated: c.invalidated,
            bytes: strings + vectors + self.len() as u64 * ENTRY_OVERHEAD_BYTES,
            restored: c.restored,
            shared_hits: c.shared_hits,
            adopted: c.adopted,
        }
    }
}

impl ResponseCache {
    /// A cache for the classes of `classes` that configure one; candidates wait `candidate_ttl_ms`
    /// for Feedback and are at most `max_candidates`.
    pub fn new<'a>(
        classes: impl IntoIterator<Item = &'a Arc<TaskClassConfig>>,
        candidate_ttl_ms: u64,
        max_candidates: usize,
    ) -> Self {
        let mut cache = ResponseCache::default();
        cache.reconfigure(classes, &[], candidate_ttl_ms, max_candidates);
        cache
    }

    /// Applies a reloaded config: classes that stopped caching, or changed mode or embedding
    /// dimension, start empty; other settings apply to the entries kept (fewer `max_entries`
    /// evicts the least recently used). Entries of `removed` (task class, model) pairs are
    /// dropped. Returns how many entries were dropped in all.
    pub fn reconfigure<'a>(
        &mut self,
        classes: impl IntoIterator<Item = &'a Arc<TaskClassConfig>>,
        removed: &[(String, String)],
        candidate_ttl_ms: u64,
        max_candidates: usize,
    ) -> u64 {
        self.candidate_ttl_ms = candidate_ttl_ms;
        self.max_candidates = max_candidates;
        let mut next = BTreeMap::new();
        let mut dropped = 0;
        for class in classes {
            let Some(config) = &class.cache else { continue };
            let kept = self.classes.remove(&class.name).and_then(|old| {
                if old.config.mode == config.mode && old.config.dimensions == config.dimensions {
                    Some(old)
                } else {
                    dropped += old.len() as u64;
                    store::cleared(&mut self.cleared, self.journaled, old.name);
                    None
                }
            });
            let mut c = match kept {
                Some(mut old) => {
                    old.config = config.clone();
                    old.make_room(0);
                    old
                }
                None => ClassCache::new(&class.name, config.clone(), self.journaled),
            };
            for (_, model) in removed.iter().filter(|(c, _)| *c == class.name) {
                let d = drop_where(&mut c, |e| e.model == *model);
                c.stats.invalidated += d;
                dropped += d;
            }
            next.insert(class.name.clone(), c);
        }
        dropped += self.classes.values().map(|c| c.len() as u64).sum::<u64>();
        for old in std::mem::take(&mut self.classes).into_keys() {
            store::cleared(&mut self.cleared, self.journaled, old);
        }
        self.classes = next;
        dropped
    }

    /// Looks `q` up at `now_ms`: the stored response on a hit. Counts the lookup.
    pub fn lookup(&mut self, q: &Query, now_ms: u64) -> Option<Hit> {
        let c = self.classes.get_mut(&q.class)?;
        c.stats.lookups += 1;
        let (slot, similarity) = c.find(&q.key)?;
        let ttl = c.ttl_ms();
        let stored_ms = c.slots.get(slot)?.as_ref()?.stored_ms;
        if stored_ms.saturating_add(ttl) <= now_ms {
            c.remove(slot);
            c.stats.expired += 1;
            return None;
        }
        self.seq += 1;
        c.hit(slot, similarity, now_ms, self.seq)
    }
}

impl ClassCache {
    /// The entry in `slot` as a hit at `now_ms`: marks it used and counts the hit.
    fn hit(&mut self, slot: usize, similarity: f64, now_ms: u64, seq: u64) -> Option<Hit> {
        let e = self.slots.get_mut(slot)?.as_mut()?;
        self.by_use.remove(&e.used);
        e.used = (now_ms, seq);
        self.by_use.insert(e.used, slot);
        self.stats.hits += 1;
        self.stats.saved_cost_usd += e.cost_usd;
        self.stats.saved_latency_ms += e.latency_ms;
        Some(Hit {
            response: Arc::clone(&e.response),
            tenant: e.tenant.clone(),
            model: e.model.clone(),
            provider: e.provider.clone(),
            age_ms: now_ms.saturating_sub(e.stored_ms),
            source_decision_id: e.source_decision_id.clone(),
            similarity,
            saved_cost_usd: e.cost_usd,
            saved_latency_ms: e.latency_ms,
        })
    }
}

impl ResponseCache {
    /// Keeps `q` for decision `decision_id` (a routed miss) until its Feedback stores a response
    /// or its feedback window closes.
    pub fn remember(&mut self, decision_id: &str, q: Query, now_ms: u64) {
        if !self.classes.contains_key(&q.class) || self.max_candidates == 0 {
            return;
        }
        self.candidates.insert(
            decision_id.to_string(),
            Candidate {
                query: q,
                created_ms: now_ms,
                calls: Vec::new(),
            },
        );
        self.order.push_back((now_ms, decision_id.to_string()));
        while self.candidates.len() > self.max_candidates {
            match self.order.pop_front() {
                Some((_, id)) => {
                    self.candidates.remove(&id);
                }
                None => break,
            }
        }
    }

    /// Takes what a Feedback said about a candidate's call; stores the response once the call
    /// succeeded, a response was sent and the quality rule holds.
    pub fn report(&mut self, r: Reported, now_ms: u64) -> Stored {
        self.report_record(r, now_ms).0
    }

    /// [`ResponseCache::report`], with the record of the entry it stored (to share it).
    pub fn report_record(&mut self, r: Reported, now_ms: u64) -> (Stored, Option<Arc<Record>>) {
        let Some(cand) = self.candidates.get_mut(&r.decision_id) else {
            return (Stored::NotCandidate, None);
        };
        let Some(class) = self.classes.get(&cand.query.class) else {
            return (Stored::NotCandidate, None);
        };
        let config = class.config.clone();
        let i = match cand.calls.iter().position(|c| c.model == r.model) {
            Some(i) => i,
            None => {
                cand.calls.push(Call {
                    model: r.model.clone(),
                    ..Call::default()
                });
                cand.calls.len() - 1
            }
        };
        let call = &mut cand.calls[i];
        match r.succeeded {
            Some(true) if !call.failed => {
                call.succeeded = true;
                call.cost_usd = call.cost_usd.or(r.cost_usd);
                call.latency_ms = call.latency_ms.or(r.latency_ms);
            }
            Some(false) if !call.succeeded => call.failed = true,
            _ => {}
        }
        call.quality = call.quality.or(r.quality);
        if !r.response.is_empty() && call.response.is_none() {
            call.response = Some(r.response);
        }
        let too_big = call
            .response
            .as_ref()
            .is_some_and(|s| s.len() as u64 > config.max_response_bytes);
        let short = matches!((config.min_quality, call.quality), (Some(m), Some(q)) if q < m);
        if call.failed || too_big || short {
            call.response = None;
            return (Stored::Refused, None);
        }
        let ready = call.succeeded
            && call.response.is_some()
            && (config.min_quality.is_none() || call.quality.is_some());
        if !ready {
            return (Stored::Waiting, None);
        }
        let response: Arc<str> = Arc::from(call.response.take().unwrap_or_default());
        let entry = Entry {
            key: StoredKey::Exact([0; 32]),
            preview: cand.query.preview.clone(),
            tenant: cand.query.tenant.clone(),
            response,
            model: r.model,
            provider: r.provider,
            source_decision_id: r.decision_id.clone(),
            cost_usd: call.cost_usd.unwrap_or(0.0),
            latency_ms: call.latency_ms.unwrap_or(0.0),
            stored_ms: now_ms,
            used: (0, 0),
            aged: (0, 0),
        };
        let query = cand.query.clone();
        self.seq += 1;
        let seq = self.seq;
        let Some(c) = self.classes.get_mut(&query.class) else {
            return (Stored::NotCandidate, None);
        };
        c.stats.stored += 1;
        (Stored::Stored, Some(c.insert(query, entry, seq)))
    }

    /// Drops expired entries and candidates past their feedback window; returns the entries
    /// dropped.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        while let Some((created, id)) = self.order.front() {
            let live = self
                .candidates
                .get(id)
                .is_some_and(|c| c.created_ms == *created);
            if live && created.saturating_add(self.candidate_ttl_ms) > now_ms {
                break;
            }
            if live {
                self.candidates.remove(id);
            }
            self.order.pop_front();
        }
        self.classes.values_mut().map(|c| c.expire(now_ms)).sum()
    }

    /// Drops the entries of `class` (every class when empty) whose normalised prompt starts with
    /// `prefix` (normalised the same way) and that carry `tag` ("model:<id>", "tenant:<name>",
    /// "class:<name>"); empty filters match everything. Returns how many.
    pub fn invalidate(&mut self, class: &str, prefix: &str, tag: &str) -> u64 {
        let prefix = embed::words(prefix);
        let mut n = 0;
        for (name, c) in self.classes.iter_mut() {
            if !class.is_empty() && name != class {
                continue;
            }
            let tag_ok = |e: &Entry| {
                tag.is_empty()
                    || tag.strip_prefix("model:") == Some(e.model.as_str())
                    || tag.strip_prefix("tenant:") == Some(e.tenant.as_str())
                    || tag.strip_prefix("class:") == Some(name.as_str())
            };
            let dropped = drop_where(c, |e| e.preview.starts_with(&prefix) && tag_ok(e));
            c.stats.invalidated += dropped;
            n += dropped;
        }
        n
    }

    /// The cache key of `input` (see [`key::query`]): `None` when its class does not cache or it
    /// has no prompt.
    pub fn query(&self, input: &RouteInput, tenant: &str) -> Result<Option<Query>, EngineError> {
        let config = self.classes.get(&input.task_class).map(|c| &c.config);
        key::query(&input.task_class, config, input, tenant)
    }

    /// Each caching class's counters and size, by class name.
    pub fn stats(&self) -> Vec<CacheStats> {
        self.classes.iter().map(|(n, c)| c.stats(n)).collect()
    }

    /// Candidates awaiting Feedback.
    pub fn candidates_len(&self) -> usize {
        self.candidates.len()
    }
}

/// Removes the entries of `c` that `pred` selects; returns how many.
fn drop_where(c: &mut ClassCache, pred: impl Fn(&Entry) -> bool) -> u64 {
    let slots: Vec<usize> = c
        .slots
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().filter(|e| pred(e)).map(|_| i))
        .collect();
    for &s in &slots {
        c.remove(s);
    }
    slots.len() as u64
}
