//! Cluster-wide spend end to end: a real `redis-server` and three real `switchyard serve`
//! replicas, driven over gRPC with a seeded workload whose Route and Feedback land on different
//! replicas. GetSpend on every replica answers the sum over replicas; a spike that no replica's
//! own share reaches (but the cluster's does) fires one `cost_anomaly` webhook in all; spend
//! settled while Redis is unreachable is added once when it answers again. Every wait polls a
//! condition with a generous deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::served::ServedBinary;
use common::webhook::{webhook, Received};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{
    FeedbackRequest, GetSpendRequest, GetSpendResponse, Outcome, RouteRequest,
};
use tonic::transport::Channel;

/// Every call's reported cost, USD (nano-USD below).
const CALL_USD: f64 = 0.0015;
const CALL_NUSD: u64 = 1_500_000;
/// Calls of the workload: 0.045 USD in all, 0.015 settled on each of three replicas.
const CALLS: usize = 30;
/// The anomaly floor: above one replica's share, below the cluster's total.
const MIN_USD: f64 = 0.03;
const DEADLINE: Duration = Duration::from_secs(60);

fn config(redis_url: &str, webhook_url: &str, replica: &str) -> String {
    format!(
        "[policy]\nseed = 5\n\
         [models.good]\nprovider = \"p1\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n\
         latency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.5\n\
         [models.poor]\nprovider = \"p2\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n\
         latency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.5\n\
         [task_classes.bench]\nmodels = [\"good\", \"poor\"]\nbudget = \"team\"\n\
         [budgets.team]\nperiod = \"daily\"\nlimit_usd = 1000.0\n\
         [alerts]\nwebhook_url = \"{webhook_url}\"\n\
         [anomaly]\nwarmup_hours = 0\nmin_usd = {MIN_USD}\nseasonality = \"none\"\n\
         [cluster]\nredis_url = \"{redis_url}\"\nkey_prefix = \"spend\"\nreplica_id = \"{replica}\"\n\
         sync_interval_ms = 250\nheartbeat_ms = 200\nredis_timeout_ms = 1000\n"
    )
}

struct Replica {
    served: ServedBinary,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(redis: &RedisServer, webhook_url: &str, id: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config(&redis.url(), webhook_url, id)).unwrap();
        let served = ServedBinary::builder()
            .config(&path)
            .data_dir(&dir.path().join("data"))
            .args(["--metrics-listen", "127.0.0.1:0"])
            .start();
        Replica { served, _dir: dir }
    }

    async fn client(&self) -> RouteClient<Channel> {
        let url = format!("http://{}", self.served.addr);
        RouteClient::new(Channel::from_shared(url).unwrap().connect().await.unwrap())
    }

    /// (claims won, claims lost) of cost anomalies seen in the shared totals.
    async fn claims(&self) -> (u64, u64) {
        let text = reqwest::get(self.served.metrics.as_deref().unwrap())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let get = |claim: &str| {
            let prefix =
                format!("switchyard_cluster_cost_anomaly_claims_total{{claim=\"{claim}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .map_or(0, |v| v.trim().parse().unwrap())
        };
        (get("won"), get("lost"))
    }
}

async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn spend(c: &mut RouteClient<Channel>, by: &[&str]) -> GetSpendResponse {
    c.get_spend(GetSpendRequest {
        group_by: by.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// Rows by their key, (spend nano-USD, requests).
fn by_key(r: &GetSpendResponse) -> BTreeMap<Vec<String>, (u64, u64)> {
    r.rows
        .iter()
        .map(|row| (row.key.clone(), (row.spend_nusd, row.requests)))
        .collect()
}

/// One call: Route on `route_on`, Feedback (the spend) on `settle_on`, tagged with `user`.
async fn call(
    route_on: &mut RouteClient<Channel>,
    settle_on: &mut RouteClient<Channel>,
    user: &str,
) {
    let d = route_on
        .route(RouteRequest {
            task_class: "bench".into(),
            tags: [("user".to_string(), user.to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    settle_on
        .feedback(FeedbackRequest {
            decision_id: d.decision_id,
            outcome: Outcome::Success as i32,
            latency_ms: Some(400.0),
            input_tokens: Some(500),
            output_tokens: Some(500),
            cost_usd: Some(CALL_USD),
            quality: Some(0.8),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn anomalies(received: &Received) -> Vec<serde_json::Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "cost_anomaly")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spend_and_anomalies_are_cluster_wide_and_fire_once() {
    // The spike must fall in one clock hour: start with at least three minutes of it left.
    let start = Instant::now();
    while switchyard::time::now_ms() % 3_600_000 > 3_600_000 - 180_000 {
        assert!(
            start.elapsed() < Duration::from_secs(200),
            "the clock does not advance"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let redis = RedisServer::start().await;
    let (url, received) = webhook().await;
    let replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::start(&redis, &url, &format!("r{i}")))
        .collect();
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(r.client().await);
    }
    let mut rng = SmallRng::seed_from_u64(17);
    let users = ["ann", "bo", "cy"];
    let mut expected_users: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..CALLS {
        let user = users[rng.random_range(0..users.len())];
        *expected_users.entry(user.to_string()).or_default() += 1;
        let (a, b) = (i % 3, (i + 1) % 3);
        let mut settle_on = clients[b].clone();
        call(&mut clients[a], &mut settle_on, user).await;
    }
    let total = CALL_NUSD * CALLS as u64;

    // Every replica answers the cluster-wide sum, per user too.
    for (i, c) in clients.iter().enumerate() {
        let mut c = c.clone();
        wait_for("cluster-wide totals", || {
            let mut c = c.clone();
            async move {
                let r = spend(&mut c, &[]).await;
                r.cluster_wide
                    && r.rows.first().map(|r| (r.spend_nusd, r.requests))
                        == Some((total, CALLS as u64))
            }
        })
        .await;
        let r = spend(&mut c, &["tag:user"]).await;
        assert_eq!(r.served_by, format!("r{i}"));
        let got = by_key(&r);
        for (user, n) in &expected_users {
            assert_eq!(
                got[&vec![user.clone()]],
                (CALL_NUSD * n, *n),
                "replica r{i}: {got:?}"
            );
        }
    }

    let n = check_fired_once(&replicas, &mut clients[0].clone(), &received).await;
    let team = anomalies(&received)
        .into_iter()
        .find(|v| v["scope"] == "budget_key")
        .unwrap();
    assert!(team["hour_usd"].as_f64().unwrap() >= MIN_USD, "{team}");

    // Redis unreachable: spend is counted locally, answered as one replica's, and added once
    // when Redis answers again (the batch that timed out is resent under its id).
    redis.pause(true);
    let mut c1 = clients[1].clone();
    for _ in 0..4 {
        call(&mut c1.clone(), &mut c1, "ann").await;
    }
    let local = spend(&mut c1, &[]).await;
    assert!(!local.cluster_wide, "{}", local.detail);
    assert!(local.detail.contains("unreachable"), "{}", local.detail);
    redis.pause(false);
    let after = total + 4 * CALL_NUSD;
    for c in &clients {
        wait_for("outage spend added once", || {
            let mut c = c.clone();
            async move {
                let r = spend(&mut c, &[]).await;
                r.cluster_wide && r.rows.first().map(|r| r.spend_nusd) == Some(after)
            }
        })
        .await;
    }
    // Later syncs add nothing more: a further call moves the total by exactly one call.
    call(&mut clients[2].clone(), &mut clients[2].clone(), "bo").await;
    let mut c0 = clients[0].clone();
    wait_for("one more call", || {
        let mut c = c0.clone();
        async move {
            let r = spend(&mut c, &[]).await;
            r.rows.first().map(|r| r.spend_nusd) == Some(after + CALL_NUSD)
        }
    })
    .await;
    let r = spend(&mut c0, &[]).await;
    assert_eq!(r.rows[0].requests, CALLS as u64 + 5);
    // Still one webhook per spike (a model may have crossed the floor since).
    let m = check_fired_once(&replicas, &mut c0, &received).await;
    assert!(m >= n);
}

/// Waits until each scope over the floor (the budget, and each model whose share of the
/// cluster's spend reaches it) was claimed and delivered, then checks it was exactly once across
/// the replicas. Returns how many.
async fn check_fired_once(
    replicas: &[Replica],
    c: &mut RouteClient<Channel>,
    received: &Received,
) -> u64 {
    let models = by_key(&spend(c, &["model"]).await);
    let mut expected: Vec<(String, String)> = vec![("budget_key".into(), "team".into())];
    for (k, (nusd, _)) in &models {
        if *nusd as f64 / 1e9 >= MIN_USD {
            expected.push(("model".into(), k[0].clone()));
        }
    }
    expected.sort();
    let n = expected.len() as u64;
    wait_for("every spike claimed", || async {
        let mut won = 0;
        for r in replicas {
            won += r.claims().await.0;
        }
        won >= n
    })
    .await;
    wait_for("the webhooks", || async {
        anomalies(received).len() as u64 >= n
    })
    .await;
    let mut won_total = 0;
    for r in replicas {
        let (won, lost) = r.claims().await;
        // A replica that read the baselines after a spike was claimed does not see it again.
        assert!(
            won + lost <= n,
            "a spike seen twice by one replica: {won} + {lost}"
        );
        won_total += won;
    }
    assert_eq!(won_total, n, "each spike claimed by exactly one replica");
    let got = anomalies(received);
    let mut fired: Vec<(String, String)> = got
        .iter()
        .map(|v| {
            (
                v["scope"].as_str().unwrap().to_string(),
                v["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    fired.sort();
    assert_eq!(
        fired, expected,
        "one webhook per spike across replicas: {got:?}"
    );
    n
}
