//! Simulator tests over the shipped scenarios: the oracle's regret is zero, Thompson sampling learns
//! (sub-linear regret, beats uniform shuffle and cheapest), and a decayed policy recovers from a
//! price drift faster than an undecayed one. Small durations and few seeds keep them fast in debug.

use std::path::Path;

use switchyard::sim::metrics::{RunMetrics, CURVE_POINTS};
use switchyard::sim::run::{run_many, run_seed, PolicySpec, Source};
use switchyard::sim::scenario::Scenario;

const BASE_SEED: u64 = 20_260_101;

fn scenario(name: &str, duration_secs: f64) -> Source {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("simulations/scenarios")
        .join(format!("{name}.toml"));
    let mut s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    s.traffic.duration_secs = duration_secs;
    Source::scenario(s).unwrap_or_else(|e| panic!("{e}"))
}

fn policies(specs: &[&str]) -> Vec<PolicySpec> {
    specs
        .iter()
        .map(|s| PolicySpec::parse(s).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn mean(runs: &[RunMetrics], f: impl Fn(&RunMetrics) -> f64) -> f64 {
    runs.iter().map(f).sum::<f64>() / runs.len() as f64
}

/// The best expected utility summed over every request of `source` for `seed`, computed here by
/// walking the world directly (not through the simulator's recorder), with the request count.
fn best_possible(source: &Source, seed: u64) -> (f64, u64) {
    let mut world = source.world(seed);
    let sizes: Vec<usize> = world
        .classes()
        .iter()
        .map(|c| c.config.models.len())
        .collect();
    let (mut total, mut requests) = (0.0, 0u64);
    let mut u = vec![0.0; sizes.iter().copied().max().unwrap_or(0)];
    while let Some(req) = world.next_request() {
        let n = sizes[req.class];
        world.utilities(&req, &mut u[..n]);
        let best = (1..n).fold(0, |b, k| if u[k] > u[b] { k } else { b });
        assert!(
            u[best].is_finite(),
            "request {}: no eligible model",
            req.index
        );
        total += u[best];
        requests += 1;
        // Keep the world's random streams where the simulator leaves them.
        world.outcome(&req, best);
    }
    (total, requests)
}

#[test]
fn the_oracles_regret_is_zero() {
    let source = scenario("provider_outage", 1200.0);
    let runs = run_many(&source, &policies(&["oracle"]), 2, BASE_SEED, 2, &|| {}).unwrap();
    for (i, r) in runs[0].iter().enumerate() {
        assert_eq!(r.seed, run_seed(BASE_SEED, i));
        let (best, requests) = best_possible(&source, r.seed);
        assert!(r.requests > 500, "seed {}: {} requests", r.seed, r.requests);
        assert_eq!(r.requests, requests, "seed {}", r.seed);
        // The oracle's expected utility is the per-request maximum, request by request.
        assert!(
            (r.expected_utility - best).abs() <= 1e-9 * best.abs().max(1.0),
            "seed {}: oracle {} vs best possible {best}",
            r.seed,
            r.expected_utility
        );
        assert_eq!(r.regret_oracle, 0.0, "seed {}", r.seed);
        assert!(r.curve.iter().all(|&c| c == 0.0), "seed {}", r.seed);
        // The oracle is at least as good as any fixed model.
        assert!(
            r.regret_best_fixed <= 1e-9,
            "seed {}: {}",
            r.seed,
            r.regret_best_fixed
        );
    }
}

#[test]
fn thompson_learns_sublinearly_and_beats_uniform_and_cheapest_on_stationary() {
    // 10 models, two classes, ~7200 requests per run.
    let source = scenario("stationary", 3600.0);
    // Without the exploration floor: its min_propensity share of uniform choices adds regret
    // linearly by design, and this test is about the learner's own regret.
    let specs = [
        "thompson:propensity_samples=8:min_propensity=0",
        "uniform",
        "cheapest",
    ];
    let runs = run_many(&source, &policies(&specs), 3, BASE_SEED, 2, &|| {}).unwrap();
    let (ts, uniform, cheapest) = (&runs[0], &runs[1], &runs[2]);
    // Sub-linear: the second half adds clearly less regret than the first, on average over the
    // seeds and in each. (A bound on each seed alone follows the random stream: at 0.5 the old
    // pool rule's seeds gave 0.42, 0.32 and 0.48, the current one's 0.42, 0.21 and 0.50.)
    let shares: Vec<f64> = ts
        .iter()
        .map(|r| {
            let half = r.curve[CURVE_POINTS / 2 - 1];
            let full = r.curve[CURVE_POINTS - 1];
            (full - half) / half
        })
        .collect();
    let mean_share = shares.iter().sum::<f64>() / shares.len() as f64;
    assert!(
        mean_share < 0.5,
        "second half's regret over the first's, per seed: {shares:.2?}"
    );
    assert!(
        shares.iter().all(|&s| s < 0.75),
        "second half's regret over the first's, per seed: {shares:.2?}"
    );
    let regret = |runs: &[RunMetrics]| mean(runs, |r| r.regret_oracle);
    assert!(
        regret(ts) < 0.5 * regret(uniform),
        "base seed {BASE_SEED}: thompson {} vs uniform {}",
        regret(ts),
        regret(uniform)
    );
    assert!(
        regret(ts) < 0.5 * regret(cheapest),
        "base seed {BASE_SEED}: thompson {} vs cheapest {}",
        regret(ts),
        regret(cheapest)
    );
}

#[test]
fn a_decayed_policy_recovers_from_price_drift_faster_than_an_undecayed_one() {
    let source = scenario("price_drift", 7200.0);
    let specs = [
        "thompson:propensity_samples=8:half_life_secs=300",
        "thompson:propensity_samples=8:half_life_secs=inf",
    ];
    let runs = run_many(&source, &policies(&specs), 3, BASE_SEED, 2, &|| {}).unwrap();
    let recovery = |runs: &[RunMetrics]| mean(runs, |r| r.recovery_secs[0].unwrap_or(3600.0));
    let post_event_regret = |runs: &[RunMetrics]| {
        mean(runs, |r| {
            r.curve[CURVE_POINTS - 1] - r.curve[CURVE_POINTS / 2 - 1]
        })
    };
    let (decayed, undecayed) = (&runs[0], &runs[1]);
    assert!(
        recovery(decayed) < 0.5 * recovery(undecayed),
        "base seed {BASE_SEED}: recovery decayed {} s vs undecayed {} s",
        recovery(decayed),
        recovery(undecayed)
    );
    assert!(
        post_event_regret(decayed) < post_event_regret(undecayed),
        "base seed {BASE_SEED}: regret after the event decayed {} vs undecayed {}",
        post_event_regret(decayed),
        post_event_regret(undecayed)
    );
}

#[test]
fn every_shipped_scenario_loads_and_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("simulations/scenarios");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    for path in names {
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut short = s.clone();
        short.traffic.duration_secs = short.traffic.duration_secs.min(600.0);
        let source = Source::scenario(short).unwrap();
        let runs = run_many(&source, &policies(&["uniform"]), 1, BASE_SEED, 1, &|| {}).unwrap();
        assert_eq!(runs[0][0].feedback_rejected, 0, "{}", path.display());
    }
}
