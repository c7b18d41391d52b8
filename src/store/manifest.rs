//! The data dir's manifest: what the last flush put on disk, so that a truncated, garbled,
//! rolled-back or deleted db is refused at start instead of opened with state silently missing.
//!
//! The file `DATA_DIR/manifest` holds one line of JSON (schema version, generation, and per tree
//! the record count and a wrapping sum of a 64-bit hash of every key and value) and a second line,
//! the hash of the first (a torn or edited manifest is refused too). It is rewritten (write a
//! temporary file, rename) after every flush, from a digest the store keeps up to date as it
//! writes: each commit and trim adjusts it by the records it replaces and writes, under one lock,
//! so no write needs a scan of the db. The whole db is scanned only at open (and by `switchyard
//! state check`), and after the writer reopens the db following a write failure.
//!
//! Generations: every commit or trim first writes its new generation to `meta/intent`, then its
//! records. After a crash the db is a prefix of its writes, so a db holding any write newer than
//! the manifest has an intent above the manifest's generation. At open:
//! - db generation == manifest generation: every tree must match the manifest exactly;
//! - db generation > manifest generation: the process stopped between a write and its flush
//!   (a crash or SIGKILL); the newer writes cannot be checked against the manifest, so the db is
//!   accepted as it is (logged) and a new manifest written;
//! - db generation < manifest generation, or a manifest without a db: flushed writes are missing
//!   (a truncated, replaced or deleted db): refused, naming the file.
//!
//! Restart: the manifest is the only state here; it is rebuilt from the db at every open.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{lock, Store, StoreError, SCHEMA_VERSION};

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

    fn remove(&mut self, tree: usize, key: &[u8], value: &[u8]) {
        let t = &mut self.0[tree];
        t.count = t.count.wrapping_sub(1);
        t.sum = t.sum.wrapping_sub(record_hash(key, value));
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
}

impl Manifest {
    fn encode(&self) -> Result<String, serde_json::Error> {
        let body = serde_json::to_string(self)?;
        let sum = hash_bytes(FNV_OFFSET, body.as_bytes());
        Ok(format!("{body}\n{sum:016x}\n"))
    }

    /// Parses a manifest file's text; `Err` says what is wrong with it.
    fn decode(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines();
        let (Some(body), Some(sum), None) = (lines.next(), lines.next(), lines.next()) else {
            return Err("not two lines (a manifest and its checksum)".into());
        };
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
    pub trees: Digest,
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
            for kv in self.tree_by_index(i).iter() {
                let (k, v) = kv.map_err(|e| self.io(e))?;
                d.add(i, &k, &v);
            }
        }
        Ok(d)
    }

    /// Full verification against the manifest (see the module doc); on success the digest the
    /// store keeps starts from the scan and a fresh manifest is written.
    pub(super) fn verify_manifest(&self) -> Result<Verified, StoreError> {
        let dir = self.path.clone();
        let corrupt = |detail: String| StoreError::Corrupt {
            path: dir.display().to_string(),
            file: self.path.join("db").display().to_string(),
            detail,
        };
        let manifest = read(&self.path)?;
        let generation = self.db_generation()?;
        self.generation.fetch_max(generation, Ordering::Relaxed);
        let trees = self.scan_digest()?;
        let mut compared = false;
        if let Some(m) = &manifest {
            if m.schema != SCHEMA_VERSION && m.generation >= generation {
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
            if generation == m.generation {
                for (i, name) in TREES.iter().enumerate() {
                    let (want, got) = (m.trees.0[i], trees.0[i]);
                    if want != got {
                        return Err(corrupt(format!(
                            "tree {name} holds {} records (digest {:016x}) but the manifest of \
                             generation {generation} says {} (digest {:016x})",
                            got.count, got.sum, want.count, want.sum
                        )));
                    }
                }
                compared = true;
            } else {
                tracing::warn!(
                    data_dir = %self.path.display(),
                    db_generation = generation,
                    manifest_generation = m.generation,
                    "the data dir stopped between a write and its flush (a crash?): writes newer \
                     than its manifest are kept unverified"
                );
            }
        }
        lock(&self.digest).0 = trees;
        self.write_manifest_file(generation, trees)?;
        Ok(Verified {
            generation,
            manifest_generation: manifest.map(|m| m.generation),
            compared,
            trees,
        })
    }

    /// Writes the manifest file (temporary file, then rename).
    fn write_manifest_file(&self, generation: u64, trees: Digest) -> Result<(), StoreError> {
        let m = Manifest {
            schema: SCHEMA_VERSION,
            generation,
            trees,
        };
        let io = |e: String| StoreError::Io {
            path: self.path.display().to_string(),
            detail: format!("cannot write the manifest: {e}"),
        };
        let text = m.encode().map_err(|e| io(e.to_string()))?;
        let path = manifest_path(&self.path);
        let tmp = self.path.join("manifest.tmp");
        std::fs::write(&tmp, text).map_err(|e| io(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(e.to_string()))
    }

    /// The generation and digest now, for the manifest of the flush about to start.
    pub(super) fn manifest_snapshot(&self) -> (u64, Digest) {
        let d = lock(&self.digest);
        (self.generation.load(Ordering::Relaxed), d.0)
    }

    /// After a flush that covered `snapshot`: records it in the manifest file.
    pub(super) fn flushed(&self, snapshot: (u64, Digest)) -> Result<(), StoreError> {
        self.write_manifest_file(snapshot.0, snapshot.1)
    }

    /// Starts a commit or trim of generation `generation`: writes its intent before its records,
    /// and returns the digest change of `writes` (old versions read now; the caller holds the
    /// digest's lock until it has applied them).
    pub(super) fn begin_write(
        &self,
        generation: u64,
        writes: &Writes,
        removed: &[Vec<u8>],
    ) -> Result<Digest, StoreError> {
        self.meta
            .insert("intent", &generation.to_be_bytes())
            .map_err(|e| self.io(e))?;
        // Nothing else wrote since the batch was encoded: what it read then is still there.
        let trusted = writes.at == Some(self.write_seq());
        self.bump_write_seq();
        let mut d = Digest::default();
        for (tree, k, hash, old) in &writes.entries {
            match old {
                Old::Absent if trusted => {}
                Old::Hash(h) if trusted => {
                    let t = &mut d.0[*tree];
                    t.count = t.count.wrapping_sub(1);
                    t.sum = t.sum.wrapping_sub(*h);
                }
                _ => {
                    if let Some(old) = self.tree_by_index(*tree).get(k).map_err(|e| self.io(e))? {
                        d.remove(*tree, k, &old);
                    }
                }
            }
            d.add_hash(*tree, *hash);
        }
        for k in removed {
            if let Some(old) = self.decisions.get(k).map_err(|e| self.io(e))? {
                d.remove(DECISIONS, k, &old);
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
        Store::open_verified(dir, 16).map(|(_, v)| v)
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
        };
        let text = m.encode().unwrap();
        assert_eq!(Manifest::decode(&text).unwrap(), m);
        let edited = text.replace("42", "43");
        let err = Manifest::decode(&edited).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        assert!(Manifest::decode("{}").is_err());
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
        b.remove(DECISIONS, b"k3", b"v3");
        assert_eq!(a, b);
        let mut c = Digest::default();
        c.add(DECISIONS, b"k1", b"v1");
        c.add(DECISIONS, b"k2", b"v3");
        assert_ne!(a, c, "a changed value changes the digest");
    }
}
