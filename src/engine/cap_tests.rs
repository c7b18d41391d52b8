//! The cap rule on shared figures, its exact propensity, and pacing on the cluster-wide spend.
use super::super::tests::{budget_engine, qa, HOUR, MARCH_1, MIN};
use super::*;
use crate::policy::Outcome;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn plan(probs: &[f64], amounts: &[f64], first: Vec<usize>, chosen: usize) -> CapPlan {
    let mut order: Vec<usize> = (0..amounts.len()).collect();
    order.sort_by(|&a, &b| amounts[a].total_cmp(&amounts[b]));
    CapPlan {
        decision_id: String::from("d"),
        budget_key: String::from("team"),
        probs: probs.to_vec(),
        amounts: amounts.to_vec(),
        order,
        first,
        chosen,
        arms: (0..amounts.len()).collect(),
        models: Vec::new(),
        expected: Vec::new(),
        ranked: Vec::new(),
        max_fallbacks: 0,
        created_ms: 0,
    }
}

#[test]
fn the_served_propensity_composes_the_local_and_the_shared_step() {
    let (probs, amounts) = ([0.5, 0.3, 0.2], [0.3, 0.2, 0.1]);
    let room = |left: f64| Room {
        used_usd: 1.0 - left,
        limit_usd: 1.0,
    };
    // Local step on 0.25 left: 0 does not fit and goes to the cheapest, 2.
    let g0: Vec<usize> = serve_map(&amounts, &[2, 1, 0], |a| room(0.25).fits(a))
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(g0, vec![2, 1, 2]);
    let p = plan(&probs, &amounts, g0, 1);
    assert_eq!(p.asks(), (0.2, vec![0.1, 0.2, 0.3]));
    // Shared step with at least 0.2 left: nothing more moves; 1 keeps its own 0.3.
    assert!((p.propensity(room(0.2 + 1e-9), 1) - 0.3).abs() < 1e-12);
    assert!((p.propensity(room(0.2 + 1e-9), 2) - 0.7).abs() < 1e-12);
    // Only 0.15 left at the admission: every choice ends on 2.
    assert!((p.propensity(room(0.15), 2) - 1.0).abs() < 1e-12);
    assert_eq!(p.propensity(room(0.15), 1), 0.0);
    // Nothing fits anywhere: no candidate is served (the admission refuses).
    assert_eq!(
        serve_map(&amounts, &[2, 1, 0], |a| room(0.05).fits(a)),
        vec![None; 3]
    );
}

/// A cluster-mode engine (`[cluster]` set; nothing connects in these tests) whose `team`
/// budget substitutes at the cap.
fn cluster_engine(limit: f64) -> Engine {
    budget_engine(
        &format!(
            "period = \"daily\"\nlimit_usd = {limit}\non_cap = \"cheapest\"\n\
             [cluster]\nredis_url = \"redis://127.0.0.1:1\"\nreplica_id = \"r0\""
        ),
        MARCH_1,
    )
}

fn shared(spent_usd: f64) -> SharedBudget {
    SharedBudget {
        period_start_ms: MARCH_1,
        spent_usd,
        reserved_usd: 0.0,
    }
}

#[test]
fn the_local_step_substitutes_on_the_shared_figures_and_waits_to_log() {
    let mut e = cluster_engine(1.0);
    e.log_events();
    let t = MARCH_1 + HOUR;
    // Another replica's spend left 0.01 USD: "best" (0.025 reserved) no longer fits.
    e.set_shared_budget("team", shared(0.99));
    let mut rng = SmallRng::seed_from_u64(3);
    let d = e.route(&qa(500), t, &mut rng).unwrap();
    assert_eq!(d.model, "cheap", "{d:?}");
    assert_eq!(d.propensity, 1.0, "every choice ends on cheap");
    let plan = e.take_cap_plan(&d.id).unwrap();
    let cheap = plan.models.iter().position(|m| m.model == "cheap").unwrap();
    assert_eq!(plan.served_first(), cheap);
    assert_eq!(
        plan.asks().0,
        e.config().models["cheap"].cost_usd(1000, 500)
    );
    // Not logged until admitted; no local reservation (the shared one is of record).
    assert!(e.take_changes().events.is_empty());
    assert_eq!(e.ledger("team").unwrap().reserved_usd(), 0.0);
    let room = Room {
        used_usd: 0.99,
        limit_usd: 1.0,
    };
    let p = plan.propensity(room, cheap);
    let served = e.serve_capped(&plan, cheap, p, t).unwrap();
    assert_eq!((served.model.as_str(), served.propensity), ("cheap", 1.0));
    assert_eq!(e.take_changes().events.len(), 1);
}

#[test]
fn the_shared_step_rewrites_the_decision_for_the_model_served() {
    let mut e = cluster_engine(1.0);
    let t = MARCH_1 + HOUR;
    // The figures last seen leave plenty of room: the local step keeps the policy's choice.
    e.set_shared_budget("team", shared(0.0));
    let mut rng = SmallRng::seed_from_u64(4);
    let d = (0..50)
        .map(|_| e.route(&qa(500), t, &mut rng).unwrap())
        .find(|d| d.model == "best")
        .unwrap();
    let plan = e.take_cap_plan(&d.id).unwrap();
    let (best, cheap) = (plan.served_first(), 1 - plan.served_first());
    assert_eq!(plan.models[best].model, "best");
    assert_eq!(plan.alternative(0), Some(cheap), "cheapest first");
    let pulls = |e: &Engine, m: &str| {
        e.class_arms("qa")
            .into_iter()
            .find(|(name, _)| *name == m)
            .unwrap()
            .1
            .pulls
    };
    let before = (pulls(&e, "best"), pulls(&e, "cheap"));
    // At the admission only 0.01 USD is left: the script reserves "cheap" instead.
    let room = Room {
        used_usd: 0.99,
        limit_usd: 1.0,
    };
    let p = plan.propensity(room, cheap);
    assert_eq!(p, 1.0);
    let served = e.serve_capped(&plan, cheap, p, t).unwrap();
    assert_eq!(served.model, "cheap");
    assert_eq!(served.reason, Reason::BudgetExhausted);
    assert_eq!(served.expected, plan.expected[cheap]);
    assert!(served.fallbacks.iter().all(|f| f.model != "cheap"));
    assert_eq!(e.pending(&d.id).unwrap().decision, served);
    assert_eq!(pulls(&e, "best"), before.0 - 1);
    assert_eq!(pulls(&e, "cheap"), before.1 + 1);
}

/// Spend of a month of traffic (a request every 10 minutes, Feedback a second later) served by
/// `replicas` engines in turn, each seeing the others' spend only through the shared figures
/// refreshed every `sync_every` requests (never, with `None`): (spend at mid-month, at the end).
fn month(replicas: usize, sync_every: Option<usize>, seed: u64) -> (f64, f64) {
    let limit = 30.0;
    let mut engines: Vec<Engine> = (0..replicas)
        .map(|_| {
            budget_engine(
                &format!("period = \"monthly\"\nlimit_usd = {limit}"),
                MARCH_1,
            )
        })
        .collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut sim = SmallRng::seed_from_u64(seed + 1);
    let (mid, end) = (MARCH_1 + 31 * 12 * HOUR, MARCH_1 + 31 * 24 * HOUR);
    let total = |engines: &[Engine]| -> (f64, f64) {
        engines.iter().fold((0.0, 0.0), |(s, r), e| {
            let l = e.ledger("team").unwrap();
            (s + l.spent_usd(), r + l.reserved_usd())
        })
    };
    let mut mid_spend = None;
    let mut t = MARCH_1;
    let mut k = 0usize;
    while t < end {
        if t >= mid && mid_spend.is_none() {
            mid_spend = Some(total(&engines).0);
        }
        if let Some(n) = sync_every {
            if k.is_multiple_of(n) {
                let (spent, reserved) = total(&engines);
                let figures = SharedBudget {
                    period_start_ms: MARCH_1,
                    spent_usd: spent,
                    reserved_usd: reserved,
                };
                for e in &mut engines {
                    e.set_shared_budget("team", figures);
                }
            }
        }
        let e = &mut engines[k % replicas];
        k += 1;
        if let Ok(d) = e.route(&qa(500), t, &mut rng) {
            let out = sim.random_range(250..=500u64);
            let truth = if d.model == "best" { 0.9 } else { 0.5 };
            let fb = FeedbackInput {
                decision_id: d.id.clone(),
                outcome: Some(Outcome::Success),
                latency_ms: Some(500.0),
                input_tokens: Some(1000),
                output_tokens: Some(out as i64),
                quality: Some((truth + sim.random_range(-0.1..0.1f64)).clamp(0.0, 1.0)),
                ..Default::default()
            };
            e.feedback(&fb, t + 1000).unwrap();
        }
        t += 10 * MIN;
    }
    (mid_spend.unwrap_or(0.0), total(&engines).0)
}

/// Three replicas pacing on the shared figures (refreshed every 6 requests, an hour of this
/// traffic) spend a month's budget like one replica does: at mid-month within a tenth of one
/// replica's spend (which runs ~1.2x ahead of the straight line: the proportional rule's lag,
/// see `budget/pacing.rs`) and within the limit at the end. Pacing each on its own spend (a third
/// of the total) lets the three run far ahead of the line.
#[test]
fn three_replicas_pace_the_shared_budget_as_one() {
    let limit = 30.0;
    for seed in [20_260_301u64, 7] {
        let one = month(1, None, seed);
        let shared = month(3, Some(6), seed);
        let local = month(3, None, seed);
        let msg = format!(
            "seed {seed}: (mid-month, end) spend of {limit}: one replica {one:.3?}, three on the \
             shared figures {shared:.3?}, three on local spend only {local:.3?}"
        );
        println!("{msg}");
        assert!((shared.0 - one.0).abs() <= 0.1 * one.0, "{msg}");
        for (mid, end) in [one, shared] {
            assert!(
                mid <= 0.65 * limit,
                "mid-month spend far off the line: {msg}"
            );
            assert!(end <= limit * 1.01 && end >= 0.9 * limit, "{msg}");
        }
        assert!(
            local.0 > 1.5 * one.0,
            "local pacing should run ahead: {msg}"
        );
    }
}
