//! Cluster mode end to end: a real `redis-server` (found on PATH; `scripts/test.sh` installs it)
//! and real `switchyard serve` replicas on 127.0.0.1, driven over gRPC. Every wait polls a
//! condition with a generous deadline; the measured figures are printed (`--nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::RedisServer as Redis;
use common::served::ServedBinary;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{
    BreakerState, FeedbackRequest, GetArmStatsRequest, GetBudgetsRequest, HealthState, Outcome,
    ReportHealthRequest, RouteRequest,
};
use tonic::transport::Channel;

/// Price-table cost of one request of the test class: 500 input tokens at $1/M plus 500 output
/// tokens at $2/M.
const CALL_USD: f64 = 0.0015;
/// Generous deadline of every wait on a condition.
const DEADLINE: Duration = Duration::from_secs(60);

/// The test config: two models at the same price and the same priors ("good" is better in
/// truth), a daily budget `team`, and `[cluster]` on `redis_url` under `prefix`.
fn config_text(redis_url: &str, prefix: &str, replica: &str, seed: u64, limit_usd: f64) -> String {
    format!(
        "[policy]\nseed = {seed}\n\
         [models.good]\nprovider = \"p1\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n\
         latency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.5\n\
         [models.poor]\nprovider = \"p2\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n\
         latency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.5\n\
         [task_classes.bench]\nmodels = [\"good\", \"poor\"]\ntypical_input_tokens = 500\n\
         typical_output_tokens = 500\n\
         [budgets.team]\nperiod = \"daily\"\nlimit_usd = {limit_usd}\non_cap = \"reject\"\n\
         alert_thresholds = [0.5]\n\
         [storage]\ndurability = \"periodic\"\n\
         [cluster]\nredis_url = \"{redis_url}\"\nkey_prefix = \"{prefix}\"\nreplica_id = \"{replica}\"\n\
         sync_interval_ms = 250\nheartbeat_ms = 200\nredis_timeout_ms = 1000\n"
    )
}

/// One `switchyard serve` replica.
struct Replica {
    served: ServedBinary,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// A replica whose config text is `edit`ed first, with a metrics listener.
    fn start_with(
        redis: &Redis,
        prefix: &str,
        id: &str,
        seed: u64,
        limit_usd: f64,
        edit: impl Fn(String) -> String,
    ) -> Replica {
        let text = edit(config_text(&redis.url(), prefix, id, seed, limit_usd));
        Self::start_text(&text, &log_path(prefix, id))
    }

    /// A replica on config `text`, logging to `log` (emptied first).
    fn start_text(text: &str, log: &Path) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
        let _ = std::fs::remove_file(log);
        Replica {
            served: Self::serve(dir.path(), log),
            log: log.to_path_buf(),
            _dir: dir,
        }
    }

    /// `switchyard serve` on `dir`'s config and data dir with a metrics listener, appending its
    /// log to `log`.
    fn serve(dir: &Path, log: &Path) -> ServedBinary {
        ServedBinary::builder()
            .config(&dir.join("config.toml"))
            .data_dir(&dir.join("data"))
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "switchyard=info,switchyard::cluster::cap=debug")
            .log_to(log)
            .start()
    }

    /// SIGKILL, then start again on the same config, data dir and log.
    fn restart(&mut self) {
        self.served.kill();
        self.served = Self::serve(self._dir.path(), &self.log);
    }

    /// The value of one unlabelled series on `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let url = self.served.metrics.as_ref().expect("a metrics listener");
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    async fn client(&self) -> RouteClient<Channel> {
        RouteClient::new(self.served.channel().await)
    }
}

async fn start_cluster(
    redis: &Redis,
    prefix: &str,
    n: usize,
    seed: u64,
    limit_usd: f64,
) -> Vec<Replica> {
    start_cluster_with(n, |i| {
        let id = format!("r{i}");
        let text = config_text(&redis.url(), prefix, &id, seed * 10 + i as u64, limit_usd);
        (text, log_path(prefix, &id))
    })
    .await
}

/// Where replica `id` of the cluster under `prefix` logs.
fn log_path(prefix: &str, id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("switchyard-cluster-{prefix}-{id}.log"))
}

/// `n` replicas, replica i on the config text and log path `config(i)`, each registered and
/// connected to Redis.
async fn start_cluster_with(n: usize, config: impl Fn(usize) -> (String, PathBuf)) -> Vec<Replica> {
    let replicas: Vec<Replica> = (0..n)
        .map(|i| {
            let (text, log) = config(i);
            Replica::start_text(&text, &log)
        })
        .collect();
    // Every replica has registered (its heartbeat counted the others) and reached Redis.
    for r in &replicas {
        wait_for(move || async move {
            let b = budget(&mut r.client().await).await;
            b.cluster_shared && !b.fallback
        })
        .await;
    }
    replicas
}

async fn wait_for<F, Fut>(mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "condition not reached within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn budget(c: &mut RouteClient<Channel>) -> switchyard::proto::Budget {
    c.get_budgets(GetBudgetsRequest {
        budget_key: "team".into(),
    })
    .await
    .unwrap()
    .into_inner()
    .budgets
    .remove(0)
}

fn route_request(budgeted: bool) -> RouteRequest {
    RouteRequest {
        task_class: "bench".into(),
        input_tokens: 500,
        max_output_tokens: 500,
        budget_key: if budgeted {
            "team".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

fn feedback(decision_id: &str, model: &str, quality: f64) -> FeedbackRequest {
    FeedbackRequest {
        decision_id: decision_id.into(),
        model: model.into(),
        outcome: Outcome::Success as i32,
        latency_ms: Some(500.0),
        input_tokens: Some(500),
        output_tokens: Some(500),
        cost_usd: Some(CALL_USD),
        quality: Some(quality),
        ..Default::default()
    }
}

/// The shared ledger of `team`'s current period: (spent, sum of the settled amounts, number of
/// settlements).
async fn shared_ledger(redis: &Redis, prefix: &str) -> (f64, f64, usize) {
    let mut con = redis.con().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:budget:{{team:*}}:settled"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "one period: {keys:?}");
    let settled = &keys[0];
    let base = settled.trim_end_matches(":settled");
    let spent: Option<String> = redis::cmd("HGET")
        .arg(base)
        .arg("spent")
        .query_async(&mut con)
        .await
        .unwrap();
    let all: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(settled)
        .query_async(&mut con)
        .await
        .unwrap();
    let pairs: Vec<f64> = all
        .iter()
        .filter(|(k, _)| k.contains('|'))
        .map(|(_, v)| v.parse().unwrap())
        .collect();
    (
        spent.map_or(0.0, |s| s.parse().unwrap()),
        pairs.iter().sum(),
        pairs.len(),
    )
}

/// 64 concurrent clients, round robin over three replicas, each Feedback sent to a different
/// replica than its Route and then repeated to the third: the shared budget is never overrun and
/// every settlement is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_is_never_overrun_across_replicas() {
    const LIMIT: f64 = 0.10;
    let redis = Redis::start().await;
    let replicas = start_cluster(&redis, "t1", 3, 1, LIMIT).await;
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(r.client().await);
    }
    let acked = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let clients = clients.clone();
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            loop {
                let mut routed = clients[n % 3].clone();
                let d = match routed.route(route_request(true)).await {
                    Ok(d) => d.into_inner(),
                    Err(s) => {
                        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                        return;
                    }
                };
                let fb = feedback(&d.decision_id, &d.model, 0.8);
                let r = clients[(n + 1) % 3]
                    .clone()
                    .feedback(fb.clone())
                    .await
                    .unwrap();
                assert!(r.get_ref().accepted && !r.get_ref().duplicate);
                acked.fetch_add(1, Ordering::Relaxed);
                // A retried settlement, on the third replica, is counted once.
                let again = clients[(n + 2) % 3].clone().feedback(fb).await.unwrap();
                assert!(again.get_ref().duplicate, "{:?}", again.get_ref());
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (spent, settled_sum, settlements) = shared_ledger(&redis, "t1").await;
    let acked = acked.load(Ordering::Relaxed);
    println!(
        "budget: limit {LIMIT} USD, spent {spent:.6} USD by {acked} acknowledged feedbacks \
         ({settlements} settlements) from 64 clients over 3 replicas"
    );
    assert!(spent <= LIMIT + 1e-12, "spent {spent} over limit {LIMIT}");
    assert_eq!(settlements, acked);
    assert!(
        (settled_sum - spent).abs() < 1e-9,
        "{settled_sum} vs {spent}"
    );
    assert!((spent - acked as f64 * CALL_USD).abs() < 1e-9);
    // The cap was reached (not stopped early): less than one more call fits.
    assert!(spent + 2.0 * CALL_USD > LIMIT, "stopped early at {spent}");
    // The alert fired once across the replicas.
    let mut con = redis.con().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("t1:budget:{team:*}:alerts")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let alerts: Vec<String> = redis::cmd("HKEYS")
        .arg(&keys[0])
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(alerts, vec![String::from("0.5")]);
}

/// Requests in each convergence stream: every configuration serves all of them.
const STREAM: usize = 2000;

/// One convergence run: decisions until 90 of the last 100 went to the best model, and the
/// stream's rate (decisions per second).
struct Converged {
    decisions: usize,
    per_second: f64,
}

/// The same request stream (STREAM decisions, qualities drawn from `seed`: true mean 0.7 for
/// "good" against 0.55) served by `n` replicas in turn (Feedback to the next one) that sync every
/// `sync_ms`: decisions until 90 of the last 100 went to "good".
async fn converge(redis: &Redis, prefix: &str, n: usize, seed: u64, sync_ms: u64) -> Converged {
    let replicas = start_cluster_with(n, |i| {
        let id = format!("r{i}");
        let text = config_text(&redis.url(), prefix, &id, seed * 10 + i as u64, 100.0).replace(
            "sync_interval_ms = 250",
            &format!("sync_interval_ms = {sync_ms}"),
        );
        (text, log_path(prefix, &id))
    })
    .await;
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(r.client().await);
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut window = std::collections::VecDeque::new();
    let mut reached = None;
    let start = Instant::now();
    for k in 0..STREAM {
        let d = clients[k % n]
            .route(route_request(false))
            .await
            .unwrap()
            .into_inner();
        let truth = if d.model == "good" { 0.7 } else { 0.55 };
        let q: f64 = (truth + rng.random_range(-0.1..0.1f64)).clamp(0.0, 1.0);
        clients[(k + 1) % n]
            .feedback(feedback(&d.decision_id, &d.model, q))
            .await
            .unwrap();
        window.push_back(d.model == "good");
        if window.len() > 100 {
            window.pop_front();
        }
        if reached.is_none() && window.len() == 100 && window.iter().filter(|g| **g).count() >= 90 {
            reached = Some(k + 1);
        }
    }
    let per_second = STREAM as f64 / start.elapsed().as_secs_f64();
    let decisions = reached.unwrap_or_else(|| {
        panic!("{n} replicas, seed {seed}: no convergence in {STREAM} decisions")
    });
    Converged {
        decisions,
        per_second,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Like for like: for each seed the same stream of STREAM requests is served by one replica, by
/// three in turn syncing every 250 ms, and by three syncing every 50 ms; all converge, and the
/// decisions until convergence (with the stream's rate, so decisions per sync interval) are
/// reported per seed with their medians.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_converge_like_one() {
    // Durable (`appendfsync always`), as when README's convergence table was measured: the
    // stream's decisions per second, and so per sync interval, depend on it. A stall past
    // redis_timeout_ms is an outage the replicas ride out (Feedback deferred).
    let redis = Redis::start_durable().await;
    let setups = [(1usize, 250u64), (3, 250), (3, 50)];
    let mut table: Vec<Vec<Converged>> = setups.iter().map(|_| Vec::new()).collect();
    for seed in 1..=5u64 {
        for (j, &(n, sync_ms)) in setups.iter().enumerate() {
            let c = converge(&redis, &format!("c{n}x{sync_ms}s{seed}"), n, seed, sync_ms).await;
            println!(
                "convergence seed {seed}: {n} replica(s), sync {sync_ms} ms: {} decisions at \
                 {:.0} decisions/s ({:.0} decisions per sync interval)",
                c.decisions,
                c.per_second,
                c.per_second * sync_ms as f64 / 1000.0
            );
            table[j].push(c);
        }
    }
    for (j, &(n, sync_ms)) in setups.iter().enumerate() {
        let decisions = median(table[j].iter().map(|c| c.decisions as f64).collect());
        let rate = median(table[j].iter().map(|c| c.per_second).collect());
        println!(
            "convergence median: {n} replica(s), sync {sync_ms} ms: {decisions} decisions, \
             {rate:.0} decisions/s, {:.0} decisions per sync interval, over {STREAM}-request \
             streams",
            rate * sync_ms as f64 / 1000.0
        );
    }
}

/// A DOWN reported to one replica opens the model's breaker on the other two.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn down_on_one_replica_stops_the_model_on_all() {
    let redis = Redis::start().await;
    let replicas = start_cluster(&redis, "t3", 3, 3, 100.0).await;
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(r.client().await);
    }
    let start = Instant::now();
    clients[0]
        .report_health(ReportHealthRequest {
            model: "good".into(),
            state: HealthState::Down as i32,
            ttl_seconds: 120,
            reason: "test outage".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for c in clients.iter().skip(1) {
        wait_for(|| {
            let mut c = c.clone();
            async move {
                let arms = c
                    .get_arm_stats(GetArmStatsRequest {
                        task_class: "bench".into(),
                        model: "good".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .arms;
                arms[0].breaker_state == BreakerState::Open as i32
            }
        })
        .await;
    }
    let propagated = start.elapsed();
    println!(
        "DOWN propagation to the two other replicas: {} ms",
        propagated.as_millis()
    );
    for c in clients.iter_mut() {
        for _ in 0..20 {
            let d = c.route(route_request(false)).await.unwrap().into_inner();
            assert_eq!(d.model, "poor");
        }
    }
}

/// Route then Feedback on the live replicas, round robin; returns acknowledged (decision, model)
/// pairs and counts routes that succeeded.
async fn load(
    clients: Vec<(usize, RouteClient<Channel>)>,
    dead: Arc<Mutex<BTreeSet<usize>>>,
    until: impl Fn(usize) -> bool + Send + Sync + 'static,
    cross_replica: bool,
) -> (Vec<(String, String)>, usize) {
    let until = Arc::new(until);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let routed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let (clients, dead, until) = (clients.clone(), Arc::clone(&dead), Arc::clone(&until));
        let (acked, routed) = (Arc::clone(&acked), Arc::clone(&routed));
        tasks.push(tokio::spawn(async move {
            let mut k = t;
            while !until(acked.lock().unwrap().len()) {
                k += 1;
                let live: Vec<_> = clients
                    .iter()
                    .filter(|(i, _)| !dead.lock().unwrap().contains(i))
                    .cloned()
                    .collect();
                let (ri, mut rc) = live[k % live.len()].clone();
                let d = match rc.route(route_request(true)).await {
                    Ok(d) => d.into_inner(),
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => continue,
                    Err(_) => {
                        dead.lock().unwrap().insert(ri);
                        continue;
                    }
                };
                routed.fetch_add(1, Ordering::Relaxed);
                // Feedback to another live replica (to the routing one while Redis is down: no
                // replica can find another's decision then); retried elsewhere if it dies.
                let fb = feedback(&d.decision_id, &d.model, 0.8);
                let first = if cross_replica { 1 } else { 0 };
                for j in first..first + live.len() {
                    let (fi, mut fc) = live[(k + j) % live.len()].clone();
                    match fc.feedback(fb.clone()).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            assert!(
                                j > first || !r.duplicate,
                                "a first feedback answered as a duplicate: {r:?} for {}",
                                d.decision_id
                            );
                            acked
                                .lock()
                                .unwrap()
                                .push((d.decision_id.clone(), d.model.clone()));
                            break;
                        }
                        Err(s)
                            if matches!(
                                s.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                            ) =>
                        {
                            dead.lock().unwrap().insert(fi);
                        }
                        Err(s) => panic!("feedback refused on replica {fi}: {s:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    (acked, routed.load(Ordering::Relaxed))
}

/// Kill one replica under load: the others keep serving and no acknowledged Feedback is lost.
/// Then stop Redis for 10 s under load: routing continues, each replica stays within its
/// fallback share, and the shared ledger reconciles when Redis returns; finally a restart of
/// Redis on its AOF keeps everything acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_death_and_redis_outage() {
    const LIMIT: f64 = 5.0;
    let mut redis = Redis::start_durable().await;
    let mut replicas = start_cluster(&redis, "t4", 3, 4, LIMIT).await;
    let mut clients = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        clients.push((i, r.client().await));
    }
    let dead = Arc::new(Mutex::new(BTreeSet::new()));

    // Phase 1: kill replica 2 once the load is under way.
    let victim = replicas.remove(2);
    let killer = {
        let mut victim = victim;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            victim.served.kill();
        })
    };
    let (acked, _) = load(clients.clone(), Arc::clone(&dead), |n| n >= 600, true).await;
    println!("phase 1 load done");
    killer.await.unwrap();
    let mut con = redis.con().await;
    for (id, model) in &acked {
        let json: String = redis::cmd("GET")
            .arg(format!("t4:pd:{id}"))
            .query_async(&mut con)
            .await
            .unwrap();
        let p: serde_json::Value = serde_json::from_str(&json).unwrap();
        let outcomes = p["outcomes"].as_array().unwrap();
        assert!(
            outcomes.iter().any(|m| m == model.as_str()),
            "lost feedback {id}: {p}"
        );
    }
    let (spent, _, settlements) = shared_ledger(&redis, "t4").await;
    assert_eq!(
        settlements,
        acked.len(),
        "each acknowledged settlement counted once"
    );
    println!(
        "replica killed under load: {} feedbacks acknowledged, all in redis; spent {spent:.4} USD",
        acked.len()
    );

    // Phase 2: Redis paused for 10 s under load.
    let live: Vec<(usize, RouteClient<Channel>)> = clients
        .iter()
        .filter(|(i, _)| !dead.lock().unwrap().contains(i))
        .cloned()
        .collect();
    let before = spent;
    redis.pause(true);
    let paused = Instant::now();
    let (outage_acked, outage_routed) = load(
        live.clone(),
        Arc::new(Mutex::new(BTreeSet::new())),
        move |_| paused.elapsed() >= Duration::from_secs(10),
        false,
    )
    .await;
    let mut shares = Vec::new();
    for (_, c) in &live {
        let b = budget(&mut c.clone()).await;
        assert!(b.fallback, "{b:?}");
        assert!(
            b.fallback_spent_usd <= b.fallback_allowance_usd + 1e-9,
            "over the fallback share: {b:?}"
        );
        assert!(
            b.fallback_allowance_usd <= (LIMIT - before) * 0.5 + 1e-9,
            "{b:?}"
        );
        shares.push((b.fallback_spent_usd, b.fallback_allowance_usd));
    }
    redis.pause(false);
    assert!(outage_routed > 0, "routing stopped while redis was paused");
    for (_, c) in &live {
        wait_for(|| {
            let mut c = c.clone();
            async move { !budget(&mut c).await.fallback }
        })
        .await;
    }
    // A settlement queued while a replay ran is replayed on a later tick.
    wait_drained(&replicas).await;
    let (spent, settled_sum, settlements) = shared_ledger(&redis, "t4").await;
    println!(
        "redis paused 10 s: {outage_routed} routes, {} feedbacks acknowledged; fallback spend / \
         share per replica {shares:?}; shared spent {before:.4} -> {spent:.4} USD",
        outage_acked.len()
    );
    assert_eq!(settlements, acked.len() + outage_acked.len());
    assert!((settled_sum - spent).abs() < 1e-9);
    assert!((spent - before - outage_acked.len() as f64 * CALL_USD).abs() < 1e-9);
    assert!(spent <= LIMIT);

    // Phase 3: Redis killed and restarted on its AOF: nothing acknowledged is lost, and the
    // replicas carry on.
    redis.restart().await;
    let (after, _, after_settlements) = shared_ledger(&redis, "t4").await;
    assert_eq!(after_settlements, settlements);
    assert!((after - spent).abs() < 1e-12);
    // Until a replica notices the restart it may decide on local state: Feedback goes to the
    // replica that routed.
    let (more, _) = load(
        live.clone(),
        Arc::new(Mutex::new(BTreeSet::new())),
        |n| n >= 50,
        false,
    )
    .await;
    for (_, c) in &live {
        wait_for(|| {
            let mut c = c.clone();
            async move {
                let b = budget(&mut c).await;
                b.cluster_shared && !b.fallback
            }
        })
        .await;
    }
    // A settlement queued while a replay ran is replayed on a later tick.
    wait_drained(&replicas).await;
    let (last, _, last_settlements) = shared_ledger(&redis, "t4").await;
    assert_eq!(last_settlements, settlements + more.len());
    assert!((last - spent - more.len() as f64 * CALL_USD).abs() < 1e-9);
}

/// Config edits of the Feedback tests: no decay (the shared evidence counts are exact), and
/// `sync` durability (the outbox is on disk before a Feedback is acknowledged).
fn exact_and_sync(c: String) -> String {
    c.replace("[policy]\n", "[policy]\nhalf_life_secs = inf\n")
        .replace("durability = \"periodic\"", "durability = \"sync\"")
}

/// Nothing is left queued for Redis on any of `replicas`.
async fn wait_drained(replicas: &[Replica]) {
    for r in replicas {
        wait_for(move || async move {
            r.metric("switchyard_cluster_queued_operations").await == 0.0
                && r.metric("switchyard_cluster_deferred_feedback").await == 0.0
        })
        .await;
    }
}

/// Every replica reached Redis and counts itself in the shared figures.
async fn wait_shared(replicas: &[Replica]) {
    for r in replicas {
        wait_for(move || async move {
            let b = budget(&mut r.client().await).await;
            b.cluster_shared && !b.fallback
        })
        .await;
    }
}

/// When the replica last merged its evidence with the shared totals (Unix ms).
async fn synced_ms(c: &mut RouteClient<Channel>) -> i64 {
    c.get_arm_stats(GetArmStatsRequest {
        task_class: "bench".into(),
        model: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .arms
    .iter()
    .map(|a| a.cluster_synced_unix_ms)
    .min()
    .unwrap_or(0)
}

/// Waits until every replica has run two evidence syncs that began after now: everything each
/// learned before now is in the shared totals.
async fn wait_two_syncs(clients: &[RouteClient<Channel>]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for c in clients {
        let mut mark = now;
        for _ in 0..2 {
            let since = mark;
            wait_for(|| {
                let mut c = c.clone();
                async move { synced_ms(&mut c).await > since }
            })
            .await;
            mark = synced_ms(&mut c.clone()).await;
        }
    }
}

/// The shared evidence of the test class: (successes, quality reports), over both models.
async fn shared_counts(redis: &Redis, prefix: &str) -> (f64, f64) {
    let mut con = redis.con().await;
    let (mut succ, mut qrep) = (0.0, 0.0);
    for model in ["good", "poor"] {
        let (s, q): (Option<f64>, Option<f64>) = redis::cmd("HMGET")
            .arg(format!("{prefix}:arm:bench:{model}"))
            .arg("succ")
            .arg("qrep")
            .query_async(&mut con)
            .await
            .unwrap();
        succ += s.unwrap_or(0.0);
        qrep += q.unwrap_or(0.0);
    }
    (succ, qrep)
}

/// The same Feedback sent to two replicas at once, many times (decisions on a seeded choice of
/// replica): exactly one of the two applies it, the other answers a duplicate; a retry is a
/// duplicate too; the shared evidence and the shared ledger count each Feedback once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_feedback_at_two_replicas_at_once_counts_once() {
    const N: usize = 40;
    let redis = Redis::start().await;
    let replicas: Vec<Replica> = (0..2u64)
        .map(|i| {
            Replica::start_with(
                &redis,
                "t5",
                &format!("r{i}"),
                50 + i,
                100.0,
                exact_and_sync,
            )
        })
        .collect();
    wait_shared(&replicas).await;
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(r.client().await);
    }
    let mut rng = SmallRng::seed_from_u64(5);
    let mut applied_by = [0usize; 2];
    for _ in 0..N {
        let d = clients[rng.random_range(0..2usize)]
            .route(route_request(true))
            .await
            .unwrap()
            .into_inner();
        let fb = feedback(&d.decision_id, &d.model, rng.random_range(0.0..1.0f64));
        let (mut a, mut b) = (clients[0].clone(), clients[1].clone());
        let (ra, rb) = tokio::join!(a.feedback(fb.clone()), b.feedback(fb.clone()));
        let (ra, rb) = (ra.unwrap().into_inner(), rb.unwrap().into_inner());
        assert!(ra.accepted && rb.accepted && !ra.deferred && !rb.deferred);
        assert_eq!(
            u8::from(!ra.duplicate) + u8::from(!rb.duplicate),
            1,
            "exactly one replica applies it: {ra:?} / {rb:?}"
        );
        applied_by[usize::from(ra.duplicate)] += 1;
        let again = clients[rng.random_range(0..2usize)]
            .feedback(fb)
            .await
            .unwrap()
            .into_inner();
        assert!(again.accepted && again.duplicate, "a retry: {again:?}");
    }
    wait_two_syncs(&clients).await;
    let (succ, qrep) = shared_counts(&redis, "t5").await;
    let (spent, _, settlements) = shared_ledger(&redis, "t5").await;
    let lost: f64 = {
        let mut n = 0.0;
        for r in &replicas {
            n += r
                .metric("switchyard_cluster_feedback_claims_lost_total")
                .await;
        }
        n
    };
    // A twin that reads the decision after the winner wrote it back finds nothing new and claims
    // nothing; the others lose their claim.
    println!(
        "same feedback at two replicas x{N}: applied by replica 0 / 1: {applied_by:?}; shared \
         successes {succ}, quality reports {qrep}, settlements {settlements}, spent {spent:.4} \
         USD; claims lost {lost}"
    );
    assert_eq!(succ, N as f64, "each outcome learned once");
    assert_eq!(qrep, N as f64, "each quality score learned once");
    assert_eq!(settlements, N);
    assert!((spent - N as f64 * CALL_USD).abs() < 1e-9);
}

/// Feedback at replica B for decisions made on replica A while Redis is stopped: B acknowledges
/// it as deferred and keeps it in its outbox (on disk: a restart of B meanwhile loses nothing);
/// when Redis is back the settlements and the evidence arrive, once; a Feedback for a decision
/// that exists nowhere is dropped then, logged and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_deferred_through_a_redis_outage_arrives_once() {
    let mut redis = Redis::start_durable().await;
    let mut replicas: Vec<Replica> = (0..2u64)
        .map(|i| {
            Replica::start_with(
                &redis,
                "t6",
                &format!("r{i}"),
                60 + i,
                100.0,
                exact_and_sync,
            )
        })
        .collect();
    wait_shared(&replicas).await;
    let mut a = replicas[0].client().await;
    let mut decisions = Vec::new();
    for _ in 0..4 {
        decisions.push(a.route(route_request(true)).await.unwrap().into_inner());
    }
    redis.stop();
    let mut b = replicas[1].client().await;
    let fb = |d: &switchyard::proto::RouteResponse| feedback(&d.decision_id, &d.model, 0.9);
    for d in &decisions[..3] {
        let r = b.feedback(fb(d)).await.unwrap().into_inner();
        assert!(r.accepted && r.deferred && !r.duplicate, "{r:?}");
    }
    let ghost = FeedbackRequest {
        decision_id: "no-such-decision".into(),
        ..fb(&decisions[0])
    };
    assert!(b.feedback(ghost).await.unwrap().into_inner().deferred);
    // Refused now, not deferred: it fails a check that needs no decision.
    let bad = FeedbackRequest {
        quality: Some(2.0),
        ..fb(&decisions[3])
    };
    assert_eq!(
        b.feedback(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    // B dies and comes back on its data dir while Redis is still down.
    replicas[1].restart();
    let mut b = replicas[1].client().await;
    let r = b.feedback(fb(&decisions[3])).await.unwrap().into_inner();
    assert!(r.deferred, "{r:?}");
    assert_eq!(
        replicas[1]
            .metric("switchyard_cluster_deferred_feedback")
            .await,
        5.0,
        "the four acknowledged before the restart and the one after"
    );
    redis.resume().await;
    wait_for(|| async {
        replicas[1]
            .metric("switchyard_cluster_deferred_feedback")
            .await
            == 0.0
    })
    .await;
    assert_eq!(
        replicas[1]
            .metric("switchyard_cluster_deferred_feedback_applied_total")
            .await,
        4.0
    );
    assert_eq!(
        replicas[1]
            .metric("switchyard_cluster_deferred_feedback_dropped_total")
            .await,
        1.0
    );
    let log = std::fs::read_to_string(&replicas[1].log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("deferred feedback dropped") && l.contains("no-such-decision")),
        "the drop is logged"
    );
    let (spent, _, settlements) = shared_ledger(&redis, "t6").await;
    assert_eq!(settlements, 4, "each deferred feedback settled once");
    assert!((spent - 4.0 * CALL_USD).abs() < 1e-9, "spent {spent}");
    // Applied once: the same Feedback now, on either replica, is a duplicate.
    for c in [&mut a, &mut b] {
        let r = c.feedback(fb(&decisions[0])).await.unwrap().into_inner();
        assert!(r.duplicate && !r.deferred, "{r:?}");
    }
    let clients = vec![a.clone(), b.clone()];
    wait_two_syncs(&clients).await;
    let (succ, qrep) = shared_counts(&redis, "t6").await;
    println!(
        "redis outage: 4 feedbacks deferred at the other replica (one across its restart) and 1 \
         for an unknown decision; after redis returned: {settlements} settlements, spent \
         {spent:.4} USD, shared successes {succ}, quality reports {qrep}; 1 dropped"
    );
    assert_eq!((succ, qrep), (4.0, 4.0));
}

/// Just after a replica reaches Redis (at start, or after an outage) another replica may not yet
/// have replayed the decisions it made while Redis did not answer. So for
/// UNKNOWN_GRACE_HEARTBEATS heartbeats a Feedback whose decision neither this replica nor Redis
/// knows is deferred, not refused; after that it is refused as unknown, and the deferred one
/// whose decision never appeared is dropped. A decision Redis knows is applied at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_decision_is_deferred_only_while_redis_has_just_come_back() {
    let redis = Redis::start().await;
    // 2 s heartbeats: a 10 s window, far longer than the replica takes to answer after start.
    let replicas = start_cluster_with(1, |i| {
        let id = format!("r{i}");
        let text = config_text(&redis.url(), "t8", &id, 80, 100.0)
            .replace("heartbeat_ms = 200", "heartbeat_ms = 2000");
        (text, log_path("t8", &id))
    })
    .await;
    let r = &replicas[0];
    let mut c = r.client().await;
    let unknown = |n: u64| feedback(&format!("{n:032x}"), "good", 0.5);
    let d = c.route(route_request(false)).await.unwrap().into_inner();
    let known = c
        .feedback(feedback(&d.decision_id, &d.model, 0.5))
        .await
        .unwrap()
        .into_inner();
    assert!(known.accepted && !known.deferred, "{known:?}");
    let early = c.feedback(unknown(1)).await.unwrap().into_inner();
    assert!(early.accepted && early.deferred, "{early:?}");
    // The window closes: the deferred Feedback's decision never appeared, so it is dropped...
    wait_for(|| async {
        r.metric("switchyard_cluster_deferred_feedback_dropped_total")
            .await
            == 1.0
    })
    .await;
    // ...and an unknown decision is now refused as unknown.
    let late = c.feedback(unknown(2)).await.unwrap_err();
    assert_eq!(late.code(), tonic::Code::NotFound, "{late:?}");
    assert_eq!(
        r.metric("switchyard_cluster_deferred_feedback_accepted_total")
            .await,
        1.0
    );
}

/// Runs a Lua script with `keys` and `args` on `redis`.
async fn run_script(redis: &Redis, lua: &str, keys: &[&str], args: &[String]) -> Vec<String> {
    let mut con = redis.con().await;
    let script = redis::Script::new(lua);
    let mut inv = script.prepare_invoke();
    for k in keys {
        inv.key(*k);
    }
    for a in args {
        inv.arg(a);
    }
    inv.invoke_async(&mut con).await.unwrap()
}

/// The claim scripts: a fact goes to one replica; another waits while it is pending with a live
/// replica, loses it once done, takes it over from a replica no longer live, and wins it again
/// once released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_scripts_give_each_fact_to_one_replica() {
    use switchyard::cluster::claims::{CLAIM, RESOLVE};
    let redis = Redis::start().await;
    let mut con = redis.con().await;
    let (fb, reg) = ("s:fb:d1", "s:replicas");
    // r1 and r2 are live (heartbeat at 1000), r3 is not (heartbeat at 10); live since 500.
    let _: () = redis::cmd("ZADD")
        .arg(reg)
        .arg(1000)
        .arg("r1")
        .arg(1000)
        .arg("r2")
        .arg(10)
        .arg("r3")
        .query_async(&mut con)
        .await
        .unwrap();
    let claim = |who: &str, field: &str, value: &str| {
        let args: Vec<String> = ["99999999999999", who, "500", field, value]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let redis = &redis;
        async move { run_script(redis, CLAIM, &[fb, reg], &args).await }
    };
    let resolve = |how: &str, who: &str, field: &str| {
        let args: Vec<String> = [how, who, field].iter().map(|s| s.to_string()).collect();
        let redis = &redis;
        async move { run_script(redis, RESOLVE, &[fb], &args).await }
    };
    assert_eq!(claim("r1", "o|m", "success").await, ["won", "success"]);
    assert_eq!(
        claim("r1", "o|m", "success").await,
        ["won", "success"],
        "its own"
    );
    assert_eq!(claim("r2", "o|m", "error").await, ["busy", "success"]);
    resolve("done", "r2", "o|m").await; // not r2's: left alone
    assert_eq!(claim("r2", "o|m", "error").await, ["busy", "success"]);
    resolve("done", "r1", "o|m").await;
    assert_eq!(claim("r2", "o|m", "error").await, ["lost", "success"]);
    assert_eq!(claim("r3", "q|m", "0.5").await, ["won", "0.5"]);
    assert_eq!(
        claim("r2", "q|m", "0.7").await,
        ["won", "0.7"],
        "r3 is not live"
    );
    resolve("release", "r2", "q|m").await;
    assert_eq!(claim("r1", "q|m", "0.9").await, ["won", "0.9"]);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(fb)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(ttl > 0, "the claims expire with the decision");
}

/// The budget script answers a repeated request id with the first decision's id (its record is
/// then read with a declared key), and a fresh run takes the id over; the evidence merge asks for
/// the undeclared arm hashes a rebase would touch, then rebases them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_touch_only_declared_keys() {
    use switchyard::cluster::budget::ADMIT;
    use switchyard::cluster::evidence::MERGE;
    let redis = Redis::start().await;
    let mut con = redis.con().await;
    let base = "s:budget:{team:0}";
    let (res, exp, settled) = (
        format!("{base}:res"),
        format!("{base}:exp"),
        format!("{base}:settled"),
    );
    let admit = |id: &str, fresh: bool| {
        let keys = [
            base.to_string(),
            res.clone(),
            exp.clone(),
            format!("s:pd:{id}"),
            "s:rq:req".to_string(),
            settled.clone(),
        ];
        let args: Vec<String> = [
            "1000",
            id,
            "0.1",
            "1.0",
            "{}",
            "60000",
            "61000",
            "1",
            "1",
            if fresh { "1" } else { "0" },
            "99999999999999",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let redis = &redis;
        async move {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            run_script(redis, ADMIT, &keys, &args).await
        }
    };
    assert_eq!(admit("d1", false).await[0], "ok");
    assert_eq!(admit("d2", false).await, ["replay", "d1"]);
    assert_eq!(admit("d2", true).await[0], "ok");
    assert_eq!(admit("d3", false).await, ["replay", "d2"]);
    let reserved: f64 = redis::cmd("HGET")
        .arg(base)
        .arg("reserved")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        (reserved - 0.2).abs() < 1e-12,
        "d1 and d2 reserved, d3 did not: {reserved}"
    );

    // Evidence: an arm of another config ("other") is in the set; the origin is old enough that
    // a rebase is due (half-life 1000 ms, rebase after 32 half-lives).
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("s:arm_origin")
        .arg(0)
        .ignore()
        .cmd("SADD")
        .arg("s:arms")
        .arg("s:arm:c:other")
        .ignore()
        .cmd("HSET")
        .arg("s:arm:c:other")
        .arg("ss")
        .arg(1024.0)
        .ignore()
        .query_async(&mut con)
        .await
        .unwrap();
    let merge = |extra: &[&str]| {
        let mut keys = vec!["s:arm_origin", "s:arms", "s:arm:c:mine"];
        keys.extend_from_slice(extra);
        let mut args: Vec<String> = ["0", "1000", "40000", "0", "32", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend((0..14).map(|i| {
            if i == 11 {
                "1".to_string()
            } else {
                "0".to_string()
            }
        }));
        let keys: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        let redis = &redis;
        async move {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            run_script(redis, MERGE, &keys, &args).await
        }
    };
    assert_eq!(
        merge(&[]).await,
        ["keys", "s:arm:c:other"],
        "asks before writing"
    );
    let untouched: f64 = redis::cmd("HGET")
        .arg("s:arm:c:other")
        .arg("ss")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(untouched, 1024.0);
    let reply = merge(&["s:arm:c:other"]).await;
    assert_eq!(reply.len(), 1 + 14);
    // Rebased by 2^-39 (k = floor(40000 / 1000) - 1): the origin moved 39 half-lives.
    assert_eq!(reply[0], "39000");
    let rebased: f64 = redis::cmd("HGET")
        .arg("s:arm:c:other")
        .arg("ss")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        (rebased - 1024.0 * 2f64.powi(-39)).abs() < 1e-20,
        "{rebased}"
    );
    assert_eq!(
        reply[1 + 11],
        "1",
        "the delta of the declared arm was added"
    );
}

/// Price-table cost of one capped-test request (500 input and 500 output tokens) on "big" and on
/// "small".
const BIG_USD: f64 = 0.02;
const SMALL_USD: f64 = 0.000_15;

/// A config whose `team` budget substitutes at the cap: "big" (better in its priors and in
/// truth) and "small" at 1/133 of its price; cost has no weight, so the policy
/// prefers "big" and the cap rule does the saving. Evidence and budget figures are synced only at
/// start (`sync_interval_ms` of 10 minutes), so each replica's view of the budget moves only with
/// its own admissions: a replica that has not routed yet decides on a stale view.
fn cap_config_text(
    redis_url: &str,
    prefix: &str,
    replica: &str,
    seed: u64,
    limit_usd: f64,
) -> String {
    format!(
        "[policy]\nseed = {seed}\n\
         [models.big]\nprovider = \"p1\"\ninput_usd_per_mtok = 10.0\noutput_usd_per_mtok = 30.0\n\
         latency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.9\n\
         [models.small]\nprovider = \"p2\"\ninput_usd_per_mtok = 0.1\noutput_usd_per_mtok = 0.2\n\
         latency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.5\n\
         [task_classes.bench]\nmodels = [\"big\", \"small\"]\ntypical_input_tokens = 500\n\
         typical_output_tokens = 500\nweights = {{ quality = 1.0, cost = 0.0, latency = 0.01 }}\n\
         [budgets.team]\nperiod = \"daily\"\nlimit_usd = {limit_usd}\non_cap = \"cheapest\"\n\
         [storage]\ndurability = \"periodic\"\n\
         [cluster]\nredis_url = \"{redis_url}\"\nkey_prefix = \"{prefix}\"\nreplica_id = \"{replica}\"\n\
         sync_interval_ms = 600000\nheartbeat_ms = 200\nredis_timeout_ms = 1000\n"
    )
}

fn capped_feedback(d: &switchyard::proto::RouteResponse) -> FeedbackRequest {
    let (usd, quality) = if d.model == "big" {
        (BIG_USD, 0.9)
    } else {
        (SMALL_USD, 0.5)
    };
    FeedbackRequest {
        cost_usd: Some(usd),
        ..feedback(&d.decision_id, &d.model, quality)
    }
}

/// The decision as recorded in Redis: (model, propensity).
async fn recorded(redis: &Redis, prefix: &str, decision_id: &str) -> (String, f64) {
    let json: String = redis::cmd("GET")
        .arg(format!("{prefix}:pd:{decision_id}"))
        .query_async(&mut redis.con().await)
        .await
        .unwrap();
    let p: serde_json::Value = serde_json::from_str(&json).unwrap();
    (
        p["decision"]["model"].as_str().unwrap().to_string(),
        p["decision"]["propensity"].as_f64().unwrap(),
    )
}

/// `on_cap = "cheapest"` on the shared budget, over gRPC with three replicas:
/// 1. one replica routes until its own view of the budget leaves no room for "big": it
///    substitutes "small" itself (the local step);
/// 2. a replica whose view is stale (it has not routed) decides "big", and the admission script
///    reserves "small" instead; the decision is rewritten (model, reason, propensity 1: every
///    choice ends on "small") and recorded in Redis before Route answers;
/// 3. 64 concurrent clients round robin over the three until even "small" does not fit.
///
/// The limit is never passed, substitutions say `budget_exhausted`, Redis holds every decision
/// as served, and a refusal says that not even the cheapest model fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cheapest_substitutes_at_the_shared_cap() {
    const LIMIT: f64 = 0.125;
    const PREFIX: &str = "t5";
    let redis = Redis::start().await;
    let replicas = start_cluster_with(3, |i| {
        let id = format!("r{i}");
        let text = cap_config_text(&redis.url(), PREFIX, &id, 50 + i as u64, LIMIT);
        (text, log_path(PREFIX, &id))
    })
    .await;
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(r.client().await);
    }
    let served = Arc::new(Mutex::new(Vec::new()));
    let note = |d: &switchyard::proto::RouteResponse| {
        served.lock().unwrap().push((
            d.decision_id.clone(),
            d.model.clone(),
            d.reason.clone(),
            d.propensity,
        ));
    };

    // 1. The local step, on replica 0's own view: it routes until "big" no longer fits, when
    // every choice ends on "small" (propensity 1), substituted (`budget_exhausted`) when the
    // policy chose "big".
    let mut last = None;
    for _ in 0..100 {
        let d = clients[0]
            .route(route_request(true))
            .await
            .unwrap()
            .into_inner();
        clients[1].feedback(capped_feedback(&d)).await.unwrap();
        note(&d);
        if d.model == "small" && d.propensity == 1.0 {
            last = Some(d);
            break;
        }
        assert_ne!(
            d.reason, "budget_exhausted",
            "substituted while big fit: {d:?}"
        );
    }
    let last = last.expect("replica 0 reached the point where big no longer fits");
    let (spent, _, _) = shared_ledger(&redis, PREFIX).await;
    assert!(
        spent + BIG_USD > LIMIT,
        "big still fitted: {spent} {last:?}"
    );

    // 2. The shared step, on the stale view of replica 2 (it saw the budget empty at start and
    // has settled nothing itself): the "big" it chooses is replaced by the admission script.
    let d = clients[2]
        .route(route_request(true))
        .await
        .unwrap()
        .into_inner();
    note(&d);
    assert_eq!(
        (d.model.as_str(), d.reason.as_str(), d.propensity),
        ("small", "budget_exhausted", 1.0),
        "{d:?}"
    );
    assert_eq!(
        recorded(&redis, PREFIX, &d.decision_id).await,
        (String::from("small"), 1.0),
        "Redis holds the decision as served"
    );
    let fb = clients[0].feedback(capped_feedback(&d)).await.unwrap();
    assert!(fb.get_ref().accepted, "{:?}", fb.get_ref());
    let log = std::fs::read_to_string(log_path(PREFIX, "r2")).unwrap();
    assert!(log.contains("shared budget substituted"), "{log}");

    // 3. 64 concurrent clients until even small no longer fits.
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let (clients, served, refusals) =
            (clients.clone(), Arc::clone(&served), Arc::clone(&refusals));
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            loop {
                let d = match clients[n % 3].clone().route(route_request(true)).await {
                    Ok(d) => d.into_inner(),
                    Err(s) => {
                        assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                        refusals.lock().unwrap().push(s.message().to_string());
                        return;
                    }
                };
                let fb = clients[(n + 1) % 3]
                    .clone()
                    .feedback(capped_feedback(&d))
                    .await
                    .unwrap();
                assert!(fb.get_ref().accepted && !fb.get_ref().duplicate);
                served.lock().unwrap().push((
                    d.decision_id.clone(),
                    d.model.clone(),
                    d.reason.clone(),
                    d.propensity,
                ));
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let served = served.lock().unwrap().clone();
    let (spent, settled_sum, settlements) = shared_ledger(&redis, PREFIX).await;
    let cost: f64 = served
        .iter()
        .map(|(_, m, _, _)| if m == "big" { BIG_USD } else { SMALL_USD })
        .sum();
    let substituted = served
        .iter()
        .filter(|(_, _, r, _)| r == "budget_exhausted")
        .count();
    let bigs = served.iter().filter(|(_, m, _, _)| m == "big").count();
    let mut in_script = 0;
    for i in 0..3 {
        let log = std::fs::read_to_string(log_path(PREFIX, &format!("r{i}"))).unwrap();
        in_script += log.matches("shared budget substituted").count();
    }
    println!(
        "cheapest at the shared cap: limit {LIMIT} USD, spent {spent:.6} USD by {} decisions \
         ({bigs} big, {} small; {substituted} substituted, {in_script} of them by the admission \
         script), {} refusals",
        served.len(),
        served.len() - bigs,
        refusals.lock().unwrap().len()
    );
    assert!(spent <= LIMIT + 1e-12, "spent {spent} over limit {LIMIT}");
    assert_eq!(settlements, served.len());
    assert!((settled_sum - spent).abs() < 1e-9 && (cost - spent).abs() < 1e-9);
    assert!(spent > LIMIT - SMALL_USD, "stopped before the cap: {spent}");
    for (id, model, reason, propensity) in &served {
        if reason == "budget_exhausted" {
            assert_eq!(model, "small");
        }
        assert!(*propensity > 0.0 && *propensity <= 1.0, "{propensity}");
        assert_eq!(
            recorded(&redis, PREFIX, id).await,
            (model.clone(), *propensity),
            "Redis holds decision {id} as served"
        );
    }
    let refusals = refusals.lock().unwrap();
    assert_eq!(refusals.len(), 64);
    assert!(
        refusals.iter().all(|m| m.contains("nor does the cheapest")),
        "{refusals:?}"
    );
}
