//! The simulator's command line end to end: the same seed gives the same report byte for byte
//! (whatever the thread count), RouterArena imports into the shipped trace, a generated trace
//! replays with zero oracle regret, and `tune` writes a fragment that layers over the base config.

use std::path::{Path, PathBuf};

use crate::common::cli;
use switchyard::config::Config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_same_seed_gives_the_same_report_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let run = |dir: &Path, threads: &str| {
        cli::run_ok([
            "simulate",
            "--scenario",
            "simulations/scenarios/latency_spike.toml",
            "--duration-secs",
            "600",
            "--policies",
            "oracle,thompson:propensity_samples=4,uniform",
            "--seeds",
            "3",
            "--base-seed",
            "42",
            "--threads",
            threads,
            "--no-progress",
            "--out",
            dir.to_str().unwrap(),
        ])
    };
    let table_a = run(&a, "1");
    let table_b = run(&b, "2");
    assert_eq!(
        table_a.replace(a.to_str().unwrap(), ""),
        table_b.replace(b.to_str().unwrap(), ""),
        "seed 42"
    );
    for f in [
        "report.json",
        "summary.csv",
        "runs.csv",
        "regret.svg",
        "cost_quality.svg",
    ] {
        assert_eq!(read(&a, f), read(&b, f), "seed 42: {f} differs");
    }
    let svg = String::from_utf8(read(&a, "regret.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline") && svg.trim_end().ends_with("</svg>")
    );
}

#[test]
fn routerarena_imports_into_the_shipped_trace_and_thompson_beats_uniform() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ra.jsonl");
    cli::run_ok([
        "trace",
        "import-routerarena",
        "--data",
        "simulations/data/routerarena",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(root().join("simulations/traces/routerarena.jsonl")).unwrap(),
        "the shipped trace is what the importer makes"
    );
    let dir = tmp.path().join("report");
    cli::run_ok([
        "simulate",
        "--trace",
        "simulations/traces/routerarena.jsonl",
        "--policies",
        "oracle,thompson:propensity_samples=8,uniform",
        "--seeds",
        "3",
        "--no-progress",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&read(&dir, "report.json")).unwrap();
    let regret = |i: usize| -> f64 {
        let p = &report["policies"][i];
        let m = p["metrics"].as_array().unwrap();
        let r = m.iter().find(|x| x[0] == "regret_oracle").unwrap();
        r[1]["mean"].as_f64().unwrap()
    };
    assert_eq!(regret(0), 0.0);
    assert!(
        regret(1) < 0.6 * regret(2),
        "seed 1: thompson {} vs uniform {}",
        regret(1),
        regret(2)
    );
}

#[test]
fn a_generated_trace_replays_with_zero_oracle_regret() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("outage.jsonl");
    cli::run_ok([
        "trace",
        "generate",
        "--scenario",
        "simulations/scenarios/provider_outage.toml",
        "--duration-secs",
        "400",
        "--seed",
        "5",
        "--out",
        trace.to_str().unwrap(),
    ]);
    assert!(tmp.path().join("outage.config.toml").exists());
    let dir = tmp.path().join("report");
    let table = cli::run_ok([
        "simulate",
        "--trace",
        trace.to_str().unwrap(),
        "--policies",
        "oracle,uniform",
        "--seeds",
        "2",
        "--no-progress",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let summary = String::from_utf8(read(&dir, "summary.csv")).unwrap();
    assert!(
        summary.contains("oracle,regret_oracle,0,0,2"),
        "{summary}\n{table}"
    );
}

#[test]
fn tune_writes_a_fragment_that_serve_layers_over_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let fragment = tmp.path().join("tuned.toml");
    let trace = "simulations/traces/routerarena.jsonl";
    cli::run_ok([
        "tune",
        "--trace",
        trace,
        "--policy",
        "ucb",
        "--half-life-secs",
        "3600,inf",
        "--prior-strength",
        "1,4",
        "--exploration",
        "0.5",
        "--seeds",
        "2",
        "--no-progress",
        "--out",
        fragment.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&fragment).unwrap();
    assert!(
        text.contains("[policy]") && text.contains("kind = \"ucb\""),
        "{text}"
    );
    let base = root().join("simulations/traces/routerarena.config.toml");
    let layered = Config::load_layered(&[base.clone(), fragment.clone()]).unwrap();
    let plain = Config::load(&base).unwrap();
    assert_eq!(layered.policy.settings.kind.as_str(), "ucb");
    assert_eq!(layered.policy.settings.ucb_exploration, 0.5);
    assert!(
        [1.0, 4.0].contains(&layered.policy.prior_strength),
        "{text}"
    );
    assert_eq!(layered.models, plain.models);
    assert_eq!(layered.task_classes, plain.task_classes);
}

#[test]
fn logged_traffic_from_a_run_evaluates_off_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("uniform.jsonl");
    cli::run_ok([
        "simulate",
        "--scenario",
        "simulations/scenarios/new_cheaper_model.toml",
        "--duration-secs",
        "600",
        "--policies",
        "uniform",
        "--seeds",
        "1",
        "--no-progress",
        "--log-out",
        log.to_str().unwrap(),
        "--out",
        tmp.path().join("sim").to_str().unwrap(),
    ]);
    assert!(tmp.path().join("uniform.config.toml").exists());
    let dir = tmp.path().join("off");
    let table = cli::run_ok([
        "simulate",
        "--logged",
        log.to_str().unwrap(),
        "--targets",
        "model:gemini-2.0-flash-001,ucb",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let csv = String::from_utf8(read(&dir, "offpolicy.csv")).unwrap();
    for estimator in ["replay", "ips", "snips", "dr"] {
        assert!(
            csv.contains(&format!("model:gemini-2.0-flash-001,{estimator},")),
            "{csv}\n{table}"
        );
    }
}
