//! `switchyard bench` against the real server on 127.0.0.1: each workload in both load models, with
//! the server's own counters (GetArmStats) checked against what the tool says it sent. Counts only:
//! no assertion on speed or latency, which depend on the machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use clap::Parser;
use common::TestServer;
use switchyard::config::Config;
use switchyard::proto::{ArmStats, GetArmStatsRequest};
use switchyard::tools::load::{self, BenchArgs, LoadError, Workload};

/// Short-run flags against `server` (0.3 s, no warm-up, 2 connections) unless `extra` sets them.
fn args(server: &TestServer, extra: &[&str]) -> BenchArgs {
    let addr = server.addr.to_string();
    let mut argv = vec!["bench", "--addr", addr.as_str()];
    for (flag, value) in [
        ("--duration", "0.3"),
        ("--warmup", "0"),
        ("--connections", "2"),
    ] {
        if !extra.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    argv.extend_from_slice(extra);
    BenchArgs::try_parse_from(argv).unwrap()
}

async fn arms(server: &TestServer, class: &str) -> Vec<ArmStats> {
    server
        .client()
        .await
        .get_arm_stats(GetArmStatsRequest {
            task_class: class.into(),
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .arms
}

fn sum(arms: &[ArmStats], f: fn(&ArmStats) -> u64) -> u64 {
    arms.iter().map(f).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_runs_each_workload_and_the_feedback_reaches_the_server() {
    let server = TestServer::start(Config::builtin().unwrap()).await;
    let a = args(&server, &["--concurrency", "4", "--error-rate", "0.1"]);
    assert_eq!(
        a.workloads,
        vec![Workload::Floor, Workload::Route, Workload::Pair]
    );
    let report = load::run(&a).await.unwrap();
    assert_eq!(report.load_model, "closed");
    assert_eq!(report.workloads.len(), 3);
    for (w, kind) in report.workloads.iter().zip(&a.workloads) {
        assert_eq!(w.workload, *kind);
        assert!(w.requests > 0, "{w:?}");
        assert_eq!(w.errors, 0, "{w:?}");
        assert!(w.errors_by_code.is_empty(), "{w:?}");
        assert_eq!(w.successes, w.requests);
        assert_eq!(w.latency_us.unwrap().count, w.successes);
        assert_eq!(
            w.histogram.iter().map(|b| b.count).sum::<u64>(),
            w.successes
        );
        assert!(w.ratio_to_floor.is_some(), "{w:?}");
        assert!(w.schedule_lag_us.is_none());
    }
    let route = &report.workloads[1];
    let pair = &report.workloads[2];
    assert_eq!(pair.unit, "pair");
    assert!(pair.error_outcomes_reported <= pair.successes);

    // Every Route (alone or in a pair) made one decision; every pair's Feedback was counted once,
    // as a success or (outcome ERROR) a failure, and every success carried a quality score.
    let arms = arms(&server, "qa").await;
    assert_eq!(sum(&arms, |a| a.pulls), route.requests + pair.requests);
    assert_eq!(
        sum(&arms, |a| a.successes) + sum(&arms, |a| a.failures),
        pair.successes
    );
    assert_eq!(sum(&arms, |a| a.failures), pair.error_outcomes_reported);
    assert_eq!(
        sum(&arms, |a| a.quality_reports),
        pair.successes - pair.error_outcomes_reported
    );

    let text = load::render(&report);
    for needle in [
        "floor",
        "route",
        "pair",
        "ratio to floor",
        "p99.9 us",
        "pairs/s",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_exactly_rate_times_duration() {
    let server = TestServer::start(Config::builtin().unwrap()).await;
    let a = args(
        &server,
        &[
            "--rate",
            "200",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--workload",
            "route,pair",
        ],
    );
    let report = load::run(&a).await.unwrap();
    assert_eq!(report.load_model, "open");
    assert_eq!(report.rate_per_sec, Some(200.0));
    for w in &report.workloads {
        assert_eq!(w.requests, 100, "{w:?}");
        assert_eq!(w.errors, 0, "{w:?}");
        assert_eq!(w.schedule_lag_us.unwrap().count, 100);
        // No floor workload ran: no ratio.
        assert_eq!(w.ratio_to_floor, None);
    }
    let pair = &report.workloads[1];
    // The server saw the 20 warm-up units of each workload too (200/s x 0.1 s), and nothing more.
    let arms = arms(&server, "qa").await;
    assert_eq!(sum(&arms, |a| a.pulls), 2 * (100 + 20));
    assert_eq!(
        sum(&arms, |a| a.successes) + sum(&arms, |a| a.failures),
        pair.successes + 20
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_task_class_stops_before_any_load() {
    let server = TestServer::start(Config::builtin().unwrap()).await;
    let a = args(
        &server,
        &["--task-class", "no-such-class", "--duration", "5"],
    );
    let err = tokio::time::timeout(Duration::from_secs(4), load::run(&a))
        .await
        .expect("the run stops early")
        .unwrap_err();
    assert!(
        matches!(&err, LoadError::UnknownTaskClass { task_class, .. } if task_class == "no-such-class"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("\"no-such-class\""), "{text}");
    assert!(text.contains("--task-class"), "{text}");
    assert_eq!(err.exit_code(), 2);
    // Nothing was routed.
    assert_eq!(sum(&arms(&server, "qa").await, |a| a.pulls), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_address_is_a_clear_error() {
    // A port that was just free: nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let a = BenchArgs::try_parse_from(["bench", "--addr", &addr.to_string()]).unwrap();
    let err = load::run(&a).await.unwrap_err();
    assert!(matches!(err, LoadError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_parses_with_the_same_figures() {
    let server = TestServer::start(Config::builtin().unwrap()).await;
    let a = args(
        &server,
        &[
            "--workload",
            "floor",
            "--concurrency",
            "2",
            "--duration",
            "0.2",
        ],
    );
    let report = load::run(&a).await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&load::to_json(&report).unwrap()).unwrap();
    let w = &json["workloads"][0];
    assert_eq!(w["workload"], "floor");
    assert_eq!(w["requests"], report.workloads[0].requests);
    assert_eq!(w["errors"], 0);
    assert_eq!(w["ratio_to_floor"], 1.0);
    assert!(w["latency_us"]["p99"].is_u64());
    assert!(w["histogram"].as_array().is_some_and(|h| !h.is_empty()));
    assert_eq!(json["load_model"], "closed");
    server.stop().await;
}

use common::cli::switchyard as bin;

/// `switchyard bench --addr SERVER --json ARGS`, run off the runtime: its report, once it has
/// exited 0.
async fn bench_json(server: &TestServer, args: &[&str]) -> serde_json::Value {
    let mut argv = vec![
        "bench".to_string(),
        "--addr".into(),
        server.addr.to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv.push("--json".into());
    let out = tokio::task::spawn_blocking(move || {
        bin().args(&argv).env("RUST_LOG", "warn").output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_json_and_exits_2_on_bad_arguments() {
    let server = TestServer::start(Config::builtin().unwrap()).await;
    let json = bench_json(
        &server,
        &[
            "--workload",
            "floor,route",
            "--duration",
            "0.2",
            "--warmup",
            "0",
            "--concurrency",
            "2",
            "--connections",
            "1",
        ],
    )
    .await;
    let workloads = json["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 2);
    assert_eq!(workloads[1]["workload"], "route");
    assert!(workloads[1]["requests"].as_u64().unwrap() > 0);
    server.stop().await;

    for (flags, needle) in [
        (&["--rate", "0"][..], "--rate"),
        (&["--duration", "0"][..], "--duration"),
        (&["--concurrency", "0"][..], "--concurrency"),
        (&["--threads", "257"][..], "--threads"),
        (
            &["--addr", "127.0.0.1:1"][..],
            "cannot connect to 127.0.0.1:1",
        ),
    ] {
        let out = bin().arg("bench").args(flags).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    }
}

/// The binary's open loop on the runtime each `--threads` gives (0: one thread, a current-thread
/// runtime; 2: a multi-thread one) sends exactly rate x (duration + warm-up) units, all of which
/// the server counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binarys_open_loop_sends_every_unit_on_either_runtime() {
    for threads in ["0", "2"] {
        let server = TestServer::start(Config::builtin().unwrap()).await;
        let json = bench_json(
            &server,
            &[
                "--workload",
                "pair",
                "--rate",
                "300",
                "--duration",
                "0.5",
                "--warmup",
                "0.1",
                "--threads",
                threads,
            ],
        )
        .await;
        let pair = &json["workloads"][0];
        assert_eq!(pair["requests"], 150, "--threads {threads}: {pair}");
        assert_eq!(pair["errors"], 0, "--threads {threads}: {pair}");
        let arms = arms(&server, "qa").await;
        // 150 measured pairs and 30 warm-up ones: each a decision and its Feedback.
        assert_eq!(sum(&arms, |a| a.pulls), 180, "--threads {threads}");
        assert_eq!(
            sum(&arms, |a| a.successes) + sum(&arms, |a| a.failures),
            180,
            "--threads {threads}"
        );
        server.stop().await;
    }
}
