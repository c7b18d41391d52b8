//! sled persistence of engine state and the event log.
//!
//! Trees: `meta` (key `schema`: big-endian u32 [`SCHEMA_VERSION`]), `arms` (key
//! `class\0model`), `pending` (key decision id), `breakers` (key model), `ledgers` (key budget
//! key), `objectives` (key task class: its `min_cost` states by target), `events` (key
//! big-endian Unix ms + big-endian sequence). Values are serde_json. The engine never sees sled:
//! the server hands this module the engine's [`Changes`] after each call.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::engine::{Changes, Logged, PendingDecision, Restored};
use crate::record::{DecisionRecord, Event};

/// Version of the on-disk layout; a data dir with another version is refused at open.
pub const SCHEMA_VERSION: u32 = 2;

/// Errors opening, reading or writing a data dir; each names the data dir.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "data dir {0} is in use by another switchyard process (its lock is held); stop that \
         process or use another --data-dir"
    )]
    Locked(String),
    #[error("data dir {path} is corrupt: file {file}: {detail}")]
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
    pub events: usize,
    pub first_event_ms: Option<u64>,
    pub last_event_ms: Option<u64>,
}

/// Encoded writes, one sled batch per tree, from [`Store::prepare`].
#[derive(Default)]
pub struct Batch {
    arms: sled::Batch,
    pending: sled::Batch,
    breakers: sled::Batch,
    ledgers: sled::Batch,
    objectives: sled::Batch,
    events: sled::Batch,
    event_count: u64,
}

/// An open data dir.
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    arms: sled::Tree,
    pending: sled::Tree,
    breakers: sled::Tree,
    ledgers: sled::Tree,
    /// The `min_cost` objective states per task class (key class).
    objectives: sled::Tree,
    events: sled::Tree,
    seq: AtomicU64,
    event_count: AtomicU64,
}

fn arm_key(class: &str, model: &str) -> Vec<u8> {
    let mut k = class.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(model.as_bytes());
    k
}

fn event_key(t_ms: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&t_ms.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn key_ms(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if k.len() >= 8 {
        b.copy_from_slice(&k[..8]);
    }
    u64::from_be_bytes(b)
}

impl Store {
    /// Opens (creating if absent) the data dir `dir` and checks its schema version.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.display().to_string();
        // The server's writer flushes on its own schedule (`storage.flush_interval_ms`), so sled's
        // background flusher is off. sled's page cache stays at its default: a small one was
        // measured to raise resident memory (paged-out pages cost more than cached ones).
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .open()
            .map_err(|e| {
                let text = e.to_string();
                match e {
                    _ if text.contains("could not acquire lock") || text.contains("WouldBlock") => {
                        StoreError::Locked(path.clone())
                    }
                    sled::Error::Corruption { .. } => StoreError::Corrupt {
                        path: path.clone(),
                        file: dir.join("db").display().to_string(),
                        detail: text,
                    },
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
        match meta.get("schema").map_err(io)? {
            None => {
                meta.insert("schema", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(io)?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        path: path.clone(),
                        file: dir.join("db").display().to_string(),
                        detail: "meta/schema is not a 4-byte version".into(),
                    })?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        path,
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
        }
        let events = tree("events")?;
        let seq = events
            .last()
            .map_err(io)?
            .map(|(k, _)| {
                let mut b = [0u8; 8];
                if k.len() == 16 {
                    b.copy_from_slice(&k[8..]);
                }
                u64::from_be_bytes(b) + 1
            })
            .unwrap_or(0);
        let event_count = events.len() as u64;
        Ok(Store {
            arms: tree("arms")?,
            pending: tree("pending")?,
            breakers: tree("breakers")?,
            ledgers: tree("ledgers")?,
            objectives: tree("objectives")?,
            events,
            seq: AtomicU64::new(seq),
            event_count: AtomicU64::new(event_count),
            db,
            path: dir.to_path_buf(),
        })
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
            detail: format!("tree {tree}, key {:?}: {e}", String::from_utf8_lossy(key)),
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
        let batch = self.prepare(changes)?;
        self.commit(batch)
    }

    /// Encodes what changed into a batch of writes (decision events are built from their shared
    /// pending records here, off the engine lock).
    pub fn prepare(&self, changes: Changes) -> Result<Batch, StoreError> {
        let mut b = Batch::default();
        for (class, model, arm) in &changes.arms {
            b.arms.insert(arm_key(class, model), self.encode(arm)?);
        }
        for (id, p) in &changes.pending {
            match p {
                Some(p) => b.pending.insert(id.as_bytes(), self.encode(&**p)?),
                None => b.pending.remove(id.as_bytes()),
            }
        }
        for (model, br) in &changes.breakers {
            b.breakers.insert(model.as_bytes(), self.encode(br)?);
        }
        for (key, l) in &changes.ledgers {
            b.ledgers.insert(key.as_bytes(), self.encode(l)?);
        }
        for (class, t) in &changes.objectives {
            b.objectives.insert(class.as_bytes(), self.encode(t)?);
        }
        for ev in changes.events.into_iter().map(Logged::into_event) {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            b.events
                .insert(event_key(ev.t_ms(), seq).as_slice(), self.encode(&ev)?);
            b.event_count += 1;
        }
        Ok(b)
    }

    /// Applies a batch from [`Store::prepare`]; batches must be committed in the order they were
    /// prepared. Each tree's part is applied atomically.
    pub fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let Batch {
            arms,
            pending,
            breakers,
            ledgers,
            objectives,
            events,
            event_count,
        } = batch;
        for (tree, part) in [
            (&self.arms, arms),
            (&self.pending, pending),
            (&self.breakers, breakers),
            (&self.ledgers, ledgers),
            (&self.objectives, objectives),
            (&self.events, events),
        ] {
            tree.apply_batch(part).map_err(|e| self.io(e))?;
        }
        self.event_count.fetch_add(event_count, Ordering::Relaxed);
        Ok(())
    }

    fn encode<T: Serialize>(&self, v: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(v).map_err(|e| StoreError::Io {
            path: self.path.display().to_string(),
            detail: format!("cannot encode: {e}"),
        })
    }

    /// Reads back everything the engine needs to restart.
    pub fn load(&self) -> Result<Restored, StoreError> {
        let mut r = Restored::default();
        for (k, arm) in self.read_tree(&self.arms, "arms")? {
            let mut parts = k.splitn(2, |b| *b == 0);
            let class = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let model = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            r.arms.insert((class, model), arm);
        }
        r.pending = self
            .read_tree::<PendingDecision>(&self.pending, "pending")?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
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
        Ok(r)
    }

    /// Drops events older than `max_age_ms` before `now_ms`, then the oldest beyond `max_events`;
    /// returns how many were dropped.
    pub fn trim_events(
        &self,
        now_ms: u64,
        max_age_ms: u64,
        max_events: u64,
    ) -> Result<u64, StoreError> {
        let cutoff = now_ms.saturating_sub(max_age_ms);
        let mut dropped = 0;
        loop {
            let Some((k, _)) = self.events.first().map_err(|e| self.io(e))? else {
                break;
            };
            let count = self.event_count.load(Ordering::Relaxed);
            if key_ms(&k) >= cutoff && count <= max_events {
                break;
            }
            self.events.remove(&k).map_err(|e| self.io(e))?;
            self.event_count.fetch_sub(1, Ordering::Relaxed);
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Events with `since_ms <= t < until_ms`, in time order.
    pub fn events(&self, since_ms: u64, until_ms: u64) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .events
            .range(event_key(since_ms, 0)..event_key(until_ms, 0))
        {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            out.push(serde_json::from_slice(&v).map_err(|e| self.corrupt("events", &k, e))?);
        }
        Ok(out)
    }

    /// Logged-traffic records of the decisions made in `[since_ms, until_ms)`, with the outcome
    /// and quality reported later (for the chosen model, else the first reported).
    pub fn export(&self, since_ms: u64, until_ms: u64) -> Result<Vec<DecisionRecord>, StoreError> {
        Ok(crate::record::fold(
            self.events(since_ms, u64::MAX)?,
            until_ms,
        ))
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
        self.flush()?;
        Ok(n)
    }

    /// Counts of what the data dir holds.
    pub fn summary(&self) -> Result<Summary, StoreError> {
        let first = self.events.first().map_err(|e| self.io(e))?;
        let last = self.events.last().map_err(|e| self.io(e))?;
        Ok(Summary {
            schema: SCHEMA_VERSION,
            arms: self.arms.len(),
            pending: self.pending.len(),
            breakers: self.breakers.len(),
            ledgers: self.ledgers.len(),
            events: self.events.len(),
            first_event_ms: first.map(|(k, _)| key_ms(&k)),
            last_event_ms: last.map(|(k, _)| key_ms(&k)),
        })
    }

    /// Flushes all writes so far to disk (blocking).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::{Engine, FeedbackInput, Reason, RouteInput};
    use crate::policy::Outcome;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// Reopens after a drop: sled's flusher thread lets go of the lock shortly after.
    fn reopen(dir: &Path) -> Store {
        for _ in 0..200 {
            match Store::open(dir) {
                Err(StoreError::Locked(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                other => return other.unwrap(),
            }
        }
        panic!("{} stayed locked", dir.display());
    }

    fn state(e: &Engine) -> serde_json::Value {
        let mut arms = Vec::new();
        for class in e.config().task_classes.keys() {
            for (m, a) in e.class_arms(class) {
                arms.push((
                    class.clone(),
                    m.to_string(),
                    serde_json::to_value(a).unwrap(),
                ));
            }
        }
        let mut pending: Vec<_> = e.pending_decisions().cloned().collect();
        pending.sort_by(|a, b| a.decision.id.cmp(&b.decision.id));
        serde_json::json!({
            "arms": arms,
            "pending": serde_json::to_value(pending).unwrap(),
            "breakers": serde_json::to_value(e.breakers()).unwrap(),
            "ledgers": serde_json::to_value(e.ledgers()).unwrap(),
        })
    }

    /// Model-based test: random Route / Feedback / Expire / Reset / Restart, applied to an engine
    /// persisted through the store and to an in-memory reference engine that never restarts.
    /// After each Restart the restored engine must equal the reference exactly.
    #[test]
    fn restored_engine_matches_an_engine_that_never_restarted() {
        for seed in 0..3u64 {
            let dir = tempfile::tempdir().unwrap();
            let config = Config::builtin().unwrap();
            let classes: Vec<String> = config.task_classes.keys().cloned().collect();
            let mut now = 1_700_000_000_000u64;
            let mut reference = Engine::new(config.clone(), now);
            let mut real = Engine::new(config.clone(), now);
            let mut store = Store::open(dir.path()).unwrap();
            // Persist the initial state (breakers, ledgers) like the server does.
            store.write(real.take_changes()).unwrap();
            let mut ops = SmallRng::seed_from_u64(seed);
            let mut rng_ref = SmallRng::seed_from_u64(seed + 100);
            let mut rng_real = rng_ref.clone();
            let mut ids: Vec<String> = Vec::new();
            for step in 0..300 {
                now += ops.random_range(0..5_000);
                match ops.random_range(0..10) {
                    0..=4 => {
                        let input = RouteInput {
                            task_class: classes[ops.random_range(0..classes.len())].clone(),
                            ..Default::default()
                        };
                        let a = reference.route(&input, now, &mut rng_ref).map(|d| d.id);
                        let b = real.route(&input, now, &mut rng_real).map(|d| d.id);
                        assert_eq!(a, b, "seed {seed} step {step}");
                        if let Ok(id) = a {
                            ids.push(id);
                        }
                    }
                    5..=7 if !ids.is_empty() => {
                        let id = ids[ops.random_range(0..ids.len())].clone();
                        let input = FeedbackInput {
                            decision_id: id,
                            outcome: Some(if ops.random_bool(0.8) {
                                Outcome::Success
                            } else {
                                Outcome::Error
                            }),
                            latency_ms: Some(ops.random_range(100.0..2000.0)),
                            quality: Some(ops.random_range(0.0..1.0)),
                            ..Default::default()
                        };
                        let a = reference.feedback(&input, now).map(|r| r.duplicate);
                        let b = real.feedback(&input, now).map(|r| r.duplicate);
                        assert_eq!(a.is_ok(), b.is_ok(), "seed {seed} step {step}");
                    }
                    8 => {
                        now += 600_000;
                        reference.expire(now);
                        real.expire(now);
                    }
                    _ => {
                        drop(store);
                        store = reopen(dir.path());
                        let (restored, warnings) =
                            Engine::restore(config.clone(), store.load().unwrap(), now);
                        assert!(warnings.is_empty(), "{warnings:?}");
                        real = restored;
                        // Thompson's draw pools are derived state, redrawn after a restart: the
                        // reference drops its own at the same moment so both draw alike.
                        reference.drop_draw_pools();
                        reference.expire(now);
                        reference.discard_changes();
                        assert_eq!(state(&real), state(&reference), "seed {seed} step {step}");
                    }
                }
                store.write(real.take_changes()).unwrap();
            }
        }
    }

    #[test]
    fn a_newer_schema_is_refused_with_found_and_expected() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let meta = store.db.open_tree("meta").unwrap();
            meta.insert("schema", &7u32.to_be_bytes()).unwrap();
            store.flush().unwrap();
        }
        let mut err = String::new();
        for _ in 0..200 {
            match Store::open(dir.path()) {
                Err(StoreError::Locked(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => {
                    err = e.to_string();
                    break;
                }
                Ok(_) => panic!("schema 7 accepted"),
            }
        }
        assert!(err.contains("schema version 7"), "{err}");
        assert!(err.contains(&format!("expects {SCHEMA_VERSION}")), "{err}");
    }

    #[test]
    fn events_are_trimmed_by_age_and_count_and_exported_in_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut engine = Engine::new(Config::builtin().unwrap(), 0);
        let mut changes = engine.take_changes();
        changes.events = (0..100u64)
            .map(|i| {
                let line = serde_json::json!({
                    "decision_id": format!("d{i}"), "t_ms": 1_000 * i, "task_class": "qa",
                    "policy": "thompson", "eligible": ["m"], "model": "m", "propensity": 1.0,
                    "reason": Reason::Sampled, "outcome": null, "latency_ms": null,
                    "cost_usd": null, "quality": null,
                });
                Logged::Event(Event::Decision(serde_json::from_value(line).unwrap()))
            })
            .collect();
        store.write(changes).unwrap();
        assert_eq!(store.export(10_000, 20_000).unwrap().len(), 10);
        // Age: older than 50 s before t = 99 s goes.
        assert_eq!(store.trim_events(99_000, 50_000, 1_000).unwrap(), 49);
        // Count: keep the newest 20.
        assert_eq!(store.trim_events(99_000, 50_000, 20).unwrap(), 31);
        let s = store.summary().unwrap();
        assert_eq!((s.events, s.first_event_ms), (20, Some(80_000)));
    }
}
