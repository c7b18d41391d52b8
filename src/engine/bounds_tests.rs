//! Engine unit tests of input bounds and budget leaks: values beyond their bounds, Feedback only
//! for offered models, late and evicted settlement, closed periods and rollovers.
use super::tests::*;
use super::*;
use crate::policy::Outcome;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

// ---- input bounds and budget leaks (issue 13) ------------------------------------------

#[test]
fn values_beyond_the_bounds_are_refused_naming_field_value_and_range() {
    let mut e = engine();
    let mut rng = SmallRng::seed_from_u64(40);
    let d = route(&mut e, "qa", &mut rng);
    let poison = [
        (
            FeedbackInput {
                latency_ms: Some(1e100),
                ..Default::default()
            },
            "latency_ms",
            "[0, 86400000]",
        ),
        (
            FeedbackInput {
                cost_usd: Some(1e200),
                ..Default::default()
            },
            "cost_usd",
            "limits.max_cost_usd_per_call",
        ),
        (
            FeedbackInput {
                output_tokens: Some(100_000_001),
                ..Default::default()
            },
            "output_tokens",
            "[0, 100000000]",
        ),
    ];
    for (mut input, field, range) in poison {
        input.decision_id = d.id.clone();
        input.outcome = Some(Outcome::Success);
        match e.feedback(&input, 1) {
            Err(EngineError::InvalidArgument { field: f, message }) => {
                assert_eq!(f, field);
                assert!(message.contains(range), "{message}");
                assert!(message.len() < 300, "{message}");
            }
            other => panic!("{field}: expected InvalidArgument, got {other:?}"),
        }
    }
    // The largest accepted values keep every estimate finite.
    let max = FeedbackInput {
        decision_id: d.id.clone(),
        model: d.model.clone(),
        outcome: Some(Outcome::Success),
        latency_ms: Some(crate::config::MAX_LATENCY_MS),
        cost_usd: Some(e.config().limits.max_cost_usd_per_call),
        input_tokens: Some(1),
        output_tokens: Some(1),
        ..Default::default()
    };
    e.feedback(&max, 2).unwrap();
    for _ in 0..20 {
        let d = route(&mut e, "qa", &mut rng);
        assert!(d.expected.cost_usd.is_finite() && d.expected.latency_ms.is_finite());
    }
    let huge_class = RouteInput {
        task_class: "x".repeat(1_000_000),
        ..Default::default()
    };
    match e.route(&huge_class, 3, &mut rng) {
        Err(EngineError::NotFound(m)) => assert!(m.len() < 500, "{} bytes", m.len()),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn feedback_names_only_the_chosen_model_or_its_fallbacks() {
    let text = "[policy]\nseed = 1\n[limits]\nmax_fallbacks = 1\n\
         [models.a]\nprovider = \"p1\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
         [models.b]\nprovider = \"p2\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
         [models.c]\nprovider = \"p3\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
         [task_classes.qa]\nmodels = [\"a\", \"b\", \"c\"]\n";
    let mut e = Engine::new(Config::from_toml_str(text, "test").unwrap(), 0);
    let mut rng = SmallRng::seed_from_u64(41);
    let d = route(&mut e, "qa", &mut rng);
    let class = &e.config().task_classes["qa"];
    let offered: Vec<&String> = std::iter::once(&d.model)
        .chain(d.fallbacks.iter().map(|f| &f.model))
        .collect();
    let outsider = class.models.iter().find(|m| !offered.contains(m)).cloned();
    let Some(outsider) = outsider else {
        panic!("the test class must have a model the decision does not offer: {d:?}");
    };
    let input = |model: &str| FeedbackInput {
        decision_id: d.id.clone(),
        model: model.to_string(),
        outcome: Some(Outcome::Success),
        ..Default::default()
    };
    match e.feedback(&input(&outsider), 1) {
        Err(EngineError::InvalidArgument { field, message }) => {
            assert_eq!(field, "model");
            assert!(message.contains(&d.model), "{message}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    if let Some(f) = d.fallbacks.first() {
        e.feedback(&input(&f.model), 1).unwrap();
    }
    e.feedback(&input(&d.model), 1).unwrap();
}

#[test]
fn late_feedback_after_expiry_is_charged_to_the_budget() {
    let mut e = budget_engine("period = \"daily\"\nlimit_usd = 10.0", MARCH_1);
    let mut rng = SmallRng::seed_from_u64(42);
    let d = e.route(&qa(500), MARCH_1, &mut rng).unwrap();
    let reserved = summary(&e, "team", MARCH_1).reserved_usd;
    assert!(reserved > 0.0);
    e.expire(MARCH_1 + HOUR);
    assert_eq!(e.pending_len(), 0);
    assert_eq!(summary(&e, "team", MARCH_1 + HOUR).reserved_usd, 0.0);
    // A model the decision never offered is refused, naming the offered ones.
    let mut wrong = done(&d, Some(0.02));
    wrong.model = if d.model == "best" { "nope" } else { "best" }.into();
    if d.fallbacks.iter().all(|f| f.model != wrong.model) {
        assert!(matches!(
            e.feedback(&wrong, MARCH_1 + HOUR + 1),
            Err(EngineError::InvalidArgument { .. })
        ));
    }
    let r = e
        .feedback(&done(&d, Some(0.02)), MARCH_1 + HOUR + 2)
        .unwrap();
    assert!(r.late);
    assert!((summary(&e, "team", MARCH_1 + HOUR).spent_usd - 0.02).abs() < 1e-12);
    // Once: the tombstone is consumed.
    assert!(matches!(
        e.feedback(&done(&d, Some(0.02)), MARCH_1 + HOUR + 3),
        Err(EngineError::NotFound(_))
    ));
    // Without a cost, the reservation is charged.
    let d2 = e.route(&qa(500), MARCH_1 + HOUR, &mut rng).unwrap();
    let reserved2 = summary(&e, "team", MARCH_1 + HOUR).reserved_usd;
    e.expire(MARCH_1 + 2 * HOUR);
    let r = e.feedback(&done(&d2, None), MARCH_1 + 2 * HOUR).unwrap();
    assert!(r.late);
    let s = summary(&e, "team", MARCH_1 + 2 * HOUR);
    assert!((s.spent_usd - 0.02 - reserved2).abs() < 1e-12, "{s:?}");
    // Tombstones are bounded in age: after the window, NOT_FOUND.
    let d3 = e.route(&qa(500), MARCH_1 + 2 * HOUR, &mut rng).unwrap();
    let gone = MARCH_1 + 3 * HOUR + 86_400_000 + 1;
    e.expire(MARCH_1 + 3 * HOUR);
    e.expire(gone);
    assert!(matches!(
        e.feedback(&done(&d3, Some(0.01)), gone),
        Err(EngineError::NotFound(_))
    ));
}

#[test]
fn eviction_releases_the_reservation_and_late_feedback_is_charged() {
    let text = "[policy]\nseed = 1\n[limits]\nmax_pending = 2\n\
         [models.best]\nprovider = \"p1\"\ninput_usd_per_mtok = 10.0\noutput_usd_per_mtok = 30.0\n\
         [models.cheap]\nprovider = \"p2\"\ninput_usd_per_mtok = 0.1\noutput_usd_per_mtok = 0.4\n\
         [budgets.team]\nperiod = \"daily\"\nlimit_usd = 10.0\n\
         [task_classes.qa]\nmodels = [\"best\", \"cheap\"]\nbudget = \"team\"\n";
    let mut e = Engine::new(Config::from_toml_str(text, "test").unwrap(), MARCH_1);
    let mut rng = SmallRng::seed_from_u64(43);
    let ds: Vec<Decision> = (0..3)
        .map(|i| e.route(&qa(500), MARCH_1 + i, &mut rng).unwrap())
        .collect();
    assert_eq!(e.pending_len(), 2);
    let ledger = e.ledger("team").unwrap();
    assert_eq!(
        ledger.reservation_count(),
        2,
        "the evicted one was released"
    );
    assert_eq!(ledger.tombstone_count(), 1);
    let r = e.feedback(&done(&ds[0], Some(0.05)), MARCH_1 + 10).unwrap();
    assert!(r.late);
    assert!((summary(&e, "team", MARCH_1 + 10).spent_usd - 0.05).abs() < 1e-12);
}

#[test]
fn reservations_of_a_closed_period_settle_into_it() {
    let mut e = budget_engine("period = \"daily\"\nlimit_usd = 1.0", MARCH_1);
    let mut rng = SmallRng::seed_from_u64(44);
    let t = MARCH_1 + 23 * HOUR + 59 * MIN;
    let d = e.route(&qa(500), t, &mut rng).unwrap();
    let reserved = summary(&e, "team", t).reserved_usd;
    assert!(reserved > 0.0);
    // The next day opens with the reservation pinned to the closed one: full headroom.
    let t2 = MARCH_1 + 24 * HOUR + MIN;
    let s = summary(&e, "team", t2);
    assert_eq!((s.spent_usd, s.reserved_usd), (0.0, 0.0));
    e.feedback(&done(&d, Some(reserved)), t2).unwrap();
    let s = summary(&e, "team", t2);
    assert_eq!(s.spent_usd, 0.0);
    assert!(
        (s.previous_period_spent_usd - reserved).abs() < 1e-12,
        "{s:?}"
    );
}

#[test]
fn honest_costs_never_take_spend_past_the_limit_across_rollovers() {
    // Many overlapping requests, some with max_output_tokens and some without, settled in a
    // shuffled order with actual costs at most their reservations, across three day boundaries.
    let mut e = budget_engine("period = \"daily\"\nlimit_usd = 0.5", MARCH_1);
    let mut rng = SmallRng::seed_from_u64(45);
    let mut open: Vec<(Decision, f64)> = Vec::new();
    let mut now = MARCH_1 + 20 * HOUR;
    let (mut settled, mut refused) = (0, 0);
    for step in 0..6000u64 {
        now += rng.random_range(0..60_000);
        // The sweeper's job; decisions past their TTL are abandoned (no Feedback).
        e.expire(now);
        open.retain(|(d, _)| d.expires_ms > now);
        if rng.random_bool(0.55) {
            let max_out = if step % 2 == 0 { 500 } else { 0 };
            let before = e.ledger("team").map(|l| l.reservation_count()).unwrap_or(0);
            match e.route(&qa(max_out), now, &mut rng) {
                Ok(d) => {
                    let l = e.ledger("team").unwrap();
                    assert_eq!(l.reservation_count(), before + 1);
                    let r = l.reservation_usd(&d.id).unwrap();
                    open.push((d, r));
                }
                Err(EngineError::ResourceExhausted(_)) => refused += 1,
                Err(other) => panic!("{other:?}"),
            }
        } else if !open.is_empty() {
            let i = rng.random_range(0..open.len());
            let (d, reserved) = open.swap_remove(i);
            let actual = reserved * rng.random_range(0.0..=1.0);
            let r = e.feedback(&done(&d, Some(actual)), now).unwrap();
            assert_eq!(r.overrun_usd, 0.0);
            settled += 1;
        }
        let l = e.ledger("team").unwrap();
        assert!(
            l.spent_usd() + l.reserved_usd() <= 0.5 + 1e-9,
            "step {step}"
        );
        assert!(
            l.history().iter().all(|p| p.spent_usd <= 0.5 + 1e-9),
            "step {step}"
        );
    }
    assert!(e.ledger("team").unwrap().history().len() >= 2);
    // Both paths are exercised many times (the exact split depends on the policy's exploration).
    assert!(settled > 500 && refused > 100, "{settled} {refused}");
}

#[test]
fn one_huge_accepted_cost_does_not_price_a_model_out_of_a_budget() {
    let mut e = budget_engine("period = \"daily\"\nlimit_usd = 5.0", MARCH_1);
    let mut rng = SmallRng::seed_from_u64(46);
    let only = |model: &str| RouteInput {
        candidates: vec![model.to_string()],
        ..qa(0)
    };
    let ds: Vec<Decision> = ["best", "cheap"]
        .iter()
        .map(|m| e.route(&only(m), MARCH_1, &mut rng).unwrap())
        .collect();
    for d in &ds {
        e.feedback(&done(d, Some(1000.0)), MARCH_1 + 1).unwrap();
    }
    // Spend is far over the limit now; on a fresh day each model fits the budget again, its
    // reservation bounded by the price table rather than the one huge learned cost.
    let t = MARCH_1 + 24 * HOUR;
    for model in ["best", "cheap"] {
        let d = e.route(&only(model), t, &mut rng).unwrap();
        let list = e.config().models[model].cost_usd(1000, 500);
        let reserved = e.ledger("team").unwrap().reservation_usd(&d.id).unwrap();
        assert!(
            reserved <= list * LEARNED_RESERVATION_CAP_FACTOR + 1e-12,
            "{model}: {reserved} > 10 x {list}"
        );
        e.feedback(&done(&d, Some(list)), t).unwrap();
    }
}
