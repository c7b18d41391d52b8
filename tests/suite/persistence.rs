//! Restart and crash tests of the real binary on a temporary data dir, over gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use common::cli;
use common::served::ServedBinary;
use switchyard::config::DEFAULT_CONFIG_TOML;
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{
    ArmStats, FeedbackRequest, GetArmStatsRequest, Outcome, ResetArmsRequest, RouteRequest,
};
use switchyard::sim::trace::LoggedDecision;
use tonic::transport::Channel;

/// The built-in config without decay (so stats compare exactly across time) and with `extra`.
fn write_config(dir: &Path, storage: &str, pending_ttl_secs: f64) -> std::path::PathBuf {
    let text = DEFAULT_CONFIG_TOML
        .replace("half_life_secs = 86400.0", "half_life_secs = inf")
        .replace(
            "pending_ttl_secs = 3600.0",
            &format!("pending_ttl_secs = {pending_ttl_secs:?}"),
        );
    let text = format!("{text}\n[storage]\n{storage}\n");
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary on `config` and the caller's data dir `data`, which outlives it (restarts, the
/// offline tools).
fn serve(config: &Path, data: &Path) -> ServedBinary {
    ServedBinary::builder()
        .config(config)
        .data_dir(data)
        .start()
}

async fn client(served: &ServedBinary) -> RouteClient<Channel> {
    RouteClient::new(served.channel().await)
}

/// How long a SIGTERMed service may take to exit cleanly.
const STOP: Duration = Duration::from_secs(10);

/// `switchyard trace export` of the stopped service's data dir: every logged decision.
fn export(data: &Path) -> Vec<LoggedDecision> {
    cli::run_ok([
        OsStr::new("trace"),
        OsStr::new("export"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

async fn route(c: &mut RouteClient<Channel>) -> String {
    c.route(RouteRequest {
        task_class: "qa".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .decision_id
}

async fn feedback(c: &mut RouteClient<Channel>, id: &str, i: usize) -> bool {
    c.feedback(FeedbackRequest {
        decision_id: id.to_string(),
        outcome: Outcome::Success as i32,
        latency_ms: Some(200.0 + i as f64),
        cost_usd: Some(0.001),
        quality: Some(0.8),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .duplicate
}

async fn stats(c: &mut RouteClient<Channel>) -> Vec<ArmStats> {
    let mut arms = c
        .get_arm_stats(GetArmStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .arms;
    for a in &mut arms {
        a.traffic_share = 0.0; // decays with wall time by design
    }
    arms
}

fn successes(arms: &[ArmStats]) -> u64 {
    arms.iter().map(|a| a.successes).sum()
}

/// The arguments of `switchyard state show` on `data`.
fn show_args(data: &Path) -> [&OsStr; 4] {
    [
        OsStr::new("state"),
        OsStr::new("show"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ]
}

fn field(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_restores_stats_and_pending_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = write_config(tmp.path(), "durability = \"sync\"", 3600.0);
    let svc = serve(&cfg, &data);
    let mut c = client(&svc).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(route(&mut c).await);
    }
    for (i, id) in ids.iter().take(10).enumerate() {
        assert!(!feedback(&mut c, id, i).await);
    }
    let before = stats(&mut c).await;

    // A second instance on the same data dir, and the offline tools, are refused.
    let out = cli::run(show_args(&data));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another switchyard process"),
        "{err}"
    );
    svc.stop(STOP).await;

    let svc = serve(&cfg, &data);
    let mut c = client(&svc).await;
    assert_eq!(stats(&mut c).await, before);
    // Pending decisions accept their feedback; the ones already counted are duplicates.
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(feedback(&mut c, id, i).await, i < 10, "decision {i}");
    }
    assert_eq!(successes(&stats(&mut c).await), 20);

    // Admin reset over gRPC.
    let reset = c
        .reset_arms(ResetArmsRequest {
            task_class: "qa".into(),
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .reset;
    assert!(reset > 0);
    let after = stats(&mut c).await;
    assert_eq!(
        after
            .iter()
            .filter(|a| a.task_class == "qa")
            .map(|a| a.successes)
            .sum::<u64>(),
        0
    );
    drop(c);
    svc.stop(STOP).await;

    // The event log exports as logged traffic.
    let lines = export(&data);
    assert_eq!(lines.len(), 20);
    assert!(lines
        .iter()
        .all(|d| d.outcome == Some(switchyard::policy::Outcome::Success)));
    assert!(lines.iter().all(|d| d.quality == Some(0.8)));
}

async fn crash_run(storage: &str, wait_before_kill: Duration) {
    const N: usize = 40;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = write_config(tmp.path(), storage, 3600.0);
    let mut svc = serve(&cfg, &data);
    let c = client(&svc).await;
    let mut ids = Vec::new();
    {
        let mut c = c.clone();
        for _ in 0..N {
            ids.push(route(&mut c).await);
        }
    }
    // Feedbacks from 8 concurrent clients (they share group flushes in sync mode).
    let mut tasks = Vec::new();
    for (k, chunk) in ids.chunks(N / 8).enumerate() {
        let mut c = c.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for (i, id) in chunk.iter().enumerate() {
                assert!(!feedback(&mut c, id, k * 100 + i).await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(wait_before_kill).await;
    svc.kill();

    let svc = serve(&cfg, &data);
    let mut c = client(&svc).await;
    assert_eq!(successes(&stats(&mut c).await), N as u64);
    for (i, id) in ids.iter().enumerate() {
        assert!(feedback(&mut c, id, i).await, "decision {i} counted twice");
    }
    assert_eq!(successes(&stats(&mut c).await), N as u64);
    drop(c);
    svc.stop(STOP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_keeps_every_acknowledged_feedback_through_sigkill() {
    crash_run("durability = \"sync\"", Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_mode_loses_nothing_older_than_the_flush_window() {
    // Everything acknowledged more than flush_interval_ms before the crash survives.
    crash_run(
        "durability = \"periodic\"\nflush_interval_ms = 100",
        Duration::from_millis(400),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_decisions_expire_and_the_event_log_is_trimmed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = write_config(
        tmp.path(),
        "durability = \"periodic\"\nevent_log_max_events = 50",
        1.0,
    );
    let svc = serve(&cfg, &data);
    let mut c = client(&svc).await;
    let mut last = String::new();
    for _ in 0..300 {
        last = route(&mut c).await;
    }
    // The TTL is one second: poll until the newest decision is gone (Feedback NOT_FOUND), and
    // with it every older one.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = c
            .feedback(FeedbackRequest {
                decision_id: last.clone(),
                outcome: Outcome::Success as i32,
                ..Default::default()
            })
            .await;
        match r {
            Err(e) if e.code() == tonic::Code::NotFound => break,
            Err(e) => panic!("{e:?}"),
            Ok(_) => {
                // Accepted while still live; its outcome is counted, the decision stays until
                // the TTL passes.
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "decisions never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c);
    svc.stop(STOP).await;
    let text = cli::run_ok(show_args(&data));
    assert_eq!(field(&text, "pending decisions"), 0, "{text}");
    assert!(field(&text, "decisions") <= 50, "{text}");
}

#[test]
fn offline_reset_and_schema_and_lock_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The offline tools never create a missing data dir.
    let out = cli::run([
        OsStr::new("state"),
        OsStr::new("reset"),
        OsStr::new("--task-class"),
        OsStr::new("qa"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!data.exists());
    let out = cli::run(show_args(&data));
    assert!(!out.status.success());
    assert!(!data.exists());
    // A data dir made by the server has the current schema.
    {
        let store = switchyard::store::Store::open_with(&data, 8).unwrap();
        store.flush().unwrap();
    }
    let out = cli::run(show_args(&data));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        field(&text, "schema"),
        u64::from(switchyard::store::SCHEMA_VERSION)
    );

    // While a server holds the dir, the offline tools say so and what to do. "listening on" comes
    // only once the data dir is open and restored: the restore's log line is already written.
    let cfg = write_config(tmp.path(), "durability = \"sync\"", 3600.0);
    let mut served = ServedBinary::builder()
        .config(&cfg)
        .data_dir(&data)
        .env("RUST_LOG", "info")
        .capture_stderr()
        .start();
    let out = cli::run(show_args(&data));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another switchyard process"),
        "{err}"
    );
    assert!(
        err.contains("stop that process or use another --data-dir"),
        "{err}"
    );
    served.kill();
    let log = served.stderr();
    assert!(log.contains("state restored from data dir"), "{log}");

    // A schema this build does not know is refused naming both versions and what to do.
    let mut err = String::new();
    for _ in 0..200 {
        match sled::open(&data) {
            Ok(db) => {
                let meta = db.open_tree("meta").unwrap();
                meta.insert("schema", &99u32.to_be_bytes()).unwrap();
                db.flush().unwrap();
                drop((meta, db));
                common::wait_sled_unlocked(&data);
                break;
            }
            // The killed server's lock goes with its process; wait for the OS to release it.
            Err(e) => err = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = cli::run(show_args(&data));
    assert!(!out.status.success(), "{err}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema version 99"), "{err}");
    assert!(
        err.contains(&format!("expects {}", switchyard::store::SCHEMA_VERSION)),
        "{err}"
    );
    assert!(err.contains("move the data dir aside"), "{err}");
}

/// A data dir whose db file is gone is refused at start naming the file, never opened empty.
#[test]
fn a_deleted_db_is_refused_at_start_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    {
        let store = switchyard::store::Store::open_with(&data, 8).unwrap();
        store.flush().unwrap();
    }
    let db = data.join("db");
    assert!(db.is_file());
    std::fs::remove_file(&db).unwrap();
    let out = ServedBinary::builder().data_dir(&data).output();
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(101), "panicked");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("restore a backup"), "{err}");
    assert!(!db.exists(), "a new empty db was created");
}

/// Routes `n` requests at once (so that write cycles take several decisions, stored as one
/// segment) and returns their decision ids.
async fn route_concurrently(c: &RouteClient<Channel>, n: usize) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let mut c = c.clone();
        tasks.spawn(async move { route(&mut c).await });
    }
    tasks.join_all().await
}

/// `policy.seed` fixes the policy's draws, not decision ids. A seeded service restarted on its
/// data dir after SIGKILL, and a second one beside it, hand out ids the first never did, and
/// every Feedback after the restart is accepted and persisted. (Before ids were salted per
/// process, the restarted service drew its last run's ids again, and its writer refused the data
/// dir as corrupt when an old id's decision sat in a segment.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_service_never_repeats_a_decision_id_across_restarts_or_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = write_config(tmp.path(), "durability = \"sync\"", 3600.0);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("[policy]\n", "[policy]\nseed = 7\n")).unwrap();

    let mut first = serve(&cfg, &data);
    let c = client(&first).await;
    let before = route_concurrently(&c, 40).await;
    for (i, id) in before.iter().enumerate().take(20) {
        let mut c = c.clone();
        assert!(!feedback(&mut c, id, i).await, "{id}");
    }
    drop(c);
    first.kill();

    let again = serve(&cfg, &data);
    let c = client(&again).await;
    let after = route_concurrently(&c, 40).await;
    let replica = ServedBinary::builder().config(&cfg).start();
    let beside = route_concurrently(&client(&replica).await, 40).await;
    for (i, id) in after.iter().enumerate() {
        let mut c = c.clone();
        assert!(!feedback(&mut c, id, i).await, "{id}");
    }
    let mut all: Vec<&String> = before.iter().chain(&after).chain(&beside).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 120, "a decision id was handed out twice");
    drop(c);
    again.stop(STOP).await;

    // Every decision is in the log once, with the outcome its Feedback reported.
    let logged = export(&data);
    let mut ids: Vec<&str> = logged.iter().map(|d| d.decision_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((logged.len(), ids.len()), (80, 80));
    for id in before.iter().take(20).chain(&after) {
        let d = logged.iter().find(|d| d.decision_id == *id);
        assert_eq!(
            d.and_then(|d| d.outcome),
            Some(switchyard::policy::Outcome::Success),
            "{id}"
        );
    }
}
