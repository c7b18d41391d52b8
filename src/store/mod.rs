//! sled persistence of engine state and the decision log.
//!
//! Trees (schema 3): `meta` (key `schema`: big-endian u32 [`SCHEMA_VERSION`]; `generation`, and
//! the decision log's `log_count` / `log_bytes`, big-endian u64, rewritten by every write),
//! `names` (the name table: big-endian u32 id -> name), `decisions` (key: big-endian creation ms +
//! 16-byte id, see [`records`]; value: one prost [`records::StoredDecision`] per decision, which
//! Feedback rewrites), `arms` (key `class\0model`), `breakers` (key model), `ledgers` (key budget
//! key), `objectives` (key task class: its `min_cost` states by target); the last four are few,
//! small and JSON. The engine never sees sled: the server hands this
//! module the engine's [`Changes`] after each call.
//!
//! The decision log is also where pending decisions live: a restart reads the newest decisions
//! back (newest first, until one has expired or `limits.max_pending` are found), so a decision is
//! written once when made and once per Feedback, never as a pending record plus events.

mod backup;
mod legacy;
pub mod manifest;
pub mod records;
mod recover;
mod spend;

pub use backup::Copied;
pub use manifest::{Verified, MANIFEST_FILE};
pub use recover::StoreSlot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prost::Message;
use serde::Serialize;

use crate::engine::{Changes, Logged, Restored};
use crate::record::{DecisionRecord, Event};
use records::{decision_key, id_bytes, key_ms, show_key, DecisionKey, Names, StoredDecision};

/// Version of the on-disk layout. 1 and 2 (JSON pending records and a JSON event log) are
/// migrated at open; another version is refused.
pub const SCHEMA_VERSION: u32 = 3;

/// sled's page cache when `storage.cache_mb` is not set. sled counts its cache in on-disk bytes,
/// and its in-memory pages take several times that, so its 1 GiB default allows the cache to grow
/// past the whole decision log (about 115 MB at a million decisions). What the cache serves is
/// small: Feedback reads back the records of pending decisions, the newest ones (100 000 x ~115
/// bytes = 11.5 MB), and trimming reads the oldest once. 16 MiB holds that working set. The
/// resident-memory growth the soak measures is not this cache: it grew alike with 16 MiB and
/// 1 GiB (README, Performance).
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

/// Encoded writes, one sled batch per tree, from [`Store::prepare`]. Cloneable so that a failed
/// commit can be retried as it was.
#[derive(Default, Clone)]
pub struct Batch {
    names: sled::Batch,
    fresh_names: usize,
    decisions: sled::Batch,
    arms: sled::Batch,
    breakers: sled::Batch,
    ledgers: sled::Batch,
    objectives: sled::Batch,
    spend: sled::Batch,
    /// Changes of the decision log's count and bytes.
    count_delta: i64,
    bytes_delta: i64,
    empty: bool,
    /// What the batch writes, for the manifest's digest.
    writes: manifest::Writes,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.empty
    }
}

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
    /// Creation time of each pending decision by id (locates its record for Feedback).
    index: Mutex<HashMap<[u8; 16], u64>>,
    log_count: AtomicU64,
    log_bytes: AtomicU64,
    generation: AtomicU64,
    /// The digest of what is written, for the manifest; its lock orders commits and trims.
    digest: Mutex<manifest::Running>,
    /// Bad arm records skipped by loads (see [`backup`]).
    skipped_arms: AtomicU64,
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
        Store::open_verified(dir, cache_mb).map(|(store, _)| store)
    }

    /// [`Store::open_with`], also returning what the full verification against the manifest found.
    fn open_verified(dir: &Path, cache_mb: u64) -> Result<(Store, Verified), StoreError> {
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
            digest: Mutex::new(manifest::Running::default()),
            skipped_arms: AtomicU64::new(0),
            db,
            path: dir.to_path_buf(),
        };
        store.read_meta()?;
        let verified = store.verify_manifest()?;
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

    /// Encodes what changed into a batch of writes. Each decision touched is one record: new
    /// ones from their pending record, others read back and updated (outcome and quality folded
    /// in); removed pending decisions stay in the log (they leave the in-memory index only).
    pub fn prepare(&self, changes: &Changes) -> Result<Batch, StoreError> {
        let mut b = Batch {
            empty: changes.is_empty(),
            ..Batch::default()
        };
        let bad = |what: &str, id: &str, e: String| StoreError::Io {
            path: self.path.display().to_string(),
            detail: format!("refusing to persist {what} {id}: {e}"),
        };
        {
            let mut names = lock(&self.names);
            let mut index = lock(&self.index);
            // Records touched this cycle, by key, with their old encoded size (0 when new).
            let mut touched: HashMap<DecisionKey, (StoredDecision, usize)> = HashMap::new();
            let mut removed = Vec::new();
            let fetch = |key: DecisionKey,
                         touched: &mut HashMap<DecisionKey, (StoredDecision, usize)>,
                         known: bool,
                         names: &Names|
             -> Result<(), StoreError> {
                if touched.contains_key(&key) {
                    return Ok(());
                }
                let old = if known {
                    self.decisions.get(key).map_err(|e| self.io(e))?
                } else {
                    None
                };
                let entry = match old {
                    Some(v) => (self.decode(&key, &v, names)?, key.len() + v.len()),
                    None => (StoredDecision::default(), 0),
                };
                touched.insert(key, entry);
                Ok(())
            };
            let pending = changes.pending.iter().filter_map(|(id, p)| match p {
                Some(p) => Some(p.expand()),
                None => {
                    removed.push(id.clone());
                    None
                }
            });
            let logged = changes.events.iter().filter_map(|l| match l {
                Logged::Decision(p) => Some(p.expand()),
                Logged::Event(_) => None,
            });
            // A decision's logged snapshot is older than its pending change of the same cycle
            // (a Feedback copies the shared record on write): the snapshot first, then the change.
            for p in logged.chain(pending).collect::<Vec<_>>() {
                let d = &p.decision;
                let key = decision_key(d.created_ms, &d.id);
                let known = index.insert(id_bytes(&d.id).0, d.created_ms).is_some();
                fetch(key, &mut touched, known, &names)?;
                if let Some((r, _)) = touched.get_mut(&key) {
                    r.set_pending(&p, &mut names)
                        .map_err(|e| bad("decision", &d.id, e))?;
                }
            }
            for l in &changes.events {
                let Logged::Event(e) = l else { continue };
                let id = match e {
                    Event::Outcome(o) => &o.decision_id,
                    Event::Quality(q) => &q.decision_id,
                    Event::Decision(d) => &d.decision_id,
                };
                let Some(&created) = index.get(&id_bytes(id).0) else {
                    tracing::debug!(decision_id = %id, "outcome of a decision not in the log");
                    continue;
                };
                let key = decision_key(created, id);
                fetch(key, &mut touched, true, &names)?;
                let Some((r, _)) = touched.get_mut(&key) else {
                    continue;
                };
                match e {
                    Event::Outcome(o) => r.set_outcome(o, &mut names),
                    Event::Quality(q) => r.set_quality(q, &mut names),
                    Event::Decision(d) => {
                        StoredDecision::from_record(d, &mut names).map(|n| *r = n)
                    }
                }
                .map_err(|e| bad("feedback of decision", id, e))?;
            }
            for id in removed {
                index.remove(&id_bytes(&id).0);
            }
            for (key, (r, old)) in touched {
                let v = r.encode_to_vec();
                b.bytes_delta += (key.len() + v.len()) as i64 - old as i64;
                if old == 0 {
                    b.count_delta += 1;
                }
                b.writes.insert(manifest::DECISIONS, &key, &v);
                b.decisions.insert(key.as_slice(), v);
            }
            for (id, name) in &names.fresh {
                b.writes
                    .insert(manifest::NAMES, &id.to_be_bytes(), name.as_bytes());
                b.names.insert(id.to_be_bytes().as_slice(), name.as_bytes());
            }
            b.fresh_names = names.fresh.len();
        }
        for (class, model, arm) in &changes.arms {
            let (k, v) = (arm_key(class, model), self.encode(arm, "arm", model)?);
            b.writes.insert(manifest::ARMS, &k, &v);
            b.arms.insert(k, v);
        }
        for (model, br) in &changes.breakers {
            let v = self.encode(br, "breaker", model)?;
            b.writes.insert(manifest::BREAKERS, model.as_bytes(), &v);
            b.breakers.insert(model.as_bytes(), v);
        }
        for (key, l) in &changes.ledgers {
            let v = self.encode(l, "budget ledger", key)?;
            b.writes.insert(manifest::LEDGERS, key.as_bytes(), &v);
            b.ledgers.insert(key.as_bytes(), v);
        }
        for (class, t) in &changes.objectives {
            let v = self.encode(t, "objective", class)?;
            b.writes.insert(manifest::OBJECTIVES, class.as_bytes(), &v);
            b.objectives.insert(class.as_bytes(), v);
        }
        b.spend = self.encode_spend(&changes.spend)?;
        Ok(b)
    }

    /// Applies a batch from [`Store::prepare`]; batches must be committed in the order they were
    /// prepared (a failed one is retried before later ones). Each tree's part is applied
    /// atomically; names before the records that use them, the manifest last.
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
            tree.apply_batch(part.clone()).map_err(|e| self.io(e))?;
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
        let mut m = sled::Batch::default();
        m.insert("generation", &generation.to_be_bytes());
        m.insert("log_count", &count.to_be_bytes());
        m.insert("log_bytes", &bytes.to_be_bytes());
        self.meta.apply_batch(m).map_err(|e| self.io(e))
    }

    /// JSON of an arm, breaker or ledger.
    fn encode<T: Serialize>(&self, v: &T, what: &str, name: &str) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(v).map_err(|e| StoreError::Io {
            path: self.path.display().to_string(),
            detail: format!("cannot encode {what} {name}: {e}"),
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
        for kv in self.decisions.iter().rev() {
            if r.pending.len() >= max_pending {
                break;
            }
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let rec = self.decode(&k, &v, &names)?;
            if key_ms(&k).saturating_add(rec.ttl_ms) <= now_ms && rec.has_pending {
                break;
            }
            if let Some(p) = rec
                .pending(&k, &names)
                .map_err(|e| self.corrupt("decisions", &k, e))?
            {
                index.insert(id_bytes(&p.decision.id).0, p.decision.created_ms);
                r.pending.push(p);
            }
        }
        Ok(r)
    }

    /// Drops the oldest decisions beyond the log's bounds (age, count, bytes) in one batch, never
    /// a pending one; returns how many were dropped. Blocking: the server runs it off its async
    /// threads.
    pub fn trim_events(&self, now_ms: u64, bounds: &LogBounds) -> Result<u64, StoreError> {
        let cutoff = now_ms.saturating_sub(bounds.max_age_ms);
        let mut count = self.log_count.load(Ordering::Relaxed);
        let mut bytes = self.log_bytes.load(Ordering::Relaxed);
        let mut batch = sled::Batch::default();
        let mut removed = Vec::new();
        let (mut dropped, mut freed) = (0u64, 0u64);
        for kv in self.decisions.iter() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let t = key_ms(&k);
            let over = t < cutoff || count > bounds.max_count || bytes > bounds.max_bytes;
            let pending =
                count <= bounds.keep_pending && t.saturating_add(bounds.pending_ttl_ms) > now_ms;
            if !over || pending {
                break;
            }
            let size = (k.len() + v.len()) as u64;
            removed.push(k.to_vec());
            batch.remove(k);
            count -= 1;
            bytes = bytes.saturating_sub(size);
            dropped += 1;
            freed += size;
        }
        if dropped == 0 {
            return Ok(0);
        }
        let mut digest = lock(&self.digest);
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let delta = self.begin_write(generation, &manifest::Writes::default(), &removed)?;
        self.decisions.apply_batch(batch).map_err(|e| self.io(e))?;
        // The writer may have added records meanwhile: subtract rather than store.
        let count = apply_delta(&self.log_count, -(dropped as i64));
        let bytes = apply_delta(&self.log_bytes, -(freed as i64));
        // The manifest's counters follow the trim at once (a stop may come before the next write).
        self.generation.store(generation, Ordering::Relaxed);
        self.write_manifest(generation, count, bytes)?;
        manifest::apply(&mut digest.0, &delta);
        Ok(dropped)
    }

    /// Logged-traffic records of the decisions made in `[since_ms, until_ms)`, with the outcome
    /// and quality reported later (for the chosen model, else the first reported).
    pub fn export(&self, since_ms: u64, until_ms: u64) -> Result<Vec<DecisionRecord>, StoreError> {
        let mut out = Vec::new();
        let lo = decision_key(since_ms, "");
        let mut lo_key = lo;
        lo_key[8..].fill(0);
        for kv in self.decisions.range(lo_key.as_slice()..) {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            if key_ms(&k) >= until_ms {
                break;
            }
            let names = lock(&self.names);
            let rec = self.decode(&k, &v, &names)?;
            out.push(
                rec.record(&k, &names)
                    .map_err(|e| self.corrupt("decisions", &k, e))?,
            );
        }
        Ok(out)
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
        for kv in self.decisions.iter().rev() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let rec = self.decode(&k, &v, &names)?;
            if key_ms(&k).saturating_add(rec.ttl_ms) <= now_ms && rec.has_pending {
                break;
            }
            pending += usize::from(rec.has_pending);
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
            last_event_ms: last.map(|(k, _)| key_ms(&k)),
        })
    }

    /// Flushes all writes so far to disk (blocking).
    pub fn flush(&self) -> Result<(), StoreError> {
        let snapshot = self.manifest_snapshot();
        self.db.flush().map_err(|e| self.io(e))?;
        self.flushed(snapshot)
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
