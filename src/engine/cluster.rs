//! The engine's side of cluster mode (`crate::cluster`): reading and replacing arms' evidence as
//! mergeable sums, adopting a pending decision made on another replica, and withdrawing a
//! decision whose shared budget reservation was refused. Pure like the rest of the engine: the
//! caller passes the time and does the I/O.

use crate::policy::merge::Evidence;

use super::*;

impl Engine {
    /// Every arm's evidence as (task class, model, evidence in decayed units as of `now_ms`);
    /// the arms are decayed to `now_ms` first.
    pub fn arm_evidence(&mut self, now_ms: u64) -> Vec<(String, String, Evidence)> {
        let half_life = self.config.policy.half_life_secs;
        let mut out = Vec::new();
        for (name, class) in &self.config.task_classes {
            let Some(state) = self.classes.get_mut(name) else {
                continue;
            };
            for (model, arm) in class.models.iter().zip(state.arms.iter_mut()) {
                arm.decay_to(now_ms, half_life);
                out.push((name.clone(), model.clone(), Evidence::of(arm)));
            }
        }
        out
    }

    /// Replaces one arm's evidence by `evidence` (decayed units as of `now_ms`); priors stay.
    /// Returns false when the arm is not configured.
    pub fn set_arm_evidence(
        &mut self,
        class: &str,
        model: &str,
        evidence: &Evidence,
        now_ms: u64,
    ) -> bool {
        let half_life = self.config.policy.half_life_secs;
        let Some(i) = self
            .config
            .task_classes
            .get(class)
            .and_then(|c| c.models.iter().position(|m| m == model))
        else {
            return false;
        };
        let Some(arm) = self.classes.get_mut(class).and_then(|s| s.arms.get_mut(i)) else {
            return false;
        };
        arm.decay_to(now_ms, half_life);
        evidence.apply(arm);
        // The draws came from the old posterior.
        self.pools.remove(class);
        self.note_class(class);
        true
    }

    /// Takes a pending decision as another replica recorded it (or a fresher copy of one made
    /// here), so that its Feedback can be applied on this replica. A decision whose feedback
    /// window has passed or whose class is not configured is not adopted (returns false).
    pub fn adopt_pending(&mut self, p: PendingDecision, now_ms: u64) -> bool {
        if p.decision.expires_ms <= now_ms
            || !self
                .config
                .task_classes
                .contains_key(&p.decision.task_class)
        {
            return false;
        }
        let max = self.config.limits.max_pending;
        let evicted = self.pending.insert(p, max);
        self.bury(&evicted, now_ms);
        true
    }

    /// Drops a decision just made whose shared budget reservation was refused: its local
    /// reservation is released and its pending record forgotten, as if it had not been made.
    pub fn withdraw(&mut self, decision_id: &str, now_ms: u64) {
        let Some(p) = self.pending.remove(decision_id) else {
            return;
        };
        if let Some(key) = p.budget_key() {
            if let (Some(l), Some(b)) = (self.ledgers.get_mut(key), self.config.budgets.get(key)) {
                l.release(b, decision_id, now_ms);
            }
        }
    }

    /// Releases a decision's local reservation once the shared ledger holds it: the shared one is
    /// the reservation of record, and a local copy would hold this replica's headroom until its
    /// TTL when the Feedback goes to another replica.
    pub fn release_local_reservation(&mut self, decision: &Decision, now_ms: u64) {
        let Some(key) = &decision.budget_key else {
            return;
        };
        if let (Some(l), Some(b)) = (self.ledgers.get_mut(key), self.config.budgets.get(key)) {
            l.release(b, &decision.id, now_ms);
        }
    }

    /// The live local reservation of a decision, USD.
    pub fn reservation_of(&self, decision: &Decision) -> Option<f64> {
        let key = decision.budget_key.as_ref()?;
        self.ledgers.get(key)?.reservation_usd(&decision.id)
    }
}
