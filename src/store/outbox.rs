//! The `cluster_outbox` tree: Feedback a cluster replica accepted while Redis was unreachable
//! and has not applied yet (`crate::cluster::outbox`). Key: big-endian u64 sequence number;
//! value: the entry's JSON. Outside the manifest's digest and the backups: entries live for
//! the length of a Redis outage, and an entry is removed once applied (or dropped).

use super::{Store, StoreError};

const TREE: &str = "cluster_outbox";

impl Store {
    fn outbox_tree(&self) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(TREE).map_err(|e| self.outbox_io(e))
    }

    fn outbox_io(&self, e: sled::Error) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            detail: format!("{TREE}: {e}"),
        }
    }

    /// Writes one entry; with `flush`, waits until it is on disk.
    pub fn outbox_put(&self, seq: u64, json: &[u8], flush: bool) -> Result<(), StoreError> {
        let t = self.outbox_tree()?;
        t.insert(seq.to_be_bytes(), json)
            .map_err(|e| self.outbox_io(e))?;
        if flush {
            t.flush().map_err(|e| self.outbox_io(e))?;
        }
        Ok(())
    }

    /// Removes one entry (a no-op when absent).
    pub fn outbox_remove(&self, seq: u64) -> Result<(), StoreError> {
        self.outbox_tree()?
            .remove(seq.to_be_bytes())
            .map_err(|e| self.outbox_io(e))?;
        Ok(())
    }

    /// Every entry, in sequence order (an unreadable key is skipped).
    pub fn outbox_all(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.outbox_tree()?.iter() {
            let (k, v) = kv.map_err(|e| self.outbox_io(e))?;
            if let Ok(b) = <[u8; 8]>::try_from(k.as_ref()) {
                out.push((u64::from_be_bytes(b), v.to_vec()));
            }
        }
        Ok(out)
    }
}
