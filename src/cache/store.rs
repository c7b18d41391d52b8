//! Cache entries outside the process: the [`Record`] an entry is written as (to the data dir's
//! `cache` tree and to Redis), the [`Journal`] of inserts and removals the server writes to the
//! data dir, the restore at start, and the adoption of entries other replicas stored.
//!
//! # Why a write path of its own, not the engine's writer
//! The cache sits behind its own lock, apart from the engine's, and an entry is only a cache:
//! losing the last second of entries in a crash costs hits, never money or an acknowledged
//! Feedback. So entries do not join the engine's change set, the manifest's digest or `sync`
//! durability. The server takes this journal every second (with the expiry sweep) and at shutdown,
//! and writes it as one sled batch on a blocking thread; the writer's flushes (and the final
//! flush at shutdown) put it on disk.
//!
//! # What is on disk
//! Key: the task class, a 0 byte, the stored time (Unix ms, big-endian) and the id of the decision
//! whose Feedback stored the entry. Value: a prost [`Record`]: tenant, model, provider, the
//! response (text or the caller's handle), the preview the cache keeps for invalidation by prefix
//! (the first 256 characters of the normalised prompt: only a class that caches keeps it, and no
//! other prompt text is written), cost, latency, stored time, the TTL when stored, and the key (the
//! exact key's SHA-256, or the embedding and its scope). The tree holds what memory holds: every
//! eviction, expiry, invalidation and reload drop deletes the entry's record too; a class dropped
//! whole (it stops caching, or changes mode or dimension) has its key range deleted.
//!
//! # Restart
//! A start reads the tree back: per class, the newest `max_entries` entries still within the
//! class's current `ttl_secs`, in a class that still caches with the same mode and dimension; the
//! rest is deleted by the first write. An entry's age runs on across the restart (a hit reports
//! the age since it was stored). Least-recently-used order restarts as the order of storing (uses
//! are not written); counters restart at zero, and `restored` counts the entries read back. A
//! crash (SIGKILL) loses the entries stored since the last write and flush (about a second plus
//! `storage.flush_interval_ms`). If the data dir cannot be written for longer than
//! [`MAX_JOURNAL`] changes, the journal is dropped and the tree cleared by the next write that
//! succeeds, so a restart never answers with an entry memory had removed. Backups do not copy the
//! cache: a restored backup starts with an empty cache.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ClassCache, Entry, Hit, Query, QueryKey, ResponseCache, Space, StoredKey};
use crate::config::CacheMode;

/// Changes the journal keeps while the data dir cannot be written (a few seconds of stores at
/// any plausible rate): past this it is dropped and the tree cleared (see the module doc).
pub const MAX_JOURNAL: usize = 100_000;

/// How an entry's key is kept in [`Record::space`].
const EXACT: u32 = 0;
const LEXICAL: u32 = 1;
const CALLER: u32 = 2;

/// One entry as the data dir and Redis hold it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    #[prost(string, tag = "1")]
    pub class: String,
    #[prost(string, tag = "2")]
    pub tenant: String,
    #[prost(string, tag = "3")]
    pub model: String,
    #[prost(string, tag = "4")]
    pub provider: String,
    #[prost(string, tag = "5")]
    pub response: String,
    /// The start of the normalised prompt, for invalidation by prefix.
    #[prost(string, tag = "6")]
    pub preview: String,
    #[prost(string, tag = "7")]
    pub source_decision_id: String,
    #[prost(double, tag = "8")]
    pub cost_usd: f64,
    #[prost(double, tag = "9")]
    pub latency_ms: f64,
    /// Unix ms.
    #[prost(uint64, tag = "10")]
    pub stored_ms: u64,
    /// The class's TTL when it was stored (Redis expires it by this).
    #[prost(uint64, tag = "11")]
    pub ttl_ms: u64,
    /// 0 exact, 1 built-in lexical embedding, 2 caller embedding.
    #[prost(uint32, tag = "12")]
    pub space: u32,
    /// SHA-256 of an exact key.
    #[prost(bytes = "vec", tag = "13")]
    pub exact_key: Vec<u8>,
    #[prost(uint64, tag = "14")]
    pub scope: u64,
    /// The unit embedding of a semantic entry.
    #[prost(float, repeated, tag = "15")]
    pub vector: Vec<f32>,
}

/// One write to the `cache` tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(Arc<Record>),
    /// A key from [`disk_key`].
    Delete(Vec<u8>),
}

impl Change {
    /// Whether the change is to an entry of the class whose key prefix is `prefix`.
    fn in_class(&self, prefix: &[u8]) -> bool {
        match self {
            Change::Put(r) => class_prefix(&r.class) == prefix,
            Change::Delete(k) => k.starts_with(prefix),
        }
    }
}

/// What to write to the `cache` tree, in this order: clear it all, clear classes, then changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Journal {
    pub clear_all: bool,
    pub cleared: Vec<String>,
    pub changes: Vec<Change>,
}

impl Journal {
    pub fn is_empty(&self) -> bool {
        !self.clear_all && self.cleared.is_empty() && self.changes.is_empty()
    }
}

/// The tree key range of a class: its name and a 0 byte.
pub fn class_prefix(class: &str) -> Vec<u8> {
    let mut k = class.as_bytes().to_vec();
    k.push(0);
    k
}

/// The tree key of an entry: its class range, stored ms (big-endian), source decision id.
pub fn disk_key(class: &str, stored_ms: u64, source_decision_id: &str) -> Vec<u8> {
    let mut k = class_prefix(class);
    k.extend_from_slice(&stored_ms.to_be_bytes());
    k.extend_from_slice(source_decision_id.as_bytes());
    k
}

/// The name of an exact entry in Redis: derivable from the request, so a miss can ask for it.
pub fn exact_id(key: &[u8; 32]) -> String {
    let mut s = String::with_capacity(65);
    s.push('x');
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Record {
    pub fn disk_key(&self) -> Vec<u8> {
        disk_key(&self.class, self.stored_ms, &self.source_decision_id)
    }

    /// The entry's name in Redis: the exact key, or `s` and its source decision.
    pub fn shared_id(&self) -> String {
        match <[u8; 32]>::try_from(self.exact_key.as_slice()) {
            Ok(k) if self.space == EXACT => exact_id(&k),
            _ => format!("s{}", self.source_decision_id),
        }
    }

    pub fn is_exact(&self) -> bool {
        self.space == EXACT
    }

    /// The key it was stored under; `None` when the record is malformed.
    fn query(&self) -> Option<Query> {
        let key = match self.space {
            EXACT => QueryKey::Exact(<[u8; 32]>::try_from(self.exact_key.as_slice()).ok()?),
            LEXICAL | CALLER => {
                if self.vector.iter().any(|x| !x.is_finite()) {
                    return None;
                }
                QueryKey::Vector {
                    space: if self.space == LEXICAL {
                        Space::Lexical
                    } else {
                        Space::Caller
                    },
                    scope: self.scope,
                    vector: self.vector.clone(),
                }
            }
            _ => return None,
        };
        Some(Query {
            class: self.class.clone(),
            tenant: self.tenant.clone(),
            key,
            preview: self.preview.clone(),
        })
    }

    fn entry(&self) -> Entry {
        Entry {
            key: StoredKey::Exact([0; 32]),
            preview: self.preview.clone(),
            tenant: self.tenant.clone(),
            response: Arc::from(self.response.as_str()),
            model: self.model.clone(),
            provider: self.provider.clone(),
            source_decision_id: self.source_decision_id.clone(),
            cost_usd: self.cost_usd,
            latency_ms: self.latency_ms,
            stored_ms: self.stored_ms,
            used: (0, 0),
            aged: (0, 0),
        }
    }
}

/// Hook of [`ClassCache::insert`]: indexes the entry in `slot` by its source and journals it.
pub(super) fn inserted(c: &mut ClassCache, slot: usize, q: &Query, e: &Entry) -> Arc<Record> {
    let (space, exact_key, scope, vector) = match &q.key {
        QueryKey::Exact(k) => (EXACT, k.to_vec(), 0, Vec::new()),
        QueryKey::Vector {
            space,
            scope,
            vector,
        } => {
            let s = match space {
                Space::Lexical => LEXICAL,
                Space::Caller => CALLER,
            };
            (s, Vec::new(), *scope, vector.clone())
        }
    };
    let r = Arc::new(Record {
        class: c.name.clone(),
        tenant: e.tenant.clone(),
        model: e.model.clone(),
        provider: e.provider.clone(),
        response: e.response.to_string(),
        preview: e.preview.clone(),
        source_decision_id: e.source_decision_id.clone(),
        cost_usd: e.cost_usd,
        latency_ms: e.latency_ms,
        stored_ms: e.stored_ms,
        ttl_ms: c.ttl_ms(),
        space,
        exact_key,
        scope,
        vector,
    });
    c.by_source.insert(e.source_decision_id.clone(), slot);
    if let Some(j) = &mut c.journal {
        j.push(Change::Put(Arc::clone(&r)));
    }
    r
}

/// Hook of [`ClassCache::remove`]: unindexes the entry that was in `slot` and journals it.
pub(super) fn removed(c: &mut ClassCache, slot: usize, e: &Entry) {
    if c.by_source.get(&e.source_decision_id) == Some(&slot) {
        c.by_source.remove(&e.source_decision_id);
    }
    if let Some(j) = &mut c.journal {
        j.push(Change::Delete(disk_key(
            &c.name,
            e.stored_ms,
            &e.source_decision_id,
        )));
    }
}

/// Hook of a reload that drops the class `name` whole.
pub(super) fn cleared(list: &mut Vec<String>, journaled: bool, name: String) {
    if journaled {
        list.push(name);
    }
}

/// Whether `q` can live in `c`: the class's mode, and a vector of its space's width.
fn fits(c: &ClassCache, q: &Query) -> bool {
    match (&q.key, c.config.mode) {
        (QueryKey::Exact(_), CacheMode::Exact) => true,
        (QueryKey::Vector { space, vector, .. }, CacheMode::Semantic) => {
            let dim = match space {
                Space::Lexical => c.lexical.dim(),
                Space::Caller => c.caller.dim(),
            };
            dim > 0 && vector.len() == dim
        }
        _ => false,
    }
}

impl ResponseCache {
    /// Journals every insert and removal from now on, for the data dir.
    pub fn enable_journal(&mut self) {
        self.journaled = true;
        for c in self.classes.values_mut() {
            c.journal.get_or_insert_with(Vec::new);
        }
    }

    /// What to write to the data dir since the last take (with a journal handed back by
    /// [`ResponseCache::requeue`] first).
    pub fn take_journal(&mut self) -> Journal {
        let mut j = std::mem::take(&mut self.held);
        for class in std::mem::take(&mut self.cleared) {
            // A class dropped since: its older changes are moot (its range is deleted).
            let prefix = class_prefix(&class);
            j.changes.retain(|c| !c.in_class(&prefix));
            j.cleared.push(class);
        }
        for c in self.classes.values_mut() {
            if let Some(changes) = &mut c.journal {
                j.changes.append(changes);
            }
        }
        j
    }

    /// Hands back a journal that could not be written, to go first in the next take; past
    /// [`MAX_JOURNAL`] changes it is dropped and the tree is cleared by the next write instead.
    pub fn requeue(&mut self, j: Journal) {
        if j.changes.len() > MAX_JOURNAL {
            tracing::warn!(
                changes = j.changes.len(),
                "response cache journal overflowed while the data dir failed: the persisted cache \
                 is cleared at the next write"
            );
            self.held = Journal {
                clear_all: true,
                ..Journal::default()
            };
        } else {
            self.held = j;
        }
    }

    /// Restores the entries of `records` (read back from the data dir) that still fit at
    /// `now_ms` (see the module doc); the others are journaled for deletion. Returns how many
    /// were restored.
    pub fn restore(&mut self, records: Vec<Record>, now_ms: u64) -> u64 {
        let mut rejected = Vec::new();
        let mut by_class: BTreeMap<String, Vec<(Query, Record)>> = BTreeMap::new();
        for r in records {
            let usable = r.query().filter(|q| {
                self.classes
                    .get(&r.class)
                    .is_some_and(|c| fits(c, q) && r.stored_ms.saturating_add(c.ttl_ms()) > now_ms)
            });
            match usable {
                Some(q) => by_class.entry(r.class.clone()).or_default().push((q, r)),
                None => rejected.push(Change::Delete(r.disk_key())),
            }
        }
        let mut restored = 0;
        for (class, mut rs) in by_class {
            let Some(c) = self.classes.get_mut(&class) else {
                continue;
            };
            rs.sort_by_key(|(_, r)| std::cmp::Reverse(r.stored_ms));
            let max = usize::try_from(c.config.max_entries).unwrap_or(usize::MAX);
            for (_, r) in rs.iter().skip(max) {
                rejected.push(Change::Delete(r.disk_key()));
            }
            rs.truncate(max);
            // Records already on disk: only what the inserts remove is journaled.
            let before = c.journal.replace(Vec::new());
            for (q, r) in rs.into_iter().rev() {
                self.seq += 1;
                c.insert(q, r.entry(), self.seq);
            }
            let deletes = c.journal.take().unwrap_or_default();
            c.journal = before;
            rejected.extend(
                deletes
                    .into_iter()
                    .filter(|d| matches!(d, Change::Delete(_))),
            );
            c.stats.restored = c.len() as u64;
            restored += c.len() as u64;
        }
        if self.journaled {
            self.held.changes.extend(rejected);
        }
        restored
    }

    /// Takes an entry another replica stored (cluster mode), unless it is here already, does not
    /// fit its class here, or has expired at `now_ms`. Returns its class's slot.
    fn adopt_slot(&mut self, r: &Record, now_ms: u64) -> Option<usize> {
        let q = r.query()?;
        let c = self.classes.get_mut(&r.class)?;
        if !fits(c, &q) || r.stored_ms.saturating_add(c.ttl_ms()) <= now_ms {
            return None;
        }
        if let Some(&slot) = c.by_source.get(&r.source_decision_id) {
            return Some(slot);
        }
        self.seq += 1;
        c.insert(q, r.entry(), self.seq);
        c.stats.adopted += 1;
        c.by_source.get(&r.source_decision_id).copied()
    }

    /// [`ResponseCache::adopt_slot`]; whether the entry is held now.
    pub fn adopt(&mut self, r: &Record, now_ms: u64) -> bool {
        self.adopt_slot(r, now_ms).is_some()
    }

    /// An exact entry found in Redis after a local miss: adopted and answered as a hit.
    pub fn adopt_hit(&mut self, r: &Record, now_ms: u64) -> Option<Hit> {
        let slot = self.adopt_slot(r, now_ms)?;
        self.seq += 1;
        let c = self.classes.get_mut(&r.class)?;
        c.stats.shared_hits += 1;
        c.hit(slot, 1.0, now_ms, self.seq)
    }

    /// Whether any class caches.
    pub fn caches(&self) -> bool {
        !self.classes.is_empty()
    }

    /// Entries of every class together at most: the bound of the shared (Redis) index.
    pub fn max_entries(&self) -> u64 {
        self.classes
            .values()
            .map(|c| c.config.max_entries)
            .fold(0, u64::saturating_add)
    }
}

/// The Redis name of `q`'s entry when `q` is exact (an exact miss asks Redis for it).
pub fn shared_id_of(q: &Query) -> Option<String> {
    match &q.key {
        QueryKey::Exact(k) => Some(exact_id(k)),
        QueryKey::Vector { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Reported, Stored};
    use crate::config::Config;
    use crate::engine::RouteInput;

    const TTL_MS: u64 = 60_000;

    fn cache(mode: &str, max_entries: u64) -> ResponseCache {
        let text = format!(
            "[models.a]\nprovider = \"p\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n\
             [task_classes.qa]\nmodels = [\"a\"]\n\
             cache = {{ mode = \"{mode}\", ttl_secs = 60.0, max_entries = {max_entries} }}\n"
        );
        let config = match Config::from_toml_str(&text, "test") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        ResponseCache::new(config.task_classes.values(), TTL_MS, 1000)
    }

    /// Routes `prompt` as decision `id` at `now` and stores `response` for it.
    fn store(c: &mut ResponseCache, id: &str, prompt: &str, response: &str, now: u64) {
        let input = RouteInput {
            task_class: "qa".into(),
            prompt: prompt.into(),
            ..RouteInput::default()
        };
        let q = match c.query(&input, "t") {
            Ok(Some(q)) => q,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.lookup(&q, now), None);
        c.remember(id, q, now);
        let r = Reported {
            decision_id: id.into(),
            model: "a".into(),
            provider: "p".into(),
            succeeded: Some(true),
            response: response.into(),
            ..Reported::default()
        };
        assert_eq!(c.report(r, now), Stored::Stored);
    }

    fn hit(c: &mut ResponseCache, prompt: &str, now: u64) -> Option<Hit> {
        let input = RouteInput {
            task_class: "qa".into(),
            prompt: prompt.into(),
            ..RouteInput::default()
        };
        let q = c.query(&input, "t").ok().flatten()?;
        c.lookup(&q, now)
    }

    fn puts(j: &Journal) -> Vec<Record> {
        j.changes
            .iter()
            .filter_map(|c| match c {
                Change::Put(r) => Some((**r).clone()),
                Change::Delete(_) => None,
            })
            .collect()
    }

    /// Applies journals to a map standing for the tree.
    fn apply(tree: &mut BTreeMap<Vec<u8>, Record>, j: Journal) {
        if j.clear_all {
            tree.clear();
        }
        for class in &j.cleared {
            let p = class_prefix(class);
            tree.retain(|k, _| !k.starts_with(&p));
        }
        for c in j.changes {
            match c {
                Change::Put(r) => {
                    tree.insert(r.disk_key(), (*r).clone());
                }
                Change::Delete(k) => {
                    tree.remove(&k);
                }
            }
        }
    }

    #[test]
    fn the_tree_holds_what_memory_holds_and_a_restore_answers_with_the_age() {
        for mode in ["exact", "semantic"] {
            let mut c = cache(mode, 2);
            c.enable_journal();
            let mut tree = BTreeMap::new();
            store(
                &mut c,
                "d1",
                "what is the capital of france",
                "Paris",
                1_000,
            );
            store(&mut c, "d2", "how tall is mount everest", "8849 m", 2_000);
            let j = c.take_journal();
            assert_eq!(puts(&j).len(), 2, "{mode}");
            apply(&mut tree, j);
            // A third entry evicts the least recently used (d1), on disk too.
            store(&mut c, "d3", "who wrote hamlet", "Shakespeare", 3_000);
            assert_eq!(c.invalidate("", "how tall", ""), 1);
            apply(&mut tree, c.take_journal());
            let kept: Vec<&str> = tree
                .values()
                .map(|r| r.source_decision_id.as_str())
                .collect();
            assert_eq!(kept, vec!["d3"], "{mode}");

            let mut again = cache(mode, 2);
            again.enable_journal();
            let n = again.restore(tree.values().cloned().collect(), 10_000);
            assert_eq!(n, 1);
            let h = hit(&mut again, "who wrote hamlet", 10_000).expect("restored");
            assert_eq!((&*h.response, h.age_ms), ("Shakespeare", 7_000));
            assert!(hit(&mut again, "how tall is mount everest", 10_000).is_none());
            assert!(again.take_journal().is_empty());
        }
    }

    #[test]
    fn a_restore_drops_expired_and_surplus_records_and_journals_their_deletion() {
        let mut c = cache("exact", 10);
        c.enable_journal();
        for (i, p) in ["one", "two", "three"].iter().enumerate() {
            store(&mut c, &format!("d{i}"), p, p, 1_000 * (i as u64 + 1));
        }
        let records = puts(&c.take_journal());
        // At 61.5 s the first (stored at 1 s, TTL 60 s) has expired; the bound keeps one more.
        let mut small = cache("exact", 1);
        small.enable_journal();
        assert_eq!(small.restore(records.clone(), 61_500), 1);
        let j = small.take_journal();
        let deleted: Vec<Vec<u8>> = j
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Delete(k) => Some(k.clone()),
                Change::Put(_) => None,
            })
            .collect();
        assert_eq!(deleted, vec![records[0].disk_key(), records[1].disk_key()]);
        assert!(hit(&mut small, "three", 61_500).is_some());
        // Another mode cannot use them: all deleted, none restored.
        let mut other = cache("semantic", 10);
        other.enable_journal();
        assert_eq!(other.restore(records, 2_000), 0);
        assert_eq!(other.take_journal().changes.len(), 3);
    }

    #[test]
    fn adopted_entries_hit_once_and_a_failed_write_is_retried_then_bounded() {
        let mut b = cache("semantic", 10);
        b.enable_journal();
        let record = Record {
            class: "qa".into(),
            ..Record::default()
        };
        assert!(!b.adopt(&record, 1_000), "a malformed record is refused");
        let mut j = Journal::default();
        // The record as A would publish it.
        let (_, shared) = {
            let mut c = cache("semantic", 10);
            let input = RouteInput {
                task_class: "qa".into(),
                prompt: "how do I enable 2FA on my account".into(),
                ..RouteInput::default()
            };
            let q = c.query(&input, "t").ok().flatten().expect("query");
            c.remember("d1", q, 1_000);
            c.report_record(
                Reported {
                    decision_id: "d1".into(),
                    model: "a".into(),
                    succeeded: Some(true),
                    response: "Settings".into(),
                    ..Reported::default()
                },
                1_000,
            )
        };
        let shared = shared.expect("stored");
        assert!(b.adopt(&shared, 2_000) && b.adopt(&shared, 2_000));
        let h = hit(&mut b, "How do I enable 2FA on my account?", 2_500).expect("a hit");
        assert_eq!((&*h.response, h.age_ms), ("Settings", 1_500));
        assert!(hit(&mut b, "how do I disable 2FA on my account", 2_500).is_none());
        assert_eq!(b.stats()[0].adopted, 1);
        assert!(!b.adopt(&shared, 61_000), "expired");
        j.changes.extend(b.take_journal().changes);
        assert_eq!(puts(&j).len(), 1);
        b.requeue(j.clone());
        assert_eq!(b.take_journal(), j);
        let big = Journal {
            changes: vec![Change::Delete(vec![1]); MAX_JOURNAL + 1],
            ..Journal::default()
        };
        b.requeue(big);
        let next = b.take_journal();
        assert!(next.clear_all && next.changes.is_empty());
    }
}
