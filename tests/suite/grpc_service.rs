//! End-to-end tests of `switchyard.v1.Route` over real gRPC on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::HashMap;

use common::{config, spec, ModelSpec, TestServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::config::Config;
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{FeedbackRequest, GetArmStatsRequest, Outcome, RouteRequest, Weights};
use tonic::transport::Channel;
use tonic::Code;

fn route_req(class: &str) -> RouteRequest {
    RouteRequest {
        task_class: class.into(),
        ..Default::default()
    }
}

/// Truth of one simulated model, as the client observes it.
#[derive(Clone, Copy)]
struct Truth {
    quality: f64,
    latency_ms: f64,
    cost_usd: f64,
}

/// Routes `n` requests, reports each outcome from `truth` (quality jittered by +-0.05), and returns
/// how often each model was chosen among the last `tail` requests and overall.
async fn drive(
    client: &mut RouteClient<Channel>,
    req: &RouteRequest,
    truth: &HashMap<&str, Truth>,
    n: usize,
    tail: usize,
    seed: u64,
) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut all = HashMap::new();
    let mut last = HashMap::new();
    for i in 0..n {
        let d = client.route(req.clone()).await.unwrap().into_inner();
        let t = truth[d.model.as_str()];
        let q = (t.quality + rng.random_range(-0.05..0.05)).clamp(0.0, 1.0);
        let lat = t.latency_ms * rng.random_range(0.8..1.25);
        client
            .feedback(FeedbackRequest {
                decision_id: d.decision_id.clone(),
                outcome: Outcome::Success as i32,
                latency_ms: Some(lat),
                cost_usd: Some(t.cost_usd),
                quality: Some(q),
                ..Default::default()
            })
            .await
            .unwrap();
        *all.entry(d.model.clone()).or_insert(0) += 1;
        if i >= n - tail {
            *last.entry(d.model).or_insert(0) += 1;
        }
    }
    (all, last)
}

fn three_equal_models() -> Vec<ModelSpec> {
    vec![spec("alpha", "p1"), spec("beta", "p2"), spec("gamma", "p1")]
}

async fn learns_the_better_model(policy: &str, seed: u64) {
    let cfg = config(&three_equal_models(), "", policy);
    let server = TestServer::start(cfg).await;
    let mut client = server.client().await;
    let cost = 0.0015; // = 500 * 1/1e6 + 500 * 2/1e6, the price-table cost at typical size
    let truth = HashMap::from([
        (
            "alpha",
            Truth {
                quality: 0.6,
                latency_ms: 500.0,
                cost_usd: cost,
            },
        ),
        (
            "beta",
            Truth {
                quality: 0.9,
                latency_ms: 500.0,
                cost_usd: cost,
            },
        ),
        (
            "gamma",
            Truth {
                quality: 0.6,
                latency_ms: 500.0,
                cost_usd: cost,
            },
        ),
    ]);
    let (all, last) = drive(&mut client, &route_req("bench"), &truth, 1000, 300, seed).await;
    let best_tail = *last.get("beta").unwrap_or(&0) as f64 / 300.0;
    let others_all = 1000 - all.get("beta").copied().unwrap_or(0);
    assert!(
        best_tail > 0.75,
        "{policy} (seed {seed}): the better model got {best_tail:.2} of the last 300: {all:?}"
    );
    assert!(
        (10..400).contains(&others_all),
        "{policy} (seed {seed}): the others should keep a small share, got {others_all}/1000: {all:?}"
    );
    // GetArmStats tells the same story.
    let stats = client
        .get_arm_stats(GetArmStatsRequest {
            task_class: "bench".into(),
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let beta = stats.arms.iter().find(|a| a.model == "beta").unwrap();
    let alpha = stats.arms.iter().find(|a| a.model == "alpha").unwrap();
    assert!(
        beta.quality_mean > 0.85 && alpha.quality_mean < 0.7,
        "{stats:?}"
    );
    assert_eq!(beta.pulls as usize, all["beta"]);
    assert!(beta.traffic_share > alpha.traffic_share);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thompson_sends_most_traffic_to_the_better_model() {
    learns_the_better_model("kind = \"thompson\"", 101).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ucb_sends_most_traffic_to_the_better_model() {
    learns_the_better_model("kind = \"ucb\"", 102).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheaper_model_with_equal_quality_wins_when_cost_weighs() {
    let mut cheap = spec("cheap", "p1");
    cheap.input_usd_per_mtok = 0.1;
    cheap.output_usd_per_mtok = 0.2;
    let pricey = spec("pricey", "p2"); // 10x the price
    let cfg = config(
        &[pricey, cheap],
        "weights = { quality = 1.0, cost = 0.5, latency = 0.0 }",
        "kind = \"thompson\"",
    );
    let server = TestServer::start(cfg).await;
    let mut client = server.client().await;
    let truth = HashMap::from([
        (
            "cheap",
            Truth {
                quality: 0.8,
                latency_ms: 500.0,
                cost_usd: 0.00015,
            },
        ),
        (
            "pricey",
            Truth {
                quality: 0.8,
                latency_ms: 500.0,
                cost_usd: 0.0015,
            },
        ),
    ]);
    let (all, last) = drive(&mut client, &route_req("bench"), &truth, 400, 200, 103).await;
    let share = *last.get("cheap").unwrap_or(&0) as f64 / 200.0;
    assert!(share > 0.9, "cheap share of last 200 = {share}: {all:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_sla_routes_away_from_the_slow_model() {
    let mut slow = spec("slow", "p1");
    slow.latency_ms = 3000.0;
    slow.quality = 0.95;
    let mut fast = spec("fast", "p2");
    fast.latency_ms = 300.0;
    fast.quality = 0.8;
    let cfg = config(
        &[slow, fast],
        "weights = { quality = 1.0, cost = 0.0, latency = 0.0 }",
        "kind = \"thompson\"",
    );
    let server = TestServer::start(cfg).await;
    let mut client = server.client().await;
    let truth = HashMap::from([
        (
            "slow",
            Truth {
                quality: 0.95,
                latency_ms: 3000.0,
                cost_usd: 0.0015,
            },
        ),
        (
            "fast",
            Truth {
                quality: 0.8,
                latency_ms: 300.0,
                cost_usd: 0.0015,
            },
        ),
    ]);
    // Without an SLA the better, slower model wins.
    let (_, no_sla) = drive(&mut client, &route_req("bench"), &truth, 300, 100, 104).await;
    assert!(no_sla.get("slow").copied().unwrap_or(0) > 80, "{no_sla:?}");
    // With a 1 s SLA, which the slow model's p95 cannot meet, traffic goes to the fast one.
    let mut req = route_req("bench");
    req.max_latency_ms = 1000.0;
    let (with_sla, _) = drive(&mut client, &req, &truth, 100, 100, 105).await;
    assert!(
        with_sla.get("fast").copied().unwrap_or(0) >= 95,
        "{with_sla:?}"
    );
    // And the fallbacks still name the slow model, behind the choice.
    let d = client.route(req).await.unwrap().into_inner();
    assert_eq!(d.model, "fast");
    assert_eq!(d.fallbacks.len(), 1);
    assert_eq!(d.fallbacks[0].model, "slow");
    server.stop().await;
}

async fn expect_status<T: std::fmt::Debug>(
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    needle: &str,
) {
    match r {
        Ok(v) => panic!("{what}: expected {code:?}, got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {}", s.message());
            assert!(
                s.message().contains(needle),
                "{what}: message {:?} should mention {needle:?}",
                s.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_statuses_and_the_server_keeps_serving() {
    let server = TestServer::start(Config::builtin().unwrap()).await;
    let mut c = server.client().await;
    let before = c
        .get_arm_stats(GetArmStatsRequest::default())
        .await
        .unwrap()
        .into_inner();

    expect_status(
        "empty class",
        c.route(route_req("")).await,
        Code::InvalidArgument,
        "task_class",
    )
    .await;
    expect_status(
        "unknown class",
        c.route(route_req("poetry")).await,
        Code::NotFound,
        "poetry",
    )
    .await;
    let mut r = route_req("qa");
    r.candidates = vec!["gpt-4o-mini".into(), "gpt-9".into()];
    expect_status(
        "unknown candidate",
        c.route(r).await,
        Code::InvalidArgument,
        "candidates[1]",
    )
    .await;
    let mut r = route_req("qa");
    r.max_latency_ms = -5.0;
    expect_status(
        "negative SLA",
        c.route(r).await,
        Code::InvalidArgument,
        "max_latency_ms",
    )
    .await;
    let mut r = route_req("qa");
    r.max_cost_usd = f64::NAN;
    expect_status(
        "NaN cost cap",
        c.route(r).await,
        Code::InvalidArgument,
        "max_cost_usd",
    )
    .await;
    let mut r = route_req("qa");
    r.input_tokens = -1;
    expect_status(
        "negative tokens",
        c.route(r).await,
        Code::InvalidArgument,
        "input_tokens",
    )
    .await;
    let mut r = route_req("qa");
    r.weights = Some(Weights {
        quality: 0.0,
        cost: 0.0,
        latency: 0.0,
    });
    expect_status(
        "zero weights",
        c.route(r).await,
        Code::InvalidArgument,
        "weights",
    )
    .await;

    let d = c.route(route_req("qa")).await.unwrap().into_inner();
    let fb = |f: fn(&mut FeedbackRequest)| {
        let mut r = FeedbackRequest {
            decision_id: d.decision_id.clone(),
            outcome: Outcome::Success as i32,
            latency_ms: Some(100.0),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    expect_status(
        "no decision",
        c.feedback(fb(|r| r.decision_id.clear())).await,
        Code::InvalidArgument,
        "decision_id",
    )
    .await;
    expect_status(
        "unknown decision",
        c.feedback(fb(|r| r.decision_id = "nope".into())).await,
        Code::NotFound,
        "nope",
    )
    .await;
    expect_status(
        "unknown model",
        c.feedback(fb(|r| r.model = "gpt-9".into())).await,
        Code::InvalidArgument,
        "model",
    )
    .await;
    expect_status(
        "negative latency",
        c.feedback(fb(|r| r.latency_ms = Some(-1.0))).await,
        Code::InvalidArgument,
        "latency_ms",
    )
    .await;
    expect_status(
        "infinite latency",
        c.feedback(fb(|r| r.latency_ms = Some(f64::INFINITY))).await,
        Code::InvalidArgument,
        "latency_ms",
    )
    .await;
    expect_status(
        "NaN cost",
        c.feedback(fb(|r| r.cost_usd = Some(f64::NAN))).await,
        Code::InvalidArgument,
        "cost_usd",
    )
    .await;
    expect_status(
        "negative cost",
        c.feedback(fb(|r| r.cost_usd = Some(-0.1))).await,
        Code::InvalidArgument,
        "cost_usd",
    )
    .await;
    expect_status(
        "negative tokens",
        c.feedback(fb(|r| r.output_tokens = Some(-3))).await,
        Code::InvalidArgument,
        "output_tokens",
    )
    .await;
    expect_status(
        "quality > 1",
        c.feedback(fb(|r| r.quality = Some(1.2))).await,
        Code::InvalidArgument,
        "quality",
    )
    .await;
    expect_status(
        "quality < 0",
        c.feedback(fb(|r| r.quality = Some(-0.2))).await,
        Code::InvalidArgument,
        "quality",
    )
    .await;
    expect_status(
        "unknown outcome",
        c.feedback(fb(|r| r.outcome = 42)).await,
        Code::InvalidArgument,
        "outcome",
    )
    .await;
    expect_status(
        "nothing to report",
        c.feedback(fb(|r| {
            r.outcome = 0;
            r.quality = None;
        }))
        .await,
        Code::InvalidArgument,
        "outcome",
    )
    .await;
    expect_status(
        "quality of an error",
        c.feedback(fb(|r| {
            r.outcome = Outcome::Error as i32;
            r.quality = Some(0.5);
        }))
        .await,
        Code::InvalidArgument,
        "quality",
    )
    .await;
    expect_status(
        "stats of unknown class",
        c.get_arm_stats(GetArmStatsRequest {
            task_class: "poetry".into(),
            model: String::new(),
        })
        .await,
        Code::NotFound,
        "poetry",
    )
    .await;
    expect_status(
        "stats of unknown model",
        c.get_arm_stats(GetArmStatsRequest {
            task_class: String::new(),
            model: "gpt-9".into(),
        })
        .await,
        Code::NotFound,
        "gpt-9",
    )
    .await;

    // None of that reached a posterior: only the one route above changed anything (a pull).
    let after = c
        .get_arm_stats(GetArmStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.arms.len(), after.arms.len());
    for (b, a) in before.arms.iter().zip(&after.arms) {
        assert_eq!(b.quality_posterior, a.quality_posterior);
        assert_eq!(b.latency_posterior, a.latency_posterior);
        assert_eq!(b.success_posterior, a.success_posterior);
        assert_eq!(b.cost_posterior, a.cost_posterior);
    }
    // The server is still serving and the decision still takes its (valid) feedback.
    let ok = c.feedback(fb(|_| {})).await.unwrap().into_inner();
    assert!(ok.accepted && !ok.duplicate);
    assert_eq!(ok.arm.unwrap().successes, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_duplicates_late_quality_and_fallback_feedback() {
    // Seeded: with the OS's seed the first decision is now and then the exploration floor's pick
    // (reason "exploration_floor"), not a Thompson draw.
    let mut config = Config::builtin().unwrap();
    config.policy.seed = Some(7);
    let server = TestServer::start(config).await;
    let mut c = server.client().await;
    let mut req = route_req("code");
    req.request_id = "req-42".into();
    let a = c.route(req.clone()).await.unwrap().into_inner();
    let b = c.route(req).await.unwrap().into_inner();
    assert_eq!(a.decision_id, b.decision_id);
    assert_eq!(a.model, b.model);
    assert!(b.replayed && !a.replayed);
    assert!(a.propensity > 0.0 && a.propensity <= 1.0);
    assert_eq!(a.policy, "thompson");
    assert_eq!(a.reason, "sampled");
    assert!(a.expected.unwrap().cost_usd > 0.0);

    // The chosen model timed out; the first fallback answered.
    let fallback = a.fallbacks[0].model.clone();
    let r = c
        .feedback(FeedbackRequest {
            decision_id: a.decision_id.clone(),
            outcome: Outcome::Timeout as i32,
            latency_ms: Some(30_000.0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.arm.as_ref().unwrap().failures, 1);
    let ok = FeedbackRequest {
        decision_id: a.decision_id.clone(),
        model: fallback.clone(),
        outcome: Outcome::Success as i32,
        latency_ms: Some(1200.0),
        input_tokens: Some(2000),
        output_tokens: Some(800),
        ..Default::default()
    };
    let r1 = c.feedback(ok.clone()).await.unwrap().into_inner();
    let r2 = c.feedback(ok).await.unwrap().into_inner();
    assert!(!r1.duplicate && r2.duplicate);
    let arm = r2.arm.unwrap();
    assert_eq!((arm.model.as_str(), arm.successes), (fallback.as_str(), 1));

    // A grader's score arrives later, alone.
    let q = FeedbackRequest {
        decision_id: a.decision_id.clone(),
        model: fallback.clone(),
        quality: Some(0.9),
        ..Default::default()
    };
    let before = arm.quality_posterior.unwrap();
    let r = c.feedback(q.clone()).await.unwrap().into_inner();
    let after = r.arm.unwrap().quality_posterior.unwrap();
    assert!(!r.duplicate);
    assert!((after.alpha - before.alpha - 0.9).abs() < 1e-9);
    assert!((after.beta - before.beta - 0.1).abs() < 1e-9);
    assert!(c.feedback(q).await.unwrap().into_inner().duplicate);
    // A quality score for the model that timed out is refused.
    let bad = c
        .feedback(FeedbackRequest {
            decision_id: a.decision_id.clone(),
            quality: Some(0.5),
            ..Default::default()
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), Code::FailedPrecondition);
    server.stop().await;
}
