//! Issue 12 over real gRPC: cost learned from successes only while 10% of calls fail for free,
//! the propensity of a budget substitution (every pool index mapped through the budget rule), and
//! the Route `quality_target` field and the objective shown by GetArmStats.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{config, spec, ModelSpec, TestServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::proto;
use tonic::Code;

const SEED: u64 = 12;

#[tokio::test]
async fn ten_percent_free_errors_leave_the_learned_cost_within_ten_percent() {
    // One model at $0.002 list for the class's typical 500 + 500 tokens; real calls cost a
    // log-normal spread around $0.003 (the list price is off), failures are reported at $0.
    let cfg = config(
        &[ModelSpec {
            input_usd_per_mtok: 1.0,
            output_usd_per_mtok: 3.0,
            ..spec("m", "p")
        }],
        "",
        "",
    );
    let server = TestServer::start(cfg).await;
    let mut client = server.client().await;
    let mut rng = SmallRng::seed_from_u64(SEED);
    let (median, sd) = (0.003_f64, 0.3_f64);
    let true_mean = median * (sd * sd / 2.0).exp();
    let (mut failures, n) = (0, 1000);
    for _ in 0..n {
        let d = client
            .route(proto::RouteRequest {
                task_class: "bench".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let fail = rng.random::<f64>() < 0.1;
        let z: f64 = {
            // Box-Muller: a standard normal from two uniforms.
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        };
        failures += u32::from(fail);
        client
            .feedback(proto::FeedbackRequest {
                decision_id: d.decision_id,
                outcome: if fail {
                    proto::Outcome::Error
                } else {
                    proto::Outcome::Success
                } as i32,
                latency_ms: Some(500.0),
                input_tokens: Some(500),
                output_tokens: Some(500),
                cost_usd: Some(if fail { 0.0 } else { median * (sd * z).exp() }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let arm = client
        .get_arm_stats(proto::GetArmStatsRequest {
            task_class: "bench".into(),
            model: "m".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .arms
        .remove(0);
    assert!(failures > 50, "seed {SEED}: only {failures} failures");
    assert_eq!(arm.failures, u64::from(failures));
    assert!(
        (arm.cost_mean_usd - true_mean).abs() <= 0.1 * true_mean,
        "seed {SEED}: learned mean cost {} vs true {true_mean}",
        arm.cost_mean_usd
    );
    assert_eq!(arm.failure_cost_mean_usd, 0.0);
    server.stop().await;
}

/// Two models of equal quality, `a` too dear for what is left of the budget and `b` almost free,
/// plus a poor and cheapest `c`. Thompson splits between a and b; every choice of a is served as
/// c (the cheapest that fits), so c's logged propensity must be its own share plus a's. The check
/// is the IPS identity: for every arm that is always servable, the mean over decisions of
/// 1{served = arm} / propensity is 1 whatever the policy's state; a propensity of 1 for a
/// substitution would make it about 0.5 for c.
#[tokio::test]
async fn a_budget_substitution_logs_the_served_models_real_probability() {
    let models = [
        ModelSpec {
            input_usd_per_mtok: 10.0,
            output_usd_per_mtok: 30.0,
            quality: 0.8,
            ..spec("a", "p1")
        },
        ModelSpec {
            input_usd_per_mtok: 0.001,
            output_usd_per_mtok: 0.001,
            quality: 0.8,
            ..spec("b", "p2")
        },
        ModelSpec {
            input_usd_per_mtok: 0.0001,
            output_usd_per_mtok: 0.0001,
            quality: 0.2,
            ..spec("c", "p3")
        },
    ];
    let budget = "budget = \"team\"\nweights = { quality = 1.0, cost = 0.0, latency = 0.0 }\n\
                  [budgets.team]\nlimit_usd = 0.001\nperiod = \"monthly\"\non_cap = \"cheapest\"\n";
    let server = TestServer::start(config(&models, budget, "")).await;
    let mut client = server.client().await;
    let mut rng = SmallRng::seed_from_u64(SEED);
    let n = 600;
    let mut ips = [0.0_f64; 3];
    let mut substituted = 0;
    for _ in 0..n {
        let d = client
            .route(proto::RouteRequest {
                task_class: "bench".into(),
                input_tokens: 1000,
                max_output_tokens: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(d.model, "a", "a never fits the budget");
        assert!(d.propensity > 0.0 && d.propensity <= 1.0);
        if d.reason == "budget_exhausted" {
            substituted += 1;
            assert!(d.propensity < 1.0, "b could have been chosen: {d:?}");
        }
        let k = ["a", "b", "c"].iter().position(|m| *m == d.model).unwrap();
        ips[k] += 1.0 / d.propensity / f64::from(n);
        let good = rng.random::<f64>() < if d.model == "c" { 0.2 } else { 0.8 };
        client
            .feedback(proto::FeedbackRequest {
                decision_id: d.decision_id,
                outcome: proto::Outcome::Success as i32,
                latency_ms: Some(500.0),
                input_tokens: Some(1000),
                output_tokens: Some(100),
                quality: Some(if good { 1.0 } else { 0.0 }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert!(
        substituted > n / 5,
        "seed {SEED}: {substituted} substitutions"
    );
    for (k, m) in ["b", "c"].iter().enumerate() {
        let v = ips[k + 1];
        assert!(
            (v - 1.0).abs() < 0.2,
            "seed {SEED}: mean of 1{{served = {m}}} / propensity is {v}, not 1"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn route_quality_target_is_validated_and_reported_with_its_trade_off() {
    let models = [
        ModelSpec {
            input_usd_per_mtok: 10.0,
            output_usd_per_mtok: 30.0,
            quality: 0.9,
            ..spec("dear", "p1")
        },
        ModelSpec {
            input_usd_per_mtok: 0.1,
            output_usd_per_mtok: 0.4,
            quality: 0.6,
            ..spec("cheap", "p2")
        },
    ];
    let class = "objective = \"min_cost\"\nquality_target = 0.9\n";
    let server = TestServer::start(config(&models, class, "")).await;
    let mut client = server.client().await;
    for bad in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
        let s = client
            .route(proto::RouteRequest {
                task_class: "bench".into(),
                quality_target: Some(bad),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{bad}: {s:?}");
        assert!(
            s.message().contains("quality_target") && s.message().contains("(0, 1]"),
            "{bad}: {}",
            s.message()
        );
    }
    for target in [None, Some(0.75)] {
        for _ in 0..5 {
            let d = client
                .route(proto::RouteRequest {
                    task_class: "bench".into(),
                    quality_target: target,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            client
                .feedback(proto::FeedbackRequest {
                    decision_id: d.decision_id,
                    outcome: proto::Outcome::Success as i32,
                    quality: Some(1.0),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    let stats = client
        .get_arm_stats(proto::GetArmStatsRequest {
            task_class: "bench".into(),
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let o = &stats.objectives;
    assert_eq!(o.len(), 2, "{o:?}");
    assert!(o[0].class_target && (o[0].quality_target - 0.9).abs() < 1e-12);
    assert!(!o[1].class_target && (o[1].quality_target - 0.75).abs() < 1e-12);
    for x in o {
        assert_eq!(x.objective, "min_cost");
        assert_eq!(x.decisions, 5);
        assert_eq!(x.realised_quality, 1.0);
        assert!(x.usd_per_quality > 0.0 && x.achieved_share > 0.0, "{x:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_request_can_value_quality_in_money() {
    // A cheap, weaker model and a dear, better one: valuing quality at a millionth of a dollar
    // buys the cheap one, at a thousand dollars the better one.
    let cfg = config(
        &[
            ModelSpec {
                input_usd_per_mtok: 0.1,
                output_usd_per_mtok: 0.2,
                quality: 0.5,
                ..spec("cheap", "p")
            },
            ModelSpec {
                input_usd_per_mtok: 10.0,
                output_usd_per_mtok: 30.0,
                quality: 0.9,
                ..spec("dear", "q")
            },
        ],
        "",
        "",
    );
    let server = TestServer::start(cfg).await;
    let mut client = server.client().await;
    let route = |q: Option<f64>, s: Option<f64>| proto::RouteRequest {
        task_class: "bench".into(),
        value_usd_per_quality: q,
        value_usd_per_second: s,
        ..Default::default()
    };
    let share = |value: f64| {
        let mut client = client.clone();
        async move {
            let mut dear = 0;
            for _ in 0..300 {
                let d = client
                    .route(route(Some(value), Some(0.0)))
                    .await
                    .unwrap()
                    .into_inner();
                dear += usize::from(d.model == "dear");
            }
            dear as f64 / 300.0
        }
    };
    let low = share(1e-6).await;
    let high = share(1e3).await;
    assert!(low <= 0.05, "dear share at $1e-6 per quality: {low}");
    assert!(high >= 0.8, "dear share at $1000 per quality: {high}");

    for (req, field) in [
        (route(Some(-1.0), None), "value_usd_per_quality"),
        (route(Some(f64::INFINITY), None), "value_usd_per_quality"),
        (route(None, Some(0.5)), "value_usd_per_second"),
        (
            proto::RouteRequest {
                weights: Some(proto::Weights {
                    quality: 1.0,
                    cost: 1.0,
                    latency: 0.0,
                }),
                ..route(Some(1.0), None)
            },
            "weights",
        ),
        (
            proto::RouteRequest {
                quality_target: Some(0.9),
                ..route(Some(1.0), None)
            },
            "quality_target",
        ),
    ] {
        let s = client.route(req).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{field}: {s:?}");
        assert!(s.message().contains(field), "{field}: {}", s.message());
    }
}
