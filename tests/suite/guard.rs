//! Issue 13 over real gRPC: poison values refused (and a restart after them succeeds), bounded
//! error messages, oversize requests, connection limits with an idle timeout, late Feedback
//! charged after expiry and eviction, and honest costs from 64 concurrent clients never taking
//! spend past a budget's limit (requests with and without max_output_tokens).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::served::ServedBinary;
use common::TestServer;
use switchyard::config::{Config, DEFAULT_CONFIG_TOML};
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{FeedbackRequest, GetBudgetsRequest, Outcome, RouteRequest};
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;
use tonic::Code;

async fn client_at(addr: &str) -> RouteClient<Channel> {
    let url = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = Channel::from_shared(url.clone()).unwrap().connect().await {
            return RouteClient::new(ch);
        }
        assert!(Instant::now() < deadline, "no connection to {url}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn qa() -> RouteRequest {
    RouteRequest {
        task_class: "qa".into(),
        ..Default::default()
    }
}

fn feedback(id: &str) -> FeedbackRequest {
    FeedbackRequest {
        decision_id: id.into(),
        outcome: Outcome::Success as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_values_are_refused_and_a_restart_after_them_succeeds() {
    let data = tempfile::tempdir().unwrap();
    {
        let served = ServedBinary::start_in(data.path());
        let mut c = client_at(&served.addr).await;
        let id = c.route(qa()).await.unwrap().into_inner().decision_id;
        let poisons: [(&str, FeedbackRequest); 4] = [
            (
                "latency_ms",
                FeedbackRequest {
                    latency_ms: Some(1e100),
                    ..feedback(&id)
                },
            ),
            (
                "cost_usd",
                FeedbackRequest {
                    cost_usd: Some(1e200),
                    ..feedback(&id)
                },
            ),
            (
                "cost_usd",
                FeedbackRequest {
                    cost_usd: Some(1e308),
                    input_tokens: Some(1),
                    output_tokens: Some(1),
                    ..feedback(&id)
                },
            ),
            (
                "output_tokens",
                FeedbackRequest {
                    output_tokens: Some(i64::MAX),
                    ..feedback(&id)
                },
            ),
        ];
        for (field, p) in poisons {
            let e = c.feedback(p).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
            assert!(e.message().starts_with(field), "{}", e.message());
            assert!(e.message().contains("got"), "{}", e.message());
            assert!(e.message().len() < 400, "{}", e.message());
        }
        // A cost of $1,000 is accepted; every later estimate stays finite.
        let ok = FeedbackRequest {
            cost_usd: Some(1000.0),
            ..feedback(&id)
        };
        c.feedback(ok).await.unwrap();
        for _ in 0..20 {
            let d = c.route(qa()).await.unwrap().into_inner();
            let e = d.expected.unwrap();
            assert!(e.cost_usd.is_finite() && e.latency_ms.is_finite(), "{e:?}");
        }
    }
    // ServedBinary is killed on drop; a restart on the same data dir serves.
    let served = ServedBinary::start_in(data.path());
    let mut c = client_at(&served.addr).await;
    c.route(qa()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_inputs_get_short_messages_and_oversize_requests_resource_exhausted() {
    let server = TestServer::start(Config::builtin().unwrap()).await;
    let mut c = server.client().await;
    let e = c
        .route(RouteRequest {
            task_class: "x".repeat(1 << 20),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "{}",
        &e.message()[..200.min(e.message().len())]
    );
    assert!(e.message().len() < 1000, "{} bytes", e.message().len());
    let e = c
        .route(RouteRequest {
            task_class: "x".repeat(5 << 20),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_limit_do_not_lock_out_a_new_client() {
    let text = DEFAULT_CONFIG_TOML.to_string().replace(
        "[server]",
        "[server]\nmax_connections = 4\nidle_timeout_secs = 1.0",
    );
    let server = TestServer::start(Config::from_toml_str(&text, "test").unwrap()).await;
    // Eight silent sockets: four take every slot, four wait in the backlog.
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"").await.unwrap();
        idle.push(s);
    }
    // The silent ones are closed after the idle timeout, and a real client gets through.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let url = format!("http://{}", server.addr);
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let ch = Channel::from_shared(url).unwrap().connect().await?;
            RouteClient::new(ch)
                .route(qa())
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await;
        if matches!(attempt, Ok(Ok(()))) {
            break;
        }
        assert!(Instant::now() < deadline, "locked out: {attempt:?}");
    }
    drop(idle);
    server.stop().await;
}

/// One budget "team" over class "qa" with a small limit.
fn budget_config(extra_limits: &str, limit_usd: f64) -> Config {
    let text = DEFAULT_CONFIG_TOML
        .replace("pending_ttl_secs = 3600.0", "")
        .replace("max_pending = 100000", "")
        .replace("[limits]", &format!("[limits]\n{extra_limits}"))
        + &format!(
            "\n[budgets.team]\nperiod = \"daily\"\nlimit_usd = {limit_usd}\non_cap = \"reject\"\n"
        );
    let text = text.replace("[task_classes.qa]", "[task_classes.qa]\nbudget = \"team\"");
    Config::from_toml_str(&text, "test").unwrap()
}

async fn spent(c: &mut RouteClient<Channel>) -> (f64, f64, f64) {
    let b = c
        .get_budgets(GetBudgetsRequest {
            budget_key: "team".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .budgets
        .remove(0);
    (b.spent_usd, b.reserved_usd, b.limit_usd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_feedback_after_expiry_and_after_eviction_is_charged() {
    let server = TestServer::start(budget_config(
        "max_pending = 2\npending_ttl_secs = 1.0",
        100.0,
    ))
    .await;
    let mut c = server.client().await;
    // Eviction: max_pending = 2 pushes the first decision out; its reservation is released.
    let first = c.route(qa()).await.unwrap().into_inner().decision_id;
    for _ in 0..2 {
        c.route(qa()).await.unwrap();
    }
    let r = c
        .feedback(FeedbackRequest {
            cost_usd: Some(0.25),
            ..feedback(&first)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted && r.late, "{r:?}");
    assert!((spent(&mut c).await.0 - 0.25).abs() < 1e-9);
    // Expiry: once every decision's one-second ttl has passed, the sweeper buries them and
    // nothing stays reserved (polled); a late Feedback is then charged.
    let d = c.route(qa()).await.unwrap().into_inner().decision_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while spent(&mut c).await.1 > 0.0 {
        assert!(Instant::now() < deadline, "reservations never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .feedback(FeedbackRequest {
            cost_usd: Some(0.5),
            ..feedback(&d)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted && r.late, "{r:?}");
    let (s, _, _) = spent(&mut c).await;
    assert!((s - 0.75).abs() < 1e-9, "{s}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn honest_costs_from_64_clients_never_take_spend_past_the_limit() {
    let server = TestServer::start(budget_config("pending_ttl_secs = 3600.0", 0.5)).await;
    let ch = server.channel().await;
    let mut tasks = Vec::new();
    for client in 0..64i64 {
        let mut c = RouteClient::new(ch.clone());
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0;
            for i in 0..40i64 {
                // Half the clients bound the output (the reservation is then the exact list
                // price at that bound), half do not (the reservation covers a safety margin).
                let max_output_tokens = if client % 2 == 0 { 400 } else { 0 };
                let req = RouteRequest {
                    input_tokens: 600,
                    max_output_tokens,
                    ..qa()
                };
                let d = match c.route(req).await {
                    Ok(d) => d.into_inner(),
                    Err(e) => {
                        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                        continue;
                    }
                };
                admitted += 1;
                // An honest cost: the price-table cost of at most the tokens the decision assumed.
                let out = if max_output_tokens > 0 {
                    1 + (i * 37 + client) % 400
                } else {
                    1 + (i * 37 + client) % 300
                };
                c.feedback(FeedbackRequest {
                    input_tokens: Some(600),
                    output_tokens: Some(out),
                    ..feedback(&d.decision_id)
                })
                .await
                .unwrap();
            }
            admitted
        }));
    }
    let mut c = server.client().await;
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
        let (s, r, limit) = spent(&mut c).await;
        assert!(s + r <= limit + 1e-9, "spent {s} + reserved {r} > {limit}");
    }
    let (s, r, limit) = spent(&mut c).await;
    assert_eq!(r, 0.0);
    assert!(s <= limit + 1e-9, "spent {s} > {limit}");
    assert!(admitted > 64, "{admitted}");
    server.stop().await;
}
