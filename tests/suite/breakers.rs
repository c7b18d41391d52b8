//! Circuit breakers end to end over gRPC: failing models lose traffic and come back through
//! half-open probes; provider-wide health signals; active HTTP health probes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, spec, TestServer};
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{
    BreakerState, FeedbackRequest, GetArmStatsRequest, HealthState, Outcome, ReportHealthRequest,
    RouteRequest, RouteResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::Code;

const BREAKER: &str = "[breaker]
consecutive_failures = 3.0
cooldown_secs = 0.5
max_cooldown_secs = 5.0
half_open_probes = 2
successes_to_close = 2
";

fn cfg(extra: &str) -> switchyard::config::Config {
    let text_models = [spec("alpha", "p1"), spec("beta", "p2"), spec("gamma", "p1")];
    let mut c = config(&text_models, "", "kind = \"thompson\"");
    let overlay = switchyard::config::Config::from_toml_str(
        &format!(
            "{BREAKER}{extra}\n[models.alpha]\nprovider = \"p1\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n[models.beta]\nprovider = \"p2\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n[task_classes.x]\nmodels = [\"alpha\"]\n"
        ),
        "overlay",
    )
    .unwrap();
    c.breaker = overlay.breaker;
    c.health = overlay.health;
    c.health_probes = overlay.health_probes;
    c
}

fn route_req() -> RouteRequest {
    RouteRequest {
        task_class: "bench".into(),
        ..Default::default()
    }
}

async fn report(c: &mut RouteClient<Channel>, d: &RouteResponse, outcome: Outcome) {
    c.feedback(FeedbackRequest {
        decision_id: d.decision_id.clone(),
        outcome: outcome as i32,
        latency_ms: Some(500.0),
        quality: (outcome == Outcome::Success).then_some(0.7),
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn breaker_of(c: &mut RouteClient<Channel>, model: &str) -> BreakerState {
    let stats = c
        .get_arm_stats(GetArmStatsRequest {
            task_class: "bench".into(),
            model: model.into(),
        })
        .await
        .unwrap()
        .into_inner();
    stats.arms[0].breaker_state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_model_is_cut_off_then_probed_back() {
    let server = TestServer::start(cfg("")).await;
    let mut c = server.client().await;
    // alpha fails every call; the others succeed.
    let mut alpha_failures = 0;
    let mut routed_to_alpha_after_trip = 0;
    for _ in 0..200 {
        let d = c.route(route_req()).await.unwrap().into_inner();
        if d.model == "alpha" {
            if alpha_failures >= 3 {
                routed_to_alpha_after_trip += 1;
            }
            alpha_failures += 1;
            report(&mut c, &d, Outcome::Error).await;
        } else {
            if alpha_failures >= 3 {
                assert!(
                    d.fallbacks.iter().all(|f| f.model != "alpha"),
                    "open alpha offered as a fallback: {d:?}"
                );
            }
            report(&mut c, &d, Outcome::Success).await;
        }
    }
    assert_eq!(
        alpha_failures, 3,
        "the breaker trips after exactly 3 failures"
    );
    assert_eq!(routed_to_alpha_after_trip, 0);
    assert_eq!(breaker_of(&mut c, "alpha").await, BreakerState::Open);
    let stats = c
        .get_arm_stats(GetArmStatsRequest {
            task_class: "bench".into(),
            model: "alpha".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stats.arms[0].breaker_until_unix_ms > 0);
    assert!(stats.arms[0].recent_failure_rate > 0.0);

    // After the cooldown the next requests are probes to alpha; they succeed and close it. Wait
    // (polling the clock) until the breaker's reported cooldown end has passed.
    let until = stats.arms[0].breaker_until_unix_ms;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (switchyard::time::now_ms() as i64) <= until {
        assert!(std::time::Instant::now() < deadline, "cooldown never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..2 {
        let d = c.route(route_req()).await.unwrap().into_inner();
        assert_eq!(
            (d.model.as_str(), d.reason.as_str()),
            ("alpha", "breaker_probe")
        );
        assert!(d.fallbacks.iter().all(|f| f.model != "alpha"));
        report(&mut c, &d, Outcome::Success).await;
    }
    assert_eq!(breaker_of(&mut c, "alpha").await, BreakerState::Closed);
    // Traffic returns: alpha is routed again under the policy.
    let mut back = 0;
    for _ in 0..300 {
        let d = c.route(route_req()).await.unwrap().into_inner();
        if d.model == "alpha" {
            back += 1;
        }
        report(&mut c, &d, Outcome::Success).await;
    }
    assert!(back >= 10, "alpha got {back}/300 after recovering");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_loses_all_its_models_and_healthy_brings_probes() {
    let server = TestServer::start(cfg("")).await;
    let mut c = server.client().await;
    let r = c
        .report_health(ReportHealthRequest {
            provider: "p1".into(),
            state: HealthState::Down as i32,
            ttl_seconds: 60,
            reason: "provider incident".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.models, vec!["alpha".to_string(), "gamma".to_string()]);
    for _ in 0..100 {
        let d = c.route(route_req()).await.unwrap().into_inner();
        assert_eq!(d.model, "beta");
        assert!(d.fallbacks.is_empty(), "{d:?}");
        assert_eq!(
            d.reason, "breaker_fallback",
            "the best model by means is shut"
        );
    }
    assert_eq!(breaker_of(&mut c, "alpha").await, BreakerState::Open);
    assert_eq!(breaker_of(&mut c, "gamma").await, BreakerState::Open);
    assert_eq!(breaker_of(&mut c, "beta").await, BreakerState::Closed);

    // HEALTHY lifts the forced state; probes confirm before full traffic.
    c.report_health(ReportHealthRequest {
        provider: "p1".into(),
        state: HealthState::Healthy as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(breaker_of(&mut c, "alpha").await, BreakerState::HalfOpen);
    let d = c.route(route_req()).await.unwrap().into_inner();
    assert_eq!(d.reason, "breaker_probe");
    assert!(d.model == "alpha" || d.model == "gamma");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_lowers_weight_without_opening() {
    let server = TestServer::start(cfg("[health]\ndegraded_quality_factor = 0.5\n")).await;
    let mut c = server.client().await;
    c.report_health(ReportHealthRequest {
        model: "beta".into(),
        state: HealthState::Degraded as i32,
        ttl_seconds: 600,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut beta = 0;
    for _ in 0..300 {
        let d = c.route(route_req()).await.unwrap().into_inner();
        if d.model == "beta" {
            beta += 1;
        }
        report(&mut c, &d, Outcome::Success).await;
    }
    assert!(
        beta < 30,
        "a degraded model with equal quality got {beta}/300"
    );
    let stats = c
        .get_arm_stats(GetArmStatsRequest {
            task_class: "bench".into(),
            model: "beta".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stats.arms[0].degraded);
    assert_eq!(stats.arms[0].breaker_state(), BreakerState::Closed);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_open_least_bad_or_unavailable() {
    let down = ReportHealthRequest {
        provider: "p1".into(),
        state: HealthState::Down as i32,
        ttl_seconds: 60,
        ..Default::default()
    };
    let down_beta = ReportHealthRequest {
        model: "beta".into(),
        state: HealthState::Down as i32,
        ttl_seconds: 30,
        ..Default::default()
    };
    let server = TestServer::start(cfg("")).await;
    let mut c = server.client().await;
    c.report_health(down.clone()).await.unwrap();
    c.report_health(down_beta.clone()).await.unwrap();
    let d = c.route(route_req()).await.unwrap().into_inner();
    assert_eq!(d.reason, "all_breakers_open");
    assert_eq!(d.model, "beta", "beta reopens soonest");
    assert!(d.fallbacks.is_empty());
    server.stop().await;

    let server = TestServer::start(cfg("[health]\nall_open = \"unavailable\"\n")).await;
    let mut c = server.client().await;
    c.report_health(down).await.unwrap();
    c.report_health(down_beta).await.unwrap();
    let e = c.route(route_req()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    for m in ["alpha", "beta", "gamma", "may reopen at"] {
        assert!(e.message().contains(m), "{}", e.message());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_health_rejects_bad_input() {
    let server = TestServer::start(cfg("")).await;
    let mut c = server.client().await;
    let cases = [
        (
            ReportHealthRequest {
                state: HealthState::Down as i32,
                ..Default::default()
            },
            Code::InvalidArgument,
            "model",
        ),
        (
            ReportHealthRequest {
                model: "alpha".into(),
                provider: "p1".into(),
                state: HealthState::Down as i32,
                ..Default::default()
            },
            Code::InvalidArgument,
            "provider",
        ),
        (
            ReportHealthRequest {
                model: "zeta".into(),
                state: HealthState::Down as i32,
                ..Default::default()
            },
            Code::NotFound,
            "zeta",
        ),
        (
            ReportHealthRequest {
                provider: "p9".into(),
                state: HealthState::Down as i32,
                ..Default::default()
            },
            Code::NotFound,
            "p9",
        ),
        (
            ReportHealthRequest {
                model: "alpha".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "state",
        ),
        (
            ReportHealthRequest {
                model: "alpha".into(),
                state: 9,
                ..Default::default()
            },
            Code::InvalidArgument,
            "state",
        ),
        (
            ReportHealthRequest {
                model: "alpha".into(),
                state: HealthState::Down as i32,
                ttl_seconds: -1,
                ..Default::default()
            },
            Code::InvalidArgument,
            "ttl_seconds",
        ),
    ];
    for (req, code, needle) in cases {
        let e = c.report_health(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{req:?}: {}", e.message());
        assert!(e.message().contains(needle), "{req:?}: {}", e.message());
    }
    assert_eq!(breaker_of(&mut c, "alpha").await, BreakerState::Closed);
    server.stop().await;
}

/// A minimal HTTP health endpoint on 127.0.0.1 whose answer the test flips; `probes` counts the
/// requests answered.
async fn health_endpoint(
    healthy: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let healthy = healthy.clone();
            let probes = probes.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let status = if healthy.load(Ordering::SeqCst) {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = sock
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                probes.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_probe_opens_breakers_without_feedback_and_closes_them_again() {
    let healthy = Arc::new(AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let addr = health_endpoint(healthy.clone(), probes.clone()).await;
    let server = TestServer::start(cfg(&format!(
        "[health_probes.p2]\nurl = \"http://{addr}/health\"\ninterval_secs = 0.05\ntimeout_ms = 500\n"
    )))
    .await;
    let mut c = server.client().await;
    // Healthy answers already given keep the breaker closed.
    for _ in 0..200 {
        if probes.load(Ordering::SeqCst) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(probes.load(Ordering::SeqCst) >= 3, "the probe never ran");
    assert_eq!(breaker_of(&mut c, "beta").await, BreakerState::Closed);

    healthy.store(false, Ordering::SeqCst);
    let mut state = BreakerState::Closed;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        state = breaker_of(&mut c, "beta").await;
        if state == BreakerState::Open {
            break;
        }
    }
    assert_eq!(
        state,
        BreakerState::Open,
        "the probe's failures should open p2's breaker"
    );
    assert_eq!(breaker_of(&mut c, "alpha").await, BreakerState::Closed);
    for _ in 0..20 {
        let d = c.route(route_req()).await.unwrap().into_inner();
        assert_ne!(d.model, "beta");
    }

    healthy.store(true, Ordering::SeqCst);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        state = breaker_of(&mut c, "beta").await;
        if state == BreakerState::Closed {
            break;
        }
    }
    assert_eq!(
        state,
        BreakerState::Closed,
        "successful probes should close it again"
    );
    server.stop().await;
}
