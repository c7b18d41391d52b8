//! Issue 17 (shadow traffic and A/B experiments) over real gRPC and the real binary: shadow
//! decisions at the configured fraction, shadow Feedback credited to its own arm and never to the
//! decision, shadow spend against the same budget and none at the cap, paired comparisons in
//! GetArmStats; and a seeded A/B run where the router beats a static control on cost at equal
//! quality, shown by `switchyard report ab` with intervals, online and offline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::cli;
use common::served::ServedBinary;
use common::{config, spec, ModelSpec, TestServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::proto;
use switchyard::proto::route_client::RouteClient;
use tonic::Code;

const SEED: u64 = 17;

fn three() -> Vec<ModelSpec> {
    vec![spec("a", "p1"), spec("b", "p2"), spec("c", "p3")]
}

async fn route(client: &mut RouteClient<tonic::transport::Channel>) -> proto::RouteResponse {
    client
        .route(proto::RouteRequest {
            task_class: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn arm(client: &mut RouteClient<tonic::transport::Channel>, model: &str) -> proto::ArmStats {
    client
        .get_arm_stats(proto::GetArmStatsRequest {
            task_class: "bench".into(),
            model: model.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .arms
        .remove(0)
}

#[tokio::test]
async fn shadow_decisions_come_at_the_configured_fraction_and_never_shadow_the_choice() {
    let fraction = 0.2;
    let extra = format!("shadow = {{ fraction = {fraction}, models = \"explore\" }}");
    let server = TestServer::start(config(&three(), &extra, "")).await;
    let mut client = server.client().await;
    let n = 1500;
    let mut shadows = 0;
    for _ in 0..n {
        let d = route(&mut client).await;
        if let Some(s) = &d.shadow {
            shadows += 1;
            assert_ne!(
                s.model, d.model,
                "a shadow is never the chosen model: {d:?}"
            );
            assert!(!s.provider.is_empty());
        }
    }
    // Binomial(1500, 0.2): mean 300, sd 15.5; 5 sd either way.
    let (mean, sd) = (
        n as f64 * fraction,
        (n as f64 * fraction * (1.0 - fraction)).sqrt(),
    );
    assert!(
        (shadows as f64 - mean).abs() < 5.0 * sd,
        "{shadows} shadows of {n} at fraction {fraction}"
    );
    server.stop().await;
}

#[tokio::test]
async fn shadow_feedback_is_credited_to_its_arm_and_never_to_the_decision() {
    let extra = "shadow = { fraction = 1.0, models = [\"b\", \"c\"] }";
    let server = TestServer::start(config(&three(), extra, "")).await;
    let mut client = server.client().await;
    let mut rng = SmallRng::seed_from_u64(SEED);
    // (model, shadow, primary (latency, cost, quality), shadow (latency, cost, quality), ok)
    let mut sent = Vec::new();
    for i in 0..40 {
        let d = route(&mut client).await;
        let shadow = d
            .shadow
            .clone()
            .expect("fraction 1: every decision has a shadow");
        let before_decided = arm(&mut client, &d.model).await;
        let before_shadow = arm(&mut client, &shadow.model).await;
        let p: (f64, f64, f64) = (
            rng.random_range(100.0..200.0),
            rng.random_range(0.001..0.002),
            rng.random_range(0.6..0.9),
        );
        let s: (f64, f64, f64) = (
            rng.random_range(300.0..400.0),
            rng.random_range(0.003..0.004),
            rng.random_range(0.5..0.8),
        );
        // Every eighth shadow call fails (more would open its breaker).
        let shadow_ok = i % 8 != 0;
        client
            .feedback(proto::FeedbackRequest {
                decision_id: d.decision_id.clone(),
                outcome: proto::Outcome::Success as i32,
                latency_ms: Some(p.0),
                cost_usd: Some(p.1),
                quality: Some(p.2),
                ..Default::default()
            })
            .await
            .unwrap();
        let r = client
            .feedback(proto::FeedbackRequest {
                decision_id: d.decision_id.clone(),
                outcome: if shadow_ok {
                    proto::Outcome::Success
                } else {
                    proto::Outcome::Error
                } as i32,
                latency_ms: Some(s.0),
                cost_usd: Some(s.1),
                quality: shadow_ok.then_some(s.2),
                shadow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let credited = r.arm.unwrap();
        assert_eq!(credited.model, shadow.model);
        let after_decided = arm(&mut client, &d.model).await;
        let after_shadow = arm(&mut client, &shadow.model).await;
        // The shadow's outcome goes to its arm; the decided arm has its own success only.
        assert_eq!(
            (after_shadow.successes, after_shadow.failures),
            (
                before_shadow.successes + u64::from(shadow_ok),
                before_shadow.failures + u64::from(!shadow_ok)
            )
        );
        assert_eq!(after_decided.failures, before_decided.failures);
        assert_eq!(after_decided.successes, before_decided.successes + 1);
        assert_eq!(
            after_decided.quality_reports,
            before_decided.quality_reports + 1
        );
        // Reported twice, counted once.
        let again = client
            .feedback(proto::FeedbackRequest {
                decision_id: d.decision_id.clone(),
                outcome: proto::Outcome::Success as i32,
                shadow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(again.duplicate);
        sent.push((d.model, shadow.model, p, s, shadow_ok));
    }
    // A wrong model for the shadow is refused, naming the right one.
    let d = route(&mut client).await;
    let s = d.shadow.clone().unwrap();
    let wrong = client
        .feedback(proto::FeedbackRequest {
            decision_id: d.decision_id.clone(),
            model: d.model.clone(),
            outcome: proto::Outcome::Success as i32,
            shadow: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    assert!(wrong.message().contains(&s.model), "{}", wrong.message());

    // Paired comparisons: shadow minus chosen on the same requests, per (model, shadow).
    let paired = client
        .get_arm_stats(proto::GetArmStatsRequest {
            task_class: "bench".into(),
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .paired;
    assert!(!paired.is_empty());
    let mut total = 0;
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    for p in &paired {
        let ours: Vec<_> = sent
            .iter()
            .filter(|x| x.0 == p.model && x.1 == p.shadow_model)
            .collect();
        let cost = p.cost_diff_usd.unwrap();
        assert_eq!(cost.n as usize, ours.len(), "{p:?}");
        let want = mean(ours.iter().map(|x| x.3 .1 - x.2 .1).collect());
        assert!((cost.mean - want).abs() < 1e-12, "{p:?} vs {want}");
        assert!(cost.lo <= cost.mean && cost.mean <= cost.hi);
        // Quality: a failed shadow counts 0; latency: successes only.
        let quality = p.quality_diff.unwrap();
        let want_q = mean(
            ours.iter()
                .map(|x| if x.4 { x.3 .2 } else { 0.0 } - x.2 .2)
                .collect(),
        );
        assert_eq!(quality.n as usize, ours.len());
        assert!((quality.mean - want_q).abs() < 1e-12, "{p:?} vs {want_q}");
        let latency = p.latency_diff_ms.unwrap();
        let ok: Vec<_> = ours.iter().filter(|x| x.4).collect();
        assert_eq!(latency.n as usize, ok.len());
        if !ok.is_empty() {
            let want_l = mean(ok.iter().map(|x| x.3 .0 - x.2 .0).collect());
            assert!((latency.mean - want_l).abs() < 1e-9, "{p:?} vs {want_l}");
        }
        total += ours.len();
    }
    assert_eq!(total, sent.len());
    server.stop().await;
}

#[tokio::test]
async fn a_shadow_needs_a_shadowed_decision_and_reserves_against_the_budget() {
    let extra = "shadow = { fraction = 1.0, models = \"explore\" }\nbudget = \"team\"\n\
                 [budgets.team]\nperiod = \"daily\"\nlimit_usd = 0.05\non_cap = \"reject\"\n\
                 pacing_gain = 0.0\n";
    let server = TestServer::start(config(&three(), extra, "")).await;
    let mut client = server.client().await;
    let d = route(&mut client).await;
    assert!(d.shadow.is_some());
    let budget = |c: &mut RouteClient<_>| {
        let mut c = c.clone();
        async move {
            c.get_budgets(proto::GetBudgetsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .budgets
                .remove(0)
        }
    };
    let reserved_two = budget(&mut client).await.reserved_usd;
    for (shadow, cost) in [(false, 0.011), (true, 0.013)] {
        client
            .feedback(proto::FeedbackRequest {
                decision_id: d.decision_id.clone(),
                outcome: proto::Outcome::Success as i32,
                cost_usd: Some(cost),
                shadow,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let b = budget(&mut client).await;
    assert!((b.spent_usd - 0.024).abs() < 1e-12, "{b:?}");
    assert!(
        b.reserved_usd < reserved_two && b.reserved_usd.abs() < 1e-12,
        "{b:?}"
    );
    // Spend the rest: at the cap no decision gets a shadow (or is made at all).
    let d = route(&mut client).await;
    client
        .feedback(proto::FeedbackRequest {
            decision_id: d.decision_id.clone(),
            outcome: proto::Outcome::Success as i32,
            cost_usd: Some(0.03),
            ..Default::default()
        })
        .await
        .unwrap();
    match client
        .route(proto::RouteRequest {
            task_class: "bench".into(),
            ..Default::default()
        })
        .await
    {
        Ok(r) => assert!(r.into_inner().shadow.is_none()),
        Err(s) => assert_eq!(s.code(), Code::ResourceExhausted),
    }
    server.stop().await;
}

/// Two models of equal true quality: "big" (20x the price, better priors) is the static best,
/// the router learns that "small" answers as well for a twentieth of the cost.
fn ab_config_toml() -> String {
    format!(
        "[policy]\nkind = \"thompson\"\nseed = {SEED}\n\
         [models.big]\nprovider = \"p1\"\ninput_usd_per_mtok = 10.0\noutput_usd_per_mtok = 30.0\n\
         latency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.95\n\
         [models.small]\nprovider = \"p2\"\ninput_usd_per_mtok = 0.5\noutput_usd_per_mtok = 1.5\n\
         latency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.5\n\
         [task_classes.qa]\nmodels = [\"big\", \"small\"]\ntypical_input_tokens = 500\n\
         typical_output_tokens = 500\nmax_latency_ms = 2000\ncost_ref_usd = 0.1\n\
         weights = {{ quality = 1.0, cost = 1.0, latency = 0.0 }}\n\
         experiment = {{ control = \"static_best\", fraction = 0.3 }}\n"
    )
}

fn report(args: &[&str]) -> String {
    cli::run_ok(["report", "ab"].iter().chain(args))
}

/// The `mean [lo, hi]` of the line after `router - control` that starts with `label`.
fn difference(text: &str, label: &str) -> (f64, f64, f64) {
    let tail = text.split("router - control").nth(1).unwrap();
    let line = tail
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} in {text}"));
    let nums: Vec<f64> = line
        .trim_start()
        .trim_start_matches(label)
        .split(['[', ']', ',', ' '])
        .filter_map(|t| t.parse().ok())
        .collect();
    (nums[0], nums[1], nums[2])
}

#[test]
fn the_router_beats_a_static_control_on_cost_at_equal_quality_and_report_ab_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(&cfg, ab_config_toml()).unwrap();
    let mut served = ServedBinary::builder().config(&cfg).data_dir(&data).start();
    let addr = served.addr.clone();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (control_n, router_n) = runtime.block_on(async {
        let mut client = RouteClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let mut rng = SmallRng::seed_from_u64(SEED);
        let (mut control_n, mut router_n) = (0, 0);
        for i in 0..800 {
            let d = client
                .route(proto::RouteRequest {
                    task_class: "qa".into(),
                    request_id: format!("req-{i}"),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            match d.experiment_group.as_str() {
                "control" => {
                    control_n += 1;
                    assert_eq!(d.policy, "static_best");
                    assert_eq!(
                        d.model, "big",
                        "the static best is the better-looking prior"
                    );
                }
                "router" => router_n += 1,
                other => panic!("experiment_group {other:?}"),
            }
            assert!(d.propensity > 0.0 && d.propensity <= 1.0);
            // Truth: equal quality 0.85 +- 0.1, cost at the list price +- 10%.
            let list = if d.model == "big" { 0.02 } else { 0.001 };
            client
                .feedback(proto::FeedbackRequest {
                    decision_id: d.decision_id,
                    outcome: proto::Outcome::Success as i32,
                    latency_ms: Some(rng.random_range(400.0..600.0)),
                    cost_usd: Some(list * rng.random_range(0.9..1.1)),
                    quality: Some(rng.random_range(0.75..0.95)),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        (control_n, router_n)
    });
    // The hash of req-0..799 puts about 30% in control: Binomial(800, 0.3), sd 13.
    assert!((control_n as f64 - 240.0).abs() < 5.0 * 13.0, "{control_n}");
    assert_eq!(control_n + router_n, 800);

    let online = report(&["--addr", &addr]);
    let (cost, cost_lo, cost_hi) = difference(&online, "cost/request USD");
    assert!(
        cost < 0.0 && cost_hi < 0.0,
        "router cheaper, interval below 0:\n{online}"
    );
    assert!(cost_lo <= cost);
    let (q, q_lo, q_hi) = difference(&online, "quality");
    assert!(
        q_lo < 0.02 && q_hi > -0.02 && q.abs() < 0.03,
        "equal quality:\n{online}"
    );
    assert!(online.contains("control: "), "{online}");
    assert!(
        online.contains(&format!("router: {router_n} requests")),
        "{online}"
    );

    served.kill();
    // Offline, from the data dir the service left: the same figures.
    let offline = report(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(offline, online);
    println!("{online}");
}
