//! One routing decision over 10 models on a warmed-up engine: Thompson sampling with its Monte Carlo
//! propensity (the default 64 draws, and 128), and UCB.

#![allow(clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use switchyard::config::Config;
use switchyard::engine::{Engine, FeedbackInput, RouteInput};
use switchyard::policy::Outcome;

fn ten_model_config(kind: &str, propensity_samples: u32) -> Config {
    let mut text =
        format!("[policy]\nkind = \"{kind}\"\npropensity_samples = {propensity_samples}\n");
    let mut ids = Vec::new();
    for i in 0..10 {
        text.push_str(&format!(
            "[models.m{i}]\nprovider = \"p{}\"\ninput_usd_per_mtok = {}\noutput_usd_per_mtok = {}\nquality = {}\nlatency_ms = {}\n",
            i % 3,
            0.1 + i as f64 * 0.3,
            0.4 + i as f64 * 1.2,
            0.5 + i as f64 * 0.04,
            400.0 + i as f64 * 150.0
        ));
        ids.push(format!("\"m{i}\""));
    }
    text.push_str(&format!(
        "[task_classes.qa]\nmodels = [{}]\nmax_latency_ms = 3000.0\n",
        ids.join(", ")
    ));
    Config::from_toml_str(&text, "bench").expect("bench config")
}

fn warmed_engine(kind: &str, propensity_samples: u32) -> (Engine, SmallRng) {
    let mut engine = Engine::new(ten_model_config(kind, propensity_samples), 0);
    let mut rng = SmallRng::seed_from_u64(1);
    let input = RouteInput {
        task_class: "qa".into(),
        ..Default::default()
    };
    for i in 0..2000u64 {
        let d = engine.route(&input, i, &mut rng).expect("route");
        let fb = FeedbackInput {
            decision_id: d.id,
            outcome: Some(Outcome::Success),
            latency_ms: Some(500.0 + (i % 7) as f64 * 50.0),
            quality: Some(0.5 + (i % 5) as f64 * 0.1),
            cost_usd: Some(0.001),
            ..Default::default()
        };
        engine.feedback(&fb, i).expect("feedback");
    }
    (engine, rng)
}

fn decision(c: &mut Criterion) {
    let input = RouteInput {
        task_class: "qa".into(),
        ..Default::default()
    };
    for (kind, samples) in [("thompson", 64), ("thompson", 128), ("ucb", 1)] {
        let (mut engine, mut rng) = warmed_engine(kind, samples);
        let mut now = 10_000u64;
        c.bench_function(&format!("route_10_models_{kind}_{samples}"), |b| {
            b.iter(|| {
                now += 1;
                // The server's writer takes the change set every 10 ms (~100 decisions at 10k/s).
                if now.is_multiple_of(100) {
                    engine.take_changes();
                }
                engine.route(&input, now, &mut rng).expect("route")
            })
        });
    }
}

criterion_group!(benches, decision);
criterion_main!(benches);
