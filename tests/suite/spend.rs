//! Spend end to end: a seeded workload over real gRPC against the real binary; the spend rollup
//! (GetSpend, and `switchyard report spend` on the data dir after the service is gone) must equal
//! the budget ledgers to the cent, group by tags, survive a restart, and refuse bad tags. A cost
//! anomaly reaches the webhook and the metric; the Grafana dashboard queries only served metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use common::cli;
use common::served::ServedBinary;
use common::webhook::webhook;
use common::{config, spec, TestServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{self, FeedbackRequest, Outcome, RouteRequest};
use tonic::transport::Channel;
use tonic::Code;

const CONFIG: &str = r#"
[policy]
kind = "thompson"
seed = 11
[models.small]
provider = "p1"
input_usd_per_mtok = 0.5
output_usd_per_mtok = 1.5
latency_ms = 400
latency_p95_ms = 800
quality = 0.7
[models.large]
provider = "p2"
input_usd_per_mtok = 10.0
output_usd_per_mtok = 30.0
latency_ms = 900
latency_p95_ms = 1800
quality = 0.9
[task_classes.chat]
models = ["small", "large"]
budget = "team-a"
[task_classes.free]
models = ["small", "large"]
[budgets.team-a]
period = "monthly"
limit_usd = 1000.0
[budgets.team-b]
period = "daily"
limit_usd = 1000.0
"#;

async fn client(addr: &str) -> RouteClient<Channel> {
    let url = format!("http://{addr}");
    for _ in 0..200 {
        if let Ok(ch) = Channel::from_shared(url.clone()).unwrap().connect().await {
            return RouteClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no service at {url}");
}

fn tags(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// 300 seeded Route + Feedback pairs over two budgeted classes and an unbudgeted one, with users
/// as tags; some costs reported, some priced from tokens, some calls failed or rate limited.
async fn workload(c: &mut RouteClient<Channel>, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let users = ["alice", "bob", "carol"];
    for i in 0..300 {
        let (class, budget) = match rng.random_range(0..3) {
            0 => ("chat", ""),
            1 => ("chat", "team-b"),
            _ => ("free", ""),
        };
        let user = users[rng.random_range(0..users.len())];
        let d = c
            .route(RouteRequest {
                task_class: class.into(),
                budget_key: budget.into(),
                tags: tags(&[("user", user)]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let outcome = match rng.random_range(0..10) {
            0 => Outcome::Error,
            1 => Outcome::RateLimited,
            _ => Outcome::Success,
        };
        let reported = rng.random_bool(0.5);
        c.feedback(FeedbackRequest {
            decision_id: d.decision_id,
            outcome: outcome as i32,
            latency_ms: Some(500.0),
            input_tokens: Some(rng.random_range(100..3000)),
            output_tokens: Some(rng.random_range(50..1500)),
            cost_usd: reported.then(|| rng.random_range(0.0001..0.05)),
            tags: if i % 7 == 0 {
                tags(&[("feature", "search")])
            } else {
                Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

async fn spend(c: &mut RouteClient<Channel>, by: &[&str]) -> proto::GetSpendResponse {
    c.get_spend(proto::GetSpendRequest {
        group_by: by.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

fn cents(usd: f64) -> i64 {
    (usd * 100.0).round() as i64
}

/// The arguments of `switchyard report spend` on `data`, then `more`.
fn report_spend<'a>(data: &'a Path, more: &[&'a str]) -> Vec<&'a OsStr> {
    let mut args = vec![
        OsStr::new("report"),
        OsStr::new("spend"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ];
    args.extend(more.iter().copied().map(OsStr::new));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_spend_equals_the_ledgers_groups_by_tag_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let data = dir.path().join("data");
    let served = ServedBinary::builder().config(&cfg).data_dir(&data).start();
    let mut c = client(&served.addr).await;
    workload(&mut c, 5).await;

    let ledgers: BTreeMap<String, f64> = c
        .get_budgets(proto::GetBudgetsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .budgets
        .into_iter()
        .map(|b| (b.budget_key, b.spent_usd))
        .collect();
    let by_budget = spend(&mut c, &["budget_key"]).await;
    assert_eq!(by_budget.columns, ["budget_key"]);
    let rollup: BTreeMap<String, f64> = by_budget
        .rows
        .iter()
        .map(|r| (r.key[0].clone(), r.spend_usd))
        .collect();
    for (key, spent) in &ledgers {
        assert!(*spent > 0.0, "{key}: the workload charged it");
        assert_eq!(
            cents(rollup[key]),
            cents(*spent),
            "{key}: {rollup:?} vs {ledgers:?}"
        );
        assert!(
            (rollup[key] - spent).abs() < 1e-6,
            "{key}: {rollup:?} vs {ledgers:?}"
        );
    }
    assert!(rollup["(none)"] > 0.0, "unbudgeted spend is counted too");

    // Every grouping sums to the same total, exactly; tags group the spend per user.
    let total = spend(&mut c, &[]).await.rows[0].clone();
    assert_eq!(total.requests, 300, "one settled call per Feedback outcome");
    let by_user = spend(&mut c, &["tag:user", "model"]).await;
    let users: std::collections::BTreeSet<&str> =
        by_user.rows.iter().map(|r| r.key[0].as_str()).collect();
    assert_eq!(
        users.into_iter().collect::<Vec<_>>(),
        ["alice", "bob", "carol"]
    );
    let sum: u64 = by_user.rows.iter().map(|r| r.spend_nusd).sum();
    assert_eq!(sum, total.spend_nusd);
    let by_feature = spend(&mut c, &["tag:feature"]).await;
    assert!(by_feature.rows.iter().any(|r| r.key[0] == "search"));

    // Bad tags and groupings are refused with what is allowed.
    let too_many: Vec<(String, String)> = (0..9).map(|i| (format!("k{i}"), "v".into())).collect();
    let err = c
        .route(RouteRequest {
            task_class: "chat".into(),
            tags: too_many.into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("tags") && err.message().contains("at most 8"),
        "{err:?}"
    );
    let err = c
        .get_spend(proto::GetSpendRequest {
            group_by: vec!["hour".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("tag:NAME"), "{err:?}");

    // Offline, on the data dir the service left (Feedback is durable before it is answered).
    drop(served);
    let out = cli::run_ok(report_spend(
        &data,
        &["--by", "budget_key", "--format", "json"],
    ));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    for (key, spent) in &ledgers {
        let row = rows
            .iter()
            .find(|r| r["budget_key"] == key.as_str())
            .unwrap();
        assert_eq!(
            cents(row["spend_usd"].as_f64().unwrap()),
            cents(*spent),
            "{key}"
        );
    }
    let csv = cli::run_ok(report_spend(
        &data,
        &["--by", "month", "--by", "tag:user", "--format", "csv"],
    ));
    assert!(
        csv.starts_with(
            "month,tag:user,spend_usd,requests,input_tokens,output_tokens,mean_cost_usd\n"
        ),
        "{csv}"
    );
    assert_eq!(
        csv.lines().count(),
        4,
        "a header and one line per user: {csv}"
    );

    // Restarted on the same data dir, the rollup is back as it was.
    let served = ServedBinary::builder().config(&cfg).data_dir(&data).start();
    let mut c = client(&served.addr).await;
    let again = spend(&mut c, &[]).await.rows[0].clone();
    assert_eq!(again, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_anomaly_reaches_the_webhook_the_log_and_the_metric() {
    let (url, received) = webhook().await;
    // No warm-up and a tiny floor: the first spend is already far above an empty baseline.
    let extra = format!(
        "budget = \"team\"\n[budgets.team]\nperiod = \"daily\"\nlimit_usd = 100.0\n\
         [alerts]\nwebhook_url = \"{url}\"\n[anomaly]\nwarmup_hours = 0\nmin_usd = 0.001\n"
    );
    let (server, metrics) =
        TestServer::start_with_metrics(config(&[spec("m0", "p")], &extra, "kind = \"thompson\""))
            .await;
    let mut c = server.client().await;
    let d = c
        .route(RouteRequest {
            task_class: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.feedback(FeedbackRequest {
        decision_id: d.decision_id,
        outcome: Outcome::Success as i32,
        cost_usd: Some(0.5),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut bodies = Vec::new();
    for _ in 0..400 {
        bodies = received.lock().unwrap().clone();
        if bodies.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut scopes: Vec<(String, String)> = bodies
        .iter()
        .filter(|b| b["kind"] == "cost_anomaly")
        .map(|b| {
            assert_eq!(b["hour_usd"], 0.5, "{b}");
            (
                b["scope"].as_str().unwrap().into(),
                b["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    scopes.sort();
    assert_eq!(
        scopes,
        [
            ("budget_key".into(), "team".into()),
            ("model".into(), "m0".into())
        ]
    );
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("switchyard_cost_anomalies_total{scope=\"model\",name=\"m0\"} 1"),
        "{text}"
    );
    server.stop().await;
}

/// Metric names a PromQL expression reads (identifiers of our series families).
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| {
            ["switchyard_", "grpc_server_", "process_"]
                .iter()
                .any(|p| t.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_metrics_the_binary_serves() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/switchyard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    let names: std::collections::BTreeSet<String> =
        exprs.iter().flat_map(|e| metric_names(e)).collect();
    for needed in [
        "switchyard_model_cost_usd_total",
        "switchyard_budget_spent_usd",
        "switchyard_decisions_total",
        "switchyard_feedback_total",
        "grpc_server_handling_seconds_bucket",
        "switchyard_breaker_state",
    ] {
        assert!(
            names.contains(needed),
            "the dashboard shows {needed}: {names:?}"
        );
    }

    // Traffic that gives every queried family a series: a decision and its Feedback, a budget
    // threshold crossed, a cost anomaly (no warm-up) and a breaker transition.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.toml");
    let text = CONFIG.replace(
        "limit_usd = 1000.0",
        "limit_usd = 0.02\nalert_thresholds = [0.5]",
    ) + "[anomaly]\nwarmup_hours = 0\nmin_usd = 0.0001\n";
    std::fs::write(&cfg, text).unwrap();
    let served = ServedBinary::builder()
        .config(&cfg)
        .data_dir(&dir.path().join("data"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .start();
    let mut c = client(&served.addr).await;
    let d = c
        .route(RouteRequest {
            task_class: "chat".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.feedback(FeedbackRequest {
        decision_id: d.decision_id,
        outcome: Outcome::Success as i32,
        latency_ms: Some(100.0),
        cost_usd: Some(0.015),
        ..Default::default()
    })
    .await
    .unwrap();
    c.report_health(proto::ReportHealthRequest {
        model: "large".into(),
        state: proto::HealthState::Down as i32,
        reason: "dashboard test".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let text = reqwest::get(served.metrics.as_deref().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // A family is served when a sample line has its name, or (no series yet) its TYPE line does.
    let served_names: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next().map(str::to_string),
            None if !l.starts_with('#') => l.split(['{', ' ']).next().map(str::to_string),
            None => None,
        })
        .collect();
    for n in &names {
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .unwrap_or(n);
        assert!(
            served_names.contains(n) || served_names.contains(base),
            "the dashboard queries {n}, which /metrics does not serve"
        );
    }
}

/// A decision evicted before its Feedback keeps its tags in its tombstone: the late spend is
/// reported under them (with the late Feedback's own merged in), not under the Feedback's only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_spend_is_reported_under_the_decisions_tags() {
    let text = format!("{CONFIG}[limits]\nmax_pending = 1\n");
    let server =
        TestServer::start(switchyard::config::Config::from_toml_str(&text, "test").unwrap()).await;
    let mut c = server.client().await;
    let route = |user: &str| RouteRequest {
        task_class: "chat".into(),
        tags: tags(&[("user", user), ("team", "ml")]),
        ..Default::default()
    };
    let first = c.route(route("dora")).await.unwrap().into_inner();
    // max_pending = 1: the next decision evicts the first, which is buried with its reservation.
    c.route(route("eve")).await.unwrap();
    let r = c
        .feedback(FeedbackRequest {
            decision_id: first.decision_id,
            outcome: Outcome::Success as i32,
            cost_usd: Some(0.2),
            tags: tags(&[("feature", "search")]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted && r.late, "{r:?}");
    let got = spend(
        &mut c,
        &["tag:user", "tag:team", "tag:feature", "budget_key"],
    )
    .await;
    let rows: Vec<_> = got
        .rows
        .iter()
        .map(|r| (r.key.clone(), r.spend_nusd, r.requests))
        .collect();
    assert_eq!(
        rows,
        vec![(
            vec!["dora".into(), "ml".into(), "search".into(), "team-a".into()],
            200_000_000,
            1
        )],
        "{got:?}"
    );
    server.stop().await;
}
