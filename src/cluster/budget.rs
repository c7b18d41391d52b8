//! Shared budgets and decisions: two Lua scripts, each one atomic step in Redis.
//!
//! Keys, per budget key and period (the period's start in Unix ms, so a period reset is a new set
//! of keys and never loses spend): `P:budget:{KEY:START}` (hash: `spent`, `reserved`), `...:res`
//! (live reservations by decision id), `...:exp` (their expiry times, a sorted set), `...:settled`
//! (settled `decision|model` pairs and decision ids), `...:alerts` (hash: thresholds fired). Per
//! decision: `P:pd:ID` (the pending decision, JSON) and `P:rq:REQUEST_ID` (its idempotency key:
//! the decision id).
//!
//! Every key a script touches is passed in `KEYS` (none is built inside a script), as Redis
//! requires of scripts for its cluster mode and for replication. A budget period's five keys
//! share the hash tag `{KEY:START}`, so on Redis Cluster they would land in one slot. Both scripts
//! also write the decision's own keys (`pd`, `rq`), which hash elsewhere: running on Redis Cluster
//! would still need those writes split out of the scripts; a single Redis (or a primary with
//! replicas) is what cluster mode supports today. A repeated request id is answered in two steps
//! for the same reason: [`ADMIT`] returns the first decision's id, then its record is read.
//!
//! - [`ADMIT`] (Route): drops expired reservations, then reserves `amount` only if
//!   `spent + reserved + amount <= limit`, and records the pending decision, all at once: N
//!   replicas can never overrun a cap together. A repeated request id returns the id of the
//!   decision made first (unless told that decision's record is gone). Reserving twice for one
//!   decision id is a no-op (replays are safe). With
//!   alternatives (`on_cap = "cheapest"`, `super::cap`), an amount that does not fit is replaced
//!   by the first alternative that does; the decision is then not recorded (`sub`: the replica
//!   rewrites it for the model served and records it in one more round trip). Every answer but
//!   a refusal carries the figures the check saw.
//! - [`SETTLE`] (Feedback): the first settlement of `decision|model` moves the decision's
//!   reservation into spend (later models of the same decision add their cost); a repeated
//!   settlement changes nothing. Alert thresholds crossed are claimed with `HSETNX` in the
//!   period's `alerts` hash, so each fires on exactly one replica.
//!
//! Keys expire 40 days after their period ends (GetBudgets shows the previous period).

use redis::Script;

use super::cap::{self, Admitted};
use super::*;
use crate::engine::BudgetAlert;

/// How long a period's keys outlive its end.
pub const PERIOD_KEYS_RETENTION_MS: u64 = 40 * 24 * 3600 * 1000;

pub const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
if ARGV[9] == '1' and ARGV[10] ~= '1' then
  local prev = redis.call('GET', KEYS[5])
  if prev and prev ~= ARGV[2] then return {'replay', prev} end
end
local spent, reserved, before, sub = 0, 0, 0, 0
if ARGV[8] == '1' then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for _, id in ipairs(gone) do
    local a = redis.call('HGET', KEYS[2], id)
    if a then
      redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', string.format('%.17g', -tonumber(a)))
      redis.call('HDEL', KEYS[2], id)
    end
    redis.call('ZREM', KEYS[3], id)
  end
  spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
  reserved = math.max(0, tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0'))
  local amount = tonumber(ARGV[3])
  local held = redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1
  local settled = redis.call('HEXISTS', KEYS[6], ARGV[2]) == 1
  before = reserved
  if not held and not settled then
    local take = ARGV[3]
    if ARGV[12] ~= '1' and spent + reserved + amount > tonumber(ARGV[4]) then
      for i = 13, #ARGV do
        if spent + reserved + tonumber(ARGV[i]) <= tonumber(ARGV[4]) then
          sub, take = i - 12, ARGV[i]
          break
        end
      end
      if sub == 0 then
        return {'refused', string.format('%.17g', spent), string.format('%.17g', reserved)}
      end
    end
    redis.call('HSET', KEYS[2], ARGV[2], take)
    redis.call('ZADD', KEYS[3], ARGV[7], ARGV[2])
    reserved = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', take))
    for i = 1, 3 do redis.call('PEXPIREAT', KEYS[i], ARGV[11]) end
  end
end
local figures = {string.format('%.17g', spent), string.format('%.17g', reserved), string.format('%.17g', before)}
if sub > 0 then
  return {'sub', figures[1], figures[2], figures[3], tostring(sub)}
end
redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
if ARGV[9] == '1' then redis.call('SET', KEYS[5], ARGV[2], 'PX', ARGV[6]) end
return {'ok', figures[1], figures[2], figures[3]}
"#;

pub const SETTLE: &str = r#"
if ARGV[7] ~= '' then redis.call('SET', KEYS[5], ARGV[7], 'KEEPTTL') end
if ARGV[8] ~= '1' then return {'ok', '0', '0'} end
local field = ARGV[1] .. '|' .. ARGV[2]
if redis.call('HEXISTS', KEYS[4], field) == 1 then
  return {'dup', redis.call('HGET', KEYS[1], 'spent') or '0', redis.call('HGET', KEYS[1], 'reserved') or '0'}
end
local r = redis.call('HGET', KEYS[2], ARGV[1])
if r then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', string.format('%.17g', -tonumber(r)))
end
local spent = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[3]))
redis.call('HSET', KEYS[4], field, ARGV[3], ARGV[1], '1')
for i = 1, 4 do redis.call('PEXPIREAT', KEYS[i], ARGV[5]) end
local out = {'ok', string.format('%.17g', spent), redis.call('HGET', KEYS[1], 'reserved') or '0'}
local limit = tonumber(ARGV[4])
for i = 9, #ARGV do
  if spent >= tonumber(ARGV[i]) * limit then
    if redis.call('HSETNX', KEYS[6], ARGV[i], '1') == 1 then
      redis.call('PEXPIREAT', KEYS[6], ARGV[5])
      table.insert(out, ARGV[i])
    end
  end
end
return out
"#;

/// The cluster's scripts (loaded on first use; `EVALSHA` falls back to `EVAL` after a restart).
pub struct Scripts {
    pub admit: Script,
    pub settle: Script,
    pub merge: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            admit: Script::new(ADMIT),
            settle: Script::new(SETTLE),
            merge: Script::new(super::evidence::MERGE),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}

/// What one decision asks of its budget, in its period.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetAsk {
    pub key: String,
    pub period_start_ms: u64,
    pub period_end_ms: u64,
    pub limit_usd: f64,
    /// Reservation (Route) or charge (Feedback), USD.
    pub amount_usd: f64,
    /// Alert thresholds, fractions of the limit (Feedback).
    pub thresholds: Vec<f64>,
}

/// The answer to Route's round trip.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Reserved (if budgeted) and recorded in Redis.
    Shared,
    /// The request id was already used: the decision made first (JSON).
    Replay(String),
    /// The shared budget has no room.
    Refused { spent_usd: f64, reserved_usd: f64 },
    /// Redis is down: admitted from this replica's fallback allowance (or unbudgeted).
    Fallback,
    /// Redis is down and the fallback allowance has no room.
    FallbackRefused { allowance_usd: f64, spent_usd: f64 },
}

/// The answer to Feedback's round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub duplicate: bool,
    /// Alerts this settlement fired (this replica delivers them).
    pub alerts: Vec<BudgetAlert>,
    /// Queued for Redis (down).
    pub deferred: bool,
}

impl Cluster {
    /// A budget period's keys: reservations, their expiries, settlements, the totals hash and
    /// the alerts fired, all under the hash tag `{KEY:START}`.
    fn budget_keys(&self, b: &BudgetAsk) -> [String; 5] {
        let base = self.key(&["budget", &format!("{{{}:{}}}", b.key, b.period_start_ms)]);
        [
            format!("{base}:res"),
            format!("{base}:exp"),
            format!("{base}:settled"),
            format!("{base}:alerts"),
            base,
        ]
    }

    /// Route's one round trip (see [`ADMIT`]). `force` admits without the limit check (replay of
    /// a reservation already admitted from a fallback allowance).
    #[allow(clippy::too_many_arguments)]
    async fn admit_once(
        &self,
        decision_id: &str,
        pending_json: &str,
        ttl_ms: u64,
        reservation_expiry_ms: u64,
        request_id: Option<&str>,
        budget: Option<&BudgetAsk>,
        force: bool,
    ) -> Result<Admission, ClusterError> {
        let call = (decision_id, pending_json, ttl_ms, reservation_expiry_ms);
        self.admit_script(call, request_id, budget, force, &[])
            .await
            .map(|a| a.admission)
    }

    /// [`Cluster::admit_once`] with the alternatives (`on_cap = "cheapest"`, cheapest first)
    /// the script may reserve instead of `budget.amount_usd`.
    async fn admit_script(
        &self,
        (decision_id, pending_json, ttl_ms, reservation_expiry_ms): (&str, &str, u64, u64),
        request_id: Option<&str>,
        budget: Option<&BudgetAsk>,
        force: bool,
        alternatives: &[f64],
    ) -> Result<Admitted, ClusterError> {
        let none = BudgetAsk {
            key: String::from("-"),
            period_start_ms: 0,
            period_end_ms: 0,
            limit_usd: 0.0,
            amount_usd: 0.0,
            thresholds: Vec::new(),
        };
        let b = budget.unwrap_or(&none);
        let [res, exp, settled, _, base] = self.budget_keys(b);
        let pd_key = self.key(&["pd", decision_id]);
        let rq_key = self.key(&["rq", request_id.unwrap_or("-")]);
        // A repeated request id answers the first decision's id; if that decision's record is
        // gone (expired), the script is run again told so, and this decision takes the id.
        let mut fresh = false;
        let reply = loop {
            let reply = self
                .admit_call(
                    [&base, &res, &exp, &pd_key, &rq_key, &settled],
                    (decision_id, pending_json, ttl_ms, reservation_expiry_ms),
                    (b, budget.is_some(), request_id.is_some(), fresh, force),
                    alternatives,
                )
                .await?;
            if reply.first().map(String::as_str) != Some("replay") || fresh {
                break reply;
            }
            let first = reply.get(1).cloned().unwrap_or_default();
            match self.fetch_pending(&first).await? {
                Some(json) => return Ok(Admitted::plain(Admission::Replay(json))),
                None => fresh = true,
            }
        };
        match reply.first().map(String::as_str) {
            Some(tag @ ("ok" | "sub")) => {
                let (room, alternative) = match budget {
                    Some(b) => {
                        self.note_budget(b, &reply)?;
                        cap::room_of(b, &reply)?
                    }
                    None => (None, None),
                };
                if tag == "sub" && alternative.is_none() {
                    return Err(ClusterError::Protocol(format!(
                        "admit script substituted without a budget: {reply:?}"
                    )));
                }
                Ok(Admitted {
                    admission: Admission::Shared,
                    room,
                    alternative,
                })
            }
            Some("refused") => {
                if let Some(b) = budget {
                    self.note_budget(b, &reply)?;
                }
                self.counters
                    .shared_refusals
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Admitted::plain(Admission::Refused {
                    spent_usd: num(reply.get(1).map_or("0", String::as_str))?,
                    reserved_usd: num(reply.get(2).map_or("0", String::as_str))?,
                }))
            }
            _ => Err(ClusterError::Protocol(format!(
                "admit script answered {reply:?}"
            ))),
        }
    }

    /// One run of [`ADMIT`]: `keys` in its KEYS order; (decision id, JSON, TTL, reservation
    /// expiry); (budget, budgeted, has a request id, fresh, force).
    #[allow(clippy::type_complexity)]
    async fn admit_call(
        &self,
        keys: [&String; 6],
        decision: (&str, &str, u64, u64),
        flags: (&BudgetAsk, bool, bool, bool, bool),
        alternatives: &[f64],
    ) -> Result<Vec<String>, ClusterError> {
        let (decision_id, pending_json, ttl_ms, reservation_expiry_ms) = decision;
        let (b, budgeted, has_request, fresh, force) = flags;
        let flag = |f: bool| if f { "1" } else { "0" };
        let mut inv = self.scripts.admit.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        inv.arg(crate::time::now_ms())
            .arg(decision_id)
            .arg(format!("{:.17e}", b.amount_usd))
            .arg(format!("{:.17e}", b.limit_usd))
            .arg(pending_json)
            .arg(ttl_ms.max(1))
            .arg(reservation_expiry_ms)
            .arg(flag(budgeted))
            .arg(flag(has_request))
            .arg(flag(fresh))
            .arg(b.period_end_ms + PERIOD_KEYS_RETENTION_MS)
            .arg(flag(force));
        for a in alternatives {
            inv.arg(format!("{a:.17e}"));
        }
        self.call(|mut con| async move { Ok(inv.invoke_async(&mut con).await?) })
            .await
    }

    /// Records (spent, reserved) from a script reply as the budget's last seen figures.
    fn note_budget(&self, b: &BudgetAsk, reply: &[String]) -> Result<(), ClusterError> {
        let spent = num(reply.get(1).map_or("0", String::as_str))?;
        let reserved = num(reply.get(2).map_or("0", String::as_str))?;
        let mut st = self.state();
        let v = st.budgets.entry(b.key.clone()).or_default();
        if v.allowance_usd.is_none() {
            v.period_start_ms = b.period_start_ms;
            v.spent_usd = spent;
            v.reserved_usd = reserved.max(0.0);
            v.limit_usd = b.limit_usd;
        }
        Ok(())
    }

    /// Route: reserve (when budgeted) and record the pending decision in one round trip; while
    /// Redis is down, admit from the fallback allowance and queue the record.
    pub async fn admit(
        &self,
        decision_id: &str,
        pending_json: String,
        ttl_ms: u64,
        reservation_expiry_ms: u64,
        request_id: Option<String>,
        budget: Option<BudgetAsk>,
    ) -> Admission {
        let call = (decision_id, pending_json, ttl_ms, reservation_expiry_ms);
        self.admit_with(call, request_id, budget, &[])
            .await
            .admission
    }

    /// [`Cluster::admit`] with the alternatives (`on_cap = "cheapest"`, cheapest first) that may
    /// be reserved instead of `budget.amount_usd`, in Redis or from the fallback allowance; the
    /// answer says which one was, and the room the check saw (see `super::cap`).
    pub async fn admit_with(
        &self,
        (decision_id, pending_json, ttl_ms, reservation_expiry_ms): (&str, String, u64, u64),
        request_id: Option<String>,
        budget: Option<BudgetAsk>,
        alternatives: &[f64],
    ) -> Admitted {
        // A budget this replica has never seen in Redis has no known remainder to share: ask
        // Redis even while it is flagged down (bounded by the timeout) rather than guess.
        let unseen = budget
            .as_ref()
            .is_some_and(|b| !self.state().budgets.contains_key(&b.key));
        if self.is_up() || unseen {
            let call = (
                decision_id,
                pending_json.as_str(),
                ttl_ms,
                reservation_expiry_ms,
            );
            match self
                .admit_script(
                    call,
                    request_id.as_deref(),
                    budget.as_ref(),
                    false,
                    alternatives,
                )
                .await
            {
                Ok(a) => return a,
                Err(e) => tracing::debug!(error = %e, "admit: redis unreachable, falling back"),
            }
        }
        let mut budget = budget;
        let (mut room, mut alternative) = (None, None);
        if let Some(b) = budget.as_mut() {
            let mut st = self.state();
            let live = st.live_replicas.max(1) as f64;
            let factor = self.config.fallback_share_factor;
            let v = st
                .budgets
                .entry(b.key.clone())
                .or_insert_with(|| BudgetView {
                    // Never seen in Redis: nothing is known to remain, so nothing is shared.
                    period_start_ms: b.period_start_ms,
                    limit_usd: b.limit_usd,
                    spent_usd: b.limit_usd,
                    ..BudgetView::default()
                });
            let allowance = *v.allowance_usd.get_or_insert_with(|| {
                (v.limit_usd - v.spent_usd - v.reserved_usd).max(0.0) / live * factor
            });
            let share = cap::Room {
                used_usd: v.fallback_spent_usd,
                limit_usd: allowance,
            };
            alternative = cap::fallback_pick(share, b.amount_usd, alternatives);
            if let Some(k) = alternative {
                b.amount_usd = alternatives[k];
            }
            if alternative.is_none() && v.fallback_spent_usd + b.amount_usd > allowance {
                let spent = v.fallback_spent_usd;
                drop(st);
                self.counters
                    .fallback_refusals
                    .fetch_add(1, Ordering::Relaxed);
                return Admitted::plain(Admission::FallbackRefused {
                    allowance_usd: allowance,
                    spent_usd: spent,
                });
            }
            room = Some(share);
            v.fallback_spent_usd += b.amount_usd;
            st.outage_reservations
                .insert(decision_id.to_string(), b.amount_usd);
            self.counters
                .fallback_reservations
                .fetch_add(1, Ordering::Relaxed);
        }
        self.state().outbox.push(Deferred::Admit {
            pending_json,
            ttl_ms,
            request_id,
            budget,
        });
        Admitted {
            admission: Admission::Fallback,
            room,
            alternative,
        }
    }

    async fn settle_once(
        &self,
        decision_id: &str,
        model: &str,
        budget: Option<&BudgetAsk>,
        pending_json: Option<&str>,
    ) -> Result<Settled, ClusterError> {
        let none = BudgetAsk {
            key: String::from("-"),
            period_start_ms: 0,
            period_end_ms: 0,
            limit_usd: 0.0,
            amount_usd: 0.0,
            thresholds: Vec::new(),
        };
        let b = budget.unwrap_or(&none);
        let [res, exp, settled, alerts_key, base] = self.budget_keys(b);
        let pd_key = self.key(&["pd", decision_id]);
        let mut inv = self.scripts.settle.prepare_invoke();
        inv.key(&base)
            .key(&res)
            .key(&exp)
            .key(&settled)
            .key(&pd_key)
            .key(&alerts_key);
        inv.arg(decision_id)
            .arg(model)
            .arg(format!("{:.17e}", b.amount_usd))
            .arg(format!("{:.17e}", b.limit_usd))
            .arg(b.period_end_ms + PERIOD_KEYS_RETENTION_MS)
            .arg("-")
            .arg(pending_json.unwrap_or(""))
            .arg(if budget.is_some() { "1" } else { "0" });
        for t in &b.thresholds {
            inv.arg(t.to_string());
        }
        let reply: Vec<String> = self
            .call(|mut con| async move { Ok(inv.invoke_async(&mut con).await?) })
            .await?;
        let duplicate = match reply.first().map(String::as_str) {
            Some("ok") => false,
            Some("dup") => true,
            _ => {
                return Err(ClusterError::Protocol(format!(
                    "settle script answered {reply:?}"
                )))
            }
        };
        let mut alerts = Vec::new();
        if let Some(b) = budget {
            self.note_budget(b, &reply)?;
            let spent = num(reply.get(1).map_or("0", String::as_str))?;
            for t in reply.iter().skip(3) {
                alerts.push(BudgetAlert {
                    budget_key: b.key.clone(),
                    threshold: num(t)?,
                    spent_usd: spent,
                    limit_usd: b.limit_usd,
                    period_start_ms: b.period_start_ms,
                    period_end_ms: b.period_end_ms,
                    at_ms: crate::time::now_ms(),
                });
            }
        }
        Ok(Settled {
            duplicate,
            alerts,
            deferred: false,
        })
    }

    /// Feedback: settle (when budgeted) and write the decision back, acknowledged once in Redis;
    /// while Redis is down, queued.
    pub async fn settle(
        &self,
        decision_id: &str,
        model: &str,
        budget: Option<BudgetAsk>,
        pending_json: Option<String>,
    ) -> Settled {
        if self.is_up() {
            match self
                .settle_once(decision_id, model, budget.as_ref(), pending_json.as_deref())
                .await
            {
                Ok(s) => return s,
                Err(e) => tracing::debug!(error = %e, "settle: redis unreachable, queued"),
            }
        }
        let mut st = self.state();
        if let Some(b) = &budget {
            // A charge above what the outage reservation held (or without one) uses allowance.
            let held = st.outage_reservations.remove(decision_id).unwrap_or(0.0);
            if let Some(v) = st.budgets.get_mut(&b.key) {
                v.fallback_spent_usd += (b.amount_usd - held).max(0.0);
            }
            st.outbox.push(Deferred::Settle {
                decision_id: decision_id.to_string(),
                model: model.to_string(),
                budget: b.clone(),
                pending_json,
            });
        } else if let Some(json) = pending_json {
            st.outbox.push(Deferred::Admit {
                pending_json: json,
                ttl_ms: 0,
                request_id: None,
                budget: None,
            });
        }
        Settled {
            duplicate: false,
            alerts: Vec::new(),
            deferred: true,
        }
    }

    /// The pending decision `decision_id` as recorded in Redis (JSON), if any.
    pub async fn fetch_pending(&self, decision_id: &str) -> Result<Option<String>, ClusterError> {
        let key = self.key(&["pd", decision_id]);
        self.call(|mut con| async move {
            let v: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut con).await?;
            Ok(v)
        })
        .await
    }

    /// Replays what was queued during an outage, in order; returns the alerts that settlements
    /// fired. Stops at the first failure (the rest stays queued).
    pub async fn replay(&self) -> Result<Vec<BudgetAlert>, ClusterError> {
        let queued = std::mem::take(&mut self.state().outbox);
        let mut alerts = Vec::new();
        let mut it = queued.into_iter();
        while let Some(op) = it.next() {
            let r = match &op {
                Deferred::Admit {
                    pending_json,
                    ttl_ms,
                    request_id,
                    budget,
                } => {
                    let id = serde_json::from_str::<crate::engine::PendingDecision>(pending_json)
                        .map(|p| p.decision.id)
                        .unwrap_or_default();
                    let ttl = if *ttl_ms == 0 { 3_600_000 } else { *ttl_ms };
                    let expiry = crate::time::now_ms() + ttl;
                    self.admit_once(
                        &id,
                        pending_json,
                        ttl,
                        expiry,
                        request_id.as_deref(),
                        budget.as_ref(),
                        true,
                    )
                    .await
                    .map(|_| ())
                }
                Deferred::Settle {
                    decision_id,
                    model,
                    budget,
                    pending_json,
                } => self
                    .settle_once(decision_id, model, Some(budget), pending_json.as_deref())
                    .await
                    .map(|s| alerts.extend(s.alerts)),
            };
            if let Err(e) = r {
                let mut st = self.state();
                let mut rest = vec![op];
                rest.extend(it);
                rest.append(&mut st.outbox);
                st.outbox = rest;
                return Err(e);
            }
            self.counters.replayed_ops.fetch_add(1, Ordering::Relaxed);
        }
        Ok(alerts)
    }

    /// Reads each budget's shared figures of its current period (for the fallback allowance
    /// and GetBudgets).
    pub async fn refresh_budgets(&self, asks: Vec<BudgetAsk>) -> Result<(), ClusterError> {
        for b in asks {
            let [.., base] = self.budget_keys(&b);
            let (spent, reserved): (Option<String>, Option<String>) = self
                .call(|mut con| async move {
                    Ok(redis::cmd("HMGET")
                        .arg(&base)
                        .arg("spent")
                        .arg("reserved")
                        .query_async(&mut con)
                        .await?)
                })
                .await?;
            let reply = vec![
                String::from("ok"),
                spent.unwrap_or_else(|| String::from("0")),
                reserved.unwrap_or_else(|| String::from("0")),
            ];
            self.note_budget(&b, &reply)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster whose Redis refuses connections (nothing listens on port 1).
    fn unreachable() -> Cluster {
        Cluster::new(ClusterConfig {
            redis_url: String::from("redis://127.0.0.1:1"),
            replica_id: String::from("r0"),
            sync_interval_ms: 1000,
            heartbeat_ms: 1000,
            fallback_share_factor: 0.5,
            redis_timeout_ms: 200,
            key_prefix: String::from("t"),
        })
        .unwrap()
    }

    fn ask(amount_usd: f64) -> BudgetAsk {
        BudgetAsk {
            key: String::from("team"),
            period_start_ms: 0,
            period_end_ms: 86_400_000,
            limit_usd: 1.0,
            amount_usd,
            thresholds: Vec::new(),
        }
    }

    async fn admit(c: &Cluster, id: &str, amount: f64) -> Admission {
        c.admit(id, String::from("{}"), 1000, 1000, None, Some(ask(amount)))
            .await
    }

    #[tokio::test]
    async fn an_outage_shares_out_the_remainder_last_seen() {
        let c = unreachable();
        {
            let mut st = c.state();
            st.live_replicas = 2;
            st.budgets.insert(
                String::from("team"),
                BudgetView {
                    spent_usd: 0.4,
                    reserved_usd: 0.1,
                    limit_usd: 1.0,
                    ..BudgetView::default()
                },
            );
        }
        // (1.0 - 0.4 - 0.1) / 2 replicas * 0.5 = 0.125 USD.
        assert_eq!(admit(&c, "a", 0.1).await, Admission::Fallback);
        match admit(&c, "b", 0.1).await {
            Admission::FallbackRefused {
                allowance_usd,
                spent_usd,
            } => {
                assert!((allowance_usd - 0.125).abs() < 1e-12);
                assert!((spent_usd - 0.1).abs() < 1e-12);
            }
            other => panic!("{other:?}"),
        }
        // A settlement above its outage reservation uses the share too, and is queued.
        let s = c.settle("a", "m", Some(ask(0.12)), None).await;
        assert!(s.deferred);
        let st = c.state();
        assert!((st.budgets["team"].fallback_spent_usd - 0.12).abs() < 1e-12);
        assert_eq!(
            st.outbox.len(),
            2,
            "the admission and the settlement wait for redis"
        );
    }

    #[tokio::test]
    async fn a_budget_never_seen_in_redis_shares_out_nothing() {
        let c = unreachable();
        assert!(matches!(
            admit(&c, "a", 0.001).await,
            Admission::FallbackRefused { allowance_usd, .. } if allowance_usd == 0.0
        ));
    }
}
