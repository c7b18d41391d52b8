//! The response cache over real gRPC: exact and semantic hits and misses, the negation pair,
//! caller embeddings, TTL expiry, InvalidateCache, and a seeded workload with repeated prompts
//! whose hit rate and saved cost show in the metrics and in GetArmStats (`switchyard stats`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::{config, spec, TestServer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use switchyard::proto::route_client::RouteClient;
use switchyard::proto::{
    ChatMessage, FeedbackRequest, GetArmStatsRequest, InvalidateCacheRequest, Outcome,
    RouteRequest, RouteResponse,
};
use tonic::transport::Channel;
use tonic::Code;

type Client = RouteClient<Channel>;

async fn route(c: &mut Client, prompt: &str) -> RouteResponse {
    c.route(RouteRequest {
        task_class: "bench".into(),
        prompt: prompt.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// Reports a successful call of the routed model with `response`, `quality` and a cost.
async fn answer(c: &mut Client, d: &RouteResponse, response: &str, quality: f64, cost: f64) {
    c.feedback(FeedbackRequest {
        decision_id: d.decision_id.clone(),
        outcome: Outcome::Success as i32,
        latency_ms: Some(1200.0),
        cost_usd: Some(cost),
        quality: Some(quality),
        response: response.into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Routes `prompt`, which must miss, and stores `response` for it.
async fn miss_and_store(c: &mut Client, prompt: &str, response: &str) -> RouteResponse {
    let d = route(c, prompt).await;
    assert!(d.cache_hit.is_none(), "{prompt:?} hit: {d:?}");
    assert!(!d.model.is_empty());
    answer(c, &d, response, 0.9, 0.002).await;
    d
}

fn hit_text(d: &RouteResponse) -> Option<&str> {
    d.cache_hit.as_ref().map(|h| h.response.as_str())
}

async fn cache_stats(c: &mut Client) -> switchyard::proto::CacheStats {
    let stats = c
        .get_arm_stats(GetArmStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    stats
        .cache
        .into_iter()
        .next()
        .expect("the class has a cache")
}

async fn server(cache: &str) -> TestServer {
    let class = format!("cache = {cache}");
    TestServer::start(config(&[spec("m0", "p"), spec("m1", "q")], &class, "")).await
}

#[tokio::test]
async fn exact_cache_hits_the_same_prompt_and_nothing_else() {
    let s = server(r#"{ mode = "exact", min_quality = 0.5 }"#).await;
    let mut c = s.client().await;
    let first = miss_and_store(&mut c, "What is the capital of France?", "Paris").await;

    let hit = route(&mut c, "What is  the capital of France?").await;
    let h = hit.cache_hit.as_ref().expect("a hit");
    assert_eq!(
        (
            h.response.as_str(),
            h.model.as_str(),
            h.source_decision_id.as_str()
        ),
        ("Paris", first.model.as_str(), first.decision_id.as_str())
    );
    assert_eq!((hit.reason.as_str(), hit.propensity), ("cache_hit", 1.0));
    assert!(hit.model.is_empty() && hit.fallbacks.is_empty());
    assert_ne!(hit.decision_id, first.decision_id);
    assert!((h.saved_cost_usd - 0.002).abs() < 1e-12);

    // Another system prompt, another output cap, or another prompt: misses.
    let sys = c
        .route(RouteRequest {
            task_class: "bench".into(),
            prompt: "What is the capital of France?".into(),
            messages: vec![ChatMessage {
                role: "system".into(),
                content: "Answer in one word".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(sys.cache_hit.is_none());
    assert!(route(&mut c, "What is the capital of Spain?")
        .await
        .cache_hit
        .is_none());

    // Satisfaction with a hit is accepted and teaches no arm.
    let before = c
        .get_arm_stats(GetArmStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .arms;
    let fb = c
        .feedback(FeedbackRequest {
            decision_id: hit.decision_id.clone(),
            outcome: Outcome::Success as i32,
            quality: Some(1.0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(fb.accepted && !fb.duplicate && fb.arm.is_none());
    let after = c
        .get_arm_stats(GetArmStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .arms;
    let counts = |arms: &[switchyard::proto::ArmStats]| {
        arms.iter()
            .map(|a| (a.pulls, a.successes, a.quality_reports))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&before), counts(&after));
    s.stop().await;
}

#[tokio::test]
async fn low_quality_and_failed_calls_are_not_stored() {
    let s = server(r#"{ mode = "exact", min_quality = 0.7 }"#).await;
    let mut c = s.client().await;
    let d = route(&mut c, "Write a limerick").await;
    answer(&mut c, &d, "bad limerick", 0.3, 0.001).await;
    assert!(route(&mut c, "Write a limerick").await.cache_hit.is_none());
    // The quality arriving later, in its own Feedback, stores the response given before.
    let d = route(&mut c, "Write a haiku").await;
    c.feedback(FeedbackRequest {
        decision_id: d.decision_id.clone(),
        outcome: Outcome::Success as i32,
        response: "good haiku".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(route(&mut c, "Write a haiku").await.cache_hit.is_none());
    c.feedback(FeedbackRequest {
        decision_id: d.decision_id.clone(),
        quality: Some(0.9),
        ..Default::default()
    })
    .await
    .unwrap();
    let hit = route(&mut c, "Write a haiku").await;
    assert_eq!(hit_text(&hit), Some("good haiku"));
    s.stop().await;
}

#[tokio::test]
async fn semantic_cache_hits_near_copies_but_not_the_negation() {
    let s = server(r#"{ mode = "semantic" }"#).await;
    let mut c = s.client().await;
    miss_and_store(&mut c, "enable 2FA", "Settings > Security > Enable").await;
    miss_and_store(
        &mut c,
        "How do I reset my password from the account settings page?",
        "Use 'Forgot password'",
    )
    .await;
    for near in [
        "ENABLE 2fa",
        "  enable   2FA!! ",
        "how do i reset my pasword from the account settings page",
    ] {
        let d = route(&mut c, near).await;
        assert!(d.cache_hit.is_some(), "{near:?} missed");
        assert!(d.cache_hit.as_ref().unwrap().similarity >= 0.95);
    }
    let neg = route(&mut c, "disable 2FA").await;
    assert!(neg.cache_hit.is_none(), "the negation hit: {neg:?}");
    let stats = cache_stats(&mut c).await;
    assert_eq!(
        (stats.mode.as_str(), stats.lookups, stats.hits),
        ("semantic", 6, 3)
    );
    s.stop().await;
}

#[tokio::test]
async fn caller_embeddings_hit_by_cosine_and_are_checked() {
    let s = server(r#"{ mode = "semantic", dimensions = 4, similarity = 0.9 }"#).await;
    let mut c = s.client().await;
    let with = |prompt: &str, e: Vec<f32>| RouteRequest {
        task_class: "bench".into(),
        prompt: prompt.into(),
        embedding: e,
        ..Default::default()
    };
    let d = c
        .route(with("refund policy?", vec![1.0, 0.0, 0.0, 0.0]))
        .await
        .unwrap()
        .into_inner();
    answer(&mut c, &d, "30 days", 0.9, 0.01).await;
    // cos = 0.95 >= 0.9 hits whatever the text; cos = 0.7 misses.
    let near = c
        .route(with(
            "what is your refund window",
            vec![0.95, 0.3122, 0.0, 0.0],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hit_text(&near), Some("30 days"));
    let far = c
        .route(with("refund policy?", vec![0.7, 0.7141, 0.0, 0.0]))
        .await
        .unwrap()
        .into_inner();
    assert!(far.cache_hit.is_none());
    let bad = c
        .route(with("refund policy?", vec![1.0, 0.0]))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("exactly 4"), "{}", bad.message());
    s.stop().await;
}

/// Polls `f` until it returns true, for at most 30 s.
async fn eventually<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "condition not reached in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let s = server(r#"{ mode = "exact", ttl_secs = 0.3 }"#).await;
    let mut c = s.client().await;
    let started = Instant::now();
    miss_and_store(&mut c, "latest news", "old news").await;
    let first = route(&mut c, "latest news").await;
    // The entry was stored after `started`: a lookup answered within 250 ms of it was within the
    // TTL and must hit (on a slow host the first lookup may already be late, and is skipped).
    if started.elapsed() < Duration::from_millis(250) {
        assert_eq!(hit_text(&first), Some("old news"));
    }
    let mut c2 = c.clone();
    eventually(|| {
        let mut c = c2.clone();
        async move { route(&mut c, "latest news").await.cache_hit.is_none() }
    })
    .await;
    // Expired entries are swept, not only skipped.
    eventually(|| {
        let mut c = c2.clone();
        async move { cache_stats(&mut c).await.entries == 0 }
    })
    .await;
    assert!(cache_stats(&mut c2).await.expired >= 1);
    s.stop().await;
}

#[tokio::test]
async fn invalidate_cache_by_prefix_tag_and_class() {
    let s = server(r#"{ mode = "exact" }"#).await;
    let mut c = s.client().await;
    miss_and_store(&mut c, "Weather in Paris", "sunny").await;
    miss_and_store(&mut c, "Weather in Rome", "rain").await;
    miss_and_store(&mut c, "Define entropy", "disorder").await;
    let inv = |prefix: &str, tag: &str, class: &str| InvalidateCacheRequest {
        task_class: class.into(),
        prefix: prefix.into(),
        tag: tag.into(),
    };
    let n = c
        .invalidate_cache(inv("weather in paris", "", ""))
        .await
        .unwrap();
    assert_eq!(n.into_inner().invalidated, 1);
    assert!(route(&mut c, "Weather in Paris").await.cache_hit.is_none());
    assert_eq!(
        hit_text(&route(&mut c, "Weather in Rome").await),
        Some("rain")
    );
    let n = c.invalidate_cache(inv("", "model:nope", "")).await.unwrap();
    assert_eq!(n.into_inner().invalidated, 0);
    let bad = c
        .invalidate_cache(inv("", "colour:red", ""))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let unknown = c.invalidate_cache(inv("", "", "nope")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let n = c.invalidate_cache(inv("", "", "bench")).await.unwrap();
    assert_eq!(n.into_inner().invalidated, 2);
    assert_eq!(cache_stats(&mut c).await.entries, 0);
    s.stop().await;
}

#[tokio::test]
async fn a_workload_with_repeats_shows_hit_rate_and_saved_cost_in_metrics_and_stats() {
    let class = r#"cache = { mode = "exact" }"#;
    let cfg = config(&[spec("m0", "p"), spec("m1", "q")], class, "");
    let (s, url) = TestServer::start_with_metrics(cfg).await;
    let mut c = s.client().await;
    let mut rng = SmallRng::seed_from_u64(18);
    let (mut seen, mut expected_hits, mut saved) = (Vec::<String>::new(), 0_u64, 0.0_f64);
    let n = 300;
    for i in 0..n {
        // 30% of the requests repeat an earlier prompt.
        let repeat = !seen.is_empty() && rng.random_bool(0.3);
        let prompt = if repeat {
            seen[rng.random_range(0..seen.len())].clone()
        } else {
            format!("question number {i}")
        };
        let d = route(&mut c, &prompt).await;
        assert_eq!(d.cache_hit.is_some(), repeat, "request {i}: {prompt:?}");
        if let Some(h) = &d.cache_hit {
            expected_hits += 1;
            saved += h.saved_cost_usd;
            continue;
        }
        let cost = 0.001 * (1.0 + (i % 7) as f64);
        answer(&mut c, &d, &format!("answer {i}"), 0.8, cost).await;
        seen.push(prompt);
    }
    assert!(expected_hits > 60 && expected_hits < 120, "{expected_hits}");
    let stats = cache_stats(&mut c).await;
    assert_eq!((stats.lookups, stats.hits), (n, expected_hits));
    assert!((stats.hit_rate - expected_hits as f64 / n as f64).abs() < 1e-12);
    assert!(
        (stats.saved_cost_usd - saved).abs() < 1e-9,
        "{stats:?} vs {saved}"
    );
    assert!((stats.saved_latency_ms - 1200.0 * expected_hits as f64).abs() < 1e-6);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{task_class=\"bench\"}}")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    assert_eq!(value("switchyard_cache_hits_total"), expected_hits as f64);
    assert_eq!(value("switchyard_cache_lookups_total"), n as f64);
    assert!((value("switchyard_cache_saved_cost_usd_total") - saved).abs() < 1e-9);
    assert!((value("switchyard_cache_hit_rate") - stats.hit_rate).abs() < 1e-9);
    assert!(value("switchyard_cache_saved_latency_seconds_total") > 0.0);
    // The stats table shows the cache too.
    let text = switchyard::tools::stats::render_cache(&[stats]);
    assert!(
        text.contains("bench") && text.contains("hit rate"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_reload_that_removes_a_model_drops_its_entries() {
    use switchyard::server::{self, security::ReloadSource, ServeOptions};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    let text = |models: &str| {
        format!(
            "[policy]\nseed = 7\n[models.m0]\nprovider = \"p\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
             [models.m1]\nprovider = \"q\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
             [task_classes.bench]\nmodels = [{models}]\ncache = {{ mode = \"exact\" }}\n"
        )
    };
    std::fs::write(&path, text("\"m0\", \"m1\"")).unwrap();
    let config = switchyard::config::Config::load(&path).unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        reload: ReloadSource {
            paths: vec![path.clone()],
            ..Default::default()
        },
        ..Default::default()
    };
    let handle = tokio::spawn(server::serve_with(config, options, listener, async {
        let _ = rx.await;
    }));
    let channel = loop {
        match Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(ch) => break ch,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut c = RouteClient::new(channel);
    // Store answers until each model has produced at least one.
    let mut by_model: Vec<(String, String)> = Vec::new();
    for i in 0..200 {
        let prompt = format!("prompt {i}");
        let d = miss_and_store(&mut c, &prompt, "answer").await;
        by_model.push((prompt, d.model.clone()));
        if ["m0", "m1"]
            .iter()
            .all(|m| by_model.iter().any(|(_, x)| x == m))
        {
            break;
        }
    }
    std::fs::write(&path, text("\"m0\"")).unwrap();
    let reloaded = c.reload(switchyard::proto::ReloadRequest {}).await.unwrap();
    assert_eq!(reloaded.into_inner().removed, vec!["bench/m1".to_string()]);
    for (prompt, model) in &by_model {
        let d = route(&mut c, prompt).await;
        assert_eq!(
            d.cache_hit.is_some(),
            model == "m0",
            "{prompt:?} of {model}"
        );
    }
    let _ = tx.send(());
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn requests_without_a_class_are_classified_then_cached_under_their_class() {
    // `bench` (the default) and `code` cache exactly; the classifier sends fenced code to `code`.
    let extra = "cache = { mode = \"exact\" }\n\
                 [task_classes.code]\nmodels = [\"m1\"]\ncache = { mode = \"exact\" }\n\
                 [classifier]\ndefault = \"bench\"\n\
                 [[classifier.rules]]\nname = \"fenced\"\nclass = \"code\"\ncode = true\n";
    let s = TestServer::start(config(&[spec("m0", "p"), spec("m1", "q")], extra, "")).await;
    let mut c = s.client().await;
    let unlabelled = |prompt: &str| RouteRequest {
        prompt: prompt.into(),
        ..Default::default()
    };
    let code = "Why does this not compile?\n```rust\nfn main() { let x: u8 = 256; }\n```";
    for (prompt, class, rule) in [
        (code, "code", "fenced"),
        ("What is the capital of France?", "bench", "default"),
    ] {
        let first = c.route(unlabelled(prompt)).await.unwrap().into_inner();
        assert!(first.cache_hit.is_none(), "{first:?}");
        assert_eq!(
            (first.task_class.as_str(), first.classified_by.as_str()),
            (class, rule)
        );
        let response = format!("the answer for {class}");
        answer(&mut c, &first, &response, 0.9, 0.003).await;

        let again = c.route(unlabelled(prompt)).await.unwrap().into_inner();
        assert_eq!(hit_text(&again), Some(response.as_str()), "{again:?}");
        assert_eq!(
            (
                again.reason.as_str(),
                again.task_class.as_str(),
                again.classified_by.as_str()
            ),
            ("cache_hit", class, rule)
        );
        let h = again.cache_hit.as_ref().unwrap();
        assert_eq!(
            (h.model.as_str(), h.source_decision_id.as_str()),
            (first.model.as_str(), first.decision_id.as_str())
        );
        // The entry is the class's: a request naming the class hits it too (no rule named).
        let named = c
            .route(RouteRequest {
                task_class: class.into(),
                ..unlabelled(prompt)
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(hit_text(&named), Some(response.as_str()));
        assert_eq!(named.classified_by, "");
    }
    let stats = c
        .get_arm_stats(GetArmStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<(&str, u64, u64, u64)> = stats
        .cache
        .iter()
        .map(|s| (s.task_class.as_str(), s.lookups, s.hits, s.stored))
        .collect();
    assert_eq!(counts, vec![("bench", 3, 2, 1), ("code", 3, 2, 1)]);
    s.stop().await;
}
