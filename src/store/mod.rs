//! sled persistence of engine state and the decision log.
//!
//! Trees (schema 4): `meta` (key `schema`: big-endian u32 [`SCHEMA_VERSION`]; `generation`, and
//! the decision log's `log_count` / `log_bytes`, big-endian u64, rewritten by every write),
//! `names` (the name table: big-endian u32 id -> name), `decisions` (key: big-endian creation ms +
//! 16-byte id, see [`records`]; value: one prost [`records::StoredDecision`], which Feedback
//! rewrites; or a [`segment`] of up to 32 such records that one write cycle made, under a 33-byte
//! key, which a Feedback on any of them rewrites), `arms` (key `class\0model`; a prost record, `arm_record.rs`, or JSON as
//! written before), `breakers` (key model), `ledgers` (key budget key), `objectives` (key task
//! class: its `min_cost` states by target); the last three are few, small and JSON. The engine never sees sled: the server hands this
//! module the engine's [`Changes`] after each call.
//!
//! The decision log is also where pending decisions live: a restart reads the newest decisions
//! back (newest first, until one has expired or `limits.max_pending` are found), so a decision is
//! written once when made and once per Feedback, never as a pending record plus events.

mod arm_record;
mod backup;
mod cache_tree;
mod compact_record;
mod deferred;
mod legacy;
pub mod manifest;
mod outbox;
pub mod records;
mod recover;
mod segment;
mod spend;

pub use backup::Copied;
pub use deferred::Step;
pub use manifest::{Verified, MANIFEST_FILE};
pub use recover::StoreSlot;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use serde::Serialize;

use crate::engine::{Changes, Logged, Restored};
use crate::record::{DecisionRecord, Event};
use manifest::Old;
use records::{decision_key, id_bytes, key_ms, show_key, DecisionKey, Names, StoredDecision};
use segment::SegmentKey;

/// The most decisions one step of a trim drops (one write of its own, under the digest's lock,
/// which commits wait for). A trim was one `sled::Batch` of everything beyond the bounds; sled
/// keeps every node version a batch replaces until the batch ends (its epoch guard is held
/// throughout), so a second's worth of decisions (37 500 in the soak) held tens of megabytes of
/// garbage at a time, and the process's resident memory stepped up by ~300 MB once trimming began
/// (docs/performance-history.md: the soak). Small steps also keep the writer's waits short.
const TRIM_BATCH: usize = 512;

/// Version of the on-disk layout. 1 and 2 (JSON pending records and a JSON event log) are
/// migrated at open; 3 (every decision under its own key) is read as it is and stamped 4, since 4
/// only adds [`segment`]s; another version is refused. A release that reads only 3 refuses a
/// data dir of 4 by its version, rather than as corrupt at the first segment.
pub const SCHEMA_VERSION: u32 = 4;

/// The schema a data dir had before segments: opened as it is.
const SCHEMA_BEFORE_SEGMENTS: u32 = 3;

/// sled's page cache when `storage.cache_mb` is not set. sled counts its cache in on-disk bytes,
/// and its in-memory pages take several times that, so its 1 GiB default allows the cache to grow
/// past the whole decision log (about 115 MB at a million decisions). What the cache serves is
/// small: Feedback reads back the records of pending decisions, the newest ones (100 000 x ~115
/// bytes = 11.5 MB), and trimming reads the oldest once. 16 MiB holds that working set. The
/// resident-memory growth the soak measures is not this cache: it grew alike with 16 MiB and
/// 1 GiB (docs/performance-history.md).
pub const DEFAULT_CACHE_MB: u64 = 16;

/// Errors opening, reading or writing a data dir; each names the data dir.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "data dir {0} is in use by another switchyard process (its lock is held); stop that \
         process or use another --data-dir"
    )]
    Locked(String),
    #[error(
        "data dir {path} is corrupt: file {file}: {detail}; restore a backup of the data dir \
         (`switchyard state restore`), drop the bad records with `switchyard state repair \
         --data-dir {path}`, or start empty with `switchyard state reset --all --data-dir {path}`"
    )]
    Corrupt {
        path: String,
        file: String,
        detail: String,
    },
    #[error(
        "data dir {path} has schema version {found}, this switchyard expects {expected}; run the \
         switchyard version that wrote it, or move the data dir aside to start empty"
    )]
    Schema {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("data dir {path} does not exist (or holds no switchyard database)")]
    Missing { path: String },
    #[error("data dir {path}: {detail}")]
    Io { path: String, detail: String },
}

/// Counts of what a data dir holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub schema: u32,
    pub arms: usize,
    pub pending: usize,
    pub breakers: usize,
    pub ledgers: usize,
    /// Decision records (the decision log).
    pub decisions: u64,
    /// Their encoded size, keys included.
    pub decision_bytes: u64,
    pub first_event_ms: Option<u64>,
    pub last_event_ms: Option<u64>,
}

/// One tree's part of a [`Batch`]: its writes in order (`None`: a removal).
///
/// A commit applies them one by one, not as a `sled::Batch`: sled makes each applied batch
/// atomic by sealing its in-memory log buffer and handing it to its I/O threads before and after
/// (`Tree::apply_batch` -> `PageCache::pin_log` -> `roll_iobuf`), so the seven batches of a cycle
/// cost seven buffer writes, each waking all of sled's idle I/O threads: under `sync` Feedback
/// (~750 cycles a second) half of the writer's CPU time was that. Atomicity per tree adds nothing
/// here: a cycle writes several trees, and a crash that lands inside a cycle leaves a db ahead of
/// its last flush, whose unflushed writes are kept as they are and whose decision-log counters
/// are recounted at open (see [`manifest`]).
#[derive(Default, Clone)]
pub struct Part {
    writes: Vec<(sled::IVec, Option<sled::IVec>)>,
}

impl Part {
    fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        self.writes.push((key.into(), Some(value.into())));
    }

    fn remove(&mut self, key: impl Into<sled::IVec>) {
        self.writes.push((key.into(), None));
    }

    /// Applies the writes to `tree`, in order.
    fn apply(&self, tree: &sled::Tree) -> sled::Result<()> {
        for (k, v) in &self.writes {
            match v {
                Some(v) => tree.insert(k, v.clone())?,
                None => tree.remove(k)?,
            };
        }
        Ok(())
    }
}

/// Encoded writes, one [`Part`] per tree, from [`Store::prepare`]. Cloneable so that a failed
/// commit can be retried as it was.
#[derive(Default, Clone)]
pub struct Batch {
    names: Part,
    fresh_names: usize,
    decisions: Part,
    arms: Part,
    breakers: Part,
    ledgers: Part,
    objectives: Part,
    spend: Part,
    /// Changes of the decision log's count and bytes.
    count_delta: i64,
    bytes_delta: i64,
    empty: bool,
    /// What the batch writes, for the manifest's digest.
    writes: manifest::Writes,
}

impl Batch {
    /// Adds a write of the decisions tree: `key` = `value`, over `old_size` bytes (key included)
    /// that held `old`, adding `added` decisions to the log.
    fn put_decision(&mut self, key: &[u8], value: &[u8], old_size: usize, old: Old, added: usize) {
        self.bytes_delta += (key.len() + value.len()) as i64 - old_size as i64;
        self.count_delta += added as i64;
        self.writes
            .insert_over(manifest::DECISIONS, key, value, old);
        self.decisions.insert(key, value);
    }

    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// The batch is committed again after a reopen: the old versions it read may be gone.
    pub fn distrust(&mut self) {
        self.writes.distrust();
    }
}

/// Counts every write that reaches a store's trees (commits, trims, rescans) in this process, so
/// that a commit can tell whether what its batch read at encoding is still there (a sequence
/// shared by every store of the process never repeats, across reopens too).
static WRITE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Bounds of the decision log (`[storage]`), and what trimming must keep.
#[derive(Debug, Clone, Copy)]
pub struct LogBounds {
    pub max_age_ms: u64,
    pub max_count: u64,
    pub max_bytes: u64,
    /// The newest `keep_pending` decisions younger than `pending_ttl_ms` are pending (feedback
    /// still accepted): never trimmed.
    pub keep_pending: u64,
    pub pending_ttl_ms: u64,
}

/// Where a pending decision's record is in the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Loc {
    pub created_ms: u64,
    /// The segment that holds it; `None`: its own key (or not written yet).
    pub segment: Option<SegmentKey>,
}

/// A segment read by one [`Store::prepare`] because a decision in it changed. Only the changed
/// records are decoded and encoded again; the others' bytes are copied (a segment holds up to 32
/// records, and a Feedback changes one).
struct SegmentTouched {
    value: sled::IVec,
    /// Where each entry of `value` is, in key order.
    spans: Vec<segment::Span>,
    /// The changed records, by position (`None`: copied as they were).
    updated: Vec<Option<StoredDecision>>,
    /// Its encoded size before, key included.
    old_size: usize,
    old: Old,
}

/// A decision record touched by one [`Store::prepare`].
struct Touched {
    record: StoredDecision,
    /// Its encoded size before (key included; 0 when new).
    old_size: usize,
    /// What its key held before, for the digest.
    old: Old,
    /// The address of the pending record last folded in (a new decision is logged and changed
    /// in one cycle, as the same shared record); compared, never followed.
    set_from: Option<usize>,
    /// The segment it was taken from (it goes back there).
    segment: Option<SegmentKey>,
}

/// The maps [`Store::prepare`] builds each cycle, kept between cycles (emptied, not freed): a
/// cycle's map is a few hundred kilobytes, which the allocator handed back to the system between
/// cycles and the next cycle faulted in again, a page at a time (8% of the writer's CPU samples
/// under closed-loop Route).
#[derive(Default)]
struct Scratch {
    touched: HashMap<DecisionKey, Touched, records::BuildNameHasher>,
    segments: HashMap<SegmentKey, SegmentTouched, records::BuildNameHasher>,
    /// The decisions first written this cycle, in key order, to be grouped into segments.
    fresh: Vec<(DecisionKey, StoredDecision)>,
    /// The touched records' keys in key order, for the commit. Only the keys are sorted: the
    /// records, a few hundred bytes each, stay in `touched` until taken in this order (sorting
    /// them was 1.7k instructions a decision in the writer).
    order: Vec<DecisionKey>,
}

impl Scratch {
    /// Empties them for a cycle of `need` records, with room for them all (growing the map
    /// mid-cycle would move every record read so far). A burst's capacity (a cycle after a
    /// stall) is not kept for good: past four times what a cycle needs, the map and list are
    /// freed and sized anew.
    fn ready_for(&mut self, need: usize) {
        let keep = need.max(1024).saturating_mul(4);
        if self.touched.capacity() > keep
            || self.order.capacity() > keep
            || self.fresh.capacity() > keep
        {
            *self = Scratch::default();
        }
        self.touched.clear();
        self.order.clear();
        self.segments.clear();
        self.fresh.clear();
        self.touched.reserve(need);
    }
}

/// An open data dir.
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    names_tree: sled::Tree,
    decisions: sled::Tree,
    arms: sled::Tree,
    breakers: sled::Tree,
    ledgers: sled::Tree,
    /// The `min_cost` objective states per task class (key class).
    objectives: sled::Tree,
    /// The spend rollup and anomaly baselines (`spend.rs`).
    spend: sled::Tree,
    names: Mutex<Names>,
    /// Where each pending decision's record is, by id (locates it for Feedback).
    index: Mutex<HashMap<[u8; 16], Loc>>,
    log_count: AtomicU64,
    log_bytes: AtomicU64,
    generation: AtomicU64,
    /// The number of the last flush whose manifest was written (see [`manifest`]).
    flushes: AtomicU64,
    /// One flush at a time (the writer's, a reset's, a backup's).
    flush_lock: Mutex<()>,
    /// The digest of what is written, for the manifest; its lock orders commits and trims.
    digest: Mutex<manifest::Running>,
    /// Bad arm records skipped by loads (see [`backup`]).
    skipped_arms: AtomicU64,
    /// The last value written of each arm, breaker, ledger and objective (see [`Written`]).
    written: Mutex<Written>,
    /// The decision log's check after start (see [`deferred`]); locked after `digest`.
    verifying: Mutex<deferred::Verifying>,
    /// Only the writer prepares; the lock is never contended.
    scratch: Mutex<Scratch>,
}

/// The last value written of each arm, breaker, ledger and objective by key, with its record's
/// hash (for the digest): the writer's change set holds every breaker and ledger each cycle,
/// most of them unchanged, and encoding one costs more than comparing it. Starts empty at open
/// (everything is written once); lives as long as the open store.
#[derive(Default)]
struct Written {
    arms: HashMap<Vec<u8>, (crate::policy::Arm, u64)>,
    breakers: HashMap<Vec<u8>, (crate::breaker::Breaker, u64)>,
    ledgers: HashMap<Vec<u8>, (crate::budget::Ledger, u64)>,
    objectives: HashMap<Vec<u8>, (crate::engine::Targets, u64)>,
}

fn arm_key(class: &str, model: &str) -> Vec<u8> {
    let mut k = class.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(model.as_bytes());
    k
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn be_u64(v: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes)
}

impl Store {
    /// Opens an existing data dir (the offline tools): a missing one is an error, never created.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        if !dir.join("db").is_file() && !manifest::has_manifest(dir) {
            return Err(StoreError::Missing {
                path: dir.display().to_string(),
            });
        }
        Store::open_with(dir, 16)
    }

    /// Opens the data dir `dir`, creating it when it does not exist, with a sled page cache of
    /// `cache_mb`; checks its schema and migrates an older one.
    pub fn open_with(dir: &Path, cache_mb: u64) -> Result<Store, StoreError> {
        Store::open_verified(dir, cache_mb, false).map(|(store, _)| store)
    }

    /// [`Store::open_with`], also returning what the verification against the manifest found;
    /// `defer`: see [`Store::open_serving`].
    fn open_verified(
        dir: &Path,
        cache_mb: u64,
        defer: bool,
    ) -> Result<(Store, Verified), StoreError> {
        let started = std::time::Instant::now();
        let path = dir.display().to_string();
        let db_file = dir.join("db");
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.clone(),
            file: db_file.display().to_string(),
            detail,
        };
        // A data dir whose db file is gone would otherwise be opened as a new, empty one.
        let existed = db_file.is_file();
        if !existed && dir.join("conf").exists() {
            return Err(corrupt(
                "the db file is missing (the data dir has sled's conf)".into(),
            ));
        }
        if !existed && manifest::has_manifest(dir) {
            return Err(corrupt(format!(
                "the db file is missing but the data dir has a manifest ({})",
                manifest::manifest_path(dir).display()
            )));
        }
        // The server's writer flushes on its own schedule (`storage.flush_interval_ms`), so sled's
        // background flusher is off. sled panics on some garbled files: caught, and reported.
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_mb.max(1).saturating_mul(1 << 20))
            .flush_every_ms(None);
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|p| {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "sled panicked".into());
                corrupt(format!("cannot be read: {what}"))
            })?;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "start: sled opened the db"
        );
        let db = opened.map_err(|e| {
            let text = e.to_string();
            match e {
                _ if text.contains("could not acquire lock") || text.contains("WouldBlock") => {
                    StoreError::Locked(path.clone())
                }
                // A garbled `conf` reads as an unsupported (pre-0.29) database.
                sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => corrupt(text),
                _ => StoreError::Io {
                    path: path.clone(),
                    detail: text,
                },
            }
        })?;
        let io = |e: sled::Error| StoreError::Io {
            path: path.clone(),
            detail: e.to_string(),
        };
        let tree = |name: &str| db.open_tree(name).map_err(io);
        let meta = tree("meta")?;
        let found = match meta.get("schema").map_err(io)? {
            None if existed => {
                return Err(corrupt(
                    "no schema entry: truncated, or not a switchyard data dir".into(),
                ))
            }
            None => None,
            Some(v) => Some(
                <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| corrupt("meta/schema is not a 4-byte version".into()))?,
            ),
        };
        match found {
            Some(SCHEMA_VERSION) => {}
            Some(SCHEMA_BEFORE_SEGMENTS) => {
                meta.insert("schema", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(io)?;
                tracing::info!(
                    from = SCHEMA_BEFORE_SEGMENTS,
                    to = SCHEMA_VERSION,
                    data_dir = %path,
                    "data dir opened as it is: schema 4 only adds segments"
                );
            }
            None => {
                meta.insert("schema", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(io)?;
            }
            Some(v @ (1 | 2)) => {
                legacy::migrate(&db, dir).map_err(|e| match e {
                    StoreError::Corrupt { .. } => e,
                    other => StoreError::Io {
                        path: path.clone(),
                        detail: format!("migrating schema {v} to {SCHEMA_VERSION}: {other}"),
                    },
                })?;
                tracing::info!(from = v, to = SCHEMA_VERSION, data_dir = %path, "migrated data dir");
            }
            Some(found) => {
                return Err(StoreError::Schema {
                    path,
                    found,
                    expected: SCHEMA_VERSION,
                })
            }
        }
        let store = Store {
            names_tree: tree("names")?,
            decisions: tree("decisions")?,
            arms: tree("arms")?,
            breakers: tree("breakers")?,
            ledgers: tree("ledgers")?,
            objectives: tree("objectives")?,
            spend: tree("spend")?,
            meta,
            names: Mutex::new(Names::default()),
            index: Mutex::new(HashMap::new()),
            log_count: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_lock: Mutex::new(()),
            digest: Mutex::new(manifest::Running::default()),
            skipped_arms: AtomicU64::new(0),
            written: Mutex::new(Written::default()),
            verifying: Mutex::new(deferred::Verifying::Done),
            scratch: Mutex::new(Scratch::default()),
            db,
            path: dir.to_path_buf(),
        };
        store.read_meta()?;
        let verified = store.verify_manifest(defer)?;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            deferred = verified.deferred,
            "start: data dir opened and checked"
        );
        Ok((store, verified))
    }

    /// Reads the name table and the manifest counters (counting the log once if they are absent).
    fn read_meta(&self) -> Result<(), StoreError> {
        let mut names = lock(&self.names);
        for kv in self.names_tree.iter() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let id = <[u8; 4]>::try_from(k.as_ref())
                .map(u32::from_be_bytes)
                .ok()
                .filter(|&i| i > 0)
                .ok_or_else(|| self.corrupt("names", &k, "key is not a 4-byte id"))?;
            let name = String::from_utf8(v.to_vec()).map_err(|e| self.corrupt("names", &k, e))?;
            names.insert_loaded(id, name);
        }
        let get = |k: &str| -> Result<Option<u64>, StoreError> {
            Ok(self
                .meta
                .get(k)
                .map_err(|e| self.io(e))?
                .and_then(|v| be_u64(&v)))
        };
        self.generation
            .store(get("generation")?.unwrap_or(0), Ordering::Relaxed);
        match (get("log_count")?, get("log_bytes")?) {
            (Some(c), Some(b)) => {
                self.log_count.store(c, Ordering::Relaxed);
                self.log_bytes.store(b, Ordering::Relaxed);
            }
            _ => {
                self.count_log()?;
            }
        }
        Ok(())
    }

    fn io(&self, e: sled::Error) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    fn corrupt(&self, tree: &str, key: &[u8], e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            file: self.path.join("db").display().to_string(),
            detail: format!("tree {tree}, key {}: {e}", show_key(key)),
        }
    }

    fn read_tree<T: serde::de::DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &str,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut out = Vec::new();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let t = serde_json::from_slice(&v).map_err(|e| self.corrupt(name, &k, e))?;
            out.push((k.to_vec(), t));
        }
        Ok(out)
    }

    /// Writes `changes` (encode, then insert).
    pub fn write(&self, changes: Changes) -> Result<(), StoreError> {
        let batch = self.prepare(&changes)?;
        self.commit(&batch)
    }

    /// Decodes a decision record and checks its name ids against `names` (the caller holds the
    /// name table's lock).
    fn decode(&self, k: &[u8], v: &[u8], names: &Names) -> Result<StoredDecision, StoreError> {
        let r = StoredDecision::decode(v).map_err(|e| self.corrupt("decisions", k, e))?;
        names
            .check(&r)
            .map_err(|e| self.corrupt("decisions", k, e))?;
        Ok(r)
    }

    /// Decodes what one key of the decisions tree holds (a decision, or a segment of several) and
    /// checks their name ids against `names` (the caller holds the name table's lock).
    fn decode_kv(
        &self,
        k: &[u8],
        v: &[u8],
        names: &Names,
    ) -> Result<Vec<(DecisionKey, StoredDecision)>, StoreError> {
        let all = segment::decode_all(k, v).map_err(|e| self.corrupt("decisions", k, e))?;
        for (_, r) in &all {
            names
                .check(r)
                .map_err(|e| self.corrupt("decisions", k, e))?;
        }
        Ok(all)
    }

    /// Encodes what changed into a batch of writes. Each decision touched is one record: new
    /// ones from their pending record, others read back and updated (outcome and quality folded
    /// in); removed pending decisions stay in the log (they leave the in-memory index only).
    /// Arms, breakers, ledgers and objectives equal to what was last written are left out. The
    /// old versions read here go with the batch, so that its commit need not read them again.
    pub fn prepare(&self, changes: &Changes) -> Result<Batch, StoreError> {
        let mut b = Batch {
            empty: changes.is_empty(),
            ..Batch::default()
        };
        let bad = |what: &str, id: &str, e: String| StoreError::Io {
            path: self.path.display().to_string(),
            detail: format!("refusing to persist {what} {id}: {e}"),
        };
        let encode_record = |key: &DecisionKey, r: &StoredDecision, buf: &mut Vec<u8>| {
            buf.clear();
            r.encode(buf)
                .map_err(|e| bad("decision", &show_key(key), e.to_string()))
        };
        // What the reads below find is what the commit replaces, unless another write (a trim)
        // reaches the store first: the commit then reads the old versions again.
        b.writes.read_at(self.write_seq_now());
        {
            let mut names = lock(&self.names);
            let mut index = lock(&self.index);
            let mut scratch = lock(&self.scratch);
            let need = changes.pending.len() + changes.events.len();
            scratch.ready_for(need);
            let Scratch {
                touched,
                order,
                segments,
                fresh,
            } = &mut *scratch;
            // `at`: where the log holds the record (`Some(None)`: its own key, `Some(Some(s))`:
            // segment `s`), `None` when the log does not know the decision.
            let fetch =
                |key: DecisionKey,
                 at: Option<Option<SegmentKey>>,
                 touched: &mut HashMap<DecisionKey, Touched, records::BuildNameHasher>,
                 segments: &mut HashMap<SegmentKey, SegmentTouched, records::BuildNameHasher>,
                 names: &Names|
                 -> Result<(), StoreError> {
                    if touched.contains_key(&key) {
                        return Ok(());
                    }
                    let absent = |old| Touched {
                        record: StoredDecision::default(),
                        old_size: 0,
                        old,
                        set_from: None,
                        segment: None,
                    };
                    let entry = match at {
                        // Not read (an id the log does not know).
                        None => absent(Old::Unknown),
                        Some(None) => match self.decisions.get(key).map_err(|e| self.io(e))? {
                            Some(v) => Touched {
                                record: self.decode(&key, &v, names)?,
                                old_size: key.len() + v.len(),
                                old: Old::Hash(manifest::hash_record(&key, &v)),
                                set_from: None,
                                segment: None,
                            },
                            None => absent(Old::Absent),
                        },
                        Some(Some(sk)) => {
                            let seg = match segments.entry(sk) {
                                Entry::Occupied(o) => o.into_mut(),
                                Entry::Vacant(slot) => {
                                    let Some(v) = self.decisions.get(sk).map_err(|e| self.io(e))?
                                    else {
                                        // Trimmed: the record is written again, as a new one.
                                        touched.insert(key, absent(Old::Absent));
                                        return Ok(());
                                    };
                                    let spans = segment::spans(&sk, &v)
                                        .map_err(|e| self.corrupt("decisions", &sk, e))?;
                                    slot.insert(SegmentTouched {
                                        old_size: sk.len() + v.len(),
                                        old: Old::Hash(manifest::hash_record(&sk, &v)),
                                        updated: vec![None; spans.len()],
                                        spans,
                                        value: v,
                                    })
                                }
                            };
                            let i =
                                seg.spans
                                    .binary_search_by_key(&key, |s| s.key)
                                    .map_err(|_| {
                                        let e = format!("does not hold {}", show_key(&key));
                                        self.corrupt("decisions", &sk, e)
                                    })?;
                            let bytes = seg
                                .spans
                                .get(i)
                                .and_then(|s| seg.value.get(s.record.clone()))
                                .unwrap_or_default();
                            Touched {
                                record: self.decode(&sk, bytes, names)?,
                                old_size: 0,
                                old: Old::Absent,
                                set_from: None,
                                segment: Some(sk),
                            }
                        }
                    };
                    touched.insert(key, entry);
                    Ok(())
                };
            let mut removed = Vec::new();
            // A decision's logged snapshot is older than its pending change of the same cycle
            // (a Feedback copies the shared record on write): the snapshot first, then the change.
            // A decision made this cycle is in both, as the same shared record: encoded once.
            let logged = changes.events.iter().filter_map(|l| match l {
                Logged::Decision(p) => Some((p, true)),
                Logged::Event(_) => None,
            });
            let pending = changes.pending.iter().filter_map(|(id, p)| match p {
                Some(p) => Some((p, false)),
                None => {
                    removed.push(id);
                    None
                }
            });
            for (p, made) in logged.chain(pending) {
                let created_ms = p.created_ms();
                let id_key = compact_record::key_bytes(p.key()).0;
                let mut key: DecisionKey = [0; 24];
                key[..8].copy_from_slice(&created_ms.to_be_bytes());
                key[8..].copy_from_slice(&id_key);
                let at = match index.get(&id_key) {
                    Some(loc) if loc.created_ms == created_ms => Some(loc.segment),
                    found => {
                        if found.is_some() {
                            // A logged decision's id on a new decision (ids drawn again from one
                            // seed, or a 1-in-2^128 repeat): a different decision, logged under
                            // its own key. The id names the new one from now on, as it does in
                            // the engine; the old record stays in the log as it was.
                            tracing::warn!(
                                decision_id = %p.id(),
                                "a new decision has the id of a logged one; both are kept, \
                                 Feedback for the id goes to the new one"
                            );
                        }
                        index.insert(
                            id_key,
                            Loc {
                                created_ms,
                                segment: None,
                            },
                        );
                        None
                    }
                };
                let known = at.is_some();
                fetch(key, at, touched, segments, &names)?;
                let Some(t) = touched.get_mut(&key) else {
                    continue;
                };
                if made && !known && t.old == Old::Unknown {
                    // Made by this process since the last cycle: its key was never written.
                    t.old = Old::Absent;
                }
                let from = Arc::as_ptr(p) as usize;
                if t.set_from == Some(from) {
                    continue;
                }
                t.record
                    .set_compact(p, &mut names)
                    .map_err(|e| bad("decision", &p.id(), e))?;
                t.set_from = Some(from);
            }
            for l in &changes.events {
                let Logged::Event(e) = l else { continue };
                let id = match e {
                    Event::Outcome(o) => &o.decision_id,
                    Event::Quality(q) => &q.decision_id,
                    Event::Decision(d) => &d.decision_id,
                };
                let Some(&loc) = index.get(&id_bytes(id).0) else {
                    tracing::debug!(decision_id = %id, "outcome of a decision not in the log");
                    continue;
                };
                let key = decision_key(loc.created_ms, id);
                fetch(key, Some(loc.segment), touched, segments, &names)?;
                let Some(t) = touched.get_mut(&key) else {
                    continue;
                };
                let r = &mut t.record;
                match e {
                    Event::Outcome(o) => r.set_outcome(o, &mut names),
                    Event::Quality(q) => r.set_quality(q, &mut names),
                    Event::Decision(d) => {
                        StoredDecision::from_record(d, &mut names).map(|n| *r = n)
                    }
                }
                .map_err(|e| bad("feedback of decision", id, e))?;
            }
            // Written in key order: a cycle's records sit together at the log's newest end, and
            // one after another they reach the same few leaves of sled's tree while those are hot.
            order.extend(touched.keys().copied());
            order.sort_unstable();
            let mut buf = Vec::new();
            for key in order.drain(..) {
                let Some(t) = touched.remove(&key) else {
                    continue;
                };
                if let Some(sk) = t.segment {
                    // Back into its segment, encoded below with the segment's other records.
                    let slot = segments.get_mut(&sk).and_then(|seg| {
                        let i = seg.spans.binary_search_by_key(&key, |s| s.key).ok()?;
                        seg.updated.get_mut(i)
                    });
                    if let Some(r) = slot {
                        *r = Some(t.record);
                    }
                    continue;
                }
                if t.old_size == 0 && t.old == Old::Absent {
                    // First written now: grouped into segments below.
                    fresh.push((key, t.record));
                    continue;
                }
                encode_record(&key, &t.record, &mut buf)?;
                let added = usize::from(t.old_size == 0);
                b.put_decision(&key, &buf, t.old_size, t.old, added);
            }
            for (sk, seg) in segments.drain() {
                buf.clear();
                for (s, new) in seg.spans.iter().zip(&seg.updated) {
                    match new {
                        Some(r) => segment::encode_entry(&s.key, r, &mut buf),
                        None => buf
                            .extend_from_slice(seg.value.get(s.entry.clone()).unwrap_or_default()),
                    }
                }
                b.put_decision(&sk, &buf, seg.old_size, seg.old, 0);
            }
            // The new decisions in segments of about equal size, at most `SEGMENT_MAX` each; a
            // lone decision keeps its own key.
            let parts = fresh.len().div_ceil(segment::SEGMENT_MAX);
            let mut rest = &fresh[..];
            for i in 0..parts {
                let (group, tail) = rest.split_at(rest.len().div_ceil(parts - i));
                rest = tail;
                let (Some((first, first_rec)), Some((last, _))) = (group.first(), group.last())
                else {
                    continue;
                };
                if group.len() == 1 {
                    encode_record(first, first_rec, &mut buf)?;
                    b.put_decision(first, &buf, 0, Old::Absent, 1);
                    continue;
                }
                let sk = segment::segment_key(first, key_ms(last), group.len());
                segment::encode(group.iter().map(|(k, r)| (k, r)), &mut buf);
                b.put_decision(&sk, &buf, 0, Old::Absent, group.len());
                for (k, _) in group {
                    if let Some(loc) = <[u8; 16]>::try_from(&k[8..])
                        .ok()
                        .and_then(|id| index.get_mut(&id))
                    {
                        loc.segment = Some(sk);
                    }
                }
            }
            for key in removed {
                index.remove(&compact_record::key_bytes(key).0);
            }
            for (id, name) in &names.fresh {
                b.writes
                    .insert(manifest::NAMES, &id.to_be_bytes(), name.as_bytes());
                b.names.insert(id.to_be_bytes().as_slice(), name.as_bytes());
            }
            b.fresh_names = names.fresh.len();
        }
        // Encoded before `written` changes: an error leaves it as it was (the change set is
        // encoded again by a later cycle).
        b.spend = self.encode_spend(&changes.spend)?;
        // Arms, breakers, ledgers and objectives: the change set holds every breaker and ledger
        // each cycle, most unchanged; only those that differ from what was last written are
        // encoded and written.
        let mut written = lock(&self.written);
        let mut arms = Vec::new();
        for (class, model, arm) in &changes.arms {
            let k = arm_key(class, model);
            let enc = |a: &crate::policy::Arm| Ok(arm_record::encode(a));
            self.small(
                &written.arms,
                manifest::ARMS,
                k,
                arm,
                &enc,
                &mut b,
                &mut arms,
            )?;
        }
        let mut breakers = Vec::new();
        for (model, br) in &changes.breakers {
            let k = model.as_bytes().to_vec();
            let enc = |v: &_| self.encode(v, model);
            self.small(
                &written.breakers,
                manifest::BREAKERS,
                k,
                br,
                &enc,
                &mut b,
                &mut breakers,
            )?;
        }
        let mut ledgers = Vec::new();
        for (key, l) in &changes.ledgers {
            let k = key.as_bytes().to_vec();
            let enc = |v: &_| self.encode(v, key);
            self.small(
                &written.ledgers,
                manifest::LEDGERS,
                k,
                l,
                &enc,
                &mut b,
                &mut ledgers,
            )?;
        }
        let mut objectives = Vec::new();
        for (class, t) in &changes.objectives {
            let k = class.as_bytes().to_vec();
            let enc = |v: &_| self.encode(v, class);
            self.small(
                &written.objectives,
                manifest::OBJECTIVES,
                k,
                t,
                &enc,
                &mut b,
                &mut objectives,
            )?;
        }
        written.arms.extend(arms);
        written.breakers.extend(breakers);
        written.ledgers.extend(ledgers);
        written.objectives.extend(objectives);
        Ok(b)
    }

    /// Adds the record `key` = `encode(v)` of tree `tree` to `b`, unless `v` equals what `last`
    /// says was written; `out` gets what to remember once the whole batch is encoded.
    #[allow(clippy::too_many_arguments)]
    fn small<T: PartialEq + Clone>(
        &self,
        last: &HashMap<Vec<u8>, (T, u64)>,
        tree: usize,
        key: Vec<u8>,
        v: &T,
        encode: &dyn Fn(&T) -> Result<Vec<u8>, StoreError>,
        b: &mut Batch,
        out: &mut Vec<(Vec<u8>, (T, u64))>,
    ) -> Result<(), StoreError> {
        let old = match last.get(&key) {
            Some((t, _)) if t == v => return Ok(()),
            Some((_, hash)) => Old::Hash(*hash),
            None => Old::Unknown,
        };
        let bytes = encode(v)?;
        let hash = b.writes.insert_over(tree, &key, &bytes, old);
        let part = match tree {
            manifest::ARMS => &mut b.arms,
            manifest::BREAKERS => &mut b.breakers,
            manifest::LEDGERS => &mut b.ledgers,
            _ => &mut b.objectives,
        };
        part.insert(key.as_slice(), bytes);
        out.push((key, (v.clone(), hash)));
        Ok(())
    }

    /// Applies a batch from [`Store::prepare`]; batches must be committed in the order they were
    /// prepared (a failed one is retried before later ones). Writes are applied in order (names
    /// before the records that use them, the manifest last), each on its own (see [`Part`]).
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut digest = lock(&self.digest);
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let delta = self.begin_write(generation, &batch.writes, &[])?;
        for (tree, part) in [
            (&self.names_tree, &batch.names),
            (&self.decisions, &batch.decisions),
            (&self.arms, &batch.arms),
            (&self.breakers, &batch.breakers),
            (&self.ledgers, &batch.ledgers),
            (&self.objectives, &batch.objectives),
            (&self.spend, &batch.spend),
        ] {
            part.apply(tree).map_err(|e| self.io(e))?;
        }
        // Atomic adds: trimming subtracts from the same counters on another thread.
        let count = apply_delta(&self.log_count, batch.count_delta);
        let bytes = apply_delta(&self.log_bytes, batch.bytes_delta);
        self.generation.store(generation, Ordering::Relaxed);
        self.write_manifest(generation, count, bytes)?;
        manifest::apply(&mut digest.0, &delta);
        drop(digest);
        let mut names = lock(&self.names);
        let n = batch.fresh_names.min(names.fresh.len());
        names.fresh.drain(..n);
        Ok(())
    }

    fn write_manifest(&self, generation: u64, count: u64, bytes: u64) -> Result<(), StoreError> {
        let mut m = Part::default();
        m.insert("generation", &generation.to_be_bytes());
        m.insert("log_count", &count.to_be_bytes());
        m.insert("log_bytes", &bytes.to_be_bytes());
        m.apply(&self.meta).map_err(|e| self.io(e))
    }

    /// JSON of a breaker, ledger or objective (named `name` in an error).
    fn encode<T: Serialize>(&self, v: &T, name: &str) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(v).map_err(|e| StoreError::Io {
            path: self.path.display().to_string(),
            detail: format!("cannot encode the record of {name}: {e}"),
        })
    }

    /// Reads back everything the engine needs to restart at `now_ms`: arms, breakers, ledgers and
    /// the pending decisions (the newest `max_pending` decisions not expired).
    pub fn load(&self, now_ms: u64, max_pending: usize) -> Result<Restored, StoreError> {
        let mut r = Restored::default();
        // A bad arm is skipped (re-learnable); any other bad record refuses the load.
        r.arms.extend(self.read_arms()?);
        for (k, b) in self.read_tree(&self.breakers, "breakers")? {
            r.breakers
                .insert(String::from_utf8_lossy(&k).into_owned(), b);
        }
        for (k, l) in self.read_tree(&self.ledgers, "ledgers")? {
            r.ledgers
                .insert(String::from_utf8_lossy(&k).into_owned(), l);
        }
        for (k, t) in self.read_tree(&self.objectives, "objectives")? {
            r.objectives
                .insert(String::from_utf8_lossy(&k).into_owned(), t);
        }
        r.spend = self.load_spend()?;
        let names = lock(&self.names);
        let mut index = lock(&self.index);
        index.clear();
        // Reserved once: growing the vector by doubling to 100 000 decisions copied each size
        // into fresh pages, which the kernel zeroes (docs/performance-history.md).
        let logged = usize::try_from(self.log_count.load(Ordering::Relaxed)).unwrap_or(usize::MAX);
        r.pending.reserve(max_pending.min(logged));
        'log: for kv in self.decisions.iter().rev() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let segment = SegmentKey::try_from(k.as_ref()).ok();
            for (key, rec) in self.decode_kv(&k, &v, &names)?.into_iter().rev() {
                if r.pending.len() >= max_pending {
                    break 'log;
                }
                if key_ms(&key).saturating_add(rec.ttl_ms) <= now_ms && rec.has_pending {
                    break 'log;
                }
                if let Some(p) = rec
                    .pending(&key, &names)
                    .map_err(|e| self.corrupt("decisions", &k, e))?
                {
                    // The key holds the id's 16 bytes after its creation time.
                    let id = <[u8; 16]>::try_from(&key[8..24])
                        .unwrap_or_else(|_| id_bytes(&p.decision.id).0);
                    // Read newest first: an older decision with a newer one's id (see
                    // `prepare`) is no longer pending under it.
                    let Entry::Vacant(slot) = index.entry(id) else {
                        continue;
                    };
                    slot.insert(Loc {
                        created_ms: p.decision.created_ms,
                        segment,
                    });
                    r.pending.push(p);
                }
            }
        }
        Ok(r)
    }

    /// Drops the oldest decisions beyond the log's bounds (age, count, bytes) in steps of at most
    /// [`TRIM_BATCH`], never a pending one; returns how many were dropped. Blocking: the server
    /// runs it off its async threads.
    pub fn trim_events(&self, now_ms: u64, bounds: &LogBounds) -> Result<u64, StoreError> {
        let mut dropped = 0;
        loop {
            let (n, keys) = self.trim_some(now_ms, bounds, TRIM_BATCH)?;
            dropped += n;
            if keys < TRIM_BATCH {
                return Ok(dropped);
            }
        }
    }

    /// One step of [`Store::trim_events`]: drops at most `max` of the oldest keys (decisions and
    /// segments) beyond the bounds, as one sled batch; returns the decisions and keys dropped.
    fn trim_some(
        &self,
        now_ms: u64,
        bounds: &LogBounds,
        max: usize,
    ) -> Result<(u64, usize), StoreError> {
        let cutoff = now_ms.saturating_sub(bounds.max_age_ms);
        // Under the digest's lock, which orders commits: what is read here is what is removed,
        // so each record is read and hashed once.
        let mut digest = lock(&self.digest);
        let mut count = self.log_count.load(Ordering::Relaxed);
        let mut bytes = self.log_bytes.load(Ordering::Relaxed);
        let mut batch = Part::default();
        let mut removed = Vec::new();
        let (mut dropped, mut freed) = (0u64, 0u64);
        for kv in self.decisions.iter() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            // A segment goes whole: over a bound when its newest decision is (or the log is),
            // kept while its newest decision may be pending.
            let n = segment::key_count(&k);
            let t = segment::key_last_ms(&k);
            let over = t < cutoff || count > bounds.max_count || bytes > bounds.max_bytes;
            let pending = count.saturating_sub(n) < bounds.keep_pending
                && t.saturating_add(bounds.pending_ttl_ms) > now_ms;
            if !over || pending || removed.len() >= max {
                break;
            }
            let size = (k.len() + v.len()) as u64;
            removed.push((k.to_vec(), manifest::hash_record(&k, &v)));
            batch.remove(k);
            count = count.saturating_sub(n);
            bytes = bytes.saturating_sub(size);
            dropped += n;
            freed += size;
        }
        if dropped == 0 {
            return Ok((0, 0));
        }
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let delta = self.begin_write(generation, &manifest::Writes::default(), &removed)?;
        batch.apply(&self.decisions).map_err(|e| self.io(e))?;
        // Atomic adds, as in `commit` (which this lock keeps out until the trim is applied).
        let count = apply_delta(&self.log_count, -(dropped as i64));
        let bytes = apply_delta(&self.log_bytes, -(freed as i64));
        // The manifest's counters follow the trim at once (a stop may come before the next write).
        self.generation.store(generation, Ordering::Relaxed);
        self.write_manifest(generation, count, bytes)?;
        manifest::apply(&mut digest.0, &delta);
        Ok((dropped, removed.len()))
    }

    /// Logged-traffic records of the decisions made in `[since_ms, until_ms)`, with the outcome
    /// and quality reported later (for the chosen model, else the first reported).
    pub fn export(&self, since_ms: u64, until_ms: u64) -> Result<Vec<DecisionRecord>, StoreError> {
        let mut out = Vec::new();
        // From the log's start: a segment that began before `since_ms` may hold later decisions
        // (the keys say when each segment ends, so the older ones are passed over unread).
        for kv in self.decisions.iter() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            if key_ms(&k) >= until_ms {
                break;
            }
            if segment::key_last_ms(&k) < since_ms {
                continue;
            }
            let names = lock(&self.names);
            for (key, rec) in self.decode_kv(&k, &v, &names)? {
                let ms = key_ms(&key);
                if ms < since_ms || ms >= until_ms {
                    continue;
                }
                let r = rec
                    .record(&key, &names)
                    .map_err(|e| self.corrupt("decisions", &k, e))?;
                out.push((key, r));
            }
        }
        // In key order, as a log of single records reads (segments may overlap in time).
        out.sort_unstable_by_key(|(k, _)| *k);
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }

    pub fn reset_arms(&self, class: &str, model: Option<&str>) -> Result<usize, StoreError> {
        let keys: Vec<sled::IVec> = match model {
            Some(m) => vec![arm_key(class, m).into()],
            None => {
                let mut prefix = class.as_bytes().to_vec();
                prefix.push(0);
                self.arms
                    .scan_prefix(prefix)
                    .keys()
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.io(e))?
            }
        };
        let mut n = 0;
        for k in keys {
            if self.arms.remove(k).map_err(|e| self.io(e))?.is_some() {
                n += 1;
            }
        }
        self.rescan()?;
        self.flush()?;
        Ok(n)
    }

    /// Counts of what the data dir holds (pending: decisions not expired at `now_ms`).
    pub fn summary(&self, now_ms: u64) -> Result<Summary, StoreError> {
        let first = self.decisions.first().map_err(|e| self.io(e))?;
        let last = self.decisions.last().map_err(|e| self.io(e))?;
        let mut pending = 0;
        let names = lock(&self.names);
        'log: for kv in self.decisions.iter().rev() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            for (key, rec) in self.decode_kv(&k, &v, &names)?.into_iter().rev() {
                if key_ms(&key).saturating_add(rec.ttl_ms) <= now_ms && rec.has_pending {
                    break 'log;
                }
                pending += usize::from(rec.has_pending);
            }
        }
        Ok(Summary {
            schema: SCHEMA_VERSION,
            arms: self.arms.len(),
            pending,
            breakers: self.breakers.len(),
            ledgers: self.ledgers.len(),
            decisions: self.log_count.load(Ordering::Relaxed),
            decision_bytes: self.log_bytes.load(Ordering::Relaxed),
            first_event_ms: first.map(|(k, _)| key_ms(&k)),
            last_event_ms: last.map(|(k, _)| segment::key_last_ms(&k)),
        })
    }

    /// The write sequence now, read under the digest's lock (so never halfway through a write).
    fn write_seq_now(&self) -> u64 {
        let _writes = lock(&self.digest);
        self.write_seq()
    }

    /// The process's write sequence ([`WRITE_SEQ`]).
    pub(super) fn write_seq(&self) -> u64 {
        WRITE_SEQ.load(Ordering::SeqCst)
    }

    /// Counts a write (the caller holds the digest's lock).
    pub(super) fn bump_write_seq(&self) {
        WRITE_SEQ.fetch_add(1, Ordering::SeqCst);
    }

    /// Flushes all writes so far to disk (blocking).
    pub fn flush(&self) -> Result<(), StoreError> {
        let _one = lock(&self.flush_lock);
        let checkpoint = self.checkpoint()?;
        self.db.flush().map_err(|e| self.io(e))?;
        self.flushed(checkpoint)
    }
}

/// Adds `delta` to `counter` atomically (saturating at 0); returns the new value.
fn apply_delta(counter: &AtomicU64, delta: i64) -> u64 {
    let step = |v: u64| {
        Some(if delta >= 0 {
            v.saturating_add(delta as u64)
        } else {
            v.saturating_sub(delta.unsigned_abs())
        })
    };
    let old = counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step)
        .unwrap_or_else(|v| v);
    step(old).unwrap_or(old)
}

#[cfg(test)]
mod tests;
