//! Damaged data dirs and a full disk, over the real binary: a truncated or garbled db is refused
//! at start naming the data dir (never a panic, never an empty start), and a filled-then-freed
//! disk recovers without a restart, keeping every acknowledged Feedback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::cli;
use common::served::{ServeBuilder, ServedBinary};
use common::webhook;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard::config::DEFAULT_CONFIG_TOML;
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{
    FeedbackRequest, GetArmStatsRequest, GetBudgetsRequest, Outcome, RouteRequest,
};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const STORE_SERVICE: &str = "switchyard.v1.Store";

/// The built-in config without decay (so success counts compare exactly) in sync mode.
fn write_config(dir: &Path) -> PathBuf {
    let text = DEFAULT_CONFIG_TOML.replace("half_life_secs = 86400.0", "half_life_secs = inf");
    let text = format!("{text}\n[storage]\ndurability = \"sync\"\n");
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// How long a `serve` may take to stop.
const STOP: Duration = Duration::from_secs(20);

/// `serve` on `config` and `data` with its stderr kept, for a start that may be refused.
fn watched(config: &Path, data: &Path) -> ServeBuilder {
    ServedBinary::builder()
        .config(config)
        .data_dir(data)
        .capture_stderr()
}

/// `serve` on `config` and `data` whose log goes to `config`'s folder (`serve.log`, appended by
/// every start), so it never blocks and the test reads it after the process is gone.
fn logged(config: &Path, data: &Path) -> ServeBuilder {
    ServedBinary::builder()
        .config(config)
        .data_dir(data)
        .log_to(&config.with_file_name("serve.log"))
}

async fn client(s: &ServedBinary) -> RouteClient<Channel> {
    RouteClient::new(s.channel().await)
}

async fn route(c: &mut RouteClient<Channel>) -> Result<String, tonic::Status> {
    c.route(RouteRequest {
        task_class: "qa".into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().decision_id)
}

async fn feedback(c: &mut RouteClient<Channel>, id: &str) -> Result<(), tonic::Status> {
    c.feedback(FeedbackRequest {
        decision_id: id.to_string(),
        outcome: Outcome::Success as i32,
        latency_ms: Some(200.0),
        cost_usd: Some(0.001),
        quality: Some(0.8),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

async fn successes(c: &mut RouteClient<Channel>) -> u64 {
    c.get_arm_stats(GetArmStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .arms
        .iter()
        .map(|a| a.successes)
        .sum()
}

/// Starts, records `n` successes, stops gracefully: a data dir with state to lose.
async fn data_dir_with_state(config: &Path, data: &Path, n: usize) {
    assert_eq!(add_state(config, data, n).await, n as u64);
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Damages the data dir with `damage`, then asserts `serve` either refuses it clearly (non-zero,
/// no panic, naming the data dir and what to do) or starts with all `n` successes intact.
async fn damaged_db_is_refused_or_intact(damage: fn(&Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = write_config(tmp.path());
    let n = 12;
    data_dir_with_state(&cfg, &data, n).await;
    let files = files_under(&data);
    assert!(!files.is_empty());
    for f in &files {
        damage(f);
    }

    let out = match watched(&cfg, &data).try_start() {
        Ok(mut s) => {
            let mut c = client(&s).await;
            let got = successes(&mut c).await;
            drop(c);
            let _ = s.terminate(STOP).await;
            assert_eq!(got, n as u64, "a damaged data dir started with lost state");
            return;
        }
        Err(out) => out,
    };
    let status = out.status;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "exit {status:?}, stderr {err}");
    assert_ne!(status.code(), Some(101), "panicked: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&data.display().to_string()), "{err}");
    assert!(
        err.contains("restore a backup") || err.contains("state reset"),
        "no advice in {err}"
    );
}

fn truncate_half(f: &Path) {
    let len = std::fs::metadata(f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

/// Overwrites a quarter of the file around its middle with a fixed non-zero pattern.
fn garble_middle(f: &Path) {
    use std::io::{Seek, SeekFrom};
    let len = std::fs::metadata(f).unwrap().len();
    if len < 4 {
        return;
    }
    let garbage: Vec<u8> = (0..len / 4)
        .map(|i| (i as u8).wrapping_mul(37) ^ 0xA5)
        .collect();
    let mut file = std::fs::OpenOptions::new().write(true).open(f).unwrap();
    file.seek(SeekFrom::Start(len * 3 / 8)).unwrap();
    file.write_all(&garbage).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_db_is_refused_naming_the_data_dir() {
    damaged_db_is_refused_or_intact(truncate_half).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_db_is_refused_naming_the_data_dir() {
    damaged_db_is_refused_or_intact(garble_middle).await;
}

/// A mounted tmpfs, unmounted when dropped (even when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

async fn store_health(h: &mut HealthClient<Channel>) -> Option<i32> {
    h.check(HealthCheckRequest {
        service: STORE_SERVICE.into(),
    })
    .await
    .ok()
    .map(|r| r.into_inner().status)
}

/// Polls `cond` every 20 ms for up to 30 s.
async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_recovers_without_restart_and_keeps_acknowledged_feedback() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = match Tmpfs::mount(&mnt, "8m") {
        Ok(g) => g,
        Err(why) => {
            println!("skipped: mounting a tmpfs was refused: {why}");
            return;
        }
    };
    // Leave about 1 MiB free: enough to start, little enough to fill with Feedback.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0x5Au8; 7 * 1024 * 1024]).unwrap();
    let data = mnt.join("data");
    let cfg = write_config(tmp.path());
    let mut svc = logged(&cfg, &data).start();
    let mut c = client(&svc).await;
    let mut h = HealthClient::new(svc.channel().await);
    assert_eq!(
        store_health(&mut h).await,
        Some(ServingStatus::Serving as i32)
    );

    // Decisions routed before the disk fills, in case Route itself needs the disk.
    let mut spare = Vec::new();
    for _ in 0..50 {
        spare.push(route(&mut c).await.unwrap());
    }
    let mut acked = 0u64;
    let mut refused = 0u64;
    for _ in 0..200_000 {
        let id = match route(&mut c).await {
            Ok(id) => id,
            Err(_) => match spare.pop() {
                Some(id) => id,
                None => break,
            },
        };
        match feedback(&mut c, &id).await {
            Ok(()) => acked += 1,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                refused += 1;
                break;
            }
        }
    }
    assert_eq!(refused, 1, "the disk never filled after {acked} Feedbacks");
    println!("disk full after {acked} acknowledged Feedbacks");
    wait_for("Store health NOT_SERVING", || {
        let mut h = h.clone();
        async move { store_health(&mut h).await == Some(ServingStatus::NotServing as i32) }
    })
    .await;

    std::fs::remove_file(&filler).unwrap();
    wait_for("Store health SERVING again", || {
        let mut h = h.clone();
        async move { store_health(&mut h).await == Some(ServingStatus::Serving as i32) }
    })
    .await;
    for _ in 0..20 {
        let id = route(&mut c).await.unwrap();
        feedback(&mut c, &id).await.unwrap();
        acked += 1;
    }
    let in_memory = successes(&mut c).await;
    assert!(in_memory >= acked, "{in_memory} < {acked} acknowledged");
    drop(c);
    drop(h);
    let status = svc.terminate(STOP).await;
    assert!(status.success(), "graceful stop after recovery: {status:?}");

    let mut svc = logged(&cfg, &data).start();
    let mut c = client(&svc).await;
    let restored = successes(&mut c).await;
    assert!(
        restored >= acked,
        "{restored} restored < {acked} acknowledged"
    );
    assert_eq!(restored, in_memory, "memory and disk disagree");
    drop(c);
    assert!(svc.terminate(STOP).await.success());
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(log.contains("cannot persist engine state"), "{log}");
    assert!(log.contains("storage writer recovered"), "{log}");
}

/// How many budget alerts the service published for `threshold` (its `/metrics` counter, which
/// counts an alert when it is handed to the webhook's delivery, not when it arrives).
async fn published_alerts(metrics: &str, threshold: &str) -> u64 {
    let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
    let want = format!("threshold=\"{threshold}\"");
    text.lines()
        .filter(|l| l.starts_with("switchyard_budget_alerts_total{") && l.contains(&want))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// Alerts are published only for committed spend: a Feedback that crosses a budget's alert
/// threshold while the disk is full (its sync write fails: UNAVAILABLE) publishes nothing; once
/// the disk has room and the writer commits that spend, the alert goes out, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_alert_is_published_only_once_the_spend_that_crossed_it_is_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _guard = match Tmpfs::mount(&mnt, "8m") {
        Ok(g) => g,
        Err(why) => {
            println!("skipped: mounting a tmpfs was refused: {why}");
            return;
        }
    };
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![0x5Au8; 7 * 1024 * 1024]).unwrap();
    let data = mnt.join("data");
    let (url, received) = webhook::webhook().await;
    let cfg = write_config(tmp.path());
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{text}\n[budgets.team]\nperiod = \"daily\"\nlimit_usd = 1.0\n\
             alert_thresholds = [0.5]\n[alerts]\nwebhook_url = \"{url}\"\n"
        ),
    )
    .unwrap();
    let mut svc = logged(&cfg, &data)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .start();
    let metrics = svc.metrics.clone().unwrap();
    let mut c = client(&svc).await;
    let h = HealthClient::new(svc.channel().await);
    // The budgeted decision is made while the disk has room.
    let budgeted = c
        .route(RouteRequest {
            task_class: "qa".into(),
            budget_key: "team".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decision_id;
    let mut spare = Vec::new();
    for _ in 0..50 {
        spare.push(route(&mut c).await.unwrap());
    }
    // Fill the disk with unbudgeted Feedback until a sync write fails.
    let mut filled = false;
    for _ in 0..200_000 {
        let id = match route(&mut c).await {
            Ok(id) => id,
            Err(_) => spare.pop().unwrap(),
        };
        if let Err(s) = feedback(&mut c, &id).await {
            assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
            filled = true;
            break;
        }
    }
    assert!(filled, "the disk never filled");
    assert_eq!(published_alerts(&metrics, "0.5").await, 0);

    // The crossing Feedback: $0.60 of a $1.00 limit, past the 0.5 threshold; its write fails.
    let crossing = FeedbackRequest {
        decision_id: budgeted,
        outcome: Outcome::Success as i32,
        latency_ms: Some(200.0),
        cost_usd: Some(0.6),
        ..Default::default()
    };
    let err = c.feedback(crossing.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let b = c
        .get_budgets(GetBudgetsRequest {
            budget_key: "team".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .budgets
        .remove(0);
    assert_eq!(b.alert_thresholds_crossed, vec![0.5], "{b:?}");
    // Another write fails after it (the writer retried and still cannot write): still nothing.
    let id = spare.pop().unwrap();
    let err = feedback(&mut c, &id).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(
        published_alerts(&metrics, "0.5").await,
        0,
        "an alert was published for spend that was not committed"
    );
    assert!(received.lock().unwrap().is_empty());

    // Room again: the writer commits the spend, then the alert goes out once.
    std::fs::remove_file(&filler).unwrap();
    wait_for("Store health SERVING again", || {
        let mut h = h.clone();
        async move { store_health(&mut h).await == Some(ServingStatus::Serving as i32) }
    })
    .await;
    wait_for("the alert at the webhook", || {
        let r = received.clone();
        async move { !r.lock().unwrap().is_empty() }
    })
    .await;
    // A repeated Feedback for the same decision (a duplicate) crosses nothing again.
    let again = c.feedback(crossing).await.unwrap().into_inner();
    assert!(again.duplicate, "{again:?}");
    let id = route(&mut c).await.unwrap();
    feedback(&mut c, &id).await.unwrap();
    assert_eq!(published_alerts(&metrics, "0.5").await, 1);
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["budget_key"], "team", "{got:?}");
    assert_eq!(got[0]["threshold"], 0.5, "{got:?}");
    assert!(got[0]["spent_usd"].as_f64().unwrap() >= 0.6, "{got:?}");
    drop(c);
    drop(h);
    assert!(svc.terminate(STOP).await.success());
}

/// The db's own record of its last flush against the manifest's: a db one flush ahead of its
/// manifest (the process stopped between sled's flush and the manifest's write) starts and the
/// manifest is rewritten; a manifest older by more than one flush is refused, naming the
/// manifest; `state check` says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_db_one_flush_ahead_of_its_manifest_starts_and_further_ahead_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = write_config(tmp.path());
    data_dir_with_state(&cfg, &data, 3).await;
    let manifest = data.join("manifest");
    let behind = std::fs::read(&manifest).unwrap();
    // `state check` opens the data dir, which ends in a flush: the db and the manifest move one
    // flush on. The old manifest back in place is the crash between the db's flush and the
    // manifest's write.
    cli::run_ok(state_args("check", &data));
    assert_ne!(std::fs::read(&manifest).unwrap(), behind);
    std::fs::write(&manifest, &behind).unwrap();
    let text = cli::run_ok(state_args("check", &data));
    assert!(
        text.contains("stopped between a flush and its manifest's write"),
        "{text}"
    );
    assert!(
        text.contains("ok: every tree matches the manifest"),
        "{text}"
    );
    let behind = std::fs::read(&manifest).unwrap();
    cli::run_ok(state_args("check", &data));
    std::fs::write(&manifest, &behind).unwrap();
    // Over the binary: it starts with the state intact and rewrites the manifest.
    assert_eq!(add_state(&cfg, &data, 2).await, 5);
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(
        log.contains("stopped between a flush and its manifest's write"),
        "{log}"
    );
    let out = cli::run(state_args("check", &data));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok: every tree matches the manifest"),
        "{text}"
    );

    // That serve flushed several times since: the same old manifest is now far behind.
    std::fs::write(&manifest, &behind).unwrap();
    refused(
        &cfg,
        &data,
        &manifest,
        "older than the db by more than one flush",
    );
}

/// The arguments of `switchyard state CMD` on `data`.
fn state_args<'a>(cmd: &'a str, data: &'a Path) -> [&'a OsStr; 4] {
    [
        OsStr::new("state"),
        OsStr::new(cmd),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ]
}

/// Starts, routes and settles `n` more decisions, stops gracefully; returns the successes the
/// service counted before stopping.
async fn add_state(config: &Path, data: &Path, n: usize) -> u64 {
    let mut svc = logged(config, data).start();
    let mut c = client(&svc).await;
    for _ in 0..n {
        let id = route(&mut c).await.unwrap();
        feedback(&mut c, &id).await.unwrap();
    }
    let counted = successes(&mut c).await;
    drop(c);
    assert!(svc.terminate(STOP).await.success());
    counted
}

fn copy_files(from: &Path, to: &Path, skip: &str) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        if p.is_file() && name != skip {
            std::fs::copy(&p, to.join(name)).unwrap();
        }
    }
}

/// Asserts `serve` and `state check` both refuse `data`, naming `file` and saying `why` and what
/// to do, without a panic.
fn refused(cfg: &Path, data: &Path, file: &Path, why: &str) {
    let Err(out) = watched(cfg, data).try_start() else {
        panic!("started on a damaged data dir");
    };
    let status = out.status;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{err}");
    assert_ne!(status.code(), Some(101), "panicked: {err}");
    for want in [&file.display().to_string(), why, "restore a backup"] {
        assert!(err.contains(want), "no {want:?} in {err}");
    }
    let out = cli::run(state_args("check", data));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(why), "{err}");
}

/// The manifest: `state check` verifies every tree of a cleanly stopped data dir; a db rolled back
/// to an older copy under a newer manifest, and a deleted db beside its manifest, are refused at
/// start and by `state check`, naming the file, never opened with state missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_refuses_a_rolled_back_or_deleted_db() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = write_config(tmp.path());
    data_dir_with_state(&cfg, &data, 5).await;
    let text = cli::run_ok(state_args("check", &data));
    assert!(
        text.contains("ok: every tree matches the manifest"),
        "{text}"
    );
    assert!(text.contains("tree decisions: 5 records"), "{text}");

    // An older copy of the db (everything but the manifest), then more acknowledged state.
    let old = tmp.path().join("old");
    copy_files(&data, &old, "manifest");
    assert_eq!(add_state(&cfg, &data, 4).await, 9);
    let out = cli::run(state_args("check", &data));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tree decisions: 9 records"));
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && p.file_name().unwrap() != "manifest" {
            std::fs::remove_file(p).unwrap();
        }
    }
    copy_files(&old, &data, "manifest");
    refused(&cfg, &data, &data.join("db"), "flushed writes are missing");

    // The db deleted (sled's conf too): the manifest says there was one.
    std::fs::remove_file(data.join("db")).unwrap();
    std::fs::remove_file(data.join("conf")).unwrap();
    refused(
        &cfg,
        &data,
        &data.join("db"),
        "the db file is missing but the data dir has a manifest",
    );
    assert!(!data.join("db").exists(), "a new empty db was created");
}

/// Writes `value` at `key` of `tree` with sled directly (as a build that stored a bad value would)
/// and drops the manifest, so that the record, not the edit, is what start meets.
fn poke(data: &Path, tree: &str, key: &[u8], value: &[u8]) {
    let mut last = String::new();
    for _ in 0..250 {
        match sled::open(data) {
            Ok(db) => {
                db.open_tree(tree).unwrap().insert(key, value).unwrap();
                db.flush().unwrap();
                drop(db);
                std::fs::remove_file(data.join("manifest")).unwrap();
                common::wait_sled_unlocked(data);
                return;
            }
            // A stopped server's lock goes with its process.
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("cannot open {}: {last}", data.display());
}

/// The arguments of `switchyard state backup` into `to` from the service at `addr`.
fn backup_args<'a>(to: &'a Path, addr: &'a str) -> [&'a OsStr; 6] {
    [
        OsStr::new("state"),
        OsStr::new("backup"),
        OsStr::new("--to"),
        to.as_os_str(),
        OsStr::new("--addr"),
        OsStr::new(addr),
    ]
}

fn first_key(data: &Path, tree: &str) -> Vec<u8> {
    let db = sled::open(data).unwrap();
    let k = db
        .open_tree(tree)
        .unwrap()
        .first()
        .unwrap()
        .unwrap()
        .0
        .to_vec();
    drop(db);
    k
}

/// A backup made while serving (the admin RPC, through `state backup`) holds what was
/// acknowledged before it and nothing after; `state restore` makes a data dir of it that starts
/// with exactly that. On the restored dir: a bad arm record is skipped at start (logged naming
/// it); a bad ledger record refuses start naming it until `state repair` drops it (and says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_while_serving_restores_and_bad_records_are_skipped_or_refused_until_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = write_config(tmp.path());
    let mut svc = logged(&cfg, &data).start();
    let mut c = client(&svc).await;
    for _ in 0..6 {
        let id = route(&mut c).await.unwrap();
        feedback(&mut c, &id).await.unwrap();
    }
    let backup = tmp.path().join("backup");
    let text = cli::run_ok(backup_args(&backup, &svc.addr));
    assert!(text.contains("backed up"), "{text}");
    // A second backup into the same (now full) directory is refused, saying why.
    let out = cli::run(backup_args(&backup, &svc.addr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("FailedPrecondition") && err.contains("not empty"),
        "{err}"
    );
    for _ in 0..3 {
        let id = route(&mut c).await.unwrap();
        feedback(&mut c, &id).await.unwrap();
    }
    assert_eq!(successes(&mut c).await, 9);
    drop(c);
    assert!(svc.terminate(STOP).await.success());

    let restored = tmp.path().join("restored");
    cli::run_ok([
        OsStr::new("state"),
        OsStr::new("restore"),
        OsStr::new("--from"),
        backup.as_os_str(),
        OsStr::new("--data-dir"),
        restored.as_os_str(),
    ]);
    cli::run_ok(state_args("check", &restored));
    let mut svc = logged(&cfg, &restored).start();
    let mut c = client(&svc).await;
    assert_eq!(
        successes(&mut c).await,
        6,
        "the backup holds what preceded it"
    );
    drop(c);
    assert!(svc.terminate(STOP).await.success());

    // A bad arm record: skipped, named in the log; the service starts.
    let arm = first_key(&restored, "arms");
    poke(&restored, "arms", &arm, b"null");
    let mut svc = logged(&cfg, &restored).start();
    assert!(svc.terminate(STOP).await.success());
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(log.contains("skipped a bad arm record"), "{log}");
    let class =
        String::from_utf8_lossy(&arm[..arm.iter().position(|&b| b == 0).unwrap()]).into_owned();
    assert!(log.contains(&class), "{log}");

    // A bad ledger record: start refused naming it, until repaired.
    poke(&restored, "ledgers", b"team", b"null");
    let Err(out) = watched(&cfg, &restored).try_start() else {
        panic!("started with a bad ledger");
    };
    let status = out.status;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{err}");
    assert!(err.contains("tree ledgers, key \"team\""), "{err}");
    assert!(
        err.contains("state repair") || err.contains("restore a backup"),
        "{err}"
    );
    let text = cli::run_ok(state_args("repair", &restored));
    assert!(
        text.contains("dropped tree ledgers, key \"team\""),
        "{text}"
    );
    cli::run_ok(state_args("check", &restored));
    let mut svc = logged(&cfg, &restored).start();
    let status = svc.terminate(STOP).await;
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(status.success(), "{status:?}\n{log}");
}

/// Serve first, verify after: a decision record lost from a cleanly stopped data dir (its manifest
/// intact, so the checks at open pass and Route is served at once) is found by the check of the
/// decision log after start: `switchyard.v1.Store` turns NOT_SERVING and the server stops with a
/// non-zero exit naming the db and what to do. Nothing is written over the damage: `state check`
/// (the full verification) still refuses the data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_lost_from_a_clean_data_dir_is_found_after_start_and_stops_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = write_config(tmp.path());
    data_dir_with_state(&cfg, &data, 6).await;
    remove_first(&data, "decisions");
    // A drain long enough to see the health status before the process exits.
    let drain = tmp.path().join("drain.toml");
    std::fs::write(&drain, "[server]\ndrain_secs = 10.0\n").unwrap();
    let mut s = watched(&cfg, &data)
        .config(&drain)
        .try_start()
        .unwrap_or_else(|out| panic!("the start waited for the decision log: {out:?}"));
    let h = HealthClient::new(s.channel().await);
    wait_for("switchyard.v1.Store NOT_SERVING", || {
        let mut h = h.clone();
        async move { store_health(&mut h).await == Some(ServingStatus::NotServing as i32) }
    })
    .await;
    drop(h);
    let status = s.wait_exit(STOP).await;
    let err = s.stderr();
    assert!(!status.success(), "exit {status:?}, stderr {err}");
    assert_ne!(status.code(), Some(101), "panicked: {err}");
    for want in [
        data.join("db").display().to_string().as_str(),
        "tree decisions holds 5 records",
        "found by the check after start",
        "restore a backup",
    ] {
        assert!(err.contains(want), "no {want:?} in {err}");
    }
    let out = cli::run(state_args("check", &data));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("tree decisions holds 5 records"), "{err}");
}

/// Removes the first record of `tree` with sled directly, keeping the manifest (waiting while the
/// lock of a sled handle just dropped is still held).
fn remove_first(data: &Path, tree: &str) {
    let mut last = String::new();
    for _ in 0..250 {
        match sled::open(data) {
            Ok(db) => {
                let t = db.open_tree(tree).unwrap();
                let (key, _) = t.first().unwrap().unwrap();
                assert!(t.remove(key).unwrap().is_some());
                db.flush().unwrap();
                return;
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("cannot open {}: {last}", data.display());
}
