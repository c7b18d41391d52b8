//! Reopening the data dir after a write failure, behind a slot the server shares.
//!
//! sled 0.34 keeps its first I/O error (say ENOSPC on a full disk) for good: every later write
//! and flush of that `Db` returns it, even once space is free. The only way back is to drop the
//! `Db` (all its trees) and open the directory again. [`StoreSlot`] holds the open [`Store`]
//! behind a lock so that the writer can do that while the rest of the server (the trim sweeper,
//! the final flush, backups) keeps a handle that stays valid across the swap.
//!
//! What a reopen keeps: the in-memory name table (ids already handed out, some maybe not yet on
//! disk) and the index of pending decisions. What it loses: every write sled had not flushed.
//! The writer therefore keeps each committed batch until a flush covers it and commits them again
//! after a reopen ([`crate::server::persist`]); the decision log's counters are then recounted
//! from the disk ([`Store::recount`]), as a partly flushed batch may have been counted twice.
//!
//! Restart: nothing here is persisted; a restart opens the data dir as usual.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::RwLock;

use super::records::Names;
use super::{lock, segment, Store, StoreError};

/// The in-memory part of a [`Store`] that outlives a reopen.
struct Carry {
    names: Names,
    index: HashMap<[u8; 16], super::Loc>,
}

enum Slot {
    /// Boxed: the closed state is much smaller, and a slot is made once per reopen.
    Open(Box<Store>),
    /// Closed after a failure; the next [`StoreSlot::reopen`] opens it again.
    Closed(Carry),
}

/// An open data dir that can be closed and reopened in place (see the module doc).
pub struct StoreSlot {
    path: PathBuf,
    cache_mb: u64,
    slot: RwLock<Slot>,
}

impl StoreSlot {
    /// Holds `store`, which was opened with a page cache of `cache_mb`.
    pub fn new(store: Store, cache_mb: u64) -> StoreSlot {
        StoreSlot {
            path: store.path.clone(),
            cache_mb,
            slot: RwLock::new(Slot::Open(Box::new(store))),
        }
    }

    /// Runs `f` on the open store; an error while it is closed for a reopen.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Slot::Open(store) => f(store),
            Slot::Closed(_) => Err(StoreError::Io {
                path: self.path.display().to_string(),
                detail: "the data dir is closed after a write failure; reopening it".into(),
            }),
        }
    }

    /// Whether the store is closed after a write failure (a reopen is pending).
    pub fn is_closed(&self) -> bool {
        let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
        matches!(&*slot, Slot::Closed(_))
    }

    /// Drops sled's handles and opens the data dir again, keeping the name table and the pending
    /// index. On failure (the disk is still unusable, or sled's lock is still held by a thread of
    /// the old handle) the slot stays closed and a later call tries again.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        let taken = std::mem::replace(
            &mut *slot,
            Slot::Closed(Carry {
                names: Names::default(),
                index: HashMap::new(),
            }),
        );
        let carry = match taken {
            Slot::Open(store) => Carry {
                names: std::mem::take(&mut *lock(&store.names)),
                index: std::mem::take(&mut *lock(&store.index)),
            },
            Slot::Closed(carry) => carry,
        };
        match Store::open_with(&self.path, self.cache_mb) {
            Ok(store) => {
                *lock(&store.names) = carry.names;
                *lock(&store.index) = carry.index;
                *slot = Slot::Open(Box::new(store));
                Ok(())
            }
            Err(e) => {
                *slot = Slot::Closed(carry);
                Err(e)
            }
        }
    }
}

impl Store {
    /// Counts the decision log's records and bytes by a scan, and stores the counts.
    pub(super) fn count_log(&self) -> Result<(u64, u64), StoreError> {
        let (mut count, mut bytes) = (0u64, 0u64);
        for kv in self.decisions.iter() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            count += segment::key_count(&k);
            bytes += (k.len() + v.len()) as u64;
        }
        self.log_count.store(count, Ordering::Relaxed);
        self.log_bytes.store(bytes, Ordering::Relaxed);
        Ok((count, bytes))
    }

    /// Counts the decision log again from the disk and writes the counters to the manifest (after
    /// a reopen; a scan of the whole log, never on the request path).
    pub fn recount(&self) -> Result<(), StoreError> {
        let (count, bytes) = self.count_log()?;
        self.rescan()?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.write_manifest(generation, count, bytes)
    }
}
