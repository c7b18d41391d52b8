//! The outbox's Feedback part: Feedback for a decision this replica cannot find while Redis is
//! unreachable (the decision was made on another replica; only Redis knows it).
//!
//! Such a Feedback passes the checks that need no decision (`Engine::check_deferrable`), is
//! written to this replica's outbox and acknowledged with `FeedbackResponse.deferred = true`.
//! When Redis answers again the background task replays the outbox in order, each entry as a
//! Feedback arriving then (read the decision, claim its facts, learn, settle): idempotent like
//! any Feedback, so a replay that is interrupted and run again counts nothing twice. An entry
//! whose decision Redis does not know [`UNKNOWN_GRACE_HEARTBEATS`] heartbeats after this replica
//! reached Redis again (the other replicas have replayed their own decisions by then), or that
//! the engine refuses once its decision is known (expired, a model it did not offer, a tenant's
//! key rating another tenant's decision), is dropped: logged at WARN with the decision id and the
//! reason, and counted in `switchyard_cluster_deferred_feedback_dropped_total`. It was
//! acknowledged (as deferred), so this is the one case where an acknowledged Feedback is not
//! applied.
//!
//! Per replica. With a data dir, every entry is written to the sled tree `cluster_outbox` before
//! the Feedback is acknowledged (flushed to disk first under `storage.durability = "sync"`;
//! under `periodic`, sled's own flush within half a second) and removed once applied or dropped,
//! so a restart during an outage loses nothing acknowledged. Without a data dir the outbox is in
//! memory only and a restart loses it. The decisions and settlements queued during an outage
//! (`Deferred`) stay in memory, as before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};

use super::*;
use crate::engine::FeedbackInput;
use crate::store::{StoreError, StoreSlot};

/// Heartbeats after Redis answers again before a deferred Feedback whose decision Redis does not
/// know is dropped (a replica is counted live for 3 heartbeats, so by then every replica that
/// came back has replayed the decisions it made during the outage).
pub const UNKNOWN_GRACE_HEARTBEATS: u64 = 5;

/// Who sent a deferred Feedback (the tenant check runs when its decision is found).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sender {
    pub key_name: String,
    /// The key's tenant: (name, budget key).
    pub tenant: Option<(String, String)>,
}

/// One Feedback accepted while its decision could not be found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeferredFeedback {
    pub seq: u64,
    pub received_ms: u64,
    pub input: FeedbackInput,
    /// `None`: the service has no API keys.
    pub sender: Option<Sender>,
}

/// Counters of the claims and the outbox, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct FeedbackCounters {
    pub claims_lost: AtomicU64,
    pub deferred_accepted: AtomicU64,
    pub deferred_applied: AtomicU64,
    pub deferred_dropped: AtomicU64,
}

/// The data dir the outbox is written to.
struct Disk {
    store: Arc<StoreSlot>,
    /// `storage.durability = "sync"`: flush before the acknowledgement.
    flush: bool,
}

/// The Feedback outbox of one replica.
#[derive(Default)]
pub struct Outbox {
    queue: Mutex<BTreeMap<u64, DeferredFeedback>>,
    disk: OnceLock<Disk>,
    /// When this replica last reached Redis after an outage (Unix ms; 0 = not since start).
    back_since_ms: AtomicU64,
}

impl Outbox {
    fn queue(&self) -> MutexGuard<'_, BTreeMap<u64, DeferredFeedback>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persists the outbox in `store` from now on and takes back what it held (a restart).
    /// Returns how many entries were restored; unreadable entries are logged and removed.
    pub fn attach(&self, store: Arc<StoreSlot>, flush: bool) -> Result<usize, StoreError> {
        let stored = store.with(|s| s.outbox_all())?;
        let mut q = self.queue();
        for (seq, json) in stored {
            match serde_json::from_slice::<DeferredFeedback>(&json) {
                Ok(d) => {
                    q.insert(seq, d);
                }
                Err(e) => {
                    tracing::warn!(seq, error = %e, "unreadable deferred feedback in the data dir: dropped");
                    store.with(|s| s.outbox_remove(seq))?;
                }
            }
        }
        let n = q.len();
        drop(q);
        let _ = self.disk.set(Disk { store, flush });
        Ok(n)
    }

    /// Feedback waiting for Redis.
    pub fn len(&self) -> usize {
        self.queue().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Accepts a Feedback: on disk first (with a data dir), then queued. An error means it was
    /// not accepted.
    pub async fn accept(
        &self,
        input: FeedbackInput,
        sender: Option<Sender>,
        now_ms: u64,
    ) -> Result<DeferredFeedback, StoreError> {
        let seq = {
            let q = self.queue();
            let last = q.keys().next_back().copied().unwrap_or(0);
            // Unique across restarts too: never below the clock (microseconds) or the last one.
            (now_ms * 1000).max(last + 1)
        };
        let d = DeferredFeedback {
            seq,
            received_ms: now_ms,
            input,
            sender,
        };
        if let Some(disk) = self.disk.get() {
            let json = serde_json::to_vec(&d).map_err(|e| StoreError::Io {
                path: String::from("(cluster outbox)"),
                detail: e.to_string(),
            })?;
            let (store, flush) = (Arc::clone(&disk.store), disk.flush);
            tokio::task::spawn_blocking(move || store.with(|s| s.outbox_put(seq, &json, flush)))
                .await
                .map_err(|e| StoreError::Io {
                    path: String::from("(cluster outbox)"),
                    detail: e.to_string(),
                })??;
        }
        self.queue().insert(seq, d.clone());
        Ok(d)
    }

    /// The entries waiting, in order.
    pub fn entries(&self) -> Vec<DeferredFeedback> {
        self.queue().values().cloned().collect()
    }

    /// Removes an entry applied or dropped.
    pub fn remove(&self, seq: u64) {
        self.queue().remove(&seq);
        if let Some(disk) = self.disk.get() {
            if let Err(e) = disk.store.with(|s| s.outbox_remove(seq)) {
                // Replayed again after a restart: idempotent, so nothing is counted twice.
                tracing::warn!(seq, error = %e, "cannot remove an applied feedback from the outbox");
            }
        }
    }

    /// Whether Redis has answered for less than `window_ms` at `now_ms` (since this replica
    /// reached it, at start or after an outage); false while it does not answer.
    pub fn back_within(&self, now_ms: u64, window_ms: u64) -> bool {
        match self.back_since_ms.load(Ordering::Relaxed) {
            0 => false,
            since => now_ms.saturating_sub(since) < window_ms,
        }
    }

    /// Notes that Redis answers (`up`) or not, now; returns how long it has answered, ms.
    pub fn note_up(&self, up: bool, now_ms: u64) -> u64 {
        if !up {
            self.back_since_ms.store(0, Ordering::Relaxed);
            return 0;
        }
        let since = match self.back_since_ms.load(Ordering::Relaxed) {
            0 => {
                self.back_since_ms.store(now_ms, Ordering::Relaxed);
                now_ms
            }
            t => t,
        };
        now_ms.saturating_sub(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(id: &str) -> FeedbackInput {
        FeedbackInput {
            decision_id: id.to_string(),
            quality: Some(0.5),
            ..FeedbackInput::default()
        }
    }

    #[tokio::test]
    async fn entries_survive_a_restart_with_a_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let store = crate::store::Store::open_with(dir.path(), 16).unwrap();
            Arc::new(StoreSlot::new(store, 16))
        };
        let slot = open();
        let outbox = Outbox::default();
        assert_eq!(outbox.attach(Arc::clone(&slot), true).unwrap(), 0);
        let a = outbox.accept(input("a"), None, 1_000).await.unwrap();
        let sender = Some(Sender {
            key_name: String::from("k"),
            tenant: Some((String::from("t"), String::from("team"))),
        });
        let b = outbox.accept(input("b"), sender, 1_000).await.unwrap();
        assert!(b.seq > a.seq, "sequence numbers are unique within one ms");
        outbox.remove(a.seq);
        drop(outbox);
        drop(slot);

        let again = Outbox::default();
        assert_eq!(again.attach(open(), true).unwrap(), 1);
        assert_eq!(again.entries(), vec![b]);
    }

    #[tokio::test]
    async fn without_a_data_dir_the_outbox_is_memory_only() {
        let outbox = Outbox::default();
        let a = outbox.accept(input("a"), None, 5).await.unwrap();
        assert_eq!(outbox.entries(), vec![a.clone()]);
        outbox.remove(a.seq);
        assert!(outbox.is_empty());
    }

    #[test]
    fn redis_counts_as_back_from_the_first_answer() {
        let o = Outbox::default();
        assert_eq!(o.note_up(true, 100), 0);
        assert_eq!(o.note_up(true, 350), 250);
        assert_eq!(o.note_up(false, 400), 0);
        assert_eq!(o.note_up(true, 500), 0);
    }

    #[test]
    fn back_within_counts_from_the_last_return_and_is_false_while_down() {
        let o = Outbox::default();
        assert!(!o.back_within(100, 1_000), "never reached");
        o.note_up(true, 100);
        assert!(o.back_within(100, 1_000));
        assert!(o.back_within(1_099, 1_000));
        assert!(!o.back_within(1_100, 1_000));
        o.note_up(false, 2_000);
        assert!(!o.back_within(2_000, 1_000), "down");
        o.note_up(true, 3_000);
        assert!(
            o.back_within(3_500, 1_000),
            "back again: counted from the return"
        );
        assert!(!o.back_within(3_500, 0));
    }
}
