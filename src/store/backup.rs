//! Backups, restores and repairs of a data dir, and the one lenient read at start (arms).
//!
//! A backup is a new data dir: every record of every tree copied from the open store while the
//! digest's lock is held, so no commit or trim runs during the copy (Route keeps deciding from
//! memory; the writer waits), and the copy gets its own manifest. The running server makes one
//! through the admin RPC `Backup` (`switchyard state backup --to DIR --addr ...`); the copy is of
//! what was committed, flushed or not. `state restore --from DIR --data-dir D` verifies the backup
//! against its manifest and copies it the same way into a new data dir.
//!
//! Bad records: arms are learned and re-learnable, so at start a bad arm record (one that does not
//! decode, e.g. a non-finite value stored as JSON `null` by an older build) is skipped, logged
//! naming it, and counted ([`Store::skipped_arms`], exported as a metric); the arm restarts at its
//! priors. A bad ledger, breaker, objective or decision (pending decisions and reservations live in
//! decisions and ledgers: money and acknowledgements) refuses start naming the record, until
//! `switchyard state repair` drops it and reports what it dropped.
//!
//! Restart: nothing here is kept in memory beyond the count of skipped arms of this start.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::manifest::{self, TREES};
use super::{lock, show_key, Store, StoreError};
use crate::breaker::Breaker;
use crate::budget::Ledger;
use crate::engine::Targets;
use crate::policy::Arm;

/// (task class, model).
type ArmKey = (String, String);

/// (task class, model) of an arm key `class\0model`.
fn arm_key_parts(k: &[u8]) -> (String, String) {
    let mut parts = k.splitn(2, |b| *b == 0);
    let class = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let model = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    (class, model)
}

/// What a backup or restore copied.
#[derive(Debug, Clone, PartialEq)]
pub struct Copied {
    pub generation: u64,
    pub records: u64,
}

impl Store {
    /// Writes a consistent copy of this store to `dir`, which must not exist or be empty.
    pub fn backup_to(&self, dir: &Path) -> Result<Copied, StoreError> {
        let refuse = |detail: String| StoreError::Io {
            path: dir.display().to_string(),
            detail,
        };
        if let Ok(mut entries) = std::fs::read_dir(dir) {
            if entries.next().is_some() {
                return Err(refuse(
                    "the backup target exists and is not empty; give a new directory".into(),
                ));
            }
        }
        // A copy is of a verified db: the decision log's check after start is finished first
        // (a failed one refuses the backup).
        self.verify_all()?;
        // No commit or trim while copying (both take this lock).
        let _writes = lock(&self.digest);
        let copy = Store::open_with(dir, 16)?;
        let mut records = 0u64;
        for i in 0..TREES.len() {
            let mut batch = sled::Batch::default();
            for kv in self.tree_by_index(i).iter() {
                let (k, v) = kv.map_err(|e| self.io(e))?;
                batch.insert(k, v);
                records += 1;
            }
            copy.tree_by_index(i)
                .apply_batch(batch)
                .map_err(|e| copy.io(e))?;
        }
        let generation = self.generation.load(Ordering::Relaxed);
        let (count, bytes) = (
            self.log_count.load(Ordering::Relaxed),
            self.log_bytes.load(Ordering::Relaxed),
        );
        copy.generation.store(generation, Ordering::Relaxed);
        copy.log_count.store(count, Ordering::Relaxed);
        copy.log_bytes.store(bytes, Ordering::Relaxed);
        copy.write_manifest(generation, count, bytes)?;
        copy.rescan()?;
        copy.flush()?;
        Ok(Copied {
            generation,
            records,
        })
    }

    /// `switchyard state restore`: verifies the backup `from` against its manifest and copies it
    /// into `to`, a new (or empty) data dir.
    pub fn restore(from: &Path, to: &Path) -> Result<Copied, StoreError> {
        Store::open(from)?.backup_to(to)
    }

    /// The arms at start, skipping (and logging, and counting) any that do not decode.
    pub(super) fn read_arms(&self) -> Result<Vec<(ArmKey, Arm)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.arms.iter() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            match super::arm_record::decode(&v) {
                Ok(arm) => out.push((arm_key_parts(&k), arm)),
                Err(e) => {
                    self.skipped_arms.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        data_dir = %self.path.display(),
                        record = %format!("tree arms, key {}", show_key(&k)),
                        error = %e,
                        "skipped a bad arm record: the arm restarts at its priors"
                    );
                }
            }
        }
        Ok(out)
    }

    /// Bad arm records skipped by this store's loads.
    pub fn skipped_arms(&self) -> u64 {
        self.skipped_arms.load(Ordering::Relaxed)
    }

    /// `switchyard state repair`: drops every record that does not decode, rebuilds the manifest
    /// from the db as it then is, and returns one line per dropped record (and one when the old
    /// manifest did not match the db).
    pub fn repair(dir: &Path) -> Result<Vec<String>, StoreError> {
        let mut report = Vec::new();
        match Store::check(dir) {
            Ok(_) => {}
            Err(e @ StoreError::Corrupt { .. }) if manifest::has_manifest(dir) => {
                report.push(format!("manifest rebuilt from the db as it is ({e})"));
                std::fs::remove_file(manifest::manifest_path(dir)).map_err(|e| StoreError::Io {
                    path: dir.display().to_string(),
                    detail: format!("cannot remove the manifest: {e}"),
                })?;
            }
            Err(e) => return Err(e),
        }
        let store = Store::open(dir)?;
        let json = |tree: &str, v: &[u8]| -> Result<(), String> {
            let r = match tree {
                "arms" => return super::arm_record::decode(v).map(drop),
                "breakers" => serde_json::from_slice::<Breaker>(v).map(drop),
                "ledgers" => serde_json::from_slice::<Ledger>(v).map(drop),
                _ => serde_json::from_slice::<Targets>(v).map(drop),
            };
            r.map_err(|e| e.to_string())
        };
        let mut bad: Vec<(usize, Vec<u8>, String)> = Vec::new();
        {
            let names = lock(&store.names);
            for (i, name) in TREES.iter().enumerate().skip(manifest::DECISIONS) {
                for kv in store.tree_by_index(i).iter() {
                    let (k, v) = kv.map_err(|e| store.io(e))?;
                    let checked = if i == manifest::DECISIONS {
                        store
                            .decode_kv(&k, &v, &names)
                            .map_err(|e| e.to_string())
                            .and_then(|all| {
                                all.iter().try_for_each(|(key, r)| {
                                    r.pending(key, &names).map(drop).map_err(|e| e.to_string())
                                })
                            })
                    } else {
                        json(name, &v)
                    };
                    if let Err(e) = checked {
                        bad.push((i, k.to_vec(), e));
                    }
                }
            }
        }
        for (i, k, why) in bad {
            store.tree_by_index(i).remove(&k).map_err(|e| store.io(e))?;
            report.push(format!(
                "dropped tree {}, key {}: {why}",
                TREES[i],
                show_key(&k)
            ));
        }
        store.recount()?;
        store.flush()?;
        Ok(report)
    }
}
