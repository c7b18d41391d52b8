//! Shadow traffic and experiments in the engine, with time passed in: no shadow while the budget
//! is paced, shadow quality kept out of the class's achieved quality, the experiment's mixture
//! propensity, and the pairs and pending shadows surviving a restart through the store.

use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::*;
use crate::policy::Outcome;
use crate::store::Store;

/// 2026-01-01T12:00:00Z: half the daily period gone.
const NOON_MS: u64 = 1_767_268_800_000;

fn config(class_extra: &str) -> Config {
    let mut text = String::from("[policy]\nkind = \"thompson\"\n");
    for (m, q) in [("a", 0.8), ("b", 0.7), ("c", 0.6)] {
        text.push_str(&format!(
            "[models.{m}]\nprovider = \"p{m}\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = \
             2.0\nlatency_ms = 500\nlatency_p95_ms = 1000\nquality = {q}\n"
        ));
    }
    text.push_str(&format!(
        "[task_classes.qa]\nmodels = [\"a\", \"b\", \"c\"]\n{class_extra}\n\
         [budgets.team]\nperiod = \"daily\"\nlimit_usd = 10.0\npacing_warmup_fraction = 0.0\n"
    ));
    Config::from_toml_str(&text, "test").unwrap()
}

fn route(e: &mut Engine, now_ms: u64, rng: &mut SmallRng) -> Decision {
    e.route(
        &RouteInput {
            task_class: "qa".into(),
            ..Default::default()
        },
        now_ms,
        rng,
    )
    .unwrap()
}

fn report(d: &Decision, shadow: bool, cost: f64, quality: Option<f64>) -> FeedbackInput {
    FeedbackInput {
        decision_id: d.id.clone(),
        outcome: Some(Outcome::Success),
        latency_ms: Some(if shadow { 700.0 } else { 400.0 }),
        cost_usd: Some(cost),
        quality,
        shadow,
        ..Default::default()
    }
}

#[test]
fn no_shadow_while_the_budget_is_paced_above_one() {
    let mut e = Engine::new(
        config("budget = \"team\"\nshadow = { fraction = 1.0, models = \"explore\" }"),
        NOON_MS,
    );
    let mut rng = SmallRng::seed_from_u64(1);
    let d = route(&mut e, NOON_MS, &mut rng);
    assert!(
        d.shadow.is_some(),
        "on plan: fraction 1 gives every decision a shadow"
    );
    e.feedback(&report(&d, false, 9.0, None), NOON_MS).unwrap();
    let paced = e.budgets("team", NOON_MS + 1).unwrap()[0].pacing_multiplier;
    assert!(paced > 1.0, "90% spent at half time paces: {paced}");
    for i in 0..50 {
        let d = route(&mut e, NOON_MS + 1 + i, &mut rng);
        assert!(d.shadow.is_none(), "paced x{paced}: {d:?}");
    }
}

#[test]
fn a_shadow_score_never_counts_toward_the_class_achieved_quality() {
    let mut e = Engine::new(
        config(
            "objective = \"min_cost\"\nquality_target = 0.9\n\
             shadow = { fraction = 1.0, models = \"explore\" }",
        ),
        NOON_MS,
    );
    let mut rng = SmallRng::seed_from_u64(2);
    let d = route(&mut e, NOON_MS, &mut rng);
    e.feedback(&report(&d, true, 0.001, Some(0.2)), NOON_MS)
        .unwrap();
    let o = &e.objective_stats("qa")[0];
    assert_eq!(o.realised_quality, None, "{o:?}");
    e.feedback(&report(&d, false, 0.001, Some(0.9)), NOON_MS)
        .unwrap();
    let o = &e.objective_stats("qa")[0];
    assert_eq!(o.realised_quality, Some(0.9), "{o:?}");
}

#[test]
fn the_logged_propensity_is_the_chosen_model_under_the_whole_mixture() {
    // Control: always "c"; the router (Thompson) picks "c" with some probability p_r, so the
    // logged propensity of "c" is f + (1 - f) p_r, of another model (1 - f) p_r.
    let f = 0.4;
    let mut e = Engine::new(
        config(&format!(
            "experiment = {{ control = \"model:c\", fraction = {f} }}"
        )),
        NOON_MS,
    );
    let mut rng = SmallRng::seed_from_u64(3);
    let (mut control, n) = (0, 400);
    for i in 0..n {
        let d = e
            .route(
                &RouteInput {
                    task_class: "qa".into(),
                    request_id: format!("r{i}"),
                    ..Default::default()
                },
                NOON_MS + i,
                &mut rng,
            )
            .unwrap();
        match d.experiment_group {
            Some(ExperimentGroup::Control) => {
                control += 1;
                assert_eq!((d.model.as_str(), d.policy.as_str()), ("c", "model:c"));
                assert!(d.propensity >= f - 1e-12, "{d:?}");
            }
            Some(ExperimentGroup::Router) if d.model == "c" => {
                assert!(d.propensity >= f - 1e-12, "{d:?}")
            }
            Some(ExperimentGroup::Router) => {
                assert!(d.propensity <= 1.0 - f + 1e-12, "{d:?}")
            }
            None => panic!("a class with an experiment labels every decision"),
        }
        assert_eq!(
            stable_unit(&format!("r{i}")) < f,
            d.experiment_group == Some(ExperimentGroup::Control)
        );
    }
    // Binomial(400, 0.4): sd 9.8; 5 sd.
    assert!((f64::from(control) - 160.0).abs() < 49.0, "{control}");
}

#[test]
fn pairs_and_pending_shadows_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("shadow = { fraction = 1.0, models = [\"b\", \"c\"] }");
    let mut rng = SmallRng::seed_from_u64(4);
    let mut e = Engine::new(cfg.clone(), NOON_MS);
    e.log_events();
    let mut open = Vec::new();
    for i in 0..30u64 {
        let now = NOON_MS + i * 10;
        let d = route(&mut e, now, &mut rng);
        e.feedback(
            &report(&d, false, 0.001 * (i + 1) as f64, Some(0.8)),
            now + 1,
        )
        .unwrap();
        if i % 3 == 0 {
            open.push(d); // shadow reported after the restart
        } else {
            e.feedback(&report(&d, true, 0.002, Some(0.7)), now + 2)
                .unwrap();
        }
    }
    let before = e.paired_stats("");
    {
        let store = Store::open_with(dir.path(), 8).unwrap();
        store.write(e.take_changes()).unwrap();
        store.flush().unwrap();
    }
    let now = NOON_MS + 1_000;
    let store = (0..200)
        .find_map(|_| match Store::open_with(dir.path(), 8) {
            Ok(s) => Some(s),
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            }
        })
        .unwrap();
    let restored = store.load(now, cfg.limits.max_pending).unwrap();
    let (mut r, _) = Engine::restore(cfg, restored, now);
    r.restore_pairs(&store.export(0, u64::MAX).unwrap());
    let after = r.paired_stats("");
    assert_eq!(before.len(), after.len());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!((&a.model, &a.shadow_model), (&b.model, &b.shadow_model));
        assert_eq!(a.stats.cost_usd.n, b.stats.cost_usd.n);
        assert!((a.stats.cost_usd.mean - b.stats.cost_usd.mean).abs() < 1e-12);
        assert!((a.stats.quality.mean - b.stats.quality.mean).abs() < 1e-12);
    }
    // A shadow still pending is accepted once after the restart and pairs then.
    let pairs = |e: &Engine| {
        e.paired_stats("")
            .iter()
            .map(|p| p.stats.cost_usd.n)
            .sum::<u64>()
    };
    let n0 = pairs(&r);
    for d in &open {
        let fb = report(d, true, 0.002, Some(0.7));
        assert!(!r.feedback(&fb, now + 1).unwrap().duplicate);
        assert!(r.feedback(&fb, now + 2).unwrap().duplicate);
    }
    assert_eq!(pairs(&r), n0 + open.len() as u64);
}
