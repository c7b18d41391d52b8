//! Budgets end to end over gRPC: 64 concurrent clients route and report against a budget of a few
//! cents while a monitor polls GetBudgets; the ledger must never be overrun, the configured
//! behaviour at the cap must hold, and a webhook on 127.0.0.1 must get each threshold exactly once.

// Helpers outside #[test] functions (webhook, hammer) unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat};
use common::webhook::{webhook, Received};
use common::{config, spec, ModelSpec, TestServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::proto;
use tonic::Code;

const CLIENTS: u64 = 64;
const ROUNDS: u64 = 15;
const LIMIT_USD: f64 = 0.5;

fn models() -> Vec<ModelSpec> {
    // At 1000 input and at most 500 output tokens: best <= $0.025, cheap <= $0.0003 a call.
    vec![
        ModelSpec {
            input_usd_per_mtok: 10.0,
            output_usd_per_mtok: 30.0,
            quality: 0.9,
            ..spec("best", "p1")
        },
        ModelSpec {
            input_usd_per_mtok: 0.1,
            output_usd_per_mtok: 0.4,
            quality: 0.5,
            ..spec("cheap", "p2")
        },
    ]
}

/// Starts the server with budget "team" (pacing off, so the cap is reached) and a webhook.
async fn start(on_cap: &str, thresholds: &str, webhook_url: &str) -> TestServer {
    let class_extra = format!(
        "weights = {{ quality = 1.0, cost = 0.05, latency = 0.0 }}\nbudget = \"team\"\n\
         [budgets.team]\nperiod = \"daily\"\nlimit_usd = {LIMIT_USD}\non_cap = \"{on_cap}\"\n\
         alert_thresholds = {thresholds}\npacing_gain = 0.0\n\
         [alerts]\nwebhook_url = \"{webhook_url}\"\nmax_retries = 3\n"
    );
    TestServer::start(config(&models(), &class_extra, "kind = \"thompson\"")).await
}

#[derive(Debug, Default)]
struct Tally {
    routed: u64,
    capped: u64,
    rejected: u64,
    cheap_when_capped: u64,
}

/// Runs CLIENTS tasks of ROUNDS Route+Feedback each, with a monitor polling GetBudgets throughout.
async fn hammer(server: &TestServer, seed: u64) -> Tally {
    let channel = server.channel().await;
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let mut client = proto::route_client::RouteClient::new(channel.clone());
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut polls = 0u64;
            loop {
                let done = stop.load(Ordering::SeqCst);
                let b = client
                    .get_budgets(proto::GetBudgetsRequest {
                        budget_key: "team".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .budgets
                    .remove(0);
                assert!(
                    b.spent_usd + b.reserved_usd <= b.limit_usd + 1e-9,
                    "seed {seed}: poll {polls}: spent {} + reserved {} > limit {}",
                    b.spent_usd,
                    b.reserved_usd,
                    b.limit_usd
                );
                polls += 1;
                if done {
                    return polls;
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = proto::route_client::RouteClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed ^ c);
            let mut tally = Tally::default();
            for _ in 0..ROUNDS {
                let r = client
                    .route(proto::RouteRequest {
                        task_class: "bench".into(),
                        input_tokens: 1000,
                        max_output_tokens: 500,
                        ..Default::default()
                    })
                    .await;
                let d = match r {
                    Ok(d) => d.into_inner(),
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        let m = s.message();
                        assert!(
                            m.contains("spent $") && m.contains("limit") && m.contains("resets at"),
                            "seed {seed}: {m}"
                        );
                        tally.rejected += 1;
                        continue;
                    }
                    Err(s) => panic!("seed {seed}: {s:?}"),
                };
                tally.routed += 1;
                assert_eq!(d.budget_key, "team");
                if d.reason == "budget_exhausted" {
                    tally.capped += 1;
                    tally.cheap_when_capped += u64::from(d.model == "cheap");
                }
                // Realistic outcomes: the answer uses 100..=500 of the 500 allowed output tokens;
                // the server prices it from its table.
                let quality = if d.model == "best" { 0.9 } else { 0.5 };
                client
                    .feedback(proto::FeedbackRequest {
                        decision_id: d.decision_id,
                        outcome: proto::Outcome::Success as i32,
                        latency_ms: Some(400.0),
                        input_tokens: Some(1000),
                        output_tokens: Some(rng.random_range(100..=500)),
                        quality: Some(quality),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await.unwrap();
        total.routed += t.routed;
        total.capped += t.capped;
        total.rejected += t.rejected;
        total.cheap_when_capped += t.cheap_when_capped;
    }
    stop.store(true, Ordering::SeqCst);
    let polls = monitor.await.unwrap();
    assert!(
        polls > 1,
        "seed {seed}: the monitor must poll during the run"
    );
    total
}

async fn budget(server: &TestServer) -> proto::Budget {
    server
        .client()
        .await
        .get_budgets(proto::GetBudgetsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .budgets
        .remove(0)
}

/// Waits until the webhook holds `n` alerts; returns the count per threshold (a duplicate that
/// arrived by then shows as a count above 1; the server's own record of crossed thresholds is
/// checked through GetBudgets).
async fn alerts_by_threshold(received: &Received, n: usize) -> BTreeMap<String, u32> {
    for _ in 0..500 {
        if received.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        received.lock().unwrap().len() >= n,
        "fewer than {n} alerts within 10 s"
    );
    let mut counts = BTreeMap::new();
    for a in received.lock().unwrap().iter() {
        assert_eq!(a["budget_key"], "team", "{a}");
        assert_eq!(a["limit_usd"], LIMIT_USD, "{a}");
        let t = a["threshold"].as_f64().unwrap();
        assert!(a["spent_usd"].as_f64().unwrap() >= t * LIMIT_USD, "{a}");
        for k in ["period_start_unix_ms", "period_end_unix_ms", "at_unix_ms"] {
            assert!(a[k].as_u64().unwrap() > 0, "{k}: {a}");
        }
        *counts.entry(t.to_string()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_never_overrun_and_capped_requests_get_the_cheapest_model() {
    let seed = 0xB0D6E7;
    let (url, received) = webhook().await;
    let server = start("cheapest", "[0.5, 0.8, 0.99]", &url).await;
    let tally = hammer(&server, seed).await;

    let b = budget(&server).await;
    assert!(b.spent_usd <= b.limit_usd, "seed {seed}: {b:?}");
    assert_eq!(
        b.reserved_usd, 0.0,
        "seed {seed}: every decision got feedback"
    );
    assert!(
        b.spent_usd >= 0.99 * LIMIT_USD,
        "seed {seed}: {b:?} {tally:?}"
    );
    assert_eq!(b.alert_thresholds_crossed, vec![0.5, 0.8, 0.99]);
    assert!(tally.capped > 0, "seed {seed}: {tally:?}");
    assert_eq!(
        tally.cheap_when_capped, tally.capped,
        "seed {seed}: {tally:?}"
    );
    assert_eq!(tally.routed + tally.rejected, CLIENTS * ROUNDS);

    let counts = alerts_by_threshold(&received, 3).await;
    let expected: BTreeMap<String, u32> = [("0.5", 1), ("0.8", 1), ("0.99", 1)]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    assert_eq!(counts, expected, "seed {seed}: each threshold exactly once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_never_overrun_and_reject_mode_says_spent_limit_and_reset() {
    let seed = 0x5E7EC7;
    let (url, received) = webhook().await;
    let server = start("reject", "[0.5, 0.8]", &url).await;
    let tally = hammer(&server, seed).await;

    let b = budget(&server).await;
    assert!(b.spent_usd <= b.limit_usd, "seed {seed}: {b:?}");
    assert!(tally.rejected > 0, "seed {seed}: {tally:?}");
    assert_eq!(
        tally.capped, 0,
        "seed {seed}: reject mode never substitutes: {tally:?}"
    );

    // A refusal names spent, limit and the reset time (the period end, in RFC 3339 UTC). Spend
    // what headroom the last settlements left, then ask for the best model once more.
    let mut client = server.client().await;
    let err = loop {
        let r = client
            .route(proto::RouteRequest {
                task_class: "bench".into(),
                candidates: vec!["best".into()],
                input_tokens: 1000,
                max_output_tokens: 500,
                ..Default::default()
            })
            .await;
        match r {
            Ok(d) => {
                client
                    .feedback(proto::FeedbackRequest {
                        decision_id: d.into_inner().decision_id,
                        outcome: proto::Outcome::Success as i32,
                        input_tokens: Some(1000),
                        output_tokens: Some(500),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let b = budget(&server).await;
    assert!(b.spent_usd <= b.limit_usd, "seed {seed}: {b:?}");
    let reset = DateTime::from_timestamp_millis(b.period_end_unix_ms)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let m = err.message();
    assert!(
        m.contains(&format!("spent ${:.4}", b.spent_usd))
            && m.contains(&format!("${LIMIT_USD:.4} limit"))
            && m.contains(&format!("resets at {reset}")),
        "seed {seed}: {m}"
    );

    let counts = alerts_by_threshold(&received, 2).await;
    let expected: BTreeMap<String, u32> = [("0.5", 1), ("0.8", 1)]
        .map(|(k, v)| (k.to_string(), v))
        .into();
    assert_eq!(counts, expected, "seed {seed}: each threshold exactly once");
    server.stop().await;
}

#[tokio::test]
async fn get_budgets_reports_one_or_all_and_unknown_keys_are_not_found() {
    let (url, _received) = webhook().await;
    let server = start("cheapest", "[0.5]", &url).await;
    let mut client = server.client().await;
    let all = client
        .get_budgets(proto::GetBudgetsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .budgets;
    assert_eq!(all.len(), 1);
    let b = &all[0];
    assert_eq!(
        (
            b.budget_key.as_str(),
            b.period.as_str(),
            b.on_cap.as_str(),
            b.time_zone.as_str()
        ),
        ("team", "daily", "cheapest", "UTC")
    );
    assert_eq!(b.limit_usd, LIMIT_USD);
    assert_eq!(b.pacing_multiplier, 1.0);
    assert_eq!(b.state, proto::BudgetState::BudgetOk as i32);
    assert_eq!(b.period_end_unix_ms - b.period_start_unix_ms, 86_400_000);
    let err = client
        .get_budgets(proto::GetBudgetsRequest {
            budget_key: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("team"), "{}", err.message());
    let err = client
        .route(proto::RouteRequest {
            task_class: "bench".into(),
            budget_key: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("budget_key") && err.message().contains("team"));
    server.stop().await;
}
