//! `switchyard stats` end to end: the real service on 127.0.0.1:0 in this process gets seeded
//! Route + Feedback traffic and a DOWN health signal; the stats module fetches over real gRPC and
//! its tables must tell the same story. The compiled binary is run against the same service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::HashMap;

use common::{config, spec, ModelSpec, TestServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::proto::{FeedbackRequest, HealthState, Outcome, ReportHealthRequest, RouteRequest};
use switchyard::tools::stats::{self, StatsError, View};

const SEED: u64 = 20_251_124;
const BENCH_MODELS: [&str; 3] = ["lark", "heron", "kestrel"];

fn models() -> Vec<ModelSpec> {
    vec![
        ModelSpec {
            quality: 0.6,
            ..spec("lark", "p1")
        },
        ModelSpec {
            quality: 0.8,
            latency_ms: 900.0,
            ..spec("heron", "p2")
        },
        ModelSpec {
            input_usd_per_mtok: 0.1,
            output_usd_per_mtok: 0.2,
            ..spec("kestrel", "p1")
        },
    ]
}

/// Class "bench" over the three models with budget "team"; class "solo" with kestrel only.
async fn start() -> TestServer {
    let class_extra = "budget = \"team\"\n\
         [budgets.team]\nperiod = \"daily\"\nlimit_usd = 5.0\n\
         [task_classes.solo]\nmodels = [\"kestrel\"]\n";
    TestServer::start(config(&models(), class_extra, "kind = \"thompson\"")).await
}

/// Routes `n` requests of `class` and reports a seeded outcome for each; returns how often each
/// model was chosen.
async fn drive(server: &TestServer, class: &str, n: usize, seed: u64) -> HashMap<String, u64> {
    let mut client = server.client().await;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut chosen = HashMap::new();
    for _ in 0..n {
        let d = client
            .route(RouteRequest {
                task_class: class.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ok = rng.random_bool(0.9);
        client
            .feedback(FeedbackRequest {
                decision_id: d.decision_id,
                outcome: if ok {
                    Outcome::Success
                } else {
                    Outcome::Timeout
                } as i32,
                latency_ms: Some(rng.random_range(300.0..1500.0)),
                input_tokens: Some(500),
                output_tokens: Some(rng.random_range(100..600)),
                quality: ok.then(|| rng.random_range(0.4..0.95)),
                ..Default::default()
            })
            .await
            .unwrap();
        *chosen.entry(d.model).or_insert(0) += 1;
    }
    chosen
}

async fn report_down(server: &TestServer, model: &str) {
    let r = server
        .client()
        .await
        .report_health(ReportHealthRequest {
            model: model.into(),
            state: HealthState::Down as i32,
            ttl_seconds: 600,
            reason: "test incident".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.models, vec![model.to_string()]);
}

/// The block of text from `heading` up to the next table's heading ("task class ..." or
/// "budgets" at the start of a line).
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in:\n{text}"));
    let rest = &text[start..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| rest[i..].starts_with("task class ") || rest[i..].starts_with("budgets"))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The whitespace-separated cells of `first`'s row in `block`.
fn row<'a>(block: &'a str, first: &str) -> Vec<&'a str> {
    block
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row for {first} in:\n{block}"))
}

/// Wide enough for one line per row, so cells can be checked by position.
fn wide() -> View {
    View::now(200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_show_every_model_open_breakers_and_budgets() {
    let server = start().await;
    let chosen = drive(&server, "bench", 80, SEED).await;
    drive(&server, "solo", 5, SEED + 1).await;
    report_down(&server, "heron").await;

    let addr = server.addr.to_string();
    let snap = stats::fetch(&addr, None, None).await.unwrap();
    let text = stats::render(&snap.arms, &snap.budgets, &wide());

    let bench = section(&text, "task class bench (3 models)");
    for model in BENCH_MODELS {
        let cells = row(bench, model);
        // model, provider, share, pulls, ...
        let pulls: u64 = cells[3].parse().unwrap();
        assert_eq!(
            pulls,
            chosen.get(model).copied().unwrap_or(0),
            "{model}: {text}"
        );
        assert!(cells[2].ends_with('%'), "share as a percentage: {cells:?}");
        let line = cells.join(" ");
        if model == "heron" {
            assert!(line.contains("open until"), "{line}\n{text}");
        } else {
            assert!(line.contains("closed") && !line.contains("open"), "{line}");
        }
        // Intervals come from the priors even before any feedback; the age only after it.
        assert!(line.contains('['), "{line}");
        if pulls > 0 {
            assert!(line.ends_with("s ago"), "{line}");
        } else {
            assert!(line.ends_with("never"), "{line}");
        }
    }
    let solo = section(&text, "task class solo (1 model)");
    assert_eq!(row(solo, "kestrel")[3], "5", "{solo}");
    assert!(!solo.contains("lark") && !solo.contains("heron"), "{solo}");

    let budgets = section(&text, "budgets");
    let team = row(budgets, "team");
    let spent = snap.budgets[0].spent_usd;
    assert!(spent > 0.0, "{snap:?}");
    assert_eq!(team[1], "daily", "{budgets}");
    assert_eq!(team[2], stats::usd(spent), "{budgets}");
    assert_eq!(team[4], "$5.00", "{budgets}");
    assert!(!text.contains("none configured"), "{text}");

    // On an 80-column terminal every line fits, values stack under each model's name.
    let narrow = View {
        width: 80,
        ..wide()
    };
    let text = stats::render(&snap.arms, &snap.budgets, &narrow);
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    let bench = section(&text, "task class bench (3 models)");
    for model in BENCH_MODELS {
        row(bench, model);
    }
    assert!(
        row(bench, "heron").join(" ").contains("open until"),
        "{text}"
    );

    // --task-class narrows the arms to one class.
    let snap = stats::fetch(&format!("http://{addr}"), Some("bench"), None)
        .await
        .unwrap();
    let text = stats::render(&snap.arms, &snap.budgets, &wide());
    assert!(text.contains("task class bench") && !text.contains("task class solo"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_class_or_key_and_unreachable_server_are_clear_errors() {
    let server = start().await;
    let addr = server.addr.to_string();

    let e = stats::fetch(&addr, Some("nope"), None).await.unwrap_err();
    assert!(matches!(e, StatsError::UnknownTaskClass { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("\"nope\"") && msg.contains(&addr), "{msg}");
    assert!(msg.contains("bench"), "the server's list of classes: {msg}");
    assert!(!msg.contains('\n'), "{msg}");

    let e = stats::fetch(&addr, None, Some("ghost")).await.unwrap_err();
    assert!(matches!(e, StatsError::UnknownBudgetKey { .. }), "{e:?}");
    assert!(e.to_string().contains("\"ghost\""), "{e}");

    // A port that nothing listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    let e = stats::fetch(&dead, None, None).await.unwrap_err();
    assert!(matches!(e, StatsError::Unreachable { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&dead) && !msg.contains('\n'), "{msg}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_tables_and_exits_2_with_one_line_on_errors() {
    let server = start().await;
    drive(&server, "bench", 20, SEED + 2).await;
    report_down(&server, "lark").await;
    let addr = server.addr.to_string();
    let stats = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("stats")
            .args(args)
            .output()
            .await
            .unwrap()
    };

    let out = stats(vec!["--addr".into(), format!("http://{addr}")]).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{:?}: {stdout}", out.status);
    let bench = section(&stdout, "task class bench (3 models)");
    for model in BENCH_MODELS {
        row(bench, model);
    }
    assert!(
        row(bench, "lark").join(" ").contains("open until"),
        "{stdout}"
    );
    assert!(stdout.contains("budgets"), "{stdout}");
    // Not a terminal: no colour codes, and the default width holds.
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    assert!(
        stdout
            .lines()
            .all(|l| l.chars().count() <= usize::from(stats::DEFAULT_WIDTH)),
        "{stdout}"
    );

    for (args, names) in [
        (
            vec![
                "--addr".to_string(),
                addr.clone(),
                "--task-class".into(),
                "nope".into(),
            ],
            vec!["\"nope\"".to_string(), addr.clone()],
        ),
        (
            vec!["--addr".into(), "127.0.0.1:1".into()],
            vec!["127.0.0.1:1".to_string()],
        ),
        (
            vec!["--addr".into(), "https://example.invalid:443".into()],
            vec!["https://example.invalid:443".to_string()],
        ),
    ] {
        let out = stats(args.clone()).await;
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("switchyard stats: "), "{stderr}");
        for name in names {
            assert!(stderr.contains(&name), "{args:?}: {name} not in {stderr}");
        }
    }
    server.stop().await;
}
