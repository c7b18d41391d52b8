//! `on_cap = "cheapest"` across replicas: the admission's side of the cap rule (the maths and the
//! local step are in `crate::engine::cap`).
//!
//! Route asks Redis for the reservation of the model decided on the shared figures last seen,
//! with the other candidates' reservations, cheapest first, as alternatives: the admission script
//! reserves the first that fits when the asked one does not, in the same round trip, and answers
//! the room it saw. While Redis is down the same rule runs on this replica's fallback share. The
//! replica then settles the decision on the model served with its exact propensity; when the
//! decision changed (another model, or another propensity because the figures of record differed
//! from the ones last seen) it is written to Redis in one more round trip, before Route answers,
//! so a Feedback on any replica finds the model served. Nothing here is state: see
//! `crate::engine::cap` for the figures and plans a replica keeps.

use tonic::Status;

use super::*;
use crate::engine::{CapPlan, Decision, SharedBudget};
use crate::server::Shared;
use crate::time::now_ms;

pub use crate::engine::Room;

/// An admission, with what the cap rule needs to know of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub admission: Admission,
    /// The room the budget had when the check was made (budgeted and admitted only).
    pub room: Option<Room>,
    /// Which alternative (0-based, cheapest first) was reserved instead of the amount asked.
    pub alternative: Option<usize>,
}

impl Admitted {
    /// An admission that says nothing of the budget's room.
    pub fn plain(admission: Admission) -> Self {
        Admitted {
            admission,
            room: None,
            alternative: None,
        }
    }
}

/// Hands the budgets' figures last seen in Redis to the engine (pacing and the cap rule read
/// them): every budget, or only `key`. The cluster's state and the engine are locked in turn,
/// never together.
pub fn share_figures(cluster: &Cluster, shared: &Shared, key: Option<&str>) {
    let seen: Vec<(String, SharedBudget)> = cluster
        .state()
        .budgets
        .iter()
        .filter(|(k, _)| key.is_none_or(|key| key == k.as_str()))
        .map(|(k, v)| {
            let figures = SharedBudget {
                period_start_ms: v.period_start_ms,
                spent_usd: v.spent_usd,
                reserved_usd: v.reserved_usd,
            };
            (k.clone(), figures)
        })
        .collect();
    if seen.is_empty() {
        return;
    }
    shared.with_engine(|e, _| {
        for (k, f) in &seen {
            e.set_shared_budget(k, *f);
        }
    });
}

/// The room and the alternative taken from an `ok` or `sub` reply of the admission script:
/// `{tag, spent, reserved after, reserved before, [alternative, 1-based]}`.
pub(super) fn room_of(
    b: &BudgetAsk,
    reply: &[String],
) -> Result<(Option<Room>, Option<usize>), ClusterError> {
    let (Some(spent), Some(before)) = (reply.get(1), reply.get(3)) else {
        return Ok((None, None));
    };
    let room = Room {
        used_usd: num(spent)? + num(before)?,
        limit_usd: b.limit_usd,
    };
    let alternative = match reply.get(4) {
        Some(k) => Some(
            k.trim()
                .parse::<usize>()
                .ok()
                .and_then(|k| k.checked_sub(1))
                .ok_or_else(|| {
                    ClusterError::Protocol(format!("admit script named alternative {k:?}"))
                })?,
        ),
        None => None,
    };
    Ok((Some(room), alternative))
}

/// The alternative to reserve from a fallback share: `None` when `amount_usd` fits (or nothing
/// does), else the first of `alternatives` that fits.
pub(super) fn fallback_pick(room: Room, amount_usd: f64, alternatives: &[f64]) -> Option<usize> {
    if room.fits(amount_usd) {
        return None;
    }
    alternatives.iter().position(|&a| room.fits(a))
}

/// Route, after an admission with a plan: settles the decision on the model served with its
/// exact propensity and, when it changed, records it in Redis (or queues it while Redis is
/// down).
pub async fn serve(
    shared: &Shared,
    cluster: &Cluster,
    decision: Decision,
    plan: &CapPlan,
    admitted: &Admitted,
    (ttl_ms, request_id): (u64, Option<String>),
) -> Result<Decision, Status> {
    let first = plan.served_first();
    let served = match admitted.alternative {
        Some(k) => plan.alternative(k).ok_or_else(|| {
            Status::internal(format!(
                "the shared budget took alternative {k} of {}",
                plan.order.len()
            ))
        })?,
        None => first,
    };
    let propensity = admitted
        .room
        .map_or(decision.propensity, |r| plan.propensity(r, served));
    let (settled, json) = shared.with_engine(|e, _| {
        let d = e.serve_capped(plan, served, propensity, now_ms());
        let json = e
            .pending(&decision.id)
            .and_then(|p| serde_json::to_string(&p).ok());
        (d, json)
    });
    let Some(settled) = settled else {
        return Ok(decision); // no longer pending (evicted at once): nothing to record
    };
    if settled != decision || admitted.alternative.is_some() {
        if let Some(json) = json {
            let call = (decision.id.as_str(), json, ttl_ms, decision.expires_ms);
            cluster.admit_with(call, request_id, None, &[]).await;
        }
    }
    if served != first {
        tracing::debug!(decision = %decision.id, from = %decision.model, to = %settled.model, "shared budget substituted a cheaper model");
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fallback_share_takes_the_first_alternative_that_fits() {
        let room = Room {
            used_usd: 0.9,
            limit_usd: 1.0,
        };
        assert_eq!(fallback_pick(room, 0.05, &[0.01, 0.2]), None);
        assert_eq!(fallback_pick(room, 0.5, &[0.2, 0.01, 0.05]), Some(1));
        assert_eq!(fallback_pick(room, 0.5, &[0.2, 0.3]), None);
    }

    #[test]
    fn the_room_is_read_exactly_from_the_script_reply() {
        let b = BudgetAsk {
            key: String::from("team"),
            period_start_ms: 0,
            period_end_ms: 1,
            limit_usd: 0.3,
            amount_usd: 0.1,
            thresholds: Vec::new(),
        };
        let reply: Vec<String> = [
            "sub",
            "0.10000000000000001",
            "0.25",
            "0.20000000000000001",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (room, alt) = room_of(&b, &reply).unwrap();
        assert_eq!(alt, Some(1));
        let room = room.unwrap();
        assert_eq!(room.used_usd, 0.1 + 0.2);
        // 0.1 + 0.2 + 0.0 > 0.3 in doubles, as in Lua: both sides refuse the same amounts.
        assert!(!room.fits(0.0));
        assert!(room_of(
            &b,
            &["sub".into(), "0".into(), "0".into(), "0".into(), "0".into()]
        )
        .is_err());
    }
}
