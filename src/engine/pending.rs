//! Decisions still accepting feedback: bounded by TTL and count, indexed by request_id, with the
//! set of ids changed since the store last took them. Held in their compact form
//! ([`CompactPending`], `compact.rs`): this map is most of the service's memory. In memory only;
//! on restart the store reads the pending records back and they are inserted again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::*;

/// The maps' hasher: foldhash, seeded per map, is a fraction of std's SipHash on a 16-byte id
/// (three to four look-ups per Route and per Feedback) and still varies its seed, so request ids
/// a caller picks cannot be aimed at one bucket chain.
type Quick = foldhash::fast::RandomState;

/// A decision waiting for (or still accepting) feedback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingDecision {
    pub decision: Decision,
    pub request_id: Option<String>,
    /// Models whose outcome was reported.
    pub outcomes: Vec<String>,
    /// Models whose outcome was a failure (a later quality score for them is refused).
    pub failed: Vec<String>,
    /// Models whose quality was reported.
    pub qualities: Vec<String>,
    /// The tenant of the key that made the decision (see `tenant.rs`); `None` = no tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A shadowed decision's two calls, as reported so far (shadow traffic: `shadow.rs`).
    #[serde(default)]
    pub sides: PairSides,
}

/// Pending decisions read back at a restart, compacted one by one as the store reads them, their
/// names shared through one table that the restored engine adopts. Holding them in full until
/// the engine compacted them took about 800 bytes each (80 MB of fresh pages for 100 000) and a
/// sort that moved those bytes: most of a restart on a million-decision data dir.
#[derive(Debug, Clone, Default)]
pub struct RestoredPending {
    names: Names,
    decisions: Vec<CompactPending>,
}

impl RestoredPending {
    pub fn push(&mut self, p: PendingDecision) {
        self.decisions.push(CompactPending::new(p, &mut self.names));
    }

    pub fn reserve(&mut self, n: usize) {
        self.decisions.reserve_exact(n);
    }

    pub fn len(&self) -> usize {
        self.decisions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }

    /// The name table and the decisions, for the engine that adopts them.
    pub(super) fn into_parts(self) -> (Names, Vec<CompactPending>) {
        (self.names, self.decisions)
    }
}

/// Pending decisions, bounded by TTL and count, with the request_id index.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Pending {
    /// Shared so that the store's snapshot of a changed decision is a reference count, not a copy.
    by_id: HashMap<DecisionKey, SharedPending, Quick>,
    /// Decision ids in creation order (so also expiry order: the TTL is the same for all).
    order: VecDeque<DecisionKey>,
    by_request: HashMap<Box<str>, DecisionKey, Quick>,
    /// Ids inserted, changed or removed since the last [`Engine::take_changes`], each with the
    /// decision as it is now (`None`: gone). Kept current on every change, so that taking the
    /// changes (under the engine's lock, which every Route waits for) only moves this map and
    /// never looks ids up in `by_id`.
    dirty: HashMap<DecisionKey, Option<SharedPending>, Quick>,
    /// Set when nothing takes the changes ([`Pending::untracked`]): `dirty` stays empty.
    untracked: bool,
    /// The names and lists the decisions share.
    pub(super) names: Names,
}

impl Pending {
    /// Inserts `p` (replacing a decision of the same id); returns the budgeted decisions evicted
    /// to stay within `max` (their reservations are to be buried).
    pub(super) fn insert(&mut self, p: PendingDecision, max: usize) -> Vec<SharedPending> {
        let c = CompactPending::new(p, &mut self.names);
        self.insert_compact(c, max)
    }

    /// Inserts the decision Route just made (see [`Pending::insert`]); returns the evicted
    /// decisions and the new one as held (for the event log, without looking it up again).
    pub(super) fn insert_new(
        &mut self,
        d: &Decision,
        request_id: Option<&str>,
        max: usize,
    ) -> (Vec<SharedPending>, SharedPending) {
        let c = CompactPending::of_decision(d, request_id, &mut self.names);
        self.insert_shared(c, max, true)
    }

    fn insert_compact(&mut self, c: CompactPending, max: usize) -> Vec<SharedPending> {
        self.insert_shared(c, max, true).0
    }

    /// Inserts a decision read back from the store (see [`Pending::insert`]): already persisted,
    /// so not noted as a change (an eviction still is).
    pub(super) fn insert_restored(&mut self, c: CompactPending, max: usize) -> Vec<SharedPending> {
        self.insert_shared(c, max, false).0
    }

    /// Sizes the id map for `map` decisions and the creation order for `order`, from empty or
    /// as restored ([`Engine::presize_pending`] says why).
    pub(super) fn presize(&mut self, map: usize, order: usize) {
        self.by_id.reserve(map.saturating_sub(self.by_id.len()));
        self.order.reserve(order.saturating_sub(self.order.len()));
    }

    /// How many decisions the id map and the creation order hold without growing.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> (usize, usize) {
        (self.by_id.capacity(), self.order.capacity())
    }

    /// Inserts `c`; returns the evicted budgeted decisions and `c` as held. `max` is at least 1
    /// (`limits.max_pending` is positive), so the newest decision is never the one evicted.
    fn insert_shared(
        &mut self,
        c: CompactPending,
        max: usize,
        noted: bool,
    ) -> (Vec<SharedPending>, SharedPending) {
        let key = c.key().clone();
        if let Some(r) = c.request_id() {
            self.by_request.insert(r.into(), key.clone());
        }
        let c = Arc::new(c);
        if noted {
            self.note(key.clone(), Some(Arc::clone(&c)));
        }
        let held = Arc::clone(&c);
        if self.by_id.insert(key.clone(), c).is_none() {
            self.order.push_back(key);
        }
        let mut evicted = Vec::new();
        while self.by_id.len() > max {
            match self.pop_front() {
                None => break,
                Some(Some(p)) if p.budget_key().is_some() => evicted.push(p),
                Some(_) => {}
            }
        }
        (evicted, held)
    }

    /// Removes the oldest id: `None` when empty, else the decision it named (if still held).
    fn pop_front(&mut self) -> Option<Option<SharedPending>> {
        let key = self.order.pop_front()?;
        Some(self.forget(key))
    }

    /// Drops a decision from the map and the request index (its id stays in `order` until it
    /// comes first), noting the change.
    fn forget(&mut self, key: DecisionKey) -> Option<SharedPending> {
        let p = self.by_id.remove(&key);
        if let Some(r) = p.as_ref().and_then(|p| p.request_id()) {
            if self.by_request.get(r) == Some(&key) {
                self.by_request.remove(r);
            }
        }
        self.note(key, None);
        p
    }

    /// Removes the decision `id` (a withdrawn one).
    pub(super) fn remove(&mut self, id: &str) -> Option<SharedPending> {
        let key = DecisionKey::of(id);
        self.by_id.contains_key(&key).then(|| self.forget(key))?
    }

    /// Drops expired decisions; returns how many, and those that had a budget.
    pub(super) fn expire(&mut self, now_ms: u64) -> (usize, Vec<SharedPending>) {
        let mut n = 0;
        let mut budgeted = Vec::new();
        while let Some(key) = self.order.front() {
            let expired = match self.by_id.get(key) {
                None => true,
                Some(p) => p.expires_ms() <= now_ms,
            };
            if !expired {
                break;
            }
            if let Some(Some(p)) = self.pop_front() {
                if p.budget_key().is_some() {
                    budgeted.push(p);
                }
            }
            n += 1;
        }
        (n, budgeted)
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn get(&self, id: &str) -> Option<&SharedPending> {
        self.by_id.get(&DecisionKey::of(id))
    }

    /// The live (unexpired) decision `id`.
    pub(super) fn live(&self, id: &str, now_ms: u64) -> Option<&SharedPending> {
        self.get(id).filter(|p| p.expires_ms() > now_ms)
    }

    /// The full decision `id`.
    pub(super) fn full(&self, id: &str) -> Option<PendingDecision> {
        self.get(id).map(|p| p.expand())
    }

    /// The decision named by a request_id.
    pub(super) fn by_request(&self, request_id: &str) -> Option<&SharedPending> {
        self.by_request
            .get(request_id)
            .and_then(|k| self.by_id.get(k))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &SharedPending> {
        self.by_id.values()
    }

    /// Changes the compact decision `id` in place (copied first if the store still holds it)
    /// and notes the change; `None` when not pending.
    pub(super) fn change<R>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut CompactPending, &mut Names) -> R,
    ) -> Option<R> {
        let key = DecisionKey::of(id);
        let p = self.by_id.get_mut(&key)?;
        // The snapshot of an earlier change this cycle goes first: it is replaced below, and
        // holding it would make `make_mut` copy the decision.
        self.dirty.remove(&key);
        let r = f(Arc::make_mut(p), &mut self.names);
        let now = Some(Arc::clone(p));
        self.note(key, now);
        Some(r)
    }

    /// Changes the full decision `id` (rarer changes: expanded, changed, compacted again) and
    /// notes the change; `None` when not pending.
    pub(super) fn change_full<R>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut PendingDecision) -> R,
    ) -> Option<R> {
        let key = DecisionKey::of(id);
        let slot = self.by_id.get_mut(&key)?;
        let mut full = slot.expand();
        let r = f(&mut full);
        *slot = Arc::new(CompactPending::new(full, &mut self.names));
        let now = Some(Arc::clone(slot));
        self.note(key, now);
        Some(r)
    }

    /// Notes `id` as changed.
    pub(super) fn mark(&mut self, id: &str) {
        let key = DecisionKey::of(id);
        let now = self.by_id.get(&key).cloned();
        self.note(key, now);
    }

    /// Notes decision `key` as changed, as it is `now` (`None`: gone).
    fn note(&mut self, key: DecisionKey, now: Option<SharedPending>) {
        if !self.untracked {
            self.dirty.insert(key, now);
        }
    }

    /// Stops noting changes (see [`Engine::untracked`]).
    pub(super) fn untracked(&mut self) {
        self.dirty.clear();
        self.untracked = true;
    }

    pub(super) fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The changed decisions by id (`None`: gone), and starts tracking afresh.
    /// Moves the changes into `into` (emptied first; it grows only when the caller sized it short).
    pub(super) fn take_changes_into(
        &mut self,
        into: &mut Vec<(DecisionKey, Option<SharedPending>)>,
    ) {
        into.clear();
        // Drained rather than taken: the map keeps its capacity for the next cycle's changes.
        into.extend(self.dirty.drain());
    }

    pub(super) fn clear_changes(&mut self) {
        self.dirty.clear();
    }
}
