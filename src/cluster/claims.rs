//! Feedback claims: the same Feedback at two replicas at once is applied by one of them.
//!
//! Before a replica applies a Feedback it claims, in one atomic script, each fact the Feedback
//! reports for the first time on its copy of the decision (`crate::engine::Fact`: the outcome or
//! quality of one model). The claims of a decision live in `P:fb:ID`, a hash (fact ->
//! `STATE|VALUE|REPLICA`) that expires with the decision's tombstone. A fact is claimed
//! *pending* by one replica, which applies the Feedback, settles it, and then marks its claims
//! *done* ([`Cluster::finish_claims`]), or releases them when the engine refused the Feedback.
//! Another replica that meets the fact:
//! - done: has lost it; it marks the fact on its pending decision as already reported (with the
//!   winner's value), and the engine answers as a repeated Feedback on one node does: a
//!   duplicate, not learned or settled again;
//! - pending, by a replica still live (a heartbeat within the last 3): waits for it (polling
//!   every [`BUSY_POLL_MS`]), so it never acknowledges as a duplicate a Feedback whose effect is
//!   not in Redis yet;
//! - pending, by a replica no longer live (it died between its claim and its settlement, so it
//!   acknowledged nothing), or by itself: takes the claim over and applies the Feedback.
//!
//! Shared across replicas, kept in Redis (its AOF survives a Redis restart). Limits: a replica
//! that dies after settling but before marking its claims done (one round trip) has its claims
//! taken over by a retry elsewhere, which learns the Feedback a second time (the settlement is
//! still counted once: it is idempotent per decision and model); a waiting replica gives up
//! after [`Cluster::claim_wait_ms`] and answers a duplicate. During a Redis outage nothing can
//! be claimed: see `outbox`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::*;
use crate::config::LIVE_HEARTBEATS;
use crate::engine::Fact;

/// How often a replica asks again about a fact another live replica is applying.
pub const BUSY_POLL_MS: u64 = 20;

/// KEYS: the decision's claims hash, the replica registry. ARGV: the hash's expiry (Unix ms),
/// this replica's id, the heartbeat time before which a replica is not live, then field, value
/// pairs. Returns, per fact, `won` (claimed now, or taken over), `lost` (done by another) or
/// `busy` (pending with another live replica), and the value claimed first.
pub const CLAIM: &str = r#"
local out = {}
for i = 4, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local verdict, value = 'won', ARGV[i + 1]
  if cur then
    local state, val, who = string.match(cur, '^(%a)|([^|]*)|(.*)$')
    if state == 'd' then
      verdict, value = 'lost', val
    elseif who ~= ARGV[2] then
      local seen = redis.call('ZSCORE', KEYS[2], who)
      if seen and tonumber(seen) >= tonumber(ARGV[3]) then verdict, value = 'busy', val end
    end
  end
  if verdict == 'won' then
    redis.call('HSET', KEYS[1], ARGV[i], 'p|' .. ARGV[i + 1] .. '|' .. ARGV[2])
  end
  out[#out + 1] = verdict
  out[#out + 1] = value
end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return out
"#;

/// KEYS: the decision's claims hash. ARGV: 'done' or 'release', this replica's id, then the
/// fields. Marks this replica's pending claims done, or drops them; another's are left alone.
pub const RESOLVE: &str = r#"
for i = 3, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur then
    local state, val, who = string.match(cur, '^(%a)|([^|]*)|(.*)$')
    if state == 'p' and who == ARGV[2] then
      if ARGV[1] == 'done' then
        redis.call('HSET', KEYS[1], ARGV[i], 'd|' .. val .. '|' .. who)
      else
        redis.call('HDEL', KEYS[1], ARGV[i])
      end
    end
  end
end
return 'ok'
"#;

static CLAIM_SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(CLAIM));
static RESOLVE_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(RESOLVE));

/// What a claim gave this replica.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claimed {
    /// Facts this replica now holds (pending): to be finished or released.
    pub won: Vec<Fact>,
    /// Facts another replica applied first, with the value it reported.
    pub lost: Vec<Fact>,
}

impl Cluster {
    /// How long a replica waits for a fact another live replica is applying: until that replica
    /// would no longer be counted live had it died at once, plus two Redis timeouts.
    pub fn claim_wait_ms(&self) -> u64 {
        (LIVE_HEARTBEATS + 1) * self.config.heartbeat_ms + 2 * self.config.redis_timeout_ms
    }

    /// Claims `facts` of decision `decision_id` (kept until `expires_at_ms`), waiting while
    /// another live replica is applying one of them.
    pub async fn claim(
        &self,
        decision_id: &str,
        facts: &[Fact],
        expires_at_ms: u64,
    ) -> Result<Claimed, ClusterError> {
        if facts.is_empty() {
            return Ok(Claimed::default());
        }
        let started = crate::time::now_ms();
        loop {
            let now = crate::time::now_ms();
            let live_since = now.saturating_sub(LIVE_HEARTBEATS * self.config.heartbeat_ms);
            let mut inv = CLAIM_SCRIPT.prepare_invoke();
            inv.key(self.key(&["fb", decision_id]))
                .key(self.key(&["replicas"]))
                .arg(expires_at_ms)
                .arg(&self.config.replica_id)
                .arg(live_since);
            for f in facts {
                inv.arg(&f.field).arg(&f.value);
            }
            let reply: Vec<String> = self
                .call(|mut con| async move { Ok(inv.invoke_async(&mut con).await?) })
                .await?;
            if reply.len() != 2 * facts.len() {
                return Err(ClusterError::Protocol(format!(
                    "claim script answered {} values for {} facts",
                    reply.len(),
                    facts.len()
                )));
            }
            let gave_up = now.saturating_sub(started) >= self.claim_wait_ms();
            let mut out = Claimed::default();
            let mut busy = false;
            for (f, pair) in facts.iter().zip(reply.chunks(2)) {
                let fact = Fact {
                    field: f.field.clone(),
                    value: pair[1].clone(),
                };
                match pair[0].as_str() {
                    "won" => out.won.push(fact),
                    "busy" if !gave_up => busy = true,
                    _ => out.lost.push(fact),
                }
            }
            if busy {
                // What was won stays this replica's and is won again on the next ask (every
                // Feedback claims its facts in the same order, in one script, so two replicas
                // never each hold a fact the other waits for).
                tokio::time::sleep(Duration::from_millis(BUSY_POLL_MS)).await;
                continue;
            }
            if !out.lost.is_empty() {
                self.feedback_counters
                    .claims_lost
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Ok(out);
        }
    }

    /// Marks this replica's pending claims done (`done`: the Feedback's effect is in Redis) or
    /// drops them (the engine refused the Feedback, so a corrected one may claim them).
    pub async fn finish_claims(
        &self,
        decision_id: &str,
        won: &[Fact],
        done: bool,
    ) -> Result<(), ClusterError> {
        if won.is_empty() {
            return Ok(());
        }
        let mut inv = RESOLVE_SCRIPT.prepare_invoke();
        inv.key(self.key(&["fb", decision_id]))
            .arg(if done { "done" } else { "release" })
            .arg(&self.config.replica_id);
        for f in won {
            inv.arg(&f.field);
        }
        self.call(|mut con| async move {
            let _: String = inv.invoke_async(&mut con).await?;
            Ok(())
        })
        .await
    }
}

/// One lock per decision id with a Feedback in flight on this replica (per replica, in memory):
/// Feedbacks for one decision are handled one at a time, from the claim to the settlement.
#[derive(Default)]
pub struct DecisionLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// Held while a Feedback for its decision is handled; the lock is forgotten with its last user.
pub struct DecisionGuard<'a> {
    locks: &'a DecisionLocks,
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl DecisionLocks {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the Feedbacks of `decision_id` in flight here to finish.
    pub async fn lock(&self, decision_id: &str) -> DecisionGuard<'_> {
        let m = Arc::clone(self.map().entry(decision_id.to_string()).or_default());
        let guard = m.lock_owned().await;
        DecisionGuard {
            locks: self,
            id: decision_id.to_string(),
            guard: Some(guard),
        }
    }

    /// Decisions with a Feedback in flight or waiting.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for DecisionGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn feedbacks_for_one_decision_take_turns_and_leave_nothing_behind() {
        let locks = DecisionLocks::default();
        let first = locks.lock("d1").await;
        let other = locks.lock("d2").await;
        let waiting = locks.lock("d1");
        tokio::pin!(waiting);
        let waits = tokio::select! {
            biased;
            _ = &mut waiting => false,
            () = std::future::ready(()) => true,
        };
        assert!(waits, "a second feedback for d1 waits for the first");
        drop(first);
        let second = waiting.await;
        drop(second);
        drop(other);
        assert!(locks.is_empty());
    }
}
