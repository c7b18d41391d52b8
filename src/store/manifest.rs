//! The data dir's manifest: what the last flush put on disk, so that a truncated, garbled,
//! rolled-back or deleted db is refused at start instead of opened with state silently missing.
//!
//! The file `DATA_DIR/manifest` holds one line of JSON (schema version, generation, and per tree
//! the record count and a wrapping sum of a 64-bit hash of every key and value) and a second line,
//! the hash of the first (a torn or edited manifest is refused too). It is rewritten (write a
//! temporary file, rename) after every flush, from a digest the store keeps up to date as it
//! writes: each commit and trim adjusts it by the records it replaces and writes, under one lock,
//! so no write needs a scan of the db. The whole db is scanned only at open (and by `switchyard
//! state check`), and after the writer reopens the db following a write failure. `serve` opens
//! a cleanly flushed db with every tree but the decision log scanned, and scans the decision log
//! in the background while it serves ([`super::deferred`]).
//!
//! Generations: every commit or trim first writes its new generation to `meta/intent`, then its
//! records. After a crash the db is a prefix of its writes (sled's log is one sequence for every
//! tree), so a db holding any write newer than a flush has a generation above that flush's.
//!
//! Flushes: every flush is numbered. Before sled's flush, under the lock that orders commits, the
//! store writes `meta/checkpoint` (the flush's number, generation and digest) inside the db; after
//! it, the manifest file with the same three. So the db carries its own record of its last flush,
//! and the file records the last flush whose manifest was written. At open:
//! - the db's flush number == the manifest's: both records must agree (else the db or the manifest
//!   was replaced: refused);
//! - the db's == the manifest's + 1: the process stopped between sled's flush and the manifest's
//!   write (a crash, or a manifest write that failed on a full disk): accepted, logged, and the
//!   manifest rewritten from the db's record;
//! - the db's below the manifest's (or none while the manifest numbers its flushes): flushed
//!   writes are missing (a truncated, replaced or rolled-back db): refused, naming the file;
//! - the db's above the manifest's + 1: the manifest is older than the db by several flushes (a
//!   manifest copied from another data dir or restored alone): refused, naming the manifest.
//!
//! Then the trees are compared with the flush the db is at: every tree must match it exactly when
//! the db's generation is that flush's. A db at a higher generation holds commits made after its
//! last flush that sled wrote out before the process died (never acknowledged as durable): they
//! cannot be checked against any record, so they are accepted as they are (logged). A manifest
//! written before flushes were numbered (no `flush`) is compared by generation alone. A db without
//! a manifest (a data dir from before the manifest existed, or one whose manifest was removed) is
//! accepted and a manifest written. Every open ends with a flush, so the db and the manifest agree.
//!
//! Restart: the manifest is the only state here; it is rebuilt from the db at every open.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::deferred::{Scan, Verifying};
use super::{lock, Store, StoreError, SCHEMA_BEFORE_SEGMENTS, SCHEMA_VERSION};

/// The manifest's file name inside the data dir.
pub const MANIFEST_FILE: &str = "manifest";

/// The trees the digest covers, in this order (`meta` is the manifest's own bookkeeping).
pub const TREES: [&str; 6] = [
    "names",
    "decisions",
    "arms",
    "breakers",
    "ledgers",
    "objectives",
];
pub const NAMES: usize = 0;
pub const DECISIONS: usize = 1;
pub const ARMS: usize = 2;
pub const BREAKERS: usize = 3;
pub const LEDGERS: usize = 4;
pub const OBJECTIVES: usize = 5;

/// Records and the wrapping sum of their hashes, for one tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeDigest {
    pub count: u64,
    pub sum: u64,
}

/// Digests of every tree of [`TREES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest(pub [TreeDigest; 6]);

impl Digest {
    fn add(&mut self, tree: usize, key: &[u8], value: &[u8]) {
        self.add_hash(tree, record_hash(key, value));
    }

    fn add_hash(&mut self, tree: usize, hash: u64) {
        let t = &mut self.0[tree];
        t.count = t.count.wrapping_add(1);
        t.sum = t.sum.wrapping_add(hash);
    }

    fn remove_hash(&mut self, tree: usize, hash: u64) {
        let t = &mut self.0[tree];
        t.count = t.count.wrapping_sub(1);
        t.sum = t.sum.wrapping_sub(hash);
    }
}

/// FNV-1a over `bytes` from `seed`, then a splitmix64 finish: stable across builds and platforms
/// (std's hashers are not), and quick on records of a few hundred bytes.
fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn record_hash(key: &[u8], value: &[u8]) -> u64 {
    let k = hash_bytes(FNV_OFFSET, key);
    hash_bytes(k ^ (key.len() as u64).rotate_left(32), value)
}

/// What a write replaces, as far as the encoding knew it: the old version's hash saves the
/// commit a read of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Old {
    /// Not known: the commit reads the old version.
    Unknown,
    /// The key holds nothing (a new decision's key, never written before).
    Absent,
    /// The key holds a record of this hash ([`record_hash`]).
    Hash(u64),
}

/// Records a batch writes, by tree: key, the record's hash and what it replaces, for the digest.
/// The old versions known at encoding are trusted at commit only when no other write reached
/// the store in between ([`Writes::at`] against the store's write sequence); otherwise they are
/// read at commit, under the digest's lock.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    entries: Vec<(usize, Vec<u8>, u64, Old)>,
    /// The store's write sequence when the old versions were read (None: never trusted).
    at: Option<u64>,
}

impl Writes {
    pub fn insert(&mut self, tree: usize, key: &[u8], value: &[u8]) {
        self.insert_over(tree, key, value, Old::Unknown);
    }

    /// A write whose old version (as read at write sequence [`Writes::at`]) is `old`.
    /// Returns the record's hash.
    pub fn insert_over(&mut self, tree: usize, key: &[u8], value: &[u8], old: Old) -> u64 {
        let hash = record_hash(key, value);
        self.entries.push((tree, key.to_vec(), hash, old));
        hash
    }

    /// The old versions were read at write sequence `seq`.
    pub fn read_at(&mut self, seq: u64) {
        self.at = Some(seq);
    }

    /// Forgets what the old versions were (the batch is committed again after a reopen).
    pub fn distrust(&mut self) {
        self.at = None;
    }
}

/// The hash of the record `key` = `value`, as the digest sums it.
pub fn hash_record(key: &[u8], value: &[u8]) -> u64 {
    record_hash(key, value)
}

/// What `manifest` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub generation: u64,
    pub trees: Digest,
    /// The flush's number (0 in a manifest written before flushes were numbered).
    #[serde(default)]
    pub flush: u64,
}

/// The db's own record of a flush (`meta/checkpoint`), written inside the db just before sled's
/// flush: what the manifest written after it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub flush: u64,
    pub generation: u64,
    pub trees: Digest,
}

/// The `meta` key of the db's [`Checkpoint`].
const CHECKPOINT: &str = "checkpoint";

impl Manifest {
    fn encode(&self) -> Result<String, serde_json::Error> {
        let body = serde_json::to_string(self)?;
        let sum = hash_bytes(FNV_OFFSET, body.as_bytes());
        Ok(format!("{body}\n{sum:016x}\n"))
    }

    /// Parses a manifest file's text; `Err` says what is wrong with it.
    fn decode(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines();
        // Blank padding may follow the two lines (see `write_manifest_file`).
        let (Some(body), Some(sum)) = (lines.next(), lines.next()) else {
            return Err("not two lines (a manifest and its checksum)".into());
        };
        if lines.any(|l| !l.trim().is_empty()) {
            return Err("not two lines (a manifest and its checksum)".into());
        }
        let want = format!("{:016x}", hash_bytes(FNV_OFFSET, body.as_bytes()));
        if sum.trim() != want {
            return Err(format!(
                "checksum {:?} does not match its contents ({want})",
                sum.trim()
            ));
        }
        serde_json::from_str(body).map_err(|e| format!("unreadable: {e}"))
    }
}

/// The longest manifest file rewritten in place (a manifest is a few hundred bytes; one page).
const MANIFEST_MAX_LEN: u64 = 4096;

/// Writes `text` over the start of the file at `path` (created if missing), padded with blanks to
/// the file's length: `false` (nothing written) when the file is longer than [`MANIFEST_MAX_LEN`]
/// or `text` would be.
fn write_in_place(path: &Path, text: &[u8]) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let len = f.metadata()?.len();
    if len > MANIFEST_MAX_LEN || text.len() as u64 > MANIFEST_MAX_LEN {
        return Ok(false);
    }
    let mut buf = text.to_vec();
    buf.resize(buf.len().max(len as usize), b' ');
    f.write_all_at(&buf, 0)?;
    Ok(true)
}

/// The path of `dir`'s manifest.
pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_FILE)
}

/// Reads `dir`'s manifest: `None` when there is none.
fn read(dir: &Path) -> Result<Option<Manifest>, StoreError> {
    let path = manifest_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Io {
                path: dir.display().to_string(),
                detail: format!("cannot read {}: {e}", path.display()),
            })
        }
    };
    Manifest::decode(&text)
        .map(Some)
        .map_err(|detail| StoreError::Corrupt {
            path: dir.display().to_string(),
            file: path.display().to_string(),
            detail: format!("the manifest is {detail}"),
        })
}

/// What a full verification found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The db's generation.
    pub generation: u64,
    /// The manifest's, when there was one.
    pub manifest_generation: Option<u64>,
    /// Whether every tree was compared with the manifest (false: no manifest yet, or the db holds
    /// writes newer than it, see the module doc).
    pub compared: bool,
    /// The db stopped between sled's flush and the manifest's write; the manifest was rewritten
    /// from the db's record of that flush.
    pub manifest_behind: bool,
    pub trees: Digest,
    /// The decision log's digest was taken from the manifest and awaits the scan after start
    /// ([`Store::verify_step`]).
    pub deferred: bool,
}

impl Store {
    /// The generation the db holds: the newest written to `meta` (its intent, or the counters'
    /// generation of the last commit).
    fn db_generation(&self) -> Result<u64, StoreError> {
        let get = |k: &str| -> Result<u64, StoreError> {
            Ok(self
                .meta
                .get(k)
                .map_err(|e| self.io(e))?
                .and_then(|v| super::be_u64(&v))
                .unwrap_or(0))
        };
        Ok(get("intent")?.max(get("generation")?))
    }

    pub(super) fn tree_by_index(&self, i: usize) -> &sled::Tree {
        match i {
            NAMES => &self.names_tree,
            DECISIONS => &self.decisions,
            ARMS => &self.arms,
            BREAKERS => &self.breakers,
            LEDGERS => &self.ledgers,
            _ => &self.objectives,
        }
    }

    /// Digest of every tree, by a full scan.
    pub(super) fn scan_digest(&self) -> Result<Digest, StoreError> {
        let mut d = Digest::default();
        for i in 0..TREES.len() {
            d.0[i] = self.scan_tree_digest(i)?;
        }
        Ok(d)
    }

    /// Digest of tree `i` of [`TREES`], by a full scan.
    pub(super) fn scan_tree_digest(&self, i: usize) -> Result<TreeDigest, StoreError> {
        let mut d = Digest::default();
        for kv in self.tree_by_index(i).iter() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            d.add(i, &k, &v);
        }
        Ok(d.0[i])
    }

    /// The db's record of its last flush, if it has one.
    fn read_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let Some(v) = self.meta.get(CHECKPOINT).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| self.corrupt("meta", CHECKPOINT.as_bytes(), e))
    }

    /// Full verification against the manifest (see the module doc); on success the digest the
    /// store keeps starts from the scan, and a flush brings the db's record and the manifest level.
    /// `defer`: a db at the generation of the flush it is checked against has its decision log
    /// checked later, by [`Store::verify_step`] (see [`super::deferred`]).
    pub(super) fn verify_manifest(&self, defer: bool) -> Result<Verified, StoreError> {
        let dir = self.path.clone();
        let corrupt_file = |file: PathBuf, detail: String| StoreError::Corrupt {
            path: dir.display().to_string(),
            file: file.display().to_string(),
            detail,
        };
        let corrupt = |detail: String| corrupt_file(self.path.join("db"), detail);
        let manifest = read(&self.path)?;
        let checkpoint = self.read_checkpoint()?;
        let generation = self.db_generation()?;
        self.generation.fetch_max(generation, Ordering::Relaxed);
        let mut trees = None;
        let mut deferred = false;
        let mut compared = false;
        let mut manifest_behind = false;
        if let Some(m) = &manifest {
            // A manifest of schema 3 vouches for the same trees (4 only adds segments).
            let schema_ok = m.schema == SCHEMA_VERSION || m.schema == SCHEMA_BEFORE_SEGMENTS;
            if !schema_ok && m.generation >= generation {
                return Err(corrupt(format!(
                    "its manifest is of schema {} but the db of schema {SCHEMA_VERSION}",
                    m.schema
                )));
            }
            if generation < m.generation {
                return Err(corrupt(format!(
                    "the db is at generation {generation} but its manifest says {} were \
                     flushed: flushed writes are missing (truncated, replaced or rolled back)",
                    m.generation
                )));
            }
            // The flush the db's contents must equal when nothing was written after it.
            let reference = match (checkpoint, m.flush) {
                (_, 0) => (m.generation, m.trees),
                (None, f) => {
                    return Err(corrupt(format!(
                        "the db holds no record of its flushes but its manifest records flush \
                         #{f}: flushed writes are missing (truncated, replaced or rolled back)"
                    )))
                }
                (Some(c), f) if c.flush < f => {
                    return Err(corrupt(format!(
                        "the db's last flush is #{} but its manifest records flush #{f}: flushed \
                         writes are missing (truncated, replaced or rolled back)",
                        c.flush
                    )))
                }
                (Some(c), f) if c.flush == f => {
                    if (c.generation, c.trees) != (m.generation, m.trees) {
                        return Err(corrupt(format!(
                            "the db's record of flush #{f} (generation {}) differs from its \
                             manifest's (generation {}): the db or the manifest was replaced",
                            c.generation, m.generation
                        )));
                    }
                    (m.generation, m.trees)
                }
                (Some(c), f) if c.flush == f + 1 => {
                    tracing::warn!(
                        data_dir = %self.path.display(),
                        db_flush = c.flush,
                        manifest_flush = f,
                        "the data dir stopped between a flush and its manifest's write (a crash?): \
                         the manifest is rewritten from the db's record of that flush"
                    );
                    manifest_behind = true;
                    (c.generation, c.trees)
                }
                (Some(c), f) => {
                    return Err(corrupt_file(
                        manifest_path(&self.path),
                        format!(
                            "the db records flush #{} but the manifest only flush #{f}: the \
                             manifest is older than the db by more than one flush (copied from \
                             another data dir, or restored without its db?)",
                            c.flush
                        ),
                    ))
                }
            };
            if generation == reference.0 {
                let started = std::time::Instant::now();
                let got = if defer {
                    deferred = true;
                    self.scan_digest_deferred(&reference.1)?
                } else {
                    self.scan_digest()?
                };
                tracing::info!(
                    ms = started.elapsed().as_millis() as u64,
                    deferred,
                    "start: trees compared with the manifest"
                );
                let trees = *trees.insert(got);
                for (i, name) in TREES.iter().enumerate() {
                    let (want, got) = (reference.1 .0[i], trees.0[i]);
                    if want != got {
                        return Err(corrupt(format!(
                            "tree {name} holds {} records (digest {:016x}) but the flush of \
                             generation {generation} recorded {} (digest {:016x})",
                            got.count, got.sum, want.count, want.sum
                        )));
                    }
                }
                compared = true;
            } else {
                tracing::warn!(
                    data_dir = %self.path.display(),
                    db_generation = generation,
                    flushed_generation = reference.0,
                    "the data dir stopped between a write and its flush (a crash?): writes newer \
                     than its last flush are kept unverified"
                );
                // Those writes may stop inside a commit, before its counters were written.
                self.count_log()?;
            }
        }
        let trees = match trees {
            Some(t) => t,
            None => self.scan_digest()?,
        };
        let numbered = checkpoint
            .map_or(0, |c| c.flush)
            .max(manifest.as_ref().map_or(0, |m| m.flush));
        self.flushes.store(numbered, Ordering::Relaxed);
        lock(&self.digest).0 = trees;
        *lock(&self.verifying) = if deferred {
            Verifying::Scanning(Scan::new(generation))
        } else {
            Verifying::Done
        };
        self.flush()?;
        Ok(Verified {
            generation,
            manifest_generation: manifest.map(|m| m.generation),
            compared,
            manifest_behind,
            trees,
            deferred,
        })
    }

    /// Writes the manifest file: in place, as one write at offset 0 padded with blanks to the
    /// length of what it replaces, so a process killed at any point leaves the old manifest or
    /// the new one whole (a write of a few hundred bytes to the page cache is not torn by a
    /// kill). Writing a temporary file and renaming it over the manifest cost an inode created
    /// and one freed per flush: a seventh of the writer's CPU time under `sync` Feedback, which
    /// flushes ~750 times a second (docs/performance-history.md). A missing file is created; one
    /// grown past [`MANIFEST_MAX_LEN`] (not written by this code) is replaced by a rename.
    fn write_manifest_file(&self, c: Checkpoint) -> Result<(), StoreError> {
        let m = Manifest {
            schema: SCHEMA_VERSION,
            generation: c.generation,
            trees: c.trees,
            flush: c.flush,
        };
        let io = |e: String| StoreError::Io {
            path: self.path.display().to_string(),
            detail: format!("cannot write the manifest: {e}"),
        };
        let text = m.encode().map_err(|e| io(e.to_string()))?;
        let path = manifest_path(&self.path);
        if write_in_place(&path, text.as_bytes()).map_err(|e| io(e.to_string()))? {
            return Ok(());
        }
        let tmp = self.path.join("manifest.tmp");
        std::fs::write(&tmp, text).map_err(|e| io(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(e.to_string()))
    }

    /// Before a flush: numbers it and records it inside the db (under the digest's lock, so no
    /// commit comes between the snapshot and the record); the flush makes the record durable with
    /// every write before it.
    pub(super) fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let d = lock(&self.digest);
        // A db found damaged after start is never described as good by a manifest.
        self.refuse_if_failed(&lock(&self.verifying))?;
        let c = Checkpoint {
            // A flush whose manifest was not written (a full disk) is numbered again.
            flush: self.flushes.load(Ordering::Relaxed) + 1,
            generation: self.generation.load(Ordering::Relaxed),
            trees: d.0,
        };
        let v = serde_json::to_vec(&c).map_err(|e| StoreError::Io {
            path: self.path.display().to_string(),
            detail: format!("cannot encode the flush record: {e}"),
        })?;
        self.meta.insert(CHECKPOINT, v).map_err(|e| self.io(e))?;
        Ok(c)
    }

    /// After a flush that covered `c`: records it in the manifest file.
    pub(super) fn flushed(&self, c: Checkpoint) -> Result<(), StoreError> {
        self.write_manifest_file(c)?;
        self.flushes.store(c.flush, Ordering::Relaxed);
        Ok(())
    }

    /// Starts a commit or trim of generation `generation`: writes its intent before its records,
    /// and returns the digest change of `writes` (old versions read now) and of the decision
    /// records `removed` (key and [`record_hash`] of the value, read by the caller under the
    /// digest's lock). The caller holds the digest's lock until it has applied them.
    pub(super) fn begin_write(
        &self,
        generation: u64,
        writes: &Writes,
        removed: &[(Vec<u8>, u64)],
    ) -> Result<Digest, StoreError> {
        // While the decision log is checked after start, writes behind the scan adjust it; after
        // a failed check nothing is written.
        let mut verifying = lock(&self.verifying);
        self.refuse_if_failed(&verifying)?;
        let mut scan = match &mut *verifying {
            Verifying::Scanning(s) => Some(s),
            _ => None,
        };
        self.meta
            .insert("intent", &generation.to_be_bytes())
            .map_err(|e| self.io(e))?;
        // Nothing else wrote since the batch was encoded: what it read then is still there.
        let trusted = writes.at == Some(self.write_seq());
        self.bump_write_seq();
        let mut d = Digest::default();
        for (tree, k, hash, old) in &writes.entries {
            let old = match old {
                Old::Absent if trusted => None,
                Old::Hash(h) if trusted => Some(*h),
                _ => self
                    .tree_by_index(*tree)
                    .get(k)
                    .map_err(|e| self.io(e))?
                    .map(|old| record_hash(k, &old)),
            };
            if let Some(h) = old {
                let t = &mut d.0[*tree];
                t.count = t.count.wrapping_sub(1);
                t.sum = t.sum.wrapping_sub(h);
            }
            d.add_hash(*tree, *hash);
            if let (Some(s), DECISIONS) = (scan.as_mut(), *tree) {
                s.adjust(k, old, Some(*hash));
            }
        }
        for (k, old) in removed {
            d.remove_hash(DECISIONS, *old);
            if let Some(s) = scan.as_mut() {
                s.adjust(k, Some(*old), None);
            }
        }
        Ok(d)
    }

    /// Sets the digest from a full scan (after writes that bypassed it: a reopen, `state reset`).
    pub(super) fn rescan(&self) -> Result<(), StoreError> {
        let trees = self.scan_digest()?;
        let mut digest = lock(&self.digest);
        digest.0 = trees;
        self.bump_write_seq();
        Ok(())
    }

    /// `switchyard state check`: opens `dir` like [`Store::open`] (never creating it) and reports
    /// the full verification that runs at every open.
    pub fn check(dir: &Path) -> Result<Verified, StoreError> {
        if !dir.join("db").is_file() && !has_manifest(dir) {
            return Err(StoreError::Missing {
                path: dir.display().to_string(),
            });
        }
        Store::open_verified(dir, 16, false).map(|(_, v)| v)
    }
}

/// Adds the change `delta` (from [`Store::begin_write`]) to `digest`.
pub(super) fn apply(digest: &mut Digest, delta: &Digest) {
    for (t, d) in digest.0.iter_mut().zip(delta.0.iter()) {
        t.count = t.count.wrapping_add(d.count);
        t.sum = t.sum.wrapping_add(d.sum);
    }
}

/// Whether `dir` has a manifest (a data dir whose db is missing is refused when it does).
pub fn has_manifest(dir: &Path) -> bool {
    manifest_path(dir).is_file()
}

/// The store's running digest (behind the store's lock).
#[derive(Debug, Default)]
pub struct Running(pub Digest);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_an_edited_one_is_refused() {
        let mut d = Digest::default();
        d.add(ARMS, b"qa\0m", b"{}");
        let m = Manifest {
            schema: SCHEMA_VERSION,
            generation: 42,
            trees: d,
            flush: 7,
        };
        let text = m.encode().unwrap();
        assert_eq!(Manifest::decode(&text).unwrap(), m);
        let edited = text.replace("42", "43");
        let err = Manifest::decode(&edited).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        assert!(Manifest::decode("{}").is_err());
    }

    /// The manifest is rewritten in place: a shorter one over a longer one is padded and reads
    /// back as itself; a longer one extends the file; a file too long to rewrite is left to the
    /// rename; text after the two lines that is not blank is refused.
    #[test]
    fn a_manifest_rewritten_in_place_reads_back_whatever_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = manifest_path(dir.path());
        let manifest = |generation| Manifest {
            schema: SCHEMA_VERSION,
            generation,
            trees: Digest::default(),
            flush: 3,
        };
        for generation in [u64::MAX, 5, 1_000_000, 0] {
            let m = manifest(generation);
            assert!(write_in_place(&path, m.encode().unwrap().as_bytes()).unwrap());
            assert_eq!(read(dir.path()).unwrap(), Some(m));
        }
        let long = std::fs::metadata(&path).unwrap().len();
        assert_eq!(long as usize, manifest(u64::MAX).encode().unwrap().len());
        std::fs::write(&path, vec![b' '; MANIFEST_MAX_LEN as usize + 1]).unwrap();
        assert!(!write_in_place(&path, b"x").unwrap());
        let text = manifest(1).encode().unwrap();
        assert!(Manifest::decode(&format!("{text}  \n \n")).is_ok());
        let err = Manifest::decode(&format!("{text}{{}}\n")).unwrap_err();
        assert!(err.contains("not two lines"), "{err}");
    }

    /// Opens `dir`, waiting while a dropped store's lock is still held.
    fn open(dir: &Path) -> Result<Store, StoreError> {
        for _ in 0..200 {
            match Store::open_with(dir, 8) {
                Err(StoreError::Locked(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                other => return other,
            }
        }
        panic!("{} stayed locked", dir.display());
    }

    fn rewrite(dir: &Path, edit: impl FnOnce(&mut Manifest)) {
        let mut m = read(dir).unwrap().unwrap();
        edit(&mut m);
        std::fs::write(manifest_path(dir), m.encode().unwrap()).unwrap();
    }

    /// The db's record of its last flush against a (validly checksummed) manifest: the same flush
    /// with other contents is refused; a manifest one flush behind is accepted and brought level;
    /// one further behind, or ahead of the db, is refused.
    #[test]
    fn the_dbs_flush_record_is_compared_with_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        store.flush().unwrap();
        drop(store);
        let flushed = read(dir.path()).unwrap().unwrap();
        assert_eq!(flushed.flush, 2, "one flush at open, one asked");

        rewrite(dir.path(), |m| m.trees.0[ARMS].count += 1);
        let err = open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("differs from its manifest's"), "{err}");

        rewrite(dir.path(), |m| {
            *m = Manifest {
                flush: 1,
                ..flushed.clone()
            }
        });
        let store = open(dir.path()).unwrap();
        drop(store);
        assert_eq!(read(dir.path()).unwrap().unwrap().flush, 3);

        rewrite(dir.path(), |m| m.flush = 1);
        let err = open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("older than the db by more than one flush"),
            "{err}"
        );
        assert!(err.contains("manifest"), "{err}");

        rewrite(dir.path(), |m| m.flush = 9);
        let err = open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("flushed writes are missing"), "{err}");
    }

    /// A data dir of schema 3 (every decision under its own key, a manifest of schema 3) opens
    /// as it is: stamped 4, its decisions read back, and new ones written in segments.
    #[test]
    fn a_schema_3_data_dir_opens_as_it_is_and_is_stamped_4() {
        use rand::SeedableRng;
        let dir = tempfile::tempdir().unwrap();
        let mut engine = crate::store::tests::logging_engine();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(4);
        {
            let store = open(dir.path()).unwrap();
            for i in 0..5 {
                crate::store::tests::route(&mut engine, &mut rng, 1_000 * i);
                store.write(engine.take_changes()).unwrap();
            }
            store.flush().unwrap();
            store.meta.insert("schema", &3u32.to_be_bytes()).unwrap();
            store.db.flush().unwrap();
        }
        rewrite(dir.path(), |m| m.schema = 3);
        let store = open(dir.path()).unwrap();
        let stamped = store.meta.get("schema").unwrap().unwrap();
        assert_eq!(stamped.as_ref(), &4u32.to_be_bytes());
        assert_eq!(store.load(10_000, 100).unwrap().pending.len(), 5);
        for i in 5..8 {
            crate::store::tests::route(&mut engine, &mut rng, 1_000 * i);
        }
        store.write(engine.take_changes()).unwrap();
        store.flush().unwrap();
        let s = store.summary(10_000).unwrap();
        assert_eq!((s.schema, s.decisions, s.pending), (4, 8, 8));
        assert_eq!(
            store.decisions.len(),
            6,
            "five of their own and one segment"
        );
        drop(store);
        assert_eq!(read(dir.path()).unwrap().unwrap().schema, 4);
        open(dir.path()).unwrap();
    }

    #[test]
    fn the_digest_is_order_free_and_removal_undoes_an_add() {
        let mut a = Digest::default();
        let mut b = Digest::default();
        a.add(DECISIONS, b"k1", b"v1");
        a.add(DECISIONS, b"k2", b"v2");
        b.add(DECISIONS, b"k2", b"v2");
        b.add(DECISIONS, b"k1", b"v1");
        assert_eq!(a, b);
        b.add(DECISIONS, b"k3", b"v3");
        b.remove_hash(DECISIONS, record_hash(b"k3", b"v3"));
        assert_eq!(a, b);
        let mut c = Digest::default();
        c.add(DECISIONS, b"k1", b"v1");
        c.add(DECISIONS, b"k2", b"v3");
        assert_ne!(a, c, "a changed value changes the digest");
    }
}
