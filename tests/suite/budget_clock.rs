//! Budgets over the real binary with its test clock (the `test-clock` build of the crate's own
//! tests, src/time.rs): 64 concurrent clients with honest costs (every Route sends
//! `max_output_tokens`, every Feedback reports at most that many) against a small limit, checked
//! with GetBudgets after every settlement, across a period rollover moved by the clock, a SIGKILL
//! and restart on the same data dir, and a late Feedback after the pending ttl expired.

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::served::ServedBinary;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::proto;
use switchyard::proto::route_client::RouteClient;
use switchyard::time::TEST_CLOCK_ENV;
use tonic::transport::Channel;
use tonic::Code;

const CLIENTS: u64 = 64;
const LIMIT_USD: f64 = 0.5;
const DAY_MS: i64 = 86_400_000;
const PENDING_TTL_SECS: i64 = 120;
const INPUT_TOKENS: i64 = 1000;
const MAX_OUTPUT_TOKENS: i64 = 500;

/// (model, input $/Mtok, output $/Mtok): at 1000 input and at most 500 output tokens, best costs
/// at most $0.025 a call and cheap at most $0.0003.
const MODELS: [(&str, f64, f64); 2] = [("best", 10.0, 30.0), ("cheap", 0.1, 0.4)];

fn write_config(dir: &Path) -> PathBuf {
    let mut text = format!(
        "[policy]\nkind = \"thompson\"\nseed = 7\n[storage]\ndurability = \"sync\"\n\
         [limits]\npending_ttl_secs = {PENDING_TTL_SECS}.0\n"
    );
    for (id, input, output) in MODELS {
        text.push_str(&format!(
            "[models.{id}]\nprovider = \"p-{id}\"\ninput_usd_per_mtok = {input}\n\
             output_usd_per_mtok = {output}\nlatency_ms = 500.0\nlatency_p95_ms = 1000.0\n\
             quality = 0.5\n"
        ));
    }
    text.push_str(&format!(
        "[task_classes.bench]\nmodels = [\"best\", \"cheap\"]\ntypical_input_tokens = 500\n\
         typical_output_tokens = 500\nweights = {{ quality = 1.0, cost = 0.05, latency = 0.0 }}\n\
         budget = \"team\"\n[budgets.team]\nperiod = \"daily\"\nlimit_usd = {LIMIT_USD}\n\
         on_cap = \"cheapest\"\npacing_gain = 0.0\n"
    ));
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What the server charges for a call of `model` with `output` tokens (its price table).
fn cost(model: &str, output: i64) -> f64 {
    let (_, input, out) = MODELS.iter().find(|m| m.0 == model).unwrap();
    (INPUT_TOKENS as f64 * input + output as f64 * out) / 1e6
}

/// The service's clock: an offset file the `test-clock` binary reads at every "now".
struct Clock(PathBuf);

impl Clock {
    /// Sets the service's now to `target_ms` (Unix ms), writing the file atomically.
    fn set(&self, target_ms: i64) {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, (target_ms - real).to_string()).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }
}

fn serve(cfg: &Path, data: &Path, clock: &Clock) -> ServedBinary {
    ServedBinary::builder()
        .config(cfg)
        .data_dir(data)
        .env(TEST_CLOCK_ENV, &clock.0)
        .start()
}

async fn budget(client: &mut RouteClient<Channel>) -> proto::Budget {
    client
        .get_budgets(proto::GetBudgetsRequest {
            budget_key: "team".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .budgets
        .remove(0)
}

/// The invariant: neither the current period nor the one before it is over its limit, and the
/// current one's spend plus live reservations is not either.
fn assert_within(b: &proto::Budget, when: &str) {
    assert!(
        b.spent_usd <= b.limit_usd + 1e-9
            && b.spent_usd + b.reserved_usd <= b.limit_usd + 1e-9
            && b.previous_period_spent_usd <= b.limit_usd + 1e-9,
        "{when}: spent {} + reserved {} (previous period {}) against limit {}",
        b.spent_usd,
        b.reserved_usd,
        b.previous_period_spent_usd,
        b.limit_usd
    );
}

/// A routed decision not yet reported: its id and model.
#[derive(Debug, Clone)]
struct Held {
    id: String,
    model: String,
}

async fn route(client: &mut RouteClient<Channel>) -> Option<Held> {
    route_among(client, &[]).await
}

/// Routes among `candidates` (empty: the class's models); `None` when the budget refuses.
async fn route_among(client: &mut RouteClient<Channel>, candidates: &[&str]) -> Option<Held> {
    let r = client
        .route(proto::RouteRequest {
            task_class: "bench".into(),
            input_tokens: INPUT_TOKENS,
            max_output_tokens: MAX_OUTPUT_TOKENS,
            candidates: candidates.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        })
        .await;
    match r {
        Ok(d) => {
            let d = d.into_inner();
            assert_eq!(d.budget_key, "team");
            Some(Held {
                id: d.decision_id,
                model: d.model,
            })
        }
        Err(s) if s.code() == Code::ResourceExhausted => None,
        Err(s) => panic!("{s:?}"),
    }
}

/// Reports `held` with `output` tokens (honest: at most the reservation's `max_output_tokens`);
/// then checks the budget. Returns the Feedback's answer and the cost the server charged.
async fn settle(
    client: &mut RouteClient<Channel>,
    held: &Held,
    output: i64,
    when: &str,
) -> (proto::FeedbackResponse, f64) {
    let r = client
        .feedback(proto::FeedbackRequest {
            decision_id: held.id.clone(),
            outcome: proto::Outcome::Success as i32,
            latency_ms: Some(400.0),
            input_tokens: Some(INPUT_TOKENS),
            output_tokens: Some(output),
            quality: Some(if held.model == "best" { 0.9 } else { 0.5 }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("{when}: feedback of {held:?}: {s:?}"))
        .into_inner();
    assert_within(&budget(client).await, when);
    (r, cost(&held.model, output))
}

/// CLIENTS tasks of `rounds` Route + Feedback each, checking the budget after every settlement;
/// with `hold`, each client first routes a cheap call it keeps unreported (a reservation live
/// while the others reach the cap; every client holds its reservation before any spends).
/// Returns the held decisions and the settled ones.
async fn hammer(
    channel: &Channel,
    seed: u64,
    rounds: u64,
    hold: bool,
    when: &str,
) -> (Vec<Held>, Vec<Held>) {
    let mut tasks = Vec::new();
    let all_held = Arc::new(tokio::sync::Barrier::new(CLIENTS as usize));
    for c in 0..CLIENTS {
        let mut client = RouteClient::new(channel.clone());
        let when = format!("{when}, client {c}");
        let all_held = all_held.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed ^ c);
            let mut settled = Vec::new();
            let held = if hold {
                route_among(&mut client, &["cheap"]).await
            } else {
                None
            };
            all_held.wait().await;
            for _ in 0..rounds {
                if let Some(h) = route(&mut client).await {
                    let output = rng.random_range(100..=MAX_OUTPUT_TOKENS);
                    settle(&mut client, &h, output, &when).await;
                    settled.push(h);
                }
            }
            (held, settled)
        }));
    }
    let (mut held, mut settled) = (Vec::new(), Vec::new());
    for t in tasks {
        let (h, s) = t.await.unwrap();
        held.extend(h);
        settled.extend(s);
    }
    (held, settled)
}

/// Settles every held decision concurrently (one task each), with `output` tokens; returns the
/// total the server charged.
async fn settle_all(channel: &Channel, held: Vec<Held>, output: i64, when: &str) -> f64 {
    let mut tasks = Vec::new();
    for h in held {
        let mut client = RouteClient::new(channel.clone());
        let when = when.to_string();
        tasks.push(tokio::spawn(async move {
            let (r, charged) = settle(&mut client, &h, output, &when).await;
            assert!(r.accepted && !r.duplicate, "{when}: {r:?}");
            charged
        }));
    }
    let mut total = 0.0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_clients_never_overrun_across_a_rollover_a_restart_and_late_feedback() {
    let seed = 0xC10C;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path());
    let data = tmp.path().join("data");
    let clock = Clock(tmp.path().join("clock"));
    // Noon UTC of tomorrow: the daily period's bounds are 12 hours away from every instant the
    // test uses but the ones it moves to.
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day1 = (real / DAY_MS + 1) * DAY_MS;
    clock.set(day1 + DAY_MS / 2);

    let served = serve(&cfg, &data, &clock);
    let channel = served.channel().await;
    let mut client = RouteClient::new(channel.clone());
    let b = budget(&mut client).await;
    assert_eq!(
        b.period_start_unix_ms, day1,
        "the service runs on the test clock"
    );

    // Day 1: the cap is reached; each client ends holding a live reservation.
    let (held, _) = hammer(&channel, seed, 8, true, "day 1").await;
    let b1 = budget(&mut client).await;
    assert_within(&b1, "end of day 1");
    assert!(
        b1.spent_usd >= 0.9 * LIMIT_USD,
        "the cap was not reached: {b1:?}"
    );
    assert_eq!(
        held.len() as u64,
        CLIENTS,
        "a fresh period holds every cheap reservation"
    );
    assert!(b1.reserved_usd > 0.0, "{b1:?}");

    // Rollover by the clock: the held reservations stay with day 1, whose spend they settle into.
    clock.set(day1 + DAY_MS + DAY_MS / 2);
    let b = budget(&mut client).await;
    assert_eq!(b.period_start_unix_ms, day1 + DAY_MS, "{b:?}");
    assert_eq!((b.spent_usd, b.reserved_usd), (0.0, 0.0), "{b:?}");
    assert!(close(b.previous_period_spent_usd, b1.spent_usd), "{b:?}");
    let late_in_day1 =
        settle_all(&channel, held, MAX_OUTPUT_TOKENS, "settling day 1 on day 2").await;
    let b = budget(&mut client).await;
    assert_eq!(
        b.spent_usd, 0.0,
        "day 1's calls were charged to day 2: {b:?}"
    );
    assert!(
        close(b.previous_period_spent_usd, b1.spent_usd + late_in_day1),
        "day 1's calls settled after the rollover: {b:?}, b1 {b1:?}, charged {late_in_day1}"
    );

    // Day 2, then a quiescent point with live reservations. A repeated Feedback (a duplicate:
    // nothing charged) makes everything before it durable: sync mode answers it after a flush.
    let (held, settled) = hammer(&channel, seed + 1, 8, true, "day 2").await;
    assert_eq!(
        held.len() as u64,
        CLIENTS,
        "a fresh period holds every cheap reservation"
    );
    let before = budget(&mut client).await;
    let (r, _) = settle(
        &mut client,
        &settled[0],
        MAX_OUTPUT_TOKENS,
        "day 2, repeated",
    )
    .await;
    assert!(r.duplicate, "{r:?}");
    let b2 = budget(&mut client).await;
    assert_eq!(b2, before, "a repeated Feedback changed the budget");
    assert_within(&b2, "end of day 2");
    assert!(b2.reserved_usd > 0.0, "{b2:?}");

    // SIGKILL, then the same data dir: spend and live reservations come back as they were.
    drop(client);
    drop(channel);
    drop(served);
    let served = serve(&cfg, &data, &clock);
    let channel = served.channel().await;
    let mut client = RouteClient::new(channel.clone());
    let b3 = budget(&mut client).await;
    assert_eq!(b3.period_start_unix_ms, b2.period_start_unix_ms);
    assert!(
        close(b3.spent_usd, b2.spent_usd) && close(b3.reserved_usd, b2.reserved_usd),
        "restart: {b3:?} after {b2:?}"
    );
    assert!(close(
        b3.previous_period_spent_usd,
        b2.previous_period_spent_usd
    ));
    let charged = settle_all(&channel, held, MAX_OUTPUT_TOKENS, "after the restart").await;
    let b = budget(&mut client).await;
    assert!(close(b.spent_usd, b2.spent_usd + charged), "{b:?}");
    assert_eq!(b.reserved_usd, 0.0, "{b:?}");

    // Day 3, after the restart: a second rollover, the cap reached again.
    let day3 = day1 + 2 * DAY_MS;
    clock.set(day3 + DAY_MS / 2);
    let (_, settled) = hammer(&channel, seed + 2, 6, false, "day 3, after the restart").await;
    assert!(!settled.is_empty());
    let b4 = budget(&mut client).await;
    assert_within(&b4, "end of day 3");
    assert_eq!(b4.period_start_unix_ms, day3, "{b4:?}");
    assert!(
        close(b4.previous_period_spent_usd, b.spent_usd),
        "{b4:?} after {b:?}"
    );
    assert!(
        b4.spent_usd >= 0.9 * LIMIT_USD,
        "the cap was not reached: {b4:?}"
    );
    assert_eq!(b4.reserved_usd, 0.0, "every decision was reported: {b4:?}");

    // Late Feedback, on day 4: the pending ttl passes (by the clock); the decision expires and its
    // reservation is released; the Feedback is still charged, flagged late.
    let day4 = day1 + 3 * DAY_MS;
    clock.set(day4 + DAY_MS / 2);
    let b = budget(&mut client).await;
    assert_eq!(b.period_start_unix_ms, day4, "{b:?}");
    assert!(close(b.previous_period_spent_usd, b4.spent_usd), "{b:?}");
    let headroom = b.limit_usd - b.spent_usd;
    let late = route(&mut client).await.expect("a fresh period has room");
    let reserved = budget(&mut client).await.reserved_usd;
    assert!(reserved > 0.0);
    clock.set(day4 + DAY_MS / 2 + (PENDING_TTL_SECS + 60) * 1000);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while budget(&mut client).await.reserved_usd > 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the decision never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (r, charged) = settle(&mut client, &late, MAX_OUTPUT_TOKENS, "late").await;
    assert!(r.accepted && r.late, "{r:?}");
    let after = budget(&mut client).await;
    assert!(
        close(after.spent_usd, b.spent_usd + charged) && charged <= headroom,
        "late spend not charged: {after:?} after {b:?} + {charged}"
    );
    drop(served);
}
