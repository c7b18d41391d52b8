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
    pub(super) fn insert(&mut self, p: PendingDecision, max: usize) -> usize {
        let id = p.decision.id.clone();
        self.dirty.insert(id.clone());
        if let Some(r) = &p.request_id {
            self.by_request.insert(r.clone(), id.clone());
        }
        self.by_id.insert(id.clone(), Arc::new(p));
        self.order.push_back(id);
        let mut evicted = 0;
        while self.by_id.len() > max {
            if !self.pop_front() {
                break;
            }
            evicted += 1;
        }
        evicted
    }

    pub(super) fn pop_front(&mut self) -> bool {
        let Some(id) = self.order.pop_front() else {
            return false;
        };
        self.dirty.insert(id.clone());
        if let Some(p) = self.by_id.remove(&id) {
            if let Some(r) = &p.request_id {
                if self.by_request.get(r) == Some(&id) {
                    self.by_request.remove(r);
                }
            }
        }
        true
    }

    /// Drops expired decisions; returns (decision id, budget key) of those that had a budget.
    pub(super) fn expire(&mut self, now_ms: u64) -> (usize, Vec<(String, String)>) {
        let mut n = 0;
        let mut budgeted = Vec::new();
        while let Some(id) = self.order.front() {
            let expired = match self.by_id.get(id) {
                None => true,
                Some(p) => {
                    if p.decision.expires_ms > now_ms {
                        false
                    } else {
                        if let Some(k) = &p.decision.budget_key {
                            budgeted.push((id.clone(), k.clone()));
                        }
                        true
                    }
                }
            };
            if !expired {
                break;
            }
            self.pop_front();
            n += 1;
        }
        (n, budgeted)
    }
}
