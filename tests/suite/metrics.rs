//! The Prometheus endpoint end to end: seeded traffic over real gRPC, then a scrape of /metrics over
//! HTTP; every documented series must be there with the counts the traffic implies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;

use common::{config, spec, TestServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::proto::{FeedbackRequest, HealthState, Outcome, ReportHealthRequest, RouteRequest};
use tonic::Code;

/// One sample line of the exposition: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

/// Sum of the samples of `name` whose labels include all of `want`.
fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn has(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> bool {
    samples.iter().any(|s| {
        s.name == name
            && want
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

fn feedback(id: &str, outcome: Outcome, latency_ms: f64, quality: Option<f64>) -> FeedbackRequest {
    FeedbackRequest {
        decision_id: id.to_string(),
        outcome: outcome as i32,
        latency_ms: Some(latency_ms),
        cost_usd: Some(0.01),
        quality,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_after_traffic_finds_every_documented_series_with_its_count() {
    let class_extra = "budget = \"team\"\n[budgets.team]\nperiod = \"daily\"\nlimit_usd = 100.0\n";
    let cfg = config(
        &[spec("alpha", "p1"), spec("beta", "p2"), spec("gamma", "p2")],
        class_extra,
        "kind = \"thompson\"",
    );
    let (server, url) = TestServer::start_with_metrics(cfg).await;
    let mut c = server.client().await;
    let mut rng = SmallRng::seed_from_u64(11);

    // 40 decisions; count what the responses said.
    let mut decided: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut decisions = Vec::new();
    for _ in 0..40 {
        let d = c
            .route(RouteRequest {
                task_class: "bench".into(),
                input_tokens: rng.random_range(100..2000),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        *decided
            .entry((d.model.clone(), d.reason.clone()))
            .or_default() += 1;
        decisions.push(d);
    }
    // 20 successes with quality, 10 without, 5 errors; 5 decisions get no feedback.
    let mut outcomes: BTreeMap<(String, &str), u64> = BTreeMap::new();
    let mut latency_sum: BTreeMap<String, f64> = BTreeMap::new();
    for (i, d) in decisions.iter().take(35).enumerate() {
        let latency = rng.random_range(200.0..3000.0);
        let (outcome, quality, name) = match i {
            0..20 => (Outcome::Success, Some(0.7), "success"),
            20..30 => (Outcome::Success, None, "success"),
            _ => (Outcome::Error, None, "error"),
        };
        c.feedback(feedback(&d.decision_id, outcome, latency, quality))
            .await
            .unwrap();
        *outcomes.entry((d.model.clone(), name)).or_default() += 1;
        *latency_sum.entry(d.model.clone()).or_default() += latency / 1000.0;
    }
    // 3 duplicates of earlier reports, 4 late quality scores.
    for d in &decisions[..3] {
        let r = c
            .feedback(feedback(&d.decision_id, Outcome::Success, 500.0, Some(0.7)))
            .await
            .unwrap()
            .into_inner();
        assert!(r.duplicate);
    }
    for d in &decisions[20..24] {
        c.feedback(FeedbackRequest {
            decision_id: d.decision_id.clone(),
            quality: Some(0.9),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // Two refusals.
    let e = c
        .route(RouteRequest {
            task_class: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .feedback(feedback(
            &decisions[36].decision_id,
            Outcome::Success,
            -1.0,
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Provider p1 down: alpha's breaker opens.
    c.report_health(ReportHealthRequest {
        provider: "p1".into(),
        state: HealthState::Down as i32,
        ttl_seconds: 600,
        reason: "incident".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = parse(&text);

    // Decisions by class, model and reason, exactly as the responses said.
    for ((model, reason), n) in &decided {
        let got = sum(
            &s,
            "switchyard_decisions_total",
            &[
                ("task_class", "bench"),
                ("model", model),
                ("reason", reason),
            ],
        );
        assert_eq!(got, *n as f64, "{model} {reason}\n{text}");
    }
    assert_eq!(sum(&s, "switchyard_decisions_total", &[]), 40.0);

    // RPC counts and handling-time histograms, by method and code.
    let handled = |method: &str, code: &str| {
        sum(
            &s,
            "grpc_server_handled_total",
            &[
                ("grpc_service", "switchyard.v1.Route"),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    };
    assert_eq!(handled("Route", "OK"), 40.0);
    assert_eq!(handled("Route", "NOT_FOUND"), 1.0);
    assert_eq!(handled("Feedback", "OK"), 35.0 + 3.0 + 4.0);
    assert_eq!(handled("Feedback", "INVALID_ARGUMENT"), 1.0);
    assert_eq!(handled("ReportHealth", "OK"), 1.0);
    let handling = |method: &str| {
        sum(
            &s,
            "grpc_server_handling_seconds_count",
            &[("grpc_method", method)],
        )
    };
    assert_eq!(handling("Route"), 41.0);
    assert_eq!(handling("Feedback"), 43.0);
    assert!(has(
        &s,
        "grpc_server_handling_seconds_bucket",
        &[("grpc_method", "Route"), ("le", "+Inf")]
    ));

    // Feedback by outcome; model latency and cost as reported.
    for ((model, outcome), n) in &outcomes {
        let got = sum(
            &s,
            "switchyard_feedback_total",
            &[
                ("task_class", "bench"),
                ("model", model),
                ("outcome", outcome),
            ],
        );
        assert_eq!(got, *n as f64, "{model} {outcome}");
    }
    assert_eq!(
        sum(&s, "switchyard_feedback_total", &[("outcome", "duplicate")]),
        3.0
    );
    assert_eq!(
        sum(
            &s,
            "switchyard_feedback_total",
            &[("outcome", "quality_only")]
        ),
        4.0
    );
    for (model, secs) in &latency_sum {
        let arm = [("task_class", "bench"), ("model", model.as_str())];
        let n: u64 = outcomes
            .iter()
            .filter(|((m, _), _)| m == model)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            sum(&s, "switchyard_model_latency_seconds_count", &arm),
            n as f64
        );
        let got = sum(&s, "switchyard_model_latency_seconds_sum", &arm);
        assert!((got - secs).abs() < 1e-9, "{model}: {got} vs {secs}");
        let cost = sum(&s, "switchyard_model_cost_usd_total", &arm);
        assert!((cost - 0.01 * n as f64).abs() < 1e-9, "{model}: {cost}");
    }
    assert_eq!(sum(&s, "switchyard_model_quality_count", &[]), 24.0);
    // 20 scores of 0.7 with the outcomes, 4 late scores of 0.9.
    let quality_sum = sum(&s, "switchyard_model_quality_sum", &[]);
    assert!((quality_sum - 17.6).abs() < 1e-9, "{quality_sum}");

    // Breakers: alpha open (one transition), the others closed.
    let breaker = |model: &str, state: &str| {
        sum(
            &s,
            "switchyard_breaker_state",
            &[("model", model), ("state", state)],
        )
    };
    assert_eq!(breaker("alpha", "open"), 1.0);
    assert_eq!(breaker("alpha", "closed"), 0.0);
    assert_eq!(breaker("beta", "closed"), 1.0);
    assert_eq!(breaker("gamma", "closed"), 1.0);
    assert_eq!(
        sum(
            &s,
            "switchyard_breaker_transitions_total",
            &[("model", "alpha"), ("to", "open")]
        ),
        1.0
    );

    // Budget: 35 settled outcomes at $0.01; 5 live reservations; the limit; a pacing multiplier.
    let team = [("budget_key", "team")];
    let spent = sum(&s, "switchyard_budget_spent_usd", &team);
    assert!((spent - 0.35).abs() < 1e-9, "spent {spent}");
    assert!(sum(&s, "switchyard_budget_reserved_usd", &team) > 0.0);
    assert_eq!(sum(&s, "switchyard_budget_limit_usd", &team), 100.0);
    assert!(has(&s, "switchyard_budget_pacing_multiplier", &team));
    // $0.35 of $100: no threshold crossed, nothing past the limit, no late settlement (these
    // labelled families show a sample only once their event happened).
    for name in [
        "switchyard_budget_alerts",
        "switchyard_budget_overrun_usd",
        "switchyard_budget_overruns",
        "switchyard_late_feedback",
    ] {
        assert!(!has(&s, &format!("{name}_total"), &[]), "{name}\n{text}");
    }

    // Every engine call is timed twice (waiting for the lock, holding it): at least the 40
    // decisions and 35 outcomes.
    let lock_waits = sum(&s, "switchyard_engine_lock_wait_seconds_count", &[]);
    let lock_holds = sum(&s, "switchyard_engine_lock_hold_seconds_count", &[]);
    assert_eq!(lock_waits, lock_holds);
    assert!(lock_holds >= 75.0, "{lock_holds}");
    assert!(has(
        &s,
        "switchyard_engine_lock_hold_seconds_bucket",
        &[("le", "+Inf")]
    ));
    // No data dir: no writer, no write errors.
    assert!(
        has(&s, "switchyard_store_write_errors_total", &[]),
        "{text}"
    );
    assert_eq!(sum(&s, "switchyard_store_write_errors_total", &[]), 0.0);
    assert_eq!(
        sum(&s, "switchyard_store_skipped_arm_records_total", &[]),
        0.0
    );
    for name in [
        "switchyard_store_cycle_seconds_count",
        "switchyard_store_flush_seconds_count",
        "switchyard_store_take_seconds_count",
        "switchyard_store_backpressure_waits_total",
        "switchyard_store_backlog_events",
    ] {
        assert!(has(&s, name, &[]), "{name}\n{text}");
        assert_eq!(sum(&s, name, &[]), 0.0, "{name}");
    }

    // Pending decisions (feedback does not end a decision: late quality may follow) and memory.
    assert_eq!(sum(&s, "switchyard_pending_decisions", &[]), 40.0);
    assert!(sum(&s, "process_resident_memory_bytes", &[]) > 1e6);

    // Only /metrics is served.
    let other = reqwest::get(url.replace("/metrics", "/other"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    server.stop().await;
}

/// The budget series that stay absent in quiet traffic, driven to known values: a decision evicted
/// by `limits.max_pending = 1` still settles late (its tombstone charges the ledger), crossing the
/// 50% alert; a second settlement pushes spend past the limit (an overrun of exactly the excess)
/// and crosses the 80% and 100% alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_settlements_alerts_and_overruns_are_counted() {
    let class_extra = "budget = \"team\"\n[budgets.team]\nperiod = \"daily\"\nlimit_usd = 1.0\n\
                       [limits]\nmax_pending = 1\n";
    let cfg = config(&[spec("alpha", "p1")], class_extra, "kind = \"thompson\"");
    let (server, url) = TestServer::start_with_metrics(cfg).await;
    let mut c = server.client().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let d = c
            .route(RouteRequest {
                task_class: "bench".into(),
                input_tokens: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(d.decision_id);
    }
    let settle = |id: &str| FeedbackRequest {
        decision_id: id.to_string(),
        outcome: Outcome::Success as i32,
        latency_ms: Some(300.0),
        cost_usd: Some(0.6),
        ..Default::default()
    };
    // The first decision was evicted by the second: charged late, not NOT_FOUND.
    let r = c.feedback(settle(&ids[0])).await.unwrap().into_inner();
    assert!(r.late, "{r:?}");
    let r = c.feedback(settle(&ids[1])).await.unwrap().into_inner();
    assert!(!r.late, "{r:?}");

    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let s = parse(&text);
    let team = [("budget_key", "team")];
    let spent = sum(&s, "switchyard_budget_spent_usd", &team);
    assert!((spent - 1.2).abs() < 1e-9, "spent {spent}\n{text}");
    assert_eq!(
        sum(&s, "switchyard_late_feedback_total", &team),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(&s, "switchyard_budget_overruns_total", &team),
        1.0,
        "{text}"
    );
    let overrun = sum(&s, "switchyard_budget_overrun_usd_total", &team);
    assert!((overrun - 0.2).abs() < 1e-9, "overrun {overrun}\n{text}");
    for t in ["0.5", "0.8", "1"] {
        let alerts = sum(
            &s,
            "switchyard_budget_alerts_total",
            &[("budget_key", "team"), ("threshold", t)],
        );
        assert_eq!(alerts, 1.0, "threshold {t}\n{text}");
    }
    assert_eq!(sum(&s, "switchyard_budget_alerts_total", &[]), 3.0);
    server.stop().await;
}

async fn scrape(url: &str) -> Vec<Sample> {
    parse(&reqwest::get(url).await.unwrap().text().await.unwrap())
}

/// With a data dir (`sync`, the default) the writer's cycles and flushes are timed. Each Feedback
/// here is sent after the one before was acknowledged, and an acknowledged `sync` Feedback waited
/// for a flushed cycle that covered it, so five of them add at least five flushes; a flush is part
/// of a cycle, so there are never more flushes than cycles; each cycle's taking of the engine's
/// changes is timed too, within the cycle. No Route waited for the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_cycles_and_flushes_are_timed_with_a_data_dir() {
    let served = common::served::ServedBinary::builder()
        .args(["--metrics-listen", "127.0.0.1:0"])
        .start();
    let url = served.metrics.clone().unwrap();
    let mut c = switchyard::proto::route_client::RouteClient::new(served.channel().await);
    let flushes = |s: &[Sample]| sum(s, "switchyard_store_flush_seconds_count", &[]);
    let before = flushes(&scrape(&url).await);
    for _ in 0..5 {
        let d = c
            .route(RouteRequest {
                task_class: "qa".into(),
                input_tokens: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        c.feedback(feedback(&d.decision_id, Outcome::Success, 800.0, Some(0.8)))
            .await
            .unwrap();
    }
    let s = scrape(&url).await;
    let after = flushes(&s);
    assert!(after >= before + 5.0, "flushes {before} -> {after}");
    let cycles = sum(&s, "switchyard_store_cycle_seconds_count", &[]);
    assert!(cycles >= after, "{cycles} cycles, {after} flushes");
    assert!(sum(&s, "switchyard_store_flush_seconds_sum", &[]) > 0.0);
    assert!(
        sum(&s, "switchyard_store_cycle_seconds_sum", &[])
            >= sum(&s, "switchyard_store_flush_seconds_sum", &[])
    );
    // Every successful cycle took the engine's changes first, within the cycle's own time. The
    // writer records a cycle, then its take, so a scrape between the two sees one take fewer.
    let takes = sum(&s, "switchyard_store_take_seconds_count", &[]);
    assert!(
        takes == cycles || takes + 1.0 == cycles,
        "{takes} takes, {cycles} cycles"
    );
    let take = sum(&s, "switchyard_store_take_seconds_sum", &[]);
    assert!(
        take > 0.0 && take <= sum(&s, "switchyard_store_cycle_seconds_sum", &[]),
        "take {take}"
    );
    assert!(has(
        &s,
        "switchyard_store_cycle_seconds_bucket",
        &[("le", "+Inf")]
    ));
    assert!(has(&s, "switchyard_store_backlog_events", &[]));
    assert_eq!(
        sum(&s, "switchyard_store_backpressure_waits_total", &[]),
        0.0
    );
    assert_eq!(sum(&s, "switchyard_store_write_errors_total", &[]), 0.0);
}
