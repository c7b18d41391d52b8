//! Where the service calls into the cluster: Route's admission, Feedback's settlement (its
//! adoption, claims and outbox: `crate::server::relay`), health signals out and in. Each
//! function is called only in cluster mode.

use tonic::Status;

use super::health::Signal;
use super::*;
use crate::breaker::{BreakerState, Transition, TransitionCause};
use crate::budget::{BudgetConfig, Ledger};
use crate::engine::{
    BudgetAlert, Decision, FeedbackResult, HealthInput, HealthResult, HealthSignal, PendingDecision,
};
use crate::server::Shared;
use crate::time::now_ms;

/// A budget's ask for a decision made at `at_ms`, in that moment's period.
pub fn ask(key: &str, b: &BudgetConfig, at_ms: u64, amount_usd: f64) -> BudgetAsk {
    let l = Ledger::new(b, at_ms);
    BudgetAsk {
        key: key.to_string(),
        period_start_ms: l.period_start_ms(),
        period_end_ms: l.period_end_ms(),
        limit_usd: b.limit_usd,
        amount_usd,
        thresholds: b.sorted_thresholds(),
    }
}

/// Route: reserve in the shared budget and record the decision (one round trip). A refusal
/// withdraws the local decision and answers RESOURCE_EXHAUSTED; a repeated request id answers
/// the decision made first on whichever replica. Under `on_cap = "cheapest"` the admission may
/// reserve a cheaper model instead ([`super::cap`]).
pub async fn route(
    shared: &Shared,
    cluster: &Cluster,
    decision: Decision,
) -> Result<Decision, Status> {
    let now = now_ms();
    let (json, budget, request_id, tomb_ms, plan) = shared.with_engine(|e, _| {
        let p = e.pending(&decision.id);
        let json = p.as_ref().and_then(|p| serde_json::to_string(p).ok());
        let request_id = p.and_then(|p| p.request_id.clone());
        let plan = e.take_cap_plan(&decision.id);
        let amount = match &plan {
            Some(plan) => plan.asks().0,
            None => e.reservation_of(&decision).unwrap_or(0.0),
        };
        let budget = decision.budget_key.as_ref().and_then(|k| {
            e.config()
                .budgets
                .get(k)
                .map(|b| ask(k, b, decision.created_ms, amount))
        });
        (
            json,
            budget,
            request_id,
            e.config().limits.tombstones().ttl_ms,
            plan,
        )
    });
    let Some(json) = json else {
        return Ok(decision); // evicted at once (max_pending 0): nothing to share
    };
    let ttl = decision.expires_ms.saturating_sub(now) + tomb_ms;
    let alternatives = plan.as_ref().map(|p| p.asks().1).unwrap_or_default();
    let admitted = cluster
        .admit_with(
            (&decision.id, json, ttl, decision.expires_ms),
            request_id.clone(),
            budget.clone(),
            &alternatives,
        )
        .await;
    let withdraw = |shared: &Shared| shared.with_engine(|e, _| e.withdraw(&decision.id, now_ms()));
    match admitted.admission {
        Admission::Shared | Admission::Fallback => {
            shared.with_engine(|e, _| e.release_local_reservation(&decision, now_ms()));
            if let Some(b) = &budget {
                super::cap::share_figures(cluster, shared, Some(&b.key));
            }
            match &plan {
                Some(plan) => {
                    super::cap::serve(
                        shared,
                        cluster,
                        decision,
                        plan,
                        &admitted,
                        (ttl, request_id),
                    )
                    .await
                }
                None => Ok(decision),
            }
        }
        Admission::Replay(json) => {
            let first: PendingDecision = serde_json::from_str(&json)
                .map_err(|e| Status::internal(format!("unreadable shared decision: {e}")))?;
            withdraw(shared);
            let mut d = first.decision.clone();
            shared.with_engine(|e, _| e.adopt_pending(first, now_ms()));
            d.replayed = true;
            Ok(d)
        }
        Admission::Refused {
            spent_usd,
            reserved_usd,
        } => {
            withdraw(shared);
            let (key, amount, limit, end) = budget
                .map(|b| (b.key, b.amount_usd, b.limit_usd, b.period_end_ms))
                .unwrap_or_default();
            let cheapest = if plan.is_some() {
                " (nor does the cheapest model's reservation)"
            } else {
                ""
            };
            Err(Status::resource_exhausted(format!(
                "budget {key:?} is exhausted across replicas: spent {spent_usd:.6} + reserved \
                 {reserved_usd:.6} + this request's {amount:.6} USD would pass its limit of \
                 {limit} USD{cheapest}; it resets at {}",
                crate::time::format_ms(end)
            )))
        }
        Admission::FallbackRefused {
            allowance_usd,
            spent_usd,
        } => {
            withdraw(shared);
            Err(Status::resource_exhausted(format!(
                "the shared store is unreachable and this replica's fallback share of budget {:?} \
                 ({allowance_usd:.6} USD, {spent_usd:.6} used) has no room for this request; \
                 retry when the store is back",
                budget.map(|b| b.key).unwrap_or_default()
            )))
        }
    }
}

/// Feedback, after the engine: settles the shared budget and writes the decision back; returns
/// the alerts to deliver (fired once across replicas) and whether a settlement had already been
/// counted elsewhere.
pub async fn settle(
    shared: &Shared,
    cluster: &Cluster,
    decision_id: &str,
    result: &FeedbackResult,
) -> (Vec<BudgetAlert>, bool) {
    let now = now_ms();
    let (json, budget) = shared.with_engine(|e, _| {
        let p = e.pending(decision_id);
        let json = p.as_ref().and_then(|p| serde_json::to_string(p).ok());
        let created = p.map_or(now, |p| p.decision.created_ms);
        let budget = match (&result.budget_key, result.settled_usd) {
            (Some(k), Some(amount)) => e
                .config()
                .budgets
                .get(k)
                .map(|b| ask(k, b, created, amount)),
            _ => None,
        };
        (json, budget)
    });
    // A duplicate changed nothing: its copy of the decision is not written over a newer one.
    if result.duplicate || (json.is_none() && budget.is_none()) {
        return (Vec::new(), false);
    }
    let s = cluster
        .settle(decision_id, &result.arm.model, budget, json)
        .await;
    (s.alerts, s.duplicate)
}

/// ReportHealth: broadcasts the signal applied here.
pub fn on_health(cluster: &Cluster, input: &HealthInput, result: &HealthResult) {
    let state = match input.state {
        Some(HealthSignal::Down) => "down",
        Some(HealthSignal::Degraded) => "degraded",
        Some(HealthSignal::Healthy) | None => "healthy",
    };
    cluster.queue_signal(Signal {
        origin: cluster.config.replica_id.clone(),
        model: input.model.clone(),
        provider: input.provider.clone(),
        state: state.to_string(),
        until_ms: result.until_ms,
        reason: input.reason.clone(),
    });
}

/// A breaker change: an open caused here (not by a signal) is broadcast as a DOWN until the
/// breaker's own open interval ends.
pub fn on_transition(cluster: &Cluster, model: &str, t: &Transition, open_until_ms: Option<u64>) {
    let caused_here = matches!(
        t.cause,
        TransitionCause::ConsecutiveFailures
            | TransitionCause::FailureRate
            | TransitionCause::ProbeFailed
    );
    if t.to != BreakerState::Open || !caused_here {
        return;
    }
    let Some(until_ms) = open_until_ms else {
        return;
    };
    cluster.queue_signal(Signal {
        origin: cluster.config.replica_id.clone(),
        model: model.to_string(),
        provider: String::new(),
        state: String::from("down"),
        until_ms,
        reason: format!(
            "breaker opened on replica {} ({:?})",
            cluster.config.replica_id, t.cause
        ),
    });
}

/// Applies other replicas' signals that are still in force.
pub fn apply_signals(cluster: &Cluster, shared: &Shared, signals: Vec<Signal>) {
    let now = now_ms();
    for s in signals {
        let state = match s.state.as_str() {
            "down" => HealthSignal::Down,
            "degraded" => HealthSignal::Degraded,
            _ => HealthSignal::Healthy,
        };
        if state != HealthSignal::Healthy && s.until_ms <= now {
            continue;
        }
        let ttl_secs = i64::try_from(s.until_ms.saturating_sub(now).div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        let input = HealthInput {
            model: s.model.clone(),
            provider: s.provider.clone(),
            state: Some(state),
            ttl_secs: if state == HealthSignal::Healthy {
                0
            } else {
                ttl_secs
            },
            reason: format!("{} (from replica {})", s.reason, s.origin),
        };
        match shared.with_engine(|e, _| e.report_health(&input, now)) {
            Ok(_) => {
                cluster
                    .counters
                    .health_signals_received
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(model = %s.model, provider = %s.provider, state = %s.state, origin = %s.origin, "health signal from replica");
            }
            Err(e) => tracing::warn!(error = %e, "cannot apply a replica's health signal"),
        }
    }
}

/// GetArmStats: which replica served and how fresh the cluster-wide figures are.
pub fn annotate_arms(cluster: &Cluster, arms: &mut [crate::proto::ArmStats]) {
    let st = cluster.state();
    for a in arms {
        a.served_by = cluster.config.replica_id.clone();
        a.cluster_wide = st.synced_ms > 0;
        a.cluster_synced_unix_ms = i64::try_from(st.synced_ms).unwrap_or(i64::MAX);
        a.live_replicas = u32::try_from(st.live_replicas).unwrap_or(u32::MAX);
    }
}

/// GetBudgets: the shared figures (as last seen in Redis) and this replica's fallback share.
pub fn annotate_budgets(cluster: &Cluster, budgets: &mut [crate::proto::Budget]) {
    let st = cluster.state();
    for b in budgets {
        b.served_by = cluster.config.replica_id.clone();
        let Some(v) = st.budgets.get(&b.budget_key) else {
            continue;
        };
        if i64::try_from(v.period_start_ms).ok() == Some(b.period_start_unix_ms) {
            b.spent_usd = v.spent_usd;
            b.reserved_usd = v.reserved_usd;
            b.cluster_shared = true;
        }
        if let Some(a) = v.allowance_usd {
            b.fallback = true;
            b.fallback_allowance_usd = a;
            b.fallback_spent_usd = v.fallback_spent_usd;
        }
    }
}
