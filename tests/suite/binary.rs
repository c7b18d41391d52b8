//! The real `switchyard` binary as a new user runs it: `serve` on the built-in default config,
//! driven over gRPC, stopped with SIGTERM; `config print-default` piped into `config check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::served::ServedBinary;
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{FeedbackRequest, Outcome, RouteRequest};

use common::cli::switchyard as bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_the_builtin_default_answers_and_stops_cleanly_on_sigterm() {
    let mut served = ServedBinary::start();
    let mut client = RouteClient::connect(format!("http://{}", served.addr))
        .await
        .unwrap();
    for class in ["qa", "code", "summarize"] {
        let d = client
            .route(RouteRequest {
                task_class: class.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!d.model.is_empty() && !d.provider.is_empty(), "{d:?}");
        let r = client
            .feedback(FeedbackRequest {
                decision_id: d.decision_id,
                outcome: Outcome::Success as i32,
                latency_ms: Some(900.0),
                quality: Some(0.8),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.accepted && !r.duplicate);
    }

    let status = served.terminate(Duration::from_secs(5)).await;
    assert!(status.success(), "serve exited with {status}");
}

/// The kernel's "THP_enabled" flag of a process (`/proc/PID/status`, Linux 6.x).
fn thp_enabled(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .expect("this kernel reports THP_enabled in /proc/PID/status");
    line.trim() == "1"
}

/// `serve` runs without transparent huge pages (src/main.rs says why), and mimalloc's own
/// `MIMALLOC_ALLOW_THP` in the environment leaves the choice to mimalloc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_without_transparent_huge_pages_unless_mimalloc_is_told_otherwise() {
    let mut served = ServedBinary::start();
    assert!(!thp_enabled(served.pid()));
    served.terminate(Duration::from_secs(5)).await;

    let mut served = ServedBinary::builder()
        .env("MIMALLOC_ALLOW_THP", "1")
        .start();
    assert!(thp_enabled(served.pid()));
    served.terminate(Duration::from_secs(5)).await;
}

#[test]
fn printed_default_config_passes_check_and_a_bad_one_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().args(["config", "print-default"]).output().unwrap();
    assert!(out.status.success());
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = bin().args(["config", "check"]).arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("3 task classes"));

    let bad = String::from_utf8(out.stdout)
        .unwrap()
        .replace("epsilon = 0.1", "epsilon = 7.0");
    std::fs::write(&path, bad).unwrap();
    let check = bin().args(["config", "check"]).arg(&path).output().unwrap();
    assert_eq!(check.status.code(), Some(2));
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("policy.epsilon") && err.contains('7'), "{err}");
}
