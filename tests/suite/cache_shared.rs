//! The response cache beyond one process, over the real binary: entries survive a restart (with
//! their age) and their invalidation reaches the disk; in cluster mode (a real `redis-server`,
//! two replicas) an entry stored via one replica hits via the other, exact and semantic, an
//! invalidation via one removes it everywhere, and a Redis outage leaves each replica its local
//! cache, counted in a metric. Every wait polls a condition with a generous deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::redis::RedisServer as Redis;
use common::served::ServedBinary;
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{
    CacheStats, FeedbackRequest, GetArmStatsRequest, InvalidateCacheRequest, Outcome, RouteRequest,
    RouteResponse,
};
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(60);

type Client = RouteClient<Channel>;

/// Two models, an exact class `qa` and a semantic class `sem` (entries live `ttl_secs`), and
/// `extra` (a `[cluster]` section).
fn config(dir: &Path, ttl_secs: f64, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "[server]\ndrain_secs = 0.0\n\
         [models.good]\nprovider = \"p1\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n\
         [models.poor]\nprovider = \"p2\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n\
         [task_classes.qa]\nmodels = [\"good\", \"poor\"]\n\
         cache = {{ mode = \"exact\", ttl_secs = {ttl_secs:?} }}\n\
         [task_classes.sem]\nmodels = [\"good\", \"poor\"]\n\
         cache = {{ mode = \"semantic\", ttl_secs = {ttl_secs:?} }}\n\
         [storage]\ndurability = \"periodic\"\n{extra}"
    );
    let path = dir.join(format!("config-{ttl_secs}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// `switchyard serve` on a free port with `config`, `data` and its metrics endpoint, its debug
/// log in the temporary dir's file `log` (emptied first: each start's log alone).
fn serve(config: &Path, data: &Path, log: &str) -> ServedBinary {
    let log = std::env::temp_dir().join(log);
    let _ = std::fs::remove_file(&log);
    ServedBinary::builder()
        .config(config)
        .data_dir(data)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "switchyard=debug")
        .log_to(&log)
        .start()
}

async fn client(s: &ServedBinary) -> Client {
    RouteClient::new(s.channel().await)
}

async fn metric(s: &ServedBinary, series: &str) -> f64 {
    let url = s.metrics.as_deref().expect("a metrics listener");
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn route(c: &mut Client, class: &str, prompt: &str) -> RouteResponse {
    c.route(RouteRequest {
        task_class: class.into(),
        prompt: prompt.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// Routes `prompt` (a miss) and stores `response` for it; returns the decision.
async fn store(c: &mut Client, class: &str, prompt: &str, response: &str) -> RouteResponse {
    let d = route(c, class, prompt).await;
    assert!(d.cache_hit.is_none(), "{prompt:?} hit: {d:?}");
    c.feedback(FeedbackRequest {
        decision_id: d.decision_id.clone(),
        outcome: Outcome::Success as i32,
        latency_ms: Some(900.0),
        cost_usd: Some(0.003),
        quality: Some(0.9),
        response: response.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    d
}

async fn stats(c: &mut Client, class: &str) -> CacheStats {
    c.get_arm_stats(GetArmStatsRequest {
        task_class: class.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .cache
    .remove(0)
}

async fn invalidate(c: &mut Client, class: &str, prefix: &str) -> u64 {
    c.invalidate_cache(InvalidateCacheRequest {
        task_class: class.into(),
        prefix: prefix.into(),
        tag: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .invalidated
}

async fn wait_for<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < DEADLINE, "condition not reached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const CAPITAL: &str = "What is the capital of France?";
const BOILING: &str = "At what temperature does water boil at sea level?";
const BOILING_AGAIN: &str = "at what temperature does water boil at sea level";

#[tokio::test]
async fn entries_survive_a_restart_with_their_age_and_invalidation_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let long = config(dir.path(), 3600.0, "");

    let s = serve(&long, &data, "switchyard-cache-restart.log");
    let mut c = client(&s).await;
    let before_store = Instant::now();
    let exact = store(&mut c, "qa", CAPITAL, "Paris").await;
    let semantic = store(&mut c, "sem", BOILING, "100 °C").await;
    let stored = Instant::now();
    s.stop(DEADLINE).await;

    let s = serve(&long, &data, "switchyard-cache-restart.log");
    let mut c = client(&s).await;
    let asked = Instant::now();
    let hit = route(&mut c, "qa", CAPITAL).await;
    let upper = before_store.elapsed();
    let h = hit.cache_hit.expect("the exact entry survived the restart");
    assert_eq!(
        (h.response.as_str(), h.source_decision_id.as_str()),
        ("Paris", exact.decision_id.as_str())
    );
    // Its age runs on across the restart: at least since the Feedback returned, at most since
    // the Route before it.
    let lower = asked.duration_since(stored).as_millis() as i64;
    assert!(
        h.age_ms >= lower && h.age_ms <= upper.as_millis() as i64,
        "age {} ms outside [{lower}, {}]",
        h.age_ms,
        upper.as_millis()
    );
    let sem = route(&mut c, "sem", BOILING_AGAIN).await.cache_hit;
    let sem = sem.expect("the semantic entry survived the restart");
    assert_eq!(
        (sem.response.as_str(), sem.source_decision_id.as_str()),
        ("100 °C", semantic.decision_id.as_str())
    );
    assert_eq!(stats(&mut c, "qa").await.restored, 1);
    assert_eq!(stats(&mut c, "sem").await.restored, 1);

    // Invalidated, then restarted: gone from the disk too; the other class keeps its entry.
    assert_eq!(invalidate(&mut c, "qa", "what is the capital").await, 1);
    s.stop(DEADLINE).await;
    let s = serve(&long, &data, "switchyard-cache-restart.log");
    let mut c = client(&s).await;
    assert!(route(&mut c, "qa", CAPITAL).await.cache_hit.is_none());
    assert_eq!(stats(&mut c, "qa").await.restored, 0);
    assert!(route(&mut c, "sem", BOILING).await.cache_hit.is_some());
    s.stop(DEADLINE).await;

    // A restart whose config gives entries a shorter life drops those already older at load.
    let short = config(dir.path(), 0.5, "");
    wait_for(|| async { stored.elapsed() > Duration::from_millis(600) }).await;
    let s = serve(&short, &data, "switchyard-cache-restart.log");
    let mut c = client(&s).await;
    assert_eq!(stats(&mut c, "sem").await.restored, 0);
    assert!(route(&mut c, "sem", BOILING).await.cache_hit.is_none());
    s.stop(DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_entries_and_invalidations_through_redis() {
    let mut redis = Redis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let replica = |id: &str| {
        let cluster = format!(
            "[cluster]\nredis_url = \"{}\"\nkey_prefix = \"sy\"\nreplica_id = \"{id}\"\n\
             sync_interval_ms = 250\nheartbeat_ms = 200\nredis_timeout_ms = 1000\n",
            redis.url()
        );
        let sub = dir.path().join(id);
        std::fs::create_dir_all(&sub).unwrap();
        let cfg = config(&sub, 3600.0, &cluster);
        serve(
            &cfg,
            &sub.join("data"),
            &format!("switchyard-cache-{id}.log"),
        )
    };
    let (a, b) = (replica("a"), replica("b"));
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);

    // Exact: stored via A, found in Redis by B's miss.
    let exact = store(&mut ca, "qa", CAPITAL, "Paris").await;
    let mut hit = None;
    let start = Instant::now();
    let mut tries = 0;
    while hit.is_none() {
        assert!(start.elapsed() < DEADLINE, "no hit via B");
        hit = route(&mut cb, "qa", CAPITAL).await.cache_hit;
        tries += 1;
    }
    println!(
        "exact entry stored via A hit via B after {:?} ({tries} Routes)",
        start.elapsed()
    );
    let h = hit.unwrap();
    assert_eq!(
        (h.response.as_str(), h.source_decision_id.as_str()),
        ("Paris", exact.decision_id.as_str())
    );
    assert_eq!(stats(&mut cb, "qa").await.shared_hits, 1);

    // Semantic: stored via A, pulled into B's own index; a near copy hits there.
    let semantic = store(&mut ca, "sem", BOILING, "100 °C").await;
    let start = Instant::now();
    wait_for(|| {
        let mut cb = cb.clone();
        async move { stats(&mut cb, "sem").await.adopted == 1 }
    })
    .await;
    println!(
        "semantic entry stored via A adopted by B after {:?}",
        start.elapsed()
    );
    let h = route(&mut cb, "sem", BOILING_AGAIN)
        .await
        .cache_hit
        .unwrap();
    assert_eq!(
        (h.response.as_str(), h.source_decision_id.as_str()),
        ("100 °C", semantic.decision_id.as_str())
    );
    assert!(route(&mut ca, "sem", BOILING_AGAIN)
        .await
        .cache_hit
        .is_some());

    // Invalidated via B: gone from Redis at once, and from A within a sync interval.
    assert_eq!(invalidate(&mut cb, "", "").await, 2);
    assert_eq!(
        redis.keys("sy:cache:e:*").await.unwrap(),
        Vec::<String>::new()
    );
    let start = Instant::now();
    wait_for(|| {
        let mut ca = ca.clone();
        async move {
            stats(&mut ca, "qa").await.entries == 0 && stats(&mut ca, "sem").await.entries == 0
        }
    })
    .await;
    println!(
        "invalidation via B applied on A after {:?}",
        start.elapsed()
    );
    assert!(route(&mut ca, "qa", CAPITAL).await.cache_hit.is_none());
    assert!(route(&mut ca, "sem", BOILING_AGAIN)
        .await
        .cache_hit
        .is_none());

    // Redis down: A stores and hits locally; B cannot see the entry; the fallbacks are counted.
    redis.stop();
    let prompt = "Who wrote The Old Man and the Sea?";
    store(&mut ca, "qa", prompt, "Hemingway").await;
    let h = route(&mut ca, "qa", prompt).await.cache_hit.unwrap();
    assert_eq!(h.response, "Hemingway");
    assert!(route(&mut cb, "qa", prompt).await.cache_hit.is_none());
    let series = "switchyard_cache_redis_local_only_total";
    wait_for(|| async { metric(&a, series).await >= 2.0 && metric(&b, series).await >= 1.0 }).await;
}
