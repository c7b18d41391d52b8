//! Feedback's path, and in cluster mode its relay through Redis.
//!
//! In cluster mode a Feedback, before the engine sees it: takes the decision as Redis has it
//! (made on any replica); claims the facts it reports for the first time
//! (`crate::cluster::claims`), so the same Feedback at two replicas at once is learned once and
//! the loser answers it as a duplicate; and when its decision cannot be found because Redis is
//! unreachable, is accepted into the replica's outbox and acknowledged as deferred
//! (`crate::cluster::outbox`), to be applied by [`replay_outbox`] when Redis answers again.
//! Feedbacks for one decision are handled one at a time on a replica (from the claim to the
//! settlement), so a claim lost to a Feedback on the same replica is never marked on the copy
//! the winner is about to apply.

use std::sync::Arc;

use tonic::Status;

use super::*;
use crate::auth::{Role, Tenant};
use crate::cluster::outbox::{DeferredFeedback, Sender, UNKNOWN_GRACE_HEARTBEATS};
use crate::cluster::Cluster;
use crate::engine::{Fact, FeedbackResult, HitFeedback, PendingDecision};

impl Shared {
    /// A Feedback not answered from the response cache: the cluster's steps (when in cluster
    /// mode), then the engine, the shared settlement, durability and metrics.
    pub(super) async fn feedback(
        self: &Arc<Self>,
        caller: Option<&Principal>,
        input: &FeedbackInput,
        response: String,
    ) -> Result<proto::FeedbackResponse, Status> {
        match &self.cluster {
            // Boxed: the cluster's steps are large futures, and inline they would size (and so
            // copy) every Feedback's future, clustered or not.
            Some(c) => Box::pin(self.feedback_clustered(c, caller, input, response)).await,
            None => self.apply_feedback(caller, input, response).await,
        }
    }

    /// [`Shared::feedback`] in cluster mode.
    async fn feedback_clustered(
        self: &Arc<Self>,
        c: &Arc<Cluster>,
        caller: Option<&Principal>,
        input: &FeedbackInput,
        response: String,
    ) -> Result<proto::FeedbackResponse, Status> {
        let _one_at_a_time = c.feedback_locks.lock(&input.decision_id).await;
        if let Some(deferred) = prepare(self, c, caller, input).await? {
            return Ok(deferred);
        }
        let won = claim(self, c, input).await;
        let answer = self.apply_feedback(caller, input, response).await;
        finish(c, input, &won, answer.is_ok()).await;
        answer
    }

    /// The engine's Feedback, then (cluster mode) the shared settlement, then durability,
    /// alerts and metrics. Outside cluster mode a Feedback on a decision the response cache
    /// answered is told apart and answered here, under the same hold of the engine's lock (one
    /// acquisition per Feedback, not two); in cluster mode the caller told it apart before the
    /// Feedback went to Redis.
    async fn apply_feedback(
        self: &Arc<Self>,
        caller: Option<&Principal>,
        input: &FeedbackInput,
        response: String,
    ) -> Result<proto::FeedbackResponse, Status> {
        let hits = self.cluster.is_none();
        let applied = self.with_engine(|engine, _| {
            if hits {
                if let Some(hit) = super::cache::hit_feedback_locked(engine, caller, input) {
                    return hit.map(|(class, r)| Applied::Hit(class, r));
                }
            }
            if let Some(p) = caller {
                security::check_feedback_tenant(p, engine, &input.decision_id)?;
            }
            if let Some(alerts) = engine.retired_feedback(input, now_ms()) {
                return Ok(Applied::Retired(alerts));
            }
            engine
                .feedback(input, now_ms())
                .map(Applied::Learned)
                .map_err(status)
        })?;
        let mut result = match applied {
            Applied::Learned(r) => r,
            Applied::Hit(class, r) => {
                let answer = self.hit_answer(&class, &r);
                self.durable().await?;
                return Ok(answer);
            }
            Applied::Retired(alerts) => {
                // The model was removed by a reload since the decision: accepted, nothing learned.
                self.settle(alerts).await?;
                return Ok(proto::FeedbackResponse {
                    accepted: true,
                    ..Default::default()
                });
            }
        };
        if let Some(c) = &self.cluster {
            // Alerts fire once across replicas: the shared ledger's, not this replica's copy.
            let (alerts, counted_elsewhere) = Box::pin(crate::cluster::glue::settle(
                self,
                c,
                &input.decision_id,
                &result,
            ))
            .await;
            result.alerts = alerts;
            result.duplicate |= counted_elsewhere;
        }
        self.settle(result.alerts.clone()).await?;
        otel::record_arm(&result.arm.task_class, &result.arm.model);
        self.metrics.feedback(
            &result.arm.task_class,
            &result.arm.model,
            result.duplicate,
            &result.counted,
        );
        if let Some(key) = &result.budget_key {
            self.metrics
                .budget_settled(key, result.overrun_usd, result.late);
        }
        self.cache_feedback(input, &result, response);
        Ok(proto::FeedbackResponse {
            accepted: true,
            duplicate: result.duplicate,
            late: result.late,
            arm: Some(result.arm.into()),
            deferred: false,
        })
    }
}

/// What the engine made of a Feedback, under one hold of its lock. Built once per Feedback and
/// unpacked at once: boxing the large variant would add an allocation to every Feedback.
#[allow(clippy::large_enum_variant)]
enum Applied {
    /// A decision the response cache answered: its class and the engine's answer.
    Hit(String, HitFeedback),
    /// A decision whose model a reload removed: the budget alerts its settlement raised.
    Retired(Vec<BudgetAlert>),
    /// Learned from.
    Learned(FeedbackResult),
}

/// Takes the decision as Redis has it; returns the deferred answer when it cannot be found
/// because Redis is unreachable, or because Redis answered again so recently that a replica
/// may not have replayed the decisions it made meanwhile (and the Feedback was accepted into the
/// outbox).
async fn prepare(
    shared: &Shared,
    c: &Cluster,
    caller: Option<&Principal>,
    input: &FeedbackInput,
) -> Result<Option<proto::FeedbackResponse>, Status> {
    if input.decision_id.is_empty() {
        return Ok(None);
    }
    let known = shared.with_engine(|e, _| e.pending(&input.decision_id).is_some());
    if !c.is_up() && known {
        // Decided here: applied on this replica's state, its settlement queued for Redis.
        return Ok(None);
    }
    match c.fetch_pending(&input.decision_id).await {
        Ok(Some(json)) => {
            adopt(shared, &input.decision_id, &json);
            Ok(None)
        }
        // Redis does not know it yet, and may still learn it: a replica that routed while
        // Redis did not answer replays those decisions when it reaches Redis again, which can
        // be after this one did. Kept as while Redis is down, and dropped like those when its
        // decision is still unknown UNKNOWN_GRACE_HEARTBEATS heartbeats after Redis came back.
        Ok(None) if !known && (!c.is_up() || c.outbox.back_within(now_ms(), grace_ms(c))) => {
            defer(shared, c, caller, input, "redis answered again only just").await
        }
        Ok(None) => Ok(None),
        Err(_) if known => Ok(None),
        Err(e) => {
            defer(
                shared,
                c,
                caller,
                input,
                &format!("redis is unreachable ({e})"),
            )
            .await
        }
    }
}

/// How long after Redis answers again a decision it does not know may still be replayed to it.
fn grace_ms(c: &Cluster) -> u64 {
    UNKNOWN_GRACE_HEARTBEATS.saturating_mul(c.config.heartbeat_ms)
}

/// Accepts a Feedback whose decision cannot be found now into the outbox (`why`: the reason, for
/// the log and the error), after the checks that need no decision.
async fn defer(
    shared: &Shared,
    c: &Cluster,
    caller: Option<&Principal>,
    input: &FeedbackInput,
    why: &str,
) -> Result<Option<proto::FeedbackResponse>, Status> {
    shared
        .with_engine(|engine, _| engine.check_deferrable(input))
        .map_err(status)?;
    let sender = caller.map(|p| Sender {
        key_name: p.key_name.clone(),
        tenant: p
            .tenant
            .as_ref()
            .map(|t| (t.name.clone(), t.budget_key.clone())),
    });
    let d = c
        .outbox
        .accept(input.clone(), sender, now_ms())
        .await
        .map_err(|se| {
            Status::unavailable(format!(
                "the decision is not known here and {why}; this replica could not keep the \
                 feedback for later ({se}); retry"
            ))
        })?;
    c.feedback_counters
        .deferred_accepted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(decision_id = %input.decision_id, seq = d.seq, reason = why, "feedback deferred: its decision is not known here");
    Ok(Some(proto::FeedbackResponse {
        accepted: true,
        deferred: true,
        ..Default::default()
    }))
}

/// Replaces this replica's copy of a decision by Redis's (made on any replica, with the facts
/// already reported anywhere).
fn adopt(shared: &Shared, decision_id: &str, json: &str) {
    match serde_json::from_str::<PendingDecision>(json) {
        Ok(p) => {
            shared.with_engine(|e, _| e.adopt_pending(p, now_ms()));
        }
        Err(e) => tracing::warn!(error = %e, decision_id, "unreadable shared decision"),
    }
}

/// Claims the facts `input` reports for the first time; those claimed first elsewhere are
/// marked as reported, so the engine answers them as duplicates. Returns the facts won. While
/// Redis is unreachable nothing is claimed (the decision was made here: see
/// `crate::cluster::claims` for the limit).
async fn claim(shared: &Shared, c: &Cluster, input: &FeedbackInput) -> Vec<Fact> {
    if !c.is_up() {
        return Vec::new();
    }
    let now = now_ms();
    let (facts, keep_until) = shared.with_engine(|e, _| {
        let until = e
            .pending(&input.decision_id)
            .map_or(now, |p| p.decision.expires_ms)
            + e.config().limits.tombstones().ttl_ms;
        (e.feedback_facts(input, now), until)
    });
    match c.claim(&input.decision_id, &facts, keep_until).await {
        Ok(claimed) => {
            if !claimed.lost.is_empty() {
                tracing::debug!(decision_id = %input.decision_id, lost = ?claimed.lost, "feedback facts claimed first elsewhere");
                shared.with_engine(|e, _| e.mark_claimed(&input.decision_id, &claimed.lost));
            }
            claimed.won
        }
        Err(e) => {
            tracing::debug!(error = %e, "claim: redis unreachable, applied on local state");
            Vec::new()
        }
    }
}

/// Marks the facts won done once the Feedback's effect is in Redis, or releases them when the
/// engine refused it. A failure leaves them pending: another replica takes them over once this
/// one is no longer live.
async fn finish(c: &Cluster, input: &FeedbackInput, won: &[Fact], applied: bool) {
    if let Err(e) = c.finish_claims(&input.decision_id, won, applied).await {
        tracing::debug!(error = %e, "feedback claims left pending: redis unreachable");
    }
}

fn principal(s: &Sender) -> Principal {
    Principal {
        key_name: s.key_name.clone(),
        role: Role::Client,
        tenant: s.tenant.as_ref().map(|(name, budget_key)| Tenant {
            name: name.clone(),
            budget_key: budget_key.clone(),
            task_classes: None,
        }),
    }
}

/// Applies the outbox in order while Redis answers (called by the cluster's background task).
/// Stops at the first entry Redis cannot be asked about; keeps an entry whose decision is not in
/// Redis yet until [`UNKNOWN_GRACE_HEARTBEATS`] heartbeats after Redis answered again.
pub async fn replay_outbox(shared: &Arc<Shared>, c: &Cluster, back_for_ms: u64) {
    let grace = grace_ms(c);
    for d in c.outbox.entries() {
        match replay_one(shared, c, &d, back_for_ms >= grace).await {
            Replayed::Applied => {
                c.outbox.remove(d.seq);
                c.feedback_counters
                    .deferred_applied
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(decision_id = %d.input.decision_id, seq = d.seq, "deferred feedback applied");
            }
            Replayed::Dropped(why) => {
                c.outbox.remove(d.seq);
                c.feedback_counters
                    .deferred_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(decision_id = %d.input.decision_id, seq = d.seq, received_ms = d.received_ms, reason = %why, "deferred feedback dropped (it had been acknowledged as deferred)");
            }
            Replayed::Later => {}
            Replayed::Unreachable => return,
        }
    }
}

enum Replayed {
    Applied,
    Dropped(String),
    /// Its decision is not in Redis yet.
    Later,
    Unreachable,
}

async fn replay_one(
    shared: &Arc<Shared>,
    c: &Cluster,
    d: &DeferredFeedback,
    give_up: bool,
) -> Replayed {
    let input = &d.input;
    let _one_at_a_time = c.feedback_locks.lock(&input.decision_id).await;
    match c.fetch_pending(&input.decision_id).await {
        Err(_) => return Replayed::Unreachable,
        Ok(Some(json)) => adopt(shared, &input.decision_id, &json),
        Ok(None) if shared.with_engine(|e, _| e.pending(&input.decision_id).is_none()) => {
            return if give_up {
                Replayed::Dropped(format!(
                    "decision {:?} is not known in redis {} heartbeats after redis answered again",
                    input.decision_id, UNKNOWN_GRACE_HEARTBEATS
                ))
            } else {
                Replayed::Later
            };
        }
        Ok(None) => {}
    }
    let won = claim(shared, c, input).await;
    let caller = d.sender.as_ref().map(principal);
    let answer = shared
        .apply_feedback(caller.as_ref(), input, String::new())
        .await;
    finish(c, input, &won, answer.is_ok()).await;
    match answer {
        Ok(_) => Replayed::Applied,
        Err(s) if s.code() == tonic::Code::Unavailable => Replayed::Unreachable,
        Err(s) => Replayed::Dropped(format!("{:?}: {}", s.code(), s.message())),
    }
}
