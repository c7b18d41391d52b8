//! The production front door over real gRPC: TLS with a test CA (rcgen), mutual TLS, the plaintext
//! rule, API keys per role and tenant, live reload under traffic, and the drain on shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::served::ServedBinary;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard::auth::hash_key_hex;
use switchyard::config::Config;
use switchyard::proto;
use switchyard::proto::route_client::RouteClient;
use switchyard::server::{self, security::ReloadSource, ServeError, ServeOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const ADMIN: &str = "sk-admin-test-1";
const TEAM_A: &str = "sk-team-a-test-2";
const FREE: &str = "sk-free-test-3";

fn models(ids: &[&str]) -> String {
    let mut text = String::new();
    for id in ids {
        text.push_str(&format!(
            "[models.{id}]\nprovider = \"p-{id}\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\nlatency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.8\n"
        ));
    }
    text
}

fn class(name: &str, ids: &[&str]) -> String {
    let list: Vec<String> = ids.iter().map(|m| format!("\"{m}\"")).collect();
    format!("[task_classes.{name}]\nmodels = [{}]\n", list.join(", "))
}

fn auth_toml() -> String {
    format!(
        "[auth.keys.ops]\nsha256 = \"{}\"\nrole = \"admin\"\n[auth.keys.team-a-bot]\nsha256 = \"{}\"\nrole = \"client\"\ntenant = \"team-a\"\n[auth.keys.batch]\nsha256 = \"{}\"\nrole = \"client\"\n[auth.tenants.team-a]\nbudget_key = \"team-a\"\ntask_classes = [\"qa\"]\n",
        hash_key_hex(ADMIN),
        hash_key_hex(TEAM_A),
        hash_key_hex(FREE)
    )
}

fn budgets_toml() -> &'static str {
    "[budgets.team-a]\nperiod = \"monthly\"\nlimit_usd = 100.0\n[budgets.team-b]\nperiod = \"monthly\"\nlimit_usd = 100.0\n"
}

struct Served {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServeError>>,
}

impl Served {
    async fn start(config: Config, bind: &str, reload: ReloadSource) -> Served {
        let options = ServeOptions {
            reload,
            ..Default::default()
        };
        Served::start_with(config, bind, options).await
    }

    async fn start_with(config: Config, bind: &str, options: ServeOptions) -> Served {
        let listener = server::bind(bind.parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::serve_with(config, options, listener, async {
            let _ = rx.await;
        }));
        Served {
            addr,
            shutdown: Some(tx),
            handle,
        }
    }

    async fn channel(&self) -> Channel {
        connect(Endpoint::from_shared(format!("http://{}", self.addr)).unwrap()).await
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.await.unwrap().unwrap();
    }
}

async fn connect(endpoint: Endpoint) -> Channel {
    for _ in 0..250 {
        if let Ok(ch) = endpoint.connect().await {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server did not accept connections");
}

fn with_key<T>(msg: T, key: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    r
}

fn route_req(class: &str, budget: &str) -> proto::RouteRequest {
    proto::RouteRequest {
        task_class: class.into(),
        budget_key: budget.into(),
        ..Default::default()
    }
}

fn feedback_req(decision: &proto::RouteResponse, cost: f64) -> proto::FeedbackRequest {
    proto::FeedbackRequest {
        decision_id: decision.decision_id.clone(),
        model: decision.model.clone(),
        outcome: proto::Outcome::Success as i32,
        latency_ms: Some(500.0),
        cost_usd: Some(cost),
        quality: Some(0.8),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// TLS.

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

/// A test CA, a server certificate for localhost and a client certificate, written as PEM files.
fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["client.test".into()]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), &server_cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &server_key).unwrap();
    Pki {
        dir,
        ca_pem: ca_cert.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

fn tls_config(dir: &Path, mutual: bool) -> Config {
    let ca = if mutual {
        format!(", client_ca = \"{}\"", dir.join("ca.pem").display())
    } else {
        String::new()
    };
    let text = format!(
        "[server]\ntls = {{ cert = \"{}\", key = \"{}\"{ca} }}\n{}{}",
        dir.join("server.pem").display(),
        dir.join("server.key").display(),
        models(&["m1"]),
        class("qa", &["m1"])
    );
    Config::from_toml_str(&text, "tls test").unwrap()
}

fn tls_endpoint(addr: SocketAddr, pki: &Pki, with_identity: bool) -> Endpoint {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if with_identity {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
}

#[tokio::test]
async fn tls_handshake_with_a_test_ca_serves_route() {
    let pki = pki();
    let s = Served::start(
        tls_config(pki.dir.path(), false),
        "127.0.0.1:0",
        ReloadSource::default(),
    )
    .await;
    let ch = connect(tls_endpoint(s.addr, &pki, false)).await;
    let r = RouteClient::new(ch)
        .route(route_req("qa", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model, "m1");
    // A plaintext client cannot talk to the TLS listener.
    let plain = Endpoint::from_shared(format!("http://{}", s.addr)).unwrap();
    let failed = match plain.connect().await {
        Err(_) => true,
        Ok(ch) => RouteClient::new(ch)
            .route(route_req("qa", ""))
            .await
            .is_err(),
    };
    assert!(failed, "plaintext request to a TLS listener succeeded");
    s.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = pki();
    let s = Served::start(
        tls_config(pki.dir.path(), true),
        "127.0.0.1:0",
        ReloadSource::default(),
    )
    .await;
    let ch = connect(tls_endpoint(s.addr, &pki, true)).await;
    assert!(RouteClient::new(ch)
        .route(route_req("qa", ""))
        .await
        .is_ok());
    let refused = match tls_endpoint(s.addr, &pki, false).connect().await {
        Err(_) => true,
        Ok(ch) => RouteClient::new(ch)
            .route(route_req("qa", ""))
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a client without a certificate was served under mutual TLS"
    );
    s.stop().await;
}

#[tokio::test]
async fn plaintext_is_refused_off_loopback_unless_allowed() {
    let base = format!("{}{}", models(&["m1"]), class("qa", &["m1"]));
    let config = Config::from_toml_str(&base, "t").unwrap();
    let listener = server::bind("0.0.0.0:0".parse().unwrap()).await.unwrap();
    let err = server::serve_with(config, ServeOptions::default(), listener, async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("plaintext")
            && err.contains("server.allow_plaintext = true")
            && err.contains("server.tls"),
        "{err}"
    );
    let allowed =
        Config::from_toml_str(&format!("[server]\nallow_plaintext = true\n{base}"), "t").unwrap();
    let s = Served::start(allowed, "0.0.0.0:0", ReloadSource::default()).await;
    let ch = connect(Endpoint::from_shared(format!("http://127.0.0.1:{}", s.addr.port())).unwrap())
        .await;
    assert!(RouteClient::new(ch)
        .route(route_req("qa", ""))
        .await
        .is_ok());
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Keys, roles, tenants.

fn auth_config() -> Config {
    let text = format!(
        "{}{}{}{}{}",
        models(&["m1", "m2"]),
        class("qa", &["m1", "m2"]),
        class("code", &["m1"]),
        budgets_toml(),
        auth_toml()
    );
    Config::from_toml_str(&text, "auth test").unwrap()
}

fn code(r: Result<impl Sized, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn keys_are_checked_per_role_and_tenant() {
    let s = Served::start(auth_config(), "127.0.0.1:0", ReloadSource::default()).await;
    let mut c = RouteClient::new(s.channel().await);

    // Missing or unknown key.
    assert_eq!(
        code(c.route(with_key(route_req("qa", ""), None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            c.route(with_key(route_req("qa", ""), Some("sk-nope")))
                .await
        ),
        Code::Unauthenticated
    );
    // Admin RPCs: client keys are refused, the admin key is served.
    for key in [FREE, TEAM_A] {
        let reset = proto::ResetArmsRequest {
            task_class: "qa".into(),
            model: String::new(),
        };
        assert_eq!(
            code(c.reset_arms(with_key(reset, Some(key))).await),
            Code::PermissionDenied
        );
        let health = proto::ReportHealthRequest {
            model: "m1".into(),
            state: proto::HealthState::Down as i32,
            ..Default::default()
        };
        assert_eq!(
            code(c.report_health(with_key(health, Some(key))).await),
            Code::PermissionDenied
        );
        assert_eq!(
            code(c.reload(with_key(proto::ReloadRequest {}, Some(key))).await),
            Code::PermissionDenied
        );
    }
    let reset = proto::ResetArmsRequest {
        task_class: "qa".into(),
        model: String::new(),
    };
    assert_eq!(
        code(c.reset_arms(with_key(reset, Some(ADMIN))).await),
        Code::Ok
    );
    // Client RPCs with a client key.
    assert_eq!(
        code(
            c.route(with_key(route_req("code", "team-b"), Some(FREE)))
                .await
        ),
        Code::Ok
    );
    // A tenant uses only its classes and its budget.
    assert_eq!(
        code(c.route(with_key(route_req("code", ""), Some(TEAM_A))).await),
        Code::PermissionDenied
    );
    let st = c
        .route(with_key(route_req("qa", "team-b"), Some(TEAM_A)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(
        st.message().contains("team-a") && st.message().contains("team-b"),
        "{}",
        st.message()
    );
    let stats = proto::GetArmStatsRequest {
        task_class: "code".into(),
        model: String::new(),
    };
    assert_eq!(
        code(c.get_arm_stats(with_key(stats, Some(TEAM_A))).await),
        Code::PermissionDenied
    );
    let all = c
        .get_arm_stats(with_key(proto::GetArmStatsRequest::default(), Some(TEAM_A)))
        .await
        .unwrap()
        .into_inner();
    assert!(!all.arms.is_empty() && all.arms.iter().all(|a| a.task_class == "qa"));
    let other = proto::GetBudgetsRequest {
        budget_key: "team-b".into(),
    };
    assert_eq!(
        code(c.get_budgets(with_key(other, Some(TEAM_A))).await),
        Code::PermissionDenied
    );
    // Health stays open without a key.
    let mut h = HealthClient::new(s.channel().await);
    let status = h
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(status.into_inner().status, ServingStatus::Serving as i32);
    s.stop().await;
}

async fn spent(c: &mut RouteClient<Channel>, key: &str) -> f64 {
    let b = c
        .get_budgets(with_key(
            proto::GetBudgetsRequest {
                budget_key: key.into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    b.budgets[0].spent_usd
}

#[tokio::test]
async fn a_tenant_key_cannot_charge_another_budget() {
    let s = Served::start(auth_config(), "127.0.0.1:0", ReloadSource::default()).await;
    let mut c = RouteClient::new(s.channel().await);
    // Without budget_key, the tenant's Route charges the tenant's budget.
    let d = c
        .route(with_key(route_req("qa", ""), Some(TEAM_A)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.budget_key, "team-a");
    c.feedback(with_key(feedback_req(&d, 0.25), Some(TEAM_A)))
        .await
        .unwrap();
    assert!((spent(&mut c, "team-a").await - 0.25).abs() < 1e-9);
    assert_eq!(spent(&mut c, "team-b").await, 0.0);
    // Feedback on another tenant's (or no tenant's) decision is refused and charges nothing.
    let theirs = c
        .route(with_key(route_req("qa", "team-b"), Some(FREE)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        code(
            c.feedback(with_key(feedback_req(&theirs, 5.0), Some(TEAM_A)))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(spent(&mut c, "team-b").await, 0.0);
    // Tenant sees only its budget in a listing.
    let listed = c
        .get_budgets(with_key(proto::GetBudgetsRequest::default(), Some(TEAM_A)))
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<&str> = listed
        .budgets
        .iter()
        .map(|b| b.budget_key.as_str())
        .collect();
    assert_eq!(keys, ["team-a"]);
    s.stop().await;
}

/// Feedback on a decision the response cache answered goes through the same tenant check as any
/// other: a hit looked up by a key without a tenant is not a tenant key's to rate, and a tenant's
/// own hit is. Accepted ratings of a hit teach no arm.
#[tokio::test]
async fn a_cache_hit_is_rated_only_by_a_key_allowed_its_decision() {
    let text = format!(
        "{}{}cache = {{ mode = \"exact\", min_quality = 0.5 }}\n{}{}",
        models(&["m1", "m2"]),
        class("qa", &["m1", "m2"]),
        budgets_toml(),
        auth_toml()
    );
    let config = Config::from_toml_str(&text, "cache auth test").unwrap();
    let s = Served::start(config, "127.0.0.1:0", ReloadSource::default()).await;
    let mut c = RouteClient::new(s.channel().await);
    let ask = |key: &str| {
        let msg = proto::RouteRequest {
            task_class: "qa".into(),
            prompt: "What is the capital of France?".into(),
            ..Default::default()
        };
        with_key(msg, Some(key))
    };
    let rate = |d: &proto::RouteResponse, key: &str, response: &str| {
        let msg = proto::FeedbackRequest {
            decision_id: d.decision_id.clone(),
            outcome: proto::Outcome::Success as i32,
            latency_ms: Some(400.0),
            cost_usd: Some(0.002),
            quality: Some(0.9),
            response: response.into(),
            ..Default::default()
        };
        with_key(msg, Some(key))
    };
    let arms = |c: &mut RouteClient<Channel>| {
        let mut c = c.clone();
        async move {
            let r = c
                .get_arm_stats(with_key(proto::GetArmStatsRequest::default(), Some(ADMIN)))
                .await
                .unwrap()
                .into_inner();
            r.arms
                .iter()
                .map(|a| (a.model.clone(), a.pulls, a.quality_reports))
                .collect::<Vec<_>>()
        }
    };

    // A key without a tenant stores an answer and is answered from the cache.
    let first = c.route(ask(FREE)).await.unwrap().into_inner();
    assert!(first.cache_hit.is_none() && !first.model.is_empty());
    c.feedback(rate(&first, FREE, "Paris")).await.unwrap();
    let hit = c.route(ask(FREE)).await.unwrap().into_inner();
    assert_eq!(
        hit.cache_hit.as_ref().map(|h| h.response.as_str()),
        Some("Paris")
    );
    let learned = arms(&mut c).await;

    // A tenant's key may not rate that hit; the key that got it may, and no arm learns.
    let st = c.feedback(rate(&hit, TEAM_A, "")).await.unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied);
    assert!(st.message().contains("team-a"), "{}", st.message());
    let fb = c.feedback(rate(&hit, FREE, "")).await.unwrap().into_inner();
    assert!(fb.accepted && !fb.duplicate && fb.arm.is_none(), "{fb:?}");
    assert_eq!(arms(&mut c).await, learned);

    // The tenant's own hit is the tenant's to rate.
    let mut mine = c.route(ask(TEAM_A)).await.unwrap().into_inner();
    if mine.cache_hit.is_none() {
        c.feedback(rate(&mine, TEAM_A, "Paris")).await.unwrap();
        mine = c.route(ask(TEAM_A)).await.unwrap().into_inner();
    }
    assert!(mine.cache_hit.is_some(), "{mine:?}");
    let learned = arms(&mut c).await;
    let fb = c
        .feedback(rate(&mine, TEAM_A, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(fb.accepted && fb.arm.is_none(), "{fb:?}");
    assert_eq!(arms(&mut c).await, learned);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Reload.

fn write(path: &PathBuf, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn reload_text(ids: &[&str], extra: &str) -> String {
    format!(
        "[policy]\nseed = 11\n{extra}{}{}{}",
        models(ids),
        class("qa", ids),
        auth_toml()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_a_model_under_live_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    write(&path, &reload_text(&["old", "keep"], ""));
    let source = ReloadSource {
        paths: vec![path.clone()],
        ..Default::default()
    };
    let config = source.load().unwrap();
    let s = Served::start(config, "127.0.0.1:0", source).await;
    let ch = s.channel().await;
    let mut admin = RouteClient::new(ch.clone());

    // Live traffic: Route + Feedback pairs until told to stop; every failure is counted.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        let mut c = RouteClient::new(ch.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.route(with_key(route_req("qa", ""), Some(FREE))).await {
                    Ok(d) => {
                        let d = d.into_inner();
                        if c.feedback(with_key(feedback_req(&d, 0.001), Some(FREE)))
                            .await
                            .is_err()
                        {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let wait_for = |n: u64| {
        let done = done.clone();
        async move {
            for _ in 0..2000 {
                if done.load(Ordering::Relaxed) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("traffic stalled");
        }
    };
    wait_for(200).await;

    // A file that does not validate changes nothing.
    write(&path, "[models.x]\nprovider = 1\n");
    let st = admin
        .reload(with_key(proto::ReloadRequest {}, Some(ADMIN)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{}", st.message());
    assert!(st.message().contains("nothing changed"), "{}", st.message());
    // A restart-only setting is refused, naming the key.
    write(
        &path,
        &reload_text(
            &["old", "keep", "new"],
            "[server]\nlisten = \"127.0.0.1:1\"\n",
        ),
    );
    let st = admin
        .reload(with_key(proto::ReloadRequest {}, Some(ADMIN)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition);
    assert!(st.message().contains("server.listen"), "{}", st.message());

    // Swap `old` for `new` while traffic runs.
    write(&path, &reload_text(&["keep", "new"], ""));
    let before = done.load(Ordering::Relaxed);
    let r = admin
        .reload(with_key(proto::ReloadRequest {}, Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.added, ["qa/new"]);
    assert_eq!(r.removed, ["qa/old"]);
    assert_eq!(r.keys, 3);
    wait_for(before + 200).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed across the reload"
    );

    // The class's next 500 decisions: the new model gets at least 5%, the removed one none.
    let mut c = RouteClient::new(ch);
    let (mut new, mut old) = (0, 0);
    for _ in 0..500 {
        let d = c
            .route(with_key(route_req("qa", ""), Some(FREE)))
            .await
            .unwrap()
            .into_inner();
        new += usize::from(d.model == "new");
        old += usize::from(d.model == "old");
        c.feedback(with_key(feedback_req(&d, 0.001), Some(FREE)))
            .await
            .unwrap();
    }
    assert!(new >= 25, "new model got {new} of 500 decisions");
    assert_eq!(old, 0);
    // The removed model keeps its history: re-adding it brings its pulls back.
    write(&path, &reload_text(&["keep", "new", "old"], ""));
    admin
        .reload(with_key(proto::ReloadRequest {}, Some(ADMIN)))
        .await
        .unwrap();
    let stats = admin
        .get_arm_stats(with_key(
            proto::GetArmStatsRequest {
                task_class: "qa".into(),
                model: "old".into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        stats.arms[0].pulls > 0,
        "history of the removed model was lost"
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Drain.

#[tokio::test]
async fn shutdown_turns_health_not_serving_before_the_listener_closes() {
    let text = format!(
        "[server]\ndrain_secs = 3\n{}{}",
        models(&["m1"]),
        class("qa", &["m1"])
    );
    let mut s = Served::start(
        Config::from_toml_str(&text, "t").unwrap(),
        "127.0.0.1:0",
        ReloadSource::default(),
    )
    .await;
    let mut h = HealthClient::new(s.channel().await);
    let check = |svc: &str| HealthCheckRequest {
        service: svc.into(),
    };
    assert_eq!(
        h.check(check("")).await.unwrap().into_inner().status,
        ServingStatus::Serving as i32
    );
    let _ = s.shutdown.take().unwrap().send(());
    let mut saw_not_serving = false;
    for _ in 0..1000 {
        let st = h
            .check(check("switchyard.v1.Route"))
            .await
            .unwrap()
            .into_inner()
            .status;
        if st == ServingStatus::NotServing as i32 {
            saw_not_serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        saw_not_serving,
        "health never reported NOT_SERVING while the listener was open"
    );
    // Requests are still served during the drain.
    let mut c = RouteClient::new(s.channel().await);
    assert!(c.route(route_req("qa", "")).await.is_ok());
    s.handle.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The tools' --tls-ca and --api-key.

#[tokio::test]
async fn tools_send_the_api_key_and_verify_tls_with_the_given_ca() {
    use switchyard::tools::client::ClientArgs;
    let s = Served::start(auth_config(), "127.0.0.1:0", ReloadSource::default()).await;
    let addr = s.addr.to_string();
    let keyless = ClientArgs::default();
    let err = switchyard::tools::stats::fetch_with(&addr, None, None, &keyless)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Bearer") || err.to_lowercase().contains("unauthenticated"),
        "{err}"
    );
    let keyed = ClientArgs {
        api_key: Some(TEAM_A.into()),
        ..Default::default()
    };
    let snap = switchyard::tools::stats::fetch_with(&addr, None, None, &keyed)
        .await
        .unwrap();
    assert!(snap.arms.iter().all(|a| a.task_class == "qa") && !snap.arms.is_empty());
    s.stop().await;

    let pki = pki();
    let s = Served::start(
        tls_config(pki.dir.path(), false),
        "127.0.0.1:0",
        ReloadSource::default(),
    )
    .await;
    std::fs::write(pki.dir.path().join("client-ca.pem"), &pki.ca_pem).unwrap();
    let args = switchyard::tools::health::HealthArgs {
        addr: format!("localhost:{}", s.addr.port()),
        service: String::new(),
        timeout_secs: 5,
        client: ClientArgs {
            tls_ca: Some(pki.dir.path().join("client-ca.pem")),
            api_key: None,
        },
    };
    let mut status = None;
    for _ in 0..250 {
        if let Ok(Ok(st)) = switchyard::tools::health::check(&args).await {
            status = Some(st);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, Some(ServingStatus::Serving));
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Certificate rotation, metrics TLS.

/// The certificate the server at `addr` presents to a client trusting only `ca_pem`; `None` when
/// the handshake fails (the client does not trust it).
async fn peer_certificate(addr: SocketAddr, ca_pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.ok()?;
    let certs = tls.get_ref().1.peer_certificates()?;
    Some(certs[0].as_ref().to_vec())
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rotates_the_certificate_for_new_connections_and_keeps_old_ones() {
    let (old, new) = (pki(), pki());
    let dir = old.dir.path();
    let path = dir.join("switchyard.toml");
    let text = format!(
        "[server]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n{}{}",
        dir.join("server.pem").display(),
        dir.join("server.key").display(),
        models(&["m1"]),
        class("qa", &["m1"])
    );
    write(&path, &text);
    let source = ReloadSource {
        paths: vec![path.clone()],
        ..Default::default()
    };
    let s = Served::start(source.load().unwrap(), "127.0.0.1:0", source).await;
    // A connection made before the rotation, trusting only the old CA: if it were re-established
    // after the rotation, its handshake would fail.
    let mut before = RouteClient::new(connect(tls_endpoint(s.addr, &old, false)).await);
    assert!(before.route(route_req("qa", "")).await.is_ok());
    assert_eq!(
        peer_certificate(s.addr, &old.ca_pem).await,
        Some(der(&old.server_cert))
    );

    // The renewed certificate (from another CA, so each side can tell) replaces the files.
    write(&dir.join("server.pem"), &new.server_cert);
    write(&dir.join("server.key"), &new.server_key);
    let mut admin = RouteClient::new(connect(tls_endpoint(s.addr, &old, false)).await);
    admin.reload(proto::ReloadRequest {}).await.unwrap();
    assert_eq!(
        peer_certificate(s.addr, &new.ca_pem).await,
        Some(der(&new.server_cert)),
        "a new connection did not see the new certificate"
    );
    assert_eq!(peer_certificate(s.addr, &old.ca_pem).await, None);
    for _ in 0..3 {
        before
            .route(route_req("qa", ""))
            .await
            .expect("a connection made before the rotation stopped working");
    }
    let mut after = RouteClient::new(connect(tls_endpoint(s.addr, &new, false)).await);
    assert!(after.route(route_req("qa", "")).await.is_ok());

    // A key file that does not parse changes nothing: the new certificate keeps serving.
    write(&dir.join("server.key"), "not a key\n");
    let st = after.reload(proto::ReloadRequest {}).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{}", st.message());
    assert!(
        st.message().contains("server.tls.key") && st.message().contains("nothing changed"),
        "{}",
        st.message()
    );
    assert_eq!(
        peer_certificate(s.addr, &new.ca_pem).await,
        Some(der(&new.server_cert))
    );
    // Turning TLS off is a listener change: refused, naming the key.
    write(
        &path,
        &format!("{}{}", models(&["m1"]), class("qa", &["m1"])),
    );
    let st = after.reload(proto::ReloadRequest {}).await.unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition);
    assert!(st.message().contains("server.tls"), "{}", st.message());
    s.stop().await;
}

fn metrics_config(dir: Option<&Path>) -> Config {
    let tls = dir.map_or(String::new(), |d| {
        format!(
            "[server]\nmetrics_tls = {{ cert = \"{}\", key = \"{}\" }}\n",
            d.join("server.pem").display(),
            d.join("server.key").display()
        )
    });
    let text = format!("{tls}{}{}", models(&["m1"]), class("qa", &["m1"]));
    Config::from_toml_str(&text, "metrics test").unwrap()
}

#[tokio::test]
async fn metrics_listener_serves_tls_and_refuses_plaintext_off_loopback() {
    let pki = pki();
    // Plaintext metrics on a non-loopback address are refused, naming the key that fixes it.
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let options = ServeOptions {
        metrics: Some(server::bind("0.0.0.0:0".parse().unwrap()).await.unwrap()),
        ..Default::default()
    };
    let err = server::serve_with(metrics_config(None), options, listener, async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metrics") && err.contains("server.metrics_tls"),
        "{err}"
    );

    // With server.metrics_tls, the same address serves over TLS.
    let metrics = server::bind("0.0.0.0:0".parse().unwrap()).await.unwrap();
    let port = metrics.local_addr().unwrap().port();
    let options = ServeOptions {
        metrics: Some(metrics),
        ..Default::default()
    };
    let s = Served::start_with(metrics_config(Some(pki.dir.path())), "127.0.0.1:0", options).await;
    let mut c = RouteClient::new(s.channel().await);
    c.route(route_req("qa", "")).await.unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/metrics");
    let mut body = None;
    for _ in 0..250 {
        if let Ok(r) = client.get(&url).send().await {
            assert!(r.status().is_success(), "{}", r.status());
            body = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = body.expect("metrics endpoint never answered over TLS");
    assert!(
        body.contains("switchyard_decisions_total") || body.contains("grpc_server_handled_total"),
        "{body}"
    );
    // A client that does not trust the CA, or speaks plaintext, gets nothing.
    let untrusting = reqwest::Client::builder().build().unwrap();
    assert!(untrusting.get(&url).send().await.is_err());
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "plaintext scrape of a TLS metrics listener succeeded"
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Reload: keys, budgets, probes, restart-only settings.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_keys_and_budgets_and_refuses_restart_only_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    write(&path, &reload_text(&["m1"], budgets_toml()));
    let source = ReloadSource {
        paths: vec![path.clone()],
        ..Default::default()
    };
    let s = Served::start(source.load().unwrap(), "127.0.0.1:0", source).await;
    let mut c = RouteClient::new(s.channel().await);
    assert_eq!(
        code(c.route(with_key(route_req("qa", ""), Some(FREE))).await),
        Code::Ok
    );
    // `batch` (FREE) is revoked and a new key is issued; a new budget appears.
    const ISSUED: &str = "sk-issued-test-4";
    let swapped = reload_text(&["m1"], budgets_toml())
        .replace(&hash_key_hex(FREE), &hash_key_hex(ISSUED))
        + "[budgets.team-c]\nperiod = \"daily\"\nlimit_usd = 5.0\n";
    write(&path, &swapped);
    let r = c
        .reload(with_key(proto::ReloadRequest {}, Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.keys, 3);
    assert_eq!(
        code(c.route(with_key(route_req("qa", ""), Some(FREE))).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(c.route(with_key(route_req("qa", ""), Some(ISSUED))).await),
        Code::Ok
    );
    let budgets = c
        .get_budgets(with_key(proto::GetBudgetsRequest::default(), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    assert!(budgets.budgets.iter().any(|b| b.budget_key == "team-c"));

    // Settings that need a restart are refused, naming the key; nothing changes.
    let restart_only = [
        ("[server]\ndata_dir = \"/elsewhere\"\n", "server.data_dir"),
        ("[storage]\ndurability = \"memory\"\n", "storage"),
        (
            "[server]\nallow_plaintext = true\n",
            "server.allow_plaintext",
        ),
        (
            "[server]\nmetrics_tls = { cert = \"c.pem\", key = \"k.pem\" }\n",
            "server.metrics_tls",
        ),
    ];
    for (extra, key) in restart_only {
        write(&path, &format!("{extra}{swapped}"));
        let st = c
            .reload(with_key(proto::ReloadRequest {}, Some(ADMIN)))
            .await
            .unwrap_err();
        assert_eq!(
            st.code(),
            Code::FailedPrecondition,
            "{key}: {}",
            st.message()
        );
        assert!(st.message().contains(key), "{key}: {}", st.message());
        assert_eq!(
            code(c.route(with_key(route_req("qa", ""), Some(ISSUED))).await),
            Code::Ok
        );
    }
    s.stop().await;
}

/// A stand-in provider health endpoint that counts the probes it receives.
async fn probe_target() -> (SocketAddr, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_restarts_health_probes_at_their_new_url() {
    let (a, a_hits) = probe_target().await;
    let (b, b_hits) = probe_target().await;
    let probe = |addr: SocketAddr| {
        format!("[health_probes.p-m1]\nurl = \"http://{addr}/health\"\ninterval_secs = 0.05\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    write(&path, &reload_text(&["m1"], &probe(a)));
    let source = ReloadSource {
        paths: vec![path.clone()],
        ..Default::default()
    };
    let s = Served::start(source.load().unwrap(), "127.0.0.1:0", source).await;
    wait_until("probes of the first URL", || {
        a_hits.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(b_hits.load(Ordering::SeqCst), 0);

    write(&path, &reload_text(&["m1"], &probe(b)));
    let mut c = RouteClient::new(s.channel().await);
    c.reload(with_key(proto::ReloadRequest {}, Some(ADMIN)))
        .await
        .unwrap();
    wait_until("a probe of the new URL", || {
        b_hits.load(Ordering::SeqCst) >= 1
    })
    .await;
    let a_after = a_hits.load(Ordering::SeqCst);
    let b_now = b_hits.load(Ordering::SeqCst);
    wait_until("more probes of the new URL", || {
        b_hits.load(Ordering::SeqCst) >= b_now + 3
    })
    .await;
    assert_eq!(
        a_hits.load(Ordering::SeqCst),
        a_after,
        "the old probe kept running after the reload"
    );
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tenant scope of Feedback.

const TEAM_B: &str = "sk-team-b-test-5";

/// Two tenants sharing one budget: the budget key cannot tell their decisions apart.
fn shared_budget_toml() -> String {
    format!(
        "{}{}[budgets.shared]\nperiod = \"monthly\"\nlimit_usd = 100.0\n\
         [auth.keys.ops]\nsha256 = \"{}\"\nrole = \"admin\"\n\
         [auth.keys.a-bot]\nsha256 = \"{}\"\nrole = \"client\"\ntenant = \"team-a\"\n\
         [auth.keys.b-bot]\nsha256 = \"{}\"\nrole = \"client\"\ntenant = \"team-b\"\n\
         [auth.tenants.team-a]\nbudget_key = \"shared\"\n\
         [auth.tenants.team-b]\nbudget_key = \"shared\"\n",
        models(&["m1", "m2"]),
        class("qa", &["m1", "m2"]),
        hash_key_hex(ADMIN),
        hash_key_hex(TEAM_A),
        hash_key_hex(TEAM_B)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_is_scoped_to_the_tenant_a_decision_was_made_under_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(&shared_budget_toml(), "tenants").unwrap();
    let start = |config: Config| {
        let store = switchyard::store::Store::open_with(data.path(), 16).unwrap();
        let options = ServeOptions {
            store: Some(store),
            ..Default::default()
        };
        Served::start_with(config, "127.0.0.1:0", options)
    };
    let s = start(config.clone()).await;
    let mut c = RouteClient::new(s.channel().await);
    let mut req = route_req("qa", "");
    req.request_id = "req-of-team-a".into();
    let d = c
        .route(with_key(req.clone(), Some(TEAM_A)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.budget_key, "shared");
    // Same budget, other tenant: refused, and the decision is still open for its own tenant.
    let st = c
        .feedback(with_key(feedback_req(&d, 0.5), Some(TEAM_B)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{}", st.message());
    assert!(st.message().contains("team-b"), "{}", st.message());
    // Replaying team-a's request_id does not hand its decision to team-b.
    assert_eq!(
        code(c.route(with_key(req.clone(), Some(TEAM_B))).await),
        Code::PermissionDenied
    );
    let replay = c
        .route(with_key(req, Some(TEAM_A)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.decision_id, d.decision_id);
    c.feedback(with_key(feedback_req(&d, 0.5), Some(TEAM_A)))
        .await
        .unwrap();

    // The tenant is stored with the decision: it still holds after a restart.
    let pending = c
        .route(with_key(route_req("qa", ""), Some(TEAM_B)))
        .await
        .unwrap()
        .into_inner();
    s.stop().await;
    let s = start(config).await;
    let mut c = RouteClient::new(s.channel().await);
    assert_eq!(
        code(
            c.feedback(with_key(feedback_req(&pending, 0.5), Some(TEAM_A)))
                .await
        ),
        Code::PermissionDenied
    );
    let r = c
        .feedback(with_key(feedback_req(&pending, 0.5), Some(TEAM_B)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted && !r.duplicate);
    // A key without a tenant (the operator's) may report on any decision.
    let admin_made = c
        .route(with_key(route_req("qa", "shared"), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        code(
            c.feedback(with_key(feedback_req(&admin_made, 0.1), Some(TEAM_A)))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            c.feedback(with_key(feedback_req(&admin_made, 0.1), Some(ADMIN)))
                .await
        ),
        Code::Ok
    );
    s.stop().await;
}

/// An evicted decision's late Feedback is scoped by the tenant its tombstone recorded, not by
/// the budget key both tenants share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_feedback_is_scoped_to_the_tenant_the_tombstone_recorded() {
    let text = format!("{}[limits]\nmax_pending = 1\n", shared_budget_toml());
    let config = Config::from_toml_str(&text, "tenants").unwrap();
    let s = Served::start(config, "127.0.0.1:0", ReloadSource::default()).await;
    let mut c = RouteClient::new(s.channel().await);
    let first = c
        .route(with_key(route_req("qa", ""), Some(TEAM_A)))
        .await
        .unwrap()
        .into_inner();
    // A second decision evicts the first (max_pending = 1): its reservation becomes a tombstone.
    c.route(with_key(route_req("qa", ""), Some(TEAM_B)))
        .await
        .unwrap();
    let st = c
        .feedback(with_key(feedback_req(&first, 0.5), Some(TEAM_B)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::PermissionDenied, "{}", st.message());
    let r = c
        .feedback(with_key(feedback_req(&first, 0.5), Some(TEAM_A)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted && r.late, "{r:?}");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// OpenTelemetry export.

/// A local OTLP/HTTP receiver: keeps every span it is sent.
async fn otlp_receiver() -> (
    SocketAddr,
    Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
) {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message;
    let spans = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        kept.lock().unwrap().extend(ss.spans);
                    }
                }
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, spans)
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_carries_a_route_span_with_class_model_and_reason() {
    let (collector, spans) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    write(
        &path,
        &format!(
            "[server]\ndrain_secs = 0\n[storage]\ndurability = \"memory\"\n{}{}",
            models(&["m1", "m2"]),
            class("qa", &["m1", "m2"])
        ),
    );
    let mut served = ServedBinary::builder()
        .memory()
        .config(&path)
        .args(["--otlp-endpoint".to_string(), format!("http://{collector}")])
        .start();
    let ch = connect(Endpoint::from_shared(format!("http://{}", served.addr)).unwrap()).await;
    let d = RouteClient::new(ch)
        .route(route_req("qa", ""))
        .await
        .unwrap()
        .into_inner();
    // SIGTERM: the server drains, stops and flushes the queued spans on its way out.
    served.terminate(Duration::from_secs(10)).await;
    let route = |spans: &[opentelemetry_proto::tonic::trace::v1::Span]| {
        spans
            .iter()
            .find(|s| s.name == "switchyard.v1.Route/Route")
            .cloned()
    };
    wait_until("the Route span at the collector", || {
        route(&spans.lock().unwrap()).is_some()
    })
    .await;
    let span = route(&spans.lock().unwrap()).unwrap();
    assert_eq!(
        attribute(&span, "switchyard.task_class").as_deref(),
        Some("qa")
    );
    assert_eq!(
        attribute(&span, "switchyard.model").as_deref(),
        Some(d.model.as_str())
    );
    assert_eq!(
        attribute(&span, "switchyard.reason").as_deref(),
        Some(d.reason.as_str())
    );
    assert_eq!(attribute(&span, "rpc.method").as_deref(), Some("Route"));
}
