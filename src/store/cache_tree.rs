//! The `cache` tree: the response cache's entries (one prost `crate::cache::Record` per entry,
//! keyed by class, stored time and source decision; see `crate::cache::store`), written from the
//! cache's own journal and read back at start.
//!
//! Outside the manifest's digest and the backups (as the spend tree is): a cache is rebuilt by
//! traffic, so a lost or truncated tree costs hits, never correctness. A record that does not
//! decode is deleted at start (logged), not refused.

use prost::Message;

use super::{Store, StoreError};
use crate::cache::store::{class_prefix, Change, Journal, Record};

const CACHE_TREE: &str = "cache";

impl Store {
    fn cache_tree(&self) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(CACHE_TREE).map_err(|e| self.io(e))
    }

    /// Every cache record; records that do not decode are deleted (and logged).
    pub fn load_cache(&self) -> Result<Vec<Record>, StoreError> {
        let tree = self.cache_tree()?;
        let mut out = Vec::new();
        let mut bad = sled::Batch::default();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(|e| self.io(e))?;
            match Record::decode(v.as_ref()) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(key = %super::show_key(&k), error = %e, "dropping an unreadable response cache record");
                    bad.remove(k);
                }
            }
        }
        tree.apply_batch(bad).map_err(|e| self.io(e))?;
        Ok(out)
    }

    /// Applies a journal of the cache (see [`Journal`] for the order).
    pub fn write_cache(&self, j: &Journal) -> Result<(), StoreError> {
        let tree = self.cache_tree()?;
        if j.clear_all {
            tree.clear().map_err(|e| self.io(e))?;
        }
        let mut batch = sled::Batch::default();
        for class in &j.cleared {
            for k in tree.scan_prefix(class_prefix(class)).keys() {
                batch.remove(k.map_err(|e| self.io(e))?);
            }
        }
        tree.apply_batch(batch).map_err(|e| self.io(e))?;
        let mut batch = sled::Batch::default();
        for c in &j.changes {
            match c {
                Change::Put(r) => batch.insert(r.disk_key(), r.encode_to_vec()),
                Change::Delete(k) => batch.remove(k.as_slice()),
            }
        }
        tree.apply_batch(batch).map_err(|e| self.io(e))
    }
}
