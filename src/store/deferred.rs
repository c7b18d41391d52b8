//! Serve first, verify after: the decision log's digest checked in the background after start.
//!
//! Why: a full verification ([`super::manifest`]) reads every record of every tree. The decision
//! log is by far the largest tree (a million records after a long run), and reading it all before
//! the first Route made a restart take tens of seconds. Route needs only the arms, breakers,
//! ledgers and the newest (pending) decisions. So [`Store::open_serving`] verifies every other
//! tree against the manifest at open as before (and the db's flush record against the manifest's),
//! starts the running digest of the decision log from the flush it is checked against, and leaves
//! the scan of the decision log to [`Store::verify_step`], which the server calls from a
//! background thread while it serves.
//!
//! The scan runs in key order, a chunk at a time, each chunk under the digest's lock (the lock
//! that orders commits and trims), so it never sees half a write. Writes go on between chunks:
//! a commit or trim that changes a key the scan has already passed adjusts the scan's sum by the
//! record it replaces and the one it writes (in [`Store::begin_write`]); a key not yet passed is
//! read by the scan as it is then. At the end the scan's sum is what the db holds, and the running
//! digest is the flush's digest plus the same changes, so the two are equal exactly when the db
//! held what the flush recorded: any record lost, added or altered in the decision log shows as
//! a mismatch.
//!
//! On a mismatch the store refuses every later write, flush and backup (nothing is overwritten and
//! no manifest is written that would describe the damaged db as good) with the same error a full
//! verification gives, naming the file and what to do; the server marks `switchyard.v1.Store`
//! NOT_SERVING and stops, exiting non-zero (see `src/server/verify.rs`). A backup taken while the
//! scan runs finishes it first, so no backup is made of an unverified decision log.
//!
//! Only a cleanly flushed db is verified this way. A db holding writes newer than its last flush
//! (a crash), or one without a manifest, is scanned in full at open, as before: its digest cannot
//! be taken from any record. `switchyard state check` always verifies in full.
//!
//! Restart and replicas: nothing here is persisted; each start of each replica verifies its own
//! data dir again. A reopen after a write failure verifies in full and ends any scan in progress.

use std::ops::Bound;
use std::path::Path;
use std::time::Instant;

use super::manifest::{hash_record, Digest, TreeDigest, Verified, DECISIONS, TREES};
use super::{lock, Store, StoreError};

/// Records read per [`Store::verify_step`]: each step holds the digest's lock (commits wait), so
/// a step is kept to a few milliseconds.
pub const STEP_RECORDS: usize = 4096;

/// Where the background verification of the decision log stands.
#[derive(Debug, Default)]
pub(super) enum Verifying {
    /// Nothing left to verify (a full verification at open, or the scan finished and matched).
    #[default]
    Done,
    /// The decision log is being scanned.
    Scanning(Scan),
    /// The scan found the decision log differs from its flush: every write is refused.
    Failed { detail: String },
}

/// A scan of the decision log in progress.
#[derive(Debug)]
pub(super) struct Scan {
    /// The last key read (None: none yet). Keys up to it are covered by `sum`.
    cursor: Option<Vec<u8>>,
    /// Records up to `cursor` as they are now (writes behind the cursor adjust it).
    sum: TreeDigest,
    /// The generation the db was checked against, for the message.
    generation: u64,
    started: Instant,
}

impl Scan {
    pub(super) fn new(generation: u64) -> Scan {
        Scan {
            cursor: None,
            sum: TreeDigest::default(),
            generation,
            started: Instant::now(),
        }
    }

    /// A write of `key` (replacing a record of hash `old`, writing one of hash `new`): counted
    /// when the scan has passed `key`, else the scan reads it later.
    pub(super) fn adjust(&mut self, key: &[u8], old: Option<u64>, new: Option<u64>) {
        let passed = self.cursor.as_deref().is_some_and(|c| key <= c);
        if !passed {
            return;
        }
        if let Some(h) = old {
            self.sum.count = self.sum.count.wrapping_sub(1);
            self.sum.sum = self.sum.sum.wrapping_sub(h);
        }
        if let Some(h) = new {
            self.sum.count = self.sum.count.wrapping_add(1);
            self.sum.sum = self.sum.sum.wrapping_add(h);
        }
    }
}

/// What a step of the background verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More to read.
    More,
    /// Nothing (left) to verify: the decision log matches its flush.
    Done {
        /// Records the scan read (0 when nothing was deferred).
        records: u64,
    },
}

impl Store {
    /// Opens the data dir `dir` for serving, like [`Store::open_with`], but leaves the decision
    /// log's scan to [`Store::verify_step`] when the db was cleanly flushed (see the module doc).
    pub fn open_serving(dir: &Path, cache_mb: u64) -> Result<(Store, Verified), StoreError> {
        Store::open_verified(dir, cache_mb, true)
    }

    /// Reads the next chunk of the decision log and, at its end, compares it with the running
    /// digest. `Err` (also for every later call, and for every write) when they differ.
    pub fn verify_step(&self) -> Result<Step, StoreError> {
        self.verify_records(STEP_RECORDS)
    }

    /// [`Store::verify_step`] reading at most `max` records.
    fn verify_records(&self, max: usize) -> Result<Step, StoreError> {
        let digest = lock(&self.digest);
        let mut verifying = lock(&self.verifying);
        let scan = match &mut *verifying {
            Verifying::Done => return Ok(Step::Done { records: 0 }),
            Verifying::Failed { detail } => return Err(self.corrupt_db(detail.clone())),
            Verifying::Scanning(scan) => scan,
        };
        let range = match &scan.cursor {
            None => self.decisions.iter(),
            Some(c) => self
                .decisions
                .range::<&[u8], _>((Bound::Excluded(c.as_slice()), Bound::Unbounded)),
        };
        let mut read = 0;
        let mut last = None;
        for kv in range.take(max) {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            let h = hash_record(&k, &v);
            scan.sum.count = scan.sum.count.wrapping_add(1);
            scan.sum.sum = scan.sum.sum.wrapping_add(h);
            last = Some(k);
            read += 1;
        }
        if let Some(k) = last {
            scan.cursor = Some(k.to_vec());
        }
        if read == max {
            return Ok(Step::More);
        }
        let want = digest.0 .0[DECISIONS];
        let (got, records) = (scan.sum, scan.sum.count);
        if got == want {
            tracing::info!(
                records,
                ms = scan.started.elapsed().as_millis() as u64,
                "decision log verified against its manifest (in the background)"
            );
            *verifying = Verifying::Done;
            return Ok(Step::Done { records });
        }
        let detail = format!(
            "tree {} holds {} records (digest {:016x}) but the flush of generation {} recorded \
             {} (digest {:016x}), counting the writes since start (found by the check after \
             start; writes are refused from now on)",
            TREES[DECISIONS], got.count, got.sum, scan.generation, want.count, want.sum
        );
        *verifying = Verifying::Failed {
            detail: detail.clone(),
        };
        Err(self.corrupt_db(detail))
    }

    /// Runs [`Store::verify_step`] to the end (a backup; tests). The server steps from a thread
    /// of its own, pausing between steps.
    pub fn verify_all(&self) -> Result<u64, StoreError> {
        loop {
            if let Step::Done { records } = self.verify_step()? {
                return Ok(records);
            }
        }
    }

    /// Whether the decision log still awaits (or failed) its check after start.
    pub fn verifying(&self) -> bool {
        !matches!(*lock(&self.verifying), Verifying::Done)
    }

    /// The refusal of writes after a failed check (`Ok` otherwise); the caller holds the digest's
    /// lock and passes what it locked of [`Store::verifying`].
    pub(super) fn refuse_if_failed(&self, v: &Verifying) -> Result<(), StoreError> {
        match v {
            Verifying::Failed { detail } => Err(self.corrupt_db(detail.clone())),
            _ => Ok(()),
        }
    }

    /// The data dir's db is corrupt: `detail`.
    pub(super) fn corrupt_db(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            file: self.path.join("db").display().to_string(),
            detail,
        }
    }

    /// Digest of every tree but the decision log by a full scan, the decision log's taken from
    /// `flushed` (to be checked by the background scan).
    pub(super) fn scan_digest_deferred(&self, flushed: &Digest) -> Result<Digest, StoreError> {
        let mut d = Digest::default();
        for i in (0..TREES.len()).filter(|&i| i != DECISIONS) {
            d.0[i] = self.scan_tree_digest(i)?;
        }
        d.0[DECISIONS] = flushed.0[DECISIONS];
        Ok(d)
    }
}

impl Store {
    /// Marks the check after start failed (`detail`): every later write, flush and backup is
    /// refused.
    fn fail_verification(&self, detail: String) {
        *lock(&self.verifying) = Verifying::Failed { detail };
    }
}

impl super::StoreSlot {
    /// The check after start failed with `e` (or could not finish): refuses every later write of
    /// the open store (a store reopened since was verified in full by its reopen).
    pub fn fail_check(&self, e: &StoreError) {
        let detail = match e {
            StoreError::Corrupt { detail, .. } => detail.clone(),
            other => format!("the check after start could not finish: {other}"),
        };
        let _ = self.with(|s| {
            s.fail_verification(detail);
            Ok(())
        });
    }

    /// A corrupt-db error for the open store's data dir (`detail`); when the store is closed for
    /// a reopen, the error saying so.
    pub fn corrupt(&self, detail: String) -> StoreError {
        match self.with(|s| Ok(s.corrupt_db(detail))) {
            Ok(e) | Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::LogBounds;
    use super::*;
    use crate::engine::Engine;
    use crate::store::tests::{feedback, logging_engine, route};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    /// Opens `dir` (for serving when `serving`), waiting while a dropped store's lock is held.
    fn open(dir: &Path, serving: bool) -> Result<(Store, Verified), StoreError> {
        for _ in 0..200 {
            let opened = if serving {
                Store::open_serving(dir, 8)
            } else {
                Store::open_verified(dir, 8, false)
            };
            match opened {
                Err(StoreError::Locked(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                other => return other,
            }
        }
        panic!("{} stayed locked", dir.display());
    }

    /// A store with `n` decisions (one a second) written and flushed, and the engine that made
    /// them (its decisions still pending). Each tenth write holds two decisions (a segment).
    fn logged(dir: &Path, n: u64, rng: &mut SmallRng) -> (Engine, Vec<String>) {
        let (store, _) = open(dir, false).unwrap();
        let mut engine = logging_engine();
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(route(&mut engine, rng, 1_000 * i));
            if i % 10 != 9 {
                store.write(engine.take_changes()).unwrap();
            }
        }
        store.write(engine.take_changes()).unwrap();
        store.flush().unwrap();
        (engine, ids)
    }

    /// Writes while the decision log is scanned (Feedback on decisions behind and ahead of the
    /// scan, new decisions, a trim of the oldest) never make a sound log fail its check, and the
    /// running digest it vouches for equals a full scan.
    #[test]
    fn writes_during_the_check_after_start_leave_a_sound_log_verified() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SmallRng::seed_from_u64(5);
        let (mut engine, ids) = logged(dir.path(), 60, &mut rng);
        let (store, v) = open(dir.path(), true).unwrap();
        assert!(
            v.deferred,
            "a cleanly flushed db defers the decision log's scan"
        );
        assert!(store.verifying());
        // The pending index, as a start fills it.
        store.load(60_000, 100_000).unwrap();
        let mut t = 60_000;
        for round in 0..6 {
            assert_eq!(store.verify_records(7).unwrap(), Step::More, "{round}");
            // Behind the scan, ahead of it, and new.
            feedback(&mut engine, &ids[round * 5], t);
            feedback(&mut engine, &ids[59 - round], t);
            route(&mut engine, &mut rng, t);
            store.write(engine.take_changes()).unwrap();
            t += 1_000;
        }
        let bounds = LogBounds {
            max_age_ms: u64::MAX,
            max_count: 55,
            max_bytes: u64::MAX,
            keep_pending: 0,
            pending_ttl_ms: 0,
        };
        assert_eq!(store.trim_events(t, &bounds).unwrap(), 11);
        let mut steps = 0;
        while store.verify_records(7).unwrap() == Step::More {
            steps += 1;
            assert!(steps < 100, "the scan never ends");
        }
        assert!(!store.verifying());
        assert_eq!(lock(&store.digest).0, store.scan_digest().unwrap());
        store.flush().unwrap();
        drop(store);
        let (_, v) = open(dir.path(), false).unwrap();
        assert!(v.compared && !v.deferred, "{v:?}");
    }

    /// A record lost from a cleanly flushed log passes the checks at open and fails the check
    /// after start, which then refuses every write and flush; a full verification refuses it too.
    #[test]
    fn a_lost_decision_fails_the_check_after_start_and_writes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SmallRng::seed_from_u64(6);
        let (mut engine, _) = logged(dir.path(), 20, &mut rng);
        {
            let (store, _) = open(dir.path(), false).unwrap();
            let first = store.decisions.first().unwrap().unwrap().0;
            store.decisions.remove(first).unwrap();
            store.db.flush().unwrap();
        }
        let (store, v) = open(dir.path(), true).unwrap();
        assert!(v.deferred);
        let err = store.verify_all().unwrap_err().to_string();
        assert!(err.contains("tree decisions holds 18 records"), "{err}");
        assert!(err.contains("found by the check after start"), "{err}");
        assert!(store.verify_step().is_err(), "the failure stays");
        route(&mut engine, &mut rng, 30_000);
        let write = store.write(engine.take_changes()).unwrap_err().to_string();
        assert!(write.contains("is corrupt"), "{write}");
        assert!(store.flush().is_err());
        let copy = tempfile::tempdir().unwrap();
        let backup = store.backup_to(&copy.path().join("b")).err().unwrap();
        assert!(backup.to_string().contains("tree decisions"), "{backup}");
        drop(store);
        let err = open(dir.path(), false).err().unwrap().to_string();
        assert!(err.contains("tree decisions holds 18 records"), "{err}");
    }

    /// A db holding writes newer than its last flush (a crash) cannot take the decision log's
    /// digest from any record: it is scanned in full at open.
    #[test]
    fn a_db_with_writes_after_its_last_flush_is_verified_in_full_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let (mut engine, _) = logged(dir.path(), 5, &mut rng);
        {
            let (store, _) = open(dir.path(), false).unwrap();
            route(&mut engine, &mut rng, 10_000);
            let batch = store.prepare(&engine.take_changes()).unwrap();
            store.commit(&batch).unwrap();
            // sled's own flush, without the store's flush record: as if killed just after.
            store.db.flush().unwrap();
        }
        let (store, v) = open(dir.path(), true).unwrap();
        assert!(!v.deferred && !v.compared, "{v:?}");
        assert!(!store.verifying());
        assert_eq!(store.verify_step().unwrap(), Step::Done { records: 0 });
    }
}
