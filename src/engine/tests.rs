//! Engine unit tests: replay, duplicates, validation, expiry, breakers and the budget glue.
use super::*;
use crate::breaker::BreakerState;
use crate::budget::BudgetState;
use crate::policy::Outcome;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub(super) fn engine() -> Engine {
    Engine::new(Config::builtin().unwrap(), 1_000)
}

pub(super) fn route(e: &mut Engine, class: &str, rng: &mut SmallRng) -> Decision {
    e.route(
        &RouteInput {
            task_class: class.into(),
            ..Default::default()
        },
        2_000,
        rng,
    )
    .unwrap()
}

#[test]
fn request_id_replays_the_same_decision() {
    let mut e = engine();
    let mut rng = SmallRng::seed_from_u64(1);
    let input = RouteInput {
        task_class: "qa".into(),
        request_id: "req-1".into(),
        ..Default::default()
    };
    let a = e.route(&input, 2_000, &mut rng).unwrap();
    let b = e.route(&input, 2_500, &mut rng).unwrap();
    assert_eq!(a.id, b.id);
    assert!(b.replayed && !a.replayed);
    assert_eq!(e.pending_len(), 1);
    let other = RouteInput {
        task_class: "code".into(),
        request_id: "req-1".into(),
        ..Default::default()
    };
    assert!(matches!(
        e.route(&other, 2_600, &mut rng),
        Err(EngineError::FailedPrecondition(_))
    ));
}

#[test]
fn duplicate_outcomes_count_once_and_late_quality_updates() {
    let mut e = engine();
    let mut rng = SmallRng::seed_from_u64(2);
    let d = route(&mut e, "qa", &mut rng);
    let fb = FeedbackInput {
        decision_id: d.id.clone(),
        outcome: Some(Outcome::Success),
        latency_ms: Some(300.0),
        ..Default::default()
    };
    let r1 = e.feedback(&fb, 3_000).unwrap();
    let r2 = e.feedback(&fb, 3_001).unwrap();
    assert!(!r1.duplicate && r2.duplicate);
    assert_eq!(r2.arm.successes, 1);
    let q = FeedbackInput {
        decision_id: d.id.clone(),
        quality: Some(1.0),
        ..Default::default()
    };
    let before = r2.arm.quality.alpha;
    let r3 = e.feedback(&q, 3_002).unwrap();
    assert!(!r3.duplicate);
    assert!((r3.arm.quality.alpha - before - 1.0).abs() < 1e-9);
    assert!(e.feedback(&q, 3_003).unwrap().duplicate);
}

#[test]
fn bad_values_never_reach_a_posterior() {
    let mut e = engine();
    let mut rng = SmallRng::seed_from_u64(3);
    let d = route(&mut e, "qa", &mut rng);
    let before = e.arm_stats(&ArmFilter::default(), 2_000).unwrap();
    let bad = [
        (
            "latency_ms",
            FeedbackInput {
                latency_ms: Some(-1.0),
                ..Default::default()
            },
        ),
        (
            "latency_ms",
            FeedbackInput {
                latency_ms: Some(f64::NAN),
                ..Default::default()
            },
        ),
        (
            "cost_usd",
            FeedbackInput {
                cost_usd: Some(f64::INFINITY),
                ..Default::default()
            },
        ),
        (
            "output_tokens",
            FeedbackInput {
                output_tokens: Some(-5),
                ..Default::default()
            },
        ),
        (
            "quality",
            FeedbackInput {
                quality: Some(1.5),
                ..Default::default()
            },
        ),
        (
            "quality",
            FeedbackInput {
                quality: Some(f64::NAN),
                ..Default::default()
            },
        ),
    ];
    for (field, mut fb) in bad {
        fb.decision_id = d.id.clone();
        fb.outcome = Some(Outcome::Success);
        match e.feedback(&fb, 2_000) {
            Err(EngineError::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(before, e.arm_stats(&ArmFilter::default(), 2_000).unwrap());
}

#[test]
fn pending_decisions_expire_and_are_bounded() {
    let mut cfg = Config::builtin().unwrap();
    cfg.limits.max_pending = 10;
    cfg.limits.pending_ttl_secs = 60.0;
    let mut e = Engine::new(cfg, 0);
    let mut rng = SmallRng::seed_from_u64(4);
    let mut ids = Vec::new();
    for i in 0..25u64 {
        let d = e
            .route(
                &RouteInput {
                    task_class: "qa".into(),
                    ..Default::default()
                },
                i * 1000,
                &mut rng,
            )
            .unwrap();
        ids.push(d.id);
    }
    assert_eq!(e.pending_len(), 10);
    assert!(e.pending(&ids[14]).is_none());
    assert!(e.pending(&ids[15]).is_some());
    // Decision 15 was made at t=15 s: it expires at 75 s.
    assert_eq!(e.expire(75_000), 1);
    assert_eq!(e.expire(200_000), 9);
    assert_eq!(e.pending_len(), 0);
    let fb = FeedbackInput {
        decision_id: ids[24].clone(),
        outcome: Some(Outcome::Success),
        ..Default::default()
    };
    assert!(matches!(
        e.feedback(&fb, 200_000),
        Err(EngineError::NotFound(_))
    ));
}

#[test]
fn a_breaker_closing_after_an_outage_weakens_old_evidence() {
    let mut cfg = Config::builtin().unwrap();
    cfg.policy.half_life_secs = None; // no time decay: only the breaker weakens evidence
    cfg.breaker.consecutive_failures = 3.0;
    cfg.breaker.cooldown_secs = 1.0;
    cfg.health.recovery_evidence_factor = 0.25;
    let mut e = Engine::new(cfg, 0);
    let mut rng = SmallRng::seed_from_u64(9);
    let only = |m: &str| RouteInput {
        task_class: "qa".into(),
        candidates: vec![m.to_string()],
        ..Default::default()
    };
    let report = |e: &mut Engine, id: String, outcome: Outcome, t: u64| {
        e.feedback(
            &FeedbackInput {
                decision_id: id,
                outcome: Some(outcome),
                latency_ms: Some(500.0),
                ..Default::default()
            },
            t,
        )
        .unwrap()
    };
    for _ in 0..20 {
        let d = e.route(&only("gpt-4.1"), 10, &mut rng).unwrap();
        report(&mut e, d.id, Outcome::Success, 10);
    }
    for _ in 0..3 {
        let d = e.route(&only("gpt-4.1"), 20, &mut rng).unwrap();
        report(&mut e, d.id, Outcome::Error, 20);
    }
    assert_eq!(e.breaker("gpt-4.1").unwrap().state(20), BreakerState::Open);
    // After the cooldown, two successful probes close it.
    let d = e.route(&only("gpt-4.1"), 1_100, &mut rng).unwrap();
    assert_eq!(d.reason, Reason::BreakerProbe);
    let before = report(&mut e, d.id, Outcome::Success, 1_100).arm;
    assert_eq!(before.decayed_pulls, 24.0);
    let d = e.route(&only("gpt-4.1"), 1_100, &mut rng).unwrap();
    let after = report(&mut e, d.id, Outcome::Success, 1_100).arm;
    assert_eq!(after.breaker.state, BreakerState::Closed);
    // 25 outcomes of evidence, a quarter kept; counters are history and stay.
    assert!(
        (after.decayed_pulls - 25.0 * 0.25).abs() < 1e-9,
        "{after:?}"
    );
    assert_eq!((after.successes, after.failures), (22, 3));
    let closed = e
        .take_transitions()
        .into_iter()
        .filter(|t| t.model == "gpt-4.1" && t.transition.is_recovery())
        .count();
    assert_eq!(closed, 1);
}

#[test]
fn fallbacks_exclude_the_choice_and_respect_the_limit() {
    let mut e = engine();
    let mut rng = SmallRng::seed_from_u64(5);
    for _ in 0..50 {
        let d = route(&mut e, "qa", &mut rng);
        assert!(d.fallbacks.len() <= 3);
        assert!(d.fallbacks.iter().all(|f| f.model != d.model));
        assert!(d.propensity > 0.0 && d.propensity <= 1.0);
        assert_eq!(d.eligible.len(), 4);
    }
}

// ---- budgets -------------------------------------------------------------------------

/// 2026-03-01T00:00:00Z, a month start in UTC.
pub(super) const MARCH_1: u64 = 1_772_323_200_000;
pub(super) const MIN: u64 = 60_000;
pub(super) const HOUR: u64 = 60 * MIN;

/// Two models: "best" (quality 0.9, $0.025 per typical request) and "cheap" (quality 0.5,
/// $0.0003), class "qa" charged to budget "team" by default.
pub(super) fn budget_engine(budget: &str, now_ms: u64) -> Engine {
    let text = format!(
            "[policy]\nseed = 1\n\
             [models.best]\nprovider = \"p1\"\ninput_usd_per_mtok = 10.0\noutput_usd_per_mtok = 30.0\nquality = 0.9\nlatency_ms = 500\n\
             [models.cheap]\nprovider = \"p2\"\ninput_usd_per_mtok = 0.1\noutput_usd_per_mtok = 0.4\nquality = 0.5\nlatency_ms = 500\n\
             [budgets.team]\n{budget}\n\
             [budgets.other]\nperiod = \"daily\"\nlimit_usd = 100.0\n\
             [task_classes.qa]\nmodels = [\"best\", \"cheap\"]\ntypical_input_tokens = 1000\ntypical_output_tokens = 500\nbudget = \"team\"\n\
             [task_classes.free]\nmodels = [\"best\", \"cheap\"]\n"
        );
    Engine::new(Config::from_toml_str(&text, "test").unwrap(), now_ms)
}

pub(super) fn qa(max_output_tokens: i64) -> RouteInput {
    RouteInput {
        task_class: "qa".into(),
        input_tokens: 1000,
        max_output_tokens,
        ..Default::default()
    }
}

pub(super) fn done(d: &Decision, cost_usd: Option<f64>) -> FeedbackInput {
    FeedbackInput {
        decision_id: d.id.clone(),
        outcome: Some(Outcome::Success),
        cost_usd,
        ..Default::default()
    }
}

pub(super) fn summary(e: &Engine, key: &str, now: u64) -> BudgetSummary {
    e.budgets(key, now).unwrap().remove(0)
}

#[test]
fn route_reserves_list_cost_and_feedback_settles_actual() {
    let mut e = budget_engine("period = \"daily\"\nlimit_usd = 10.0", MARCH_1);
    let mut rng = SmallRng::seed_from_u64(11);
    let d = e.route(&qa(500), MARCH_1 + HOUR, &mut rng).unwrap();
    assert_eq!(d.budget_key.as_deref(), Some("team"));
    let list = e.config().models[&d.model].cost_usd(1000, 500);
    let s = summary(&e, "team", MARCH_1 + HOUR);
    assert!((s.reserved_usd - list).abs() < 1e-12, "{s:?}");
    assert_eq!(s.spent_usd, 0.0);

    let r = e
        .feedback(&done(&d, Some(0.004)), MARCH_1 + HOUR + 1)
        .unwrap();
    assert!(r.alerts.is_empty());
    let s = summary(&e, "team", MARCH_1 + HOUR + 1);
    assert_eq!(s.reserved_usd, 0.0);
    assert!((s.spent_usd - 0.004).abs() < 1e-12);

    // A fallback model reported under the same decision adds its (price-table) cost.
    let fb = FeedbackInput {
        decision_id: d.id.clone(),
        model: if d.model == "best" { "cheap" } else { "best" }.into(),
        outcome: Some(Outcome::Success),
        input_tokens: Some(1000),
        output_tokens: Some(100),
        ..Default::default()
    };
    e.feedback(&fb, MARCH_1 + HOUR + 2).unwrap();
    let extra = e.config().models[&fb.model].cost_usd(1000, 100);
    let s = summary(&e, "team", MARCH_1 + HOUR + 2);
    assert!((s.spent_usd - 0.004 - extra).abs() < 1e-12, "{s:?}");
    // A duplicate outcome charges nothing more.
    e.feedback(&fb, MARCH_1 + HOUR + 3).unwrap();
    assert_eq!(
        summary(&e, "team", MARCH_1 + HOUR + 3).spent_usd,
        s.spent_usd
    );
}

#[test]
fn without_max_output_the_reservation_has_a_safety_margin_and_settles_at_it() {
    let mut e = budget_engine("period = \"daily\"\nlimit_usd = 10.0", MARCH_1);
    let mut rng = SmallRng::seed_from_u64(12);
    let d = e.route(&qa(0), MARCH_1 + HOUR, &mut rng).unwrap();
    let list = e.config().models[&d.model].cost_usd(1000, 500);
    let reserved = summary(&e, "team", MARCH_1 + HOUR).reserved_usd;
    assert!(
        reserved >= list * RESERVATION_SAFETY_FACTOR - 1e-12,
        "{reserved} vs {list}"
    );
    // Feedback without cost or tokens charges the reserved estimate.
    e.feedback(&done(&d, None), MARCH_1 + HOUR + 1).unwrap();
    let s = summary(&e, "team", MARCH_1 + HOUR + 1);
    assert!((s.spent_usd - reserved).abs() < 1e-12 && s.reserved_usd == 0.0);
}

#[test]
fn budget_key_resolution() {
    let mut e = budget_engine("period = \"daily\"\nlimit_usd = 10.0", MARCH_1);
    let mut rng = SmallRng::seed_from_u64(13);
    let mut input = qa(500);
    input.budget_key = "other".into();
    assert_eq!(
        e.route(&input, MARCH_1, &mut rng)
            .unwrap()
            .budget_key
            .as_deref(),
        Some("other")
    );
    input.budget_key = "ghost".into();
    match e.route(&input, MARCH_1, &mut rng) {
        Err(EngineError::InvalidArgument { field, message }) => {
            assert_eq!(field, "budget_key");
            assert!(
                message.contains("ghost") && message.contains("other, team"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    input.task_class = "free".into();
    input.budget_key.clear();
    assert_eq!(e.route(&input, MARCH_1, &mut rng).unwrap().budget_key, None);
    assert!(matches!(
        e.budgets("ghost", MARCH_1),
        Err(EngineError::NotFound(m)) if m.contains("other, team")
    ));
    assert_eq!(e.budgets("", MARCH_1).unwrap().len(), 2);
}

#[test]
fn at_the_cap_cheapest_routes_the_cheapest_model_that_fits() {
    // Room for one "best" request ($0.025) and then only "cheap" ones ($0.0003).
    let mut e = budget_engine(
        "period = \"daily\"\nlimit_usd = 0.03\npacing_gain = 0.0",
        MARCH_1,
    );
    let mut rng = SmallRng::seed_from_u64(14);
    let mut first = qa(500);
    first.candidates = vec!["best".into()];
    assert_eq!(e.route(&first, MARCH_1, &mut rng).unwrap().model, "best");
    // Once even "cheap" no longer fits, the request is refused.
    let mut capped = 0;
    loop {
        match e.route(&qa(500), MARCH_1 + 40, &mut rng) {
            Ok(d) => {
                assert_eq!(d.model, "cheap", "{d:?}");
                if d.reason == Reason::BudgetExhausted {
                    assert_eq!(d.propensity, 1.0);
                    capped += 1;
                }
                let s = summary(&e, "team", MARCH_1 + 40);
                assert!(s.reserved_usd <= 0.03 + 1e-12, "{s:?}");
            }
            Err(EngineError::ResourceExhausted(m)) => {
                assert!(capped > 0);
                assert!(
                    m.contains("spent $")
                        && m.contains("limit")
                        && m.contains("resets at 2026-03-02T00:00:00Z"),
                    "{m}"
                );
                break;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    let s = summary(&e, "team", MARCH_1 + 40);
    assert!(s.limit_usd - s.spent_usd - s.reserved_usd < 0.0003, "{s:?}");
}

#[test]
fn at_the_cap_reject_refuses_with_spent_limit_and_reset() {
    let mut e = budget_engine(
            "period = \"daily\"\nlimit_usd = 0.03\non_cap = \"reject\"\npacing_gain = 0.0\ntime_zone = \"Europe/Berlin\"",
            MARCH_1,
        );
    let mut rng = SmallRng::seed_from_u64(15);
    let mut first = qa(500);
    first.candidates = vec!["best".into()];
    let d = e.route(&first, MARCH_1 + HOUR, &mut rng).unwrap();
    e.feedback(&done(&d, Some(0.02)), MARCH_1 + HOUR).unwrap();
    let pending = e.pending_len();
    match e.route(&first, MARCH_1 + HOUR, &mut rng) {
        Err(EngineError::ResourceExhausted(m)) => {
            // Berlin midnight of March 2 is 23:00 UTC on March 1.
            assert!(
                m.contains("spent $0.0200")
                    && m.contains("$0.0300 limit")
                    && m.contains("resets at 2026-03-01T23:00:00Z"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.pending_len(),
        pending,
        "a refused request leaves no decision"
    );
}

#[test]
fn expiry_releases_reservations_of_abandoned_decisions() {
    let mut rng = SmallRng::seed_from_u64(16);
    let mut e = budget_engine("period = \"daily\"\nlimit_usd = 10.0", MARCH_1);
    e.route(&qa(500), MARCH_1, &mut rng).unwrap();
    // The decision's TTL (an hour) passes: its reservation goes with it.
    e.expire(MARCH_1 + HOUR);
    assert_eq!(e.pending_len(), 0);
    assert_eq!(summary(&e, "team", MARCH_1 + HOUR).reserved_usd, 0.0);
}

#[test]
fn berlin_daily_rollover_starts_a_fresh_ledger_and_keeps_the_old_total() {
    let mut e = budget_engine(
        "period = \"daily\"\nlimit_usd = 1.0\ntime_zone = \"Europe/Berlin\"",
        MARCH_1,
    );
    let mut rng = SmallRng::seed_from_u64(17);
    // 22:30 UTC on March 1 = 23:30 in Berlin: still March 1 there.
    let t = MARCH_1 + 22 * HOUR + 30 * MIN;
    let d = e.route(&qa(500), t, &mut rng).unwrap();
    e.feedback(&done(&d, Some(0.01)), t + 1).unwrap();
    let s = summary(&e, "team", t + 1);
    assert_eq!(s.period_start_ms, MARCH_1 - HOUR);
    assert_eq!(s.period_end_ms, MARCH_1 + 23 * HOUR);
    assert!((s.spent_usd - 0.01).abs() < 1e-12);
    // 23:30 UTC = 00:30 on March 2 in Berlin, though still March 1 in UTC.
    let t2 = MARCH_1 + 23 * HOUR + 30 * MIN;
    let s = summary(&e, "team", t2);
    assert_eq!(s.spent_usd, 0.0);
    assert!((s.previous_period_spent_usd - 0.01).abs() < 1e-12);
    assert_eq!(s.period_start_ms, MARCH_1 + 23 * HOUR);
    assert_eq!(s.time_zone, "Europe/Berlin");
    e.route(&qa(500), t2, &mut rng).unwrap();
    assert!((e.ledger("team").unwrap().previous_period_spent_usd() - 0.01).abs() < 1e-12);
}

#[test]
fn alerts_are_returned_once_per_threshold() {
    // Powers of two, so the sums are exact: 4 x 1/32 = 1/8 reaches the limit exactly.
    let mut e = budget_engine(
        "period = \"daily\"\nlimit_usd = 0.125\npacing_gain = 0.0",
        MARCH_1,
    );
    let mut rng = SmallRng::seed_from_u64(18);
    let mut fired = Vec::new();
    for i in 0..20 {
        let Ok(d) = e.route(&qa(500), MARCH_1 + i, &mut rng) else {
            break;
        };
        let r = e.feedback(&done(&d, Some(0.031_25)), MARCH_1 + i).unwrap();
        for a in r.alerts {
            assert_eq!((a.budget_key.as_str(), a.limit_usd), ("team", 0.125));
            assert!(a.spent_usd >= a.threshold * 0.125);
            fired.push(a.threshold);
        }
    }
    assert_eq!(fired, vec![0.5, 0.8, 1.0]);
    assert_eq!(
        summary(&e, "team", MARCH_1 + 30).alert_thresholds_crossed,
        vec![0.5, 0.8, 1.0]
    );
}

#[test]
fn pacing_raises_the_multiplier_when_ahead_and_moves_traffic_to_cheap() {
    // A daily $1 budget; by 06:00 (a quarter of the day) $0.5 is spent: twice the plan.
    let mut e = budget_engine("period = \"daily\"\nlimit_usd = 1.0", MARCH_1);
    let mut rng = SmallRng::seed_from_u64(19);
    let t = MARCH_1 + 6 * HOUR;
    assert_eq!(summary(&e, "team", t).pacing_multiplier, 1.0);
    // Spend through class "free" (its own arms), so qa's learned costs stay realistic.
    let mut first = qa(500);
    first.task_class = "free".into();
    first.budget_key = "team".into();
    let d = e.route(&first, t, &mut rng).unwrap();
    e.feedback(&done(&d, Some(0.5)), t).unwrap();
    let s = summary(&e, "team", t);
    assert!((s.pacing_multiplier - 4.0).abs() < 1e-6, "{s:?}");
    assert_eq!(s.state, BudgetState::Pacing);
    let d = e.route(&qa(500), t, &mut rng).unwrap();
    assert_eq!(
        (d.model.as_str(), d.reason),
        ("cheap", Reason::BudgetPacing)
    );
    // Late in the day the same spend is behind plan: the multiplier falls back to 1.
    e.feedback(&done(&d, Some(0.0)), t).unwrap();
    let late = MARCH_1 + 20 * HOUR;
    let s = summary(&e, "team", late);
    assert_eq!((s.pacing_multiplier, s.state), (1.0, BudgetState::Ok));
    assert_ne!(
        e.route(&qa(500), late, &mut rng).unwrap().reason,
        Reason::BudgetPacing
    );
}

/// A month of traffic (a request every 10 minutes) against a monthly budget that covers the
/// best model for about a third of it: spend stays within the budget, the budget is mostly
/// used, the hard cap rarely has to act, and quality stays well above the cheap model's.
#[test]
fn pacing_spends_a_month_budget_well() {
    let seed = 20_260_301;
    let limit = 30.0;
    let mut e = budget_engine(
        &format!("period = \"monthly\"\nlimit_usd = {limit}"),
        MARCH_1,
    );
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut sim = SmallRng::seed_from_u64(seed + 1);
    let end = MARCH_1 + 31 * 24 * HOUR;
    let (mut n, mut quality_sum, mut capped, mut paced, mut best) = (0u32, 0.0, 0u32, 0u32, 0u32);
    let mut best_cost_all_month = 0.0;
    let mut first_cap: Option<u64> = None;
    let mut capped_refused = 0u32;
    let mut t = MARCH_1;
    while t < end {
        let d = match e.route(&qa(500), t, &mut rng) {
            Ok(d) => d,
            Err(EngineError::ResourceExhausted(_)) => {
                // Even the cheapest model no longer fits: the cap acted.
                first_cap.get_or_insert(t);
                capped += 1;
                capped_refused += 1;
                n += 1;
                t += 10 * MIN;
                continue;
            }
            Err(err) => panic!("seed {seed}: {err}"),
        };
        let out = sim.random_range(250..=500u64);
        let true_quality = if d.model == "best" { 0.9 } else { 0.5 };
        let q: f64 = (true_quality + sim.random_range(-0.1..0.1f64)).clamp(0.0, 1.0);
        let fb = FeedbackInput {
            decision_id: d.id.clone(),
            outcome: Some(Outcome::Success),
            latency_ms: Some(500.0),
            input_tokens: Some(1000),
            output_tokens: Some(out as i64),
            quality: Some(q),
            ..Default::default()
        };
        e.feedback(&fb, t + 1000).unwrap();
        best_cost_all_month += e.config().models["best"].cost_usd(1000, out);
        n += 1;
        quality_sum += true_quality;
        if d.reason == Reason::BudgetExhausted {
            first_cap.get_or_insert(t);
            capped += 1;
        }
        paced += u32::from(d.reason == Reason::BudgetPacing);
        best += u32::from(d.model == "best");
        let s = summary(&e, "team", t + 1000);
        assert!(
            s.spent_usd + s.reserved_usd <= limit + 1e-9,
            "seed {seed}: {s:?}"
        );
        t += 10 * MIN;
    }
    let s = summary(&e, "team", end - 1);
    let served = f64::from(n - capped_refused);
    let mean_quality = quality_sum / served;
    let first_cap_fraction =
        first_cap.map_or(1.0, |c| (c - MARCH_1) as f64 / (end - MARCH_1) as f64);
    let msg = format!(
            "seed {seed}: spent {:.3} of {limit} (best all month: {best_cost_all_month:.2}), mean quality \
             {mean_quality:.3} over {served} served, {best}/{n} best, {paced} paced, {capped} capped \
             ({capped_refused} refused), cap first acted at {first_cap_fraction:.3} of the month",
            s.spent_usd
        );
    assert!(best_cost_all_month > 2.5 * limit, "{msg}");
    assert!(s.spent_usd <= limit, "{msg}");
    assert!(
        s.spent_usd >= 0.95 * limit,
        "the budget should be used well: {msg}"
    );
    assert!(mean_quality > 0.6, "cheap alone gives 0.5: {msg}");
    assert!(paced > 0, "{msg}");
    // Spend running ahead of the line alone would settle ~1.14x ahead of it (a proportional
    // rule's lag) and hit the cap in the last ~15% of the month; the time-left-per-budget-left
    // term takes over as the budget nears the cap, so pacing, not the cap, holds spend to the
    // end and no request is refused.
    assert!(
        first_cap_fraction > 0.97,
        "pacing, not the cap, should do the work: {msg}"
    );
    assert_eq!(capped_refused, 0, "{msg}");
    println!("{msg}");
}

/// Route turns the policy's reason string into a [`Reason`] (unknown names would read as
/// `sampled`): every policy's reasons, exploring or not, must be named there.
#[test]
fn every_policy_reason_is_a_named_reason() {
    use crate::policy::{Candidate, PolicyKind, PolicySettings};
    let e = engine();
    let config = e.config();
    let (name, class) = config.task_classes.iter().next().unwrap();
    let arms = e.class_arms(name);
    let scoring = class_scoring(config, class, None);
    let candidates: Vec<Candidate<'_>> = arms
        .iter()
        .map(|(_, arm)| Candidate {
            arm,
            cost_scale: 1.0,
            health: 1.0,
            prior_utility: 0.0,
            pool: crate::policy::pool::Columns::empty(),
        })
        .collect();
    assert!(candidates.len() > 1);
    let mut rng = SmallRng::seed_from_u64(7);
    for kind in PolicyKind::ALL {
        let settings = PolicySettings {
            kind,
            epsilon: 0.5,
            ..config.policy.settings
        };
        for n in [1, candidates.len()] {
            for _ in 0..40 {
                let c = crate::policy::choose(&settings, &candidates[..n], &scoring, &mut rng);
                assert!(Reason::parse(c.reason).is_some(), "{kind:?}: {}", c.reason);
            }
        }
    }
}

/// The `min_cost` state moves with decisions, counts the decided model's realised quality (not a
/// fallback's), is handed out in the change set and comes back on restore.
#[test]
fn objective_state_is_accounted_persisted_and_restored() {
    use crate::policy::objective::Objective;
    let mut config = Config::builtin().unwrap();
    let class = config.task_classes.get_mut("qa").unwrap();
    Arc::make_mut(class).objective = Objective::MinCost {
        quality_target: 0.9,
    };
    let mut e = Engine::new(config.clone(), 1_000);
    let mut rng = SmallRng::seed_from_u64(12);
    for i in 0..20u64 {
        let d = route(&mut e, "qa", &mut rng);
        assert_eq!(d.quality_target, Some(0.9));
        let other = e.config().task_classes["qa"]
            .models
            .iter()
            .find(|m| **m != d.model)
            .unwrap()
            .clone();
        // A fallback's score first: it must not count.
        e.feedback(
            &FeedbackInput {
                decision_id: d.id.clone(),
                model: other,
                outcome: Some(Outcome::Success),
                quality: Some(0.0),
                ..Default::default()
            },
            2_100,
        )
        .unwrap();
        let outcome = if i % 4 == 0 {
            Outcome::Error
        } else {
            Outcome::Success
        };
        e.feedback(
            &FeedbackInput {
                decision_id: d.id,
                outcome: Some(outcome),
                quality: outcome.is_success().then_some(1.0),
                ..Default::default()
            },
            2_200,
        )
        .unwrap();
    }
    let stats = e.objective_stats("qa");
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert!(s.class_target && s.decisions == 20);
    // 5 failures (0) and 15 perfect scores of the decided models; the fallbacks' zeros ignored.
    assert_eq!(s.realised_quality, Some(0.75));
    assert!(s.usd_per_quality.is_some_and(|l| l > 0.0));
    let changes = e.take_changes();
    let objectives: BTreeMap<String, Targets> = changes.objectives.into_iter().collect();
    assert!(objectives.contains_key("qa"));
    let (restored, warnings) = Engine::restore(
        config,
        Restored {
            objectives,
            ..Default::default()
        },
        3_000,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(restored.objective_stats("qa"), stats);
}
