//! Decisions still accepting feedback: bounded by TTL and count, indexed by request_id, with the
//! set of ids changed since the store last took them.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::*;

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

/// Pending decisions, bounded by TTL and count, with the request_id index.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Pending {
    /// Shared so that the store's snapshot of a changed decision is a reference count, not a copy.
    pub(super) by_id: HashMap<String, Arc<PendingDecision>>,
    /// Decision ids in creation order (so also expiry order: the TTL is the same for all).
    pub(super) order: VecDeque<String>,
    pub(super) by_request: HashMap<String, String>,
    /// Ids inserted, changed or removed since the last [`Engine::take_changes`].
    pub(super) dirty: BTreeSet<String>,
}

impl Pending {
    /// Inserts `p`; returns the budgeted decisions evicted to stay within `max` (their
    /// reservations are to be buried).
    pub(super) fn insert(&mut self, p: PendingDecision, max: usize) -> Vec<Arc<PendingDecision>> {
        let id = p.decision.id.clone();
        self.dirty.insert(id.clone());
        if let Some(r) = &p.request_id {
            self.by_request.insert(r.clone(), id.clone());
        }
        self.by_id.insert(id.clone(), Arc::new(p));
        self.order.push_back(id);
        let mut evicted = Vec::new();
        while self.by_id.len() > max {
            match self.pop_front() {
                None => break,
                Some(Some(p)) if p.decision.budget_key.is_some() => evicted.push(p),
                Some(_) => {}
            }
        }
        evicted
    }

    /// Removes the oldest id: `None` when empty, else the decision it named (if still held).
    pub(super) fn pop_front(&mut self) -> Option<Option<Arc<PendingDecision>>> {
        let id = self.order.pop_front()?;
        self.dirty.insert(id.clone());
        let p = self.by_id.remove(&id);
        if let Some(r) = p.as_ref().and_then(|p| p.request_id.as_ref()) {
            if self.by_request.get(r) == Some(&id) {
                self.by_request.remove(r);
            }
        }
        Some(p)
    }

    /// Drops expired decisions; returns how many, and those that had a budget.
    pub(super) fn expire(&mut self, now_ms: u64) -> (usize, Vec<Arc<PendingDecision>>) {
        let mut n = 0;
        let mut budgeted = Vec::new();
        while let Some(id) = self.order.front() {
            let expired = match self.by_id.get(id) {
                None => true,
                Some(p) => p.decision.expires_ms <= now_ms,
            };
            if !expired {
                break;
            }
            if let Some(Some(p)) = self.pop_front() {
                if p.decision.budget_key.is_some() {
                    budgeted.push(p);
                }
            }
            n += 1;
        }
        (n, budgeted)
    }
}
