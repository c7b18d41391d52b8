//! Prompt-aware Route over real gRPC: input tokens counted from the prompt (checked against
//! committed counts from an independent tokenizer implementation), output-length governance,
//! the classifier for requests sent without a task class (tenant scopes honoured), the prompt
//! size bound, and `switchyard classify` on the RouterArena prompts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::TestServer;
use switchyard::auth::hash_key_hex;
use switchyard::config::Config;
use switchyard::proto;
use switchyard::proto::route_client::RouteClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// Price of every model, USD per million input / output tokens.
const IN_USD: f64 = 2.0;
const OUT_USD: f64 = 8.0;

const TEAM_KEY: &str = "sk-prompt-team-1";

fn model(id: &str, extra: &str) -> String {
    format!(
        "[models.\"{id}\"]\nprovider = \"p\"\ninput_usd_per_mtok = {IN_USD}\noutput_usd_per_mtok = {OUT_USD}\nlatency_ms = 500\nlatency_p95_ms = 1000\nquality = 0.7\n{extra}\n"
    )
}

/// Classes `o200k` (gpt-4o-mini), `cl100k` (gpt-4), `mixed` (gpt-4o-mini and an estimated
/// model), and the classifier's `qa`, `code`, `summarize`; `governed` caps output tokens and
/// pays from a budget.
fn config_text(auth: bool) -> String {
    let mut t = String::from("[policy]\nseed = 11\n");
    t += &model("gpt-4o-mini", "");
    t += &model("gpt-4", "");
    t += &model("house-model", "");
    t += &model("house-o200k", "tokenizer = \"o200k_base\"");
    t += "[task_classes.o200k]\nmodels = [\"gpt-4o-mini\"]\n";
    t += "[task_classes.cl100k]\nmodels = [\"gpt-4\"]\n";
    t += "[task_classes.mixed]\nmodels = [\"gpt-4o-mini\", \"house-model\"]\n";
    t += "[task_classes.configured]\nmodels = [\"house-o200k\"]\n";
    t += "[task_classes.qa]\nmodels = [\"gpt-4o-mini\"]\n";
    t += "[task_classes.code]\nmodels = [\"gpt-4.1\"]\n";
    t += &model("gpt-4.1", "");
    t += "[task_classes.summarize]\nmodels = [\"gpt-4o-mini\"]\nmax_output_tokens = { default = 128, cap = 512 }\n";
    t += "[task_classes.governed]\nmodels = [\"gpt-4o-mini\"]\nbudget = \"ops\"\nmax_output_tokens = { default = 256, cap = 1024 }\n";
    t += "[budgets.ops]\nperiod = \"monthly\"\nlimit_usd = 1000.0\n";
    t += r#"
[classifier]
default = "qa"
[[classifier.rules]]
name = "code-block"
class = "code"
code = true
[[classifier.rules]]
name = "summarize-request"
class = "summarize"
keywords = ["summarize", "tl;dr"]
[[classifier.rules]]
name = "long"
class = "summarize"
min_tokens = 400
"#;
    if auth {
        t += &format!(
            "[auth.keys.team]\nsha256 = \"{}\"\nrole = \"client\"\ntenant = \"team\"\n[auth.tenants.team]\nbudget_key = \"ops\"\ntask_classes = [\"qa\", \"summarize\", \"governed\"]\n",
            hash_key_hex(TEAM_KEY)
        );
    }
    t
}

fn config(auth: bool) -> Config {
    Config::from_toml_str(&config_text(auth), "prompt test config").unwrap()
}

fn prompt_req(class: &str, prompt: &str) -> proto::RouteRequest {
    proto::RouteRequest {
        task_class: class.into(),
        prompt: prompt.into(),
        ..Default::default()
    }
}

/// Routes `req`, which must succeed.
async fn route(
    client: &mut RouteClient<Channel>,
    req: impl tonic::IntoRequest<proto::RouteRequest>,
) -> proto::RouteResponse {
    client.route(req).await.unwrap().into_inner()
}

struct Fixture {
    encoding: String,
    count: u64,
    text: String,
}

/// `tests/fixtures/token_counts.jsonl`: counts by gpt-tokenizer (npm), an independent JavaScript
/// implementation of OpenAI's encodings (see tests/fixtures/README.md).
fn fixtures() -> Vec<Fixture> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/token_counts.jsonl"),
    )
    .unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Fixture {
                encoding: v["encoding"].as_str().unwrap().to_string(),
                count: v["count"].as_u64().unwrap(),
                text: v["text"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

#[tokio::test]
async fn counted_tokens_match_an_independent_tokenizer_within_one_percent() {
    let server = TestServer::start(config(false)).await;
    let mut client = server.client().await;
    let fixtures = fixtures();
    assert!(fixtures.len() >= 50, "{} fixtures", fixtures.len());
    let mut worst = 0.0f64;
    for f in &fixtures {
        let class = match f.encoding.as_str() {
            "o200k_base" => "o200k",
            "cl100k_base" => "cl100k",
            other => panic!("fixture encoding {other}"),
        };
        let r = route(&mut client, prompt_req(class, &f.text)).await;
        let got = r.input_tokens as f64;
        let want = f.count as f64;
        let err = (got - want).abs() / want;
        worst = worst.max(err);
        assert!(
            err <= 0.01,
            "{}: counted {got}, fixture {want} for {:?}",
            f.encoding,
            &f.text.chars().take(60).collect::<String>()
        );
    }
    eprintln!(
        "worst relative error over {} fixtures: {worst}",
        fixtures.len()
    );

    // A model named in the config's `tokenizer` key counts with that encoding.
    let f = fixtures
        .iter()
        .find(|f| f.encoding == "o200k_base" && f.count > 100)
        .unwrap();
    let r = route(&mut client, prompt_req("configured", &f.text)).await;
    assert_eq!(r.input_tokens as u64, f.count);

    // The request's own count wins over the prompt's.
    let mut req = prompt_req("o200k", &f.text);
    req.input_tokens = 7;
    assert_eq!(route(&mut client, req).await.input_tokens, 7);

    // Without a prompt or a count, the class's typical size (500 by default).
    let r = route(&mut client, prompt_req("o200k", "")).await;
    assert_eq!(r.input_tokens, 500);
    server.stop().await;
}

#[tokio::test]
async fn a_class_mixing_tokenizers_assumes_the_largest_count() {
    let server = TestServer::start(config(false)).await;
    let mut client = server.client().await;
    // Dense text for BPE (long runs of one letter) and dense for the estimate: the estimate is one
    // token per four characters, o200k_base merges runs of letters into far fewer tokens.
    let f = fixtures()
        .into_iter()
        .find(|f| f.encoding == "o200k_base" && f.text.starts_with("aaaa"))
        .unwrap();
    let estimate = (f.text.chars().count() as u64).div_ceil(4);
    assert!(estimate > f.count, "the fixture should favour the estimate");
    let r = route(&mut client, prompt_req("mixed", &f.text)).await;
    assert_eq!(r.input_tokens as u64, estimate);
    // Restricted to the OpenAI model, its own count.
    let mut req = prompt_req("mixed", &f.text);
    req.candidates = vec!["gpt-4o-mini".into()];
    let r = route(&mut client, req).await;
    assert_eq!(r.input_tokens as u64, f.count);
    server.stop().await;
}

#[tokio::test]
async fn output_tokens_are_governed_per_class_and_reserved() {
    let server = TestServer::start(config(false)).await;
    let mut client = server.client().await;
    let f = fixtures()
        .into_iter()
        .find(|f| f.encoding == "o200k_base" && f.count > 50)
        .unwrap();
    for (asked, governed) in [(0i64, 256i64), (100, 100), (5000, 1024)] {
        let mut req = prompt_req("governed", &f.text);
        req.max_output_tokens = asked;
        let r = route(&mut client, req).await;
        assert_eq!(r.max_output_tokens, governed, "asked {asked}");
        assert_eq!(r.input_tokens as u64, f.count);
        assert_eq!(r.budget_key, "ops");
        // The reservation is the list price at the counted input and the governed output.
        let budgets = client
            .get_budgets(proto::GetBudgetsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let ops = budgets
            .budgets
            .iter()
            .find(|b| b.budget_key == "ops")
            .unwrap();
        let want = (f.count as f64 * IN_USD + governed as f64 * OUT_USD) / 1e6;
        let reserved_now = ops.reserved_usd;
        // Settle at zero cost so the next request's reservation stands alone.
        client
            .feedback(proto::FeedbackRequest {
                decision_id: r.decision_id.clone(),
                outcome: proto::Outcome::Success as i32,
                cost_usd: Some(0.0),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            (reserved_now - want).abs() < 1e-12,
            "reserved {reserved_now}, want {want} for asked {asked}"
        );
    }
    // A class without governance returns no limit.
    let r = route(&mut client, prompt_req("o200k", "hi")).await;
    assert_eq!(r.max_output_tokens, 0);
    server.stop().await;
}

#[tokio::test]
async fn requests_without_a_class_are_classified_by_the_rules() {
    let server = TestServer::start(config(false)).await;
    let mut client = server.client().await;
    let cases = [
        (
            "Why does this fail?\n```rust\nfn main() { let x: u8 = 256; }\n```",
            "code",
            "code-block",
        ),
        (
            "Please summarize the meeting notes below.",
            "summarize",
            "summarize-request",
        ),
        ("What is the capital of Australia?", "qa", "default"),
    ];
    for (prompt, class, rule) in cases {
        let r = route(&mut client, prompt_req("", prompt)).await;
        assert_eq!(
            (r.task_class.as_str(), r.classified_by.as_str()),
            (class, rule),
            "{prompt}"
        );
    }
    // A token threshold: a long prompt without keywords (fixtures hold the long texts).
    let long = fixtures()
        .into_iter()
        .find(|f| f.encoding == "o200k_base" && f.count >= 400 && !f.text.contains("```"))
        .unwrap();
    let r = route(&mut client, prompt_req("", &long.text)).await;
    assert_eq!(
        (r.task_class.as_str(), r.classified_by.as_str()),
        ("summarize", "long")
    );
    // Chat messages are classified too.
    let req = proto::RouteRequest {
        messages: vec![
            proto::ChatMessage {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            proto::ChatMessage {
                role: "user".into(),
                content: "tl;dr of the report, please".into(),
            },
        ],
        ..Default::default()
    };
    let r = route(&mut client, req).await;
    assert_eq!(
        (r.task_class.as_str(), r.classified_by.as_str()),
        ("summarize", "summarize-request")
    );
    assert!(r.input_tokens > 0);
    // A request naming its class is not classified.
    let r = route(&mut client, prompt_req("qa", "```\ncode\n```")).await;
    assert_eq!(
        (r.task_class.as_str(), r.classified_by.as_str()),
        ("qa", "")
    );
    // Neither a class nor a prompt: the class is required.
    let e = client.route(prompt_req("", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("task_class: is required"),
        "{}",
        e.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn the_classifier_keeps_to_the_tenants_classes() {
    let server = TestServer::start(config(true)).await;
    let mut client = server.client().await;
    let keyed = |msg: proto::RouteRequest| {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {TEAM_KEY}").parse().unwrap(),
        );
        r
    };
    // The code rule matches, but the tenant may not use `code`: the next rule, then the default.
    let r = route(&mut client, keyed(prompt_req("", "```\nfn main() {}\n```"))).await;
    assert_eq!(
        (r.task_class.as_str(), r.classified_by.as_str()),
        ("qa", "default")
    );
    let r = route(
        &mut client,
        keyed(prompt_req("", "summarize this:\n```\nfn main() {}\n```")),
    )
    .await;
    assert_eq!(r.task_class, "summarize");
    // Naming a class the tenant may not use is still refused.
    let e = client
        .route(keyed(prompt_req("code", "x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_prompt_is_refused_with_the_bound() {
    let server = TestServer::start(config(false)).await;
    let mut client = server.client().await;
    let huge = "word ".repeat(switchyard::prompt::MAX_PROMPT_BYTES / 5 + 1);
    let e = client.route(prompt_req("o200k", &huge)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("prompt: is ") && e.message().contains("at most 1048576 bytes"),
        "{}",
        e.message()
    );
    assert!(e.message().len() < 400, "the prompt is not echoed");
    server.stop().await;
}

#[tokio::test]
async fn the_built_in_config_classifies_code_and_summaries() {
    let server = TestServer::start(
        Config::from_toml_str(switchyard::config::DEFAULT_CONFIG_TOML, "default").unwrap(),
    )
    .await;
    let mut client = server.client().await;
    for (prompt, class) in [
        (
            "Write a Python function that reverses a linked list.",
            "code",
        ),
        (
            "TL;DR this article for me: the council met on Tuesday...",
            "summarize",
        ),
        ("Who painted the Mona Lisa?", "qa"),
    ] {
        let r = route(&mut client, prompt_req("", prompt)).await;
        assert_eq!(r.task_class, class, "{prompt}");
        assert!(!r.classified_by.is_empty());
    }
    server.stop().await;
}

/// `switchyard classify` on the RouterArena prompts, test split (the odd lines; the example
/// rules were written reading only the even ones): the accuracy README reports.
#[test]
fn classify_cli_scores_the_routerarena_test_split() {
    let stdout = common::cli::run_ok([
        "classify",
        "--rules",
        "simulations/classifier/routerarena-rules.toml",
        "--input",
        "simulations/data/routerarena/claude-3-haiku-20240307.jsonl",
        "--label-field",
        "global_index",
        "--label-map",
        "simulations/classifier/routerarena-labels.toml",
        "--split",
        "test",
        "--summary",
    ]);
    assert!(stdout.contains("prompts: 404 (split Test)"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("accuracy: "))
        .unwrap();
    // "accuracy: C/N = P%"
    let frac = line
        .trim_start_matches("accuracy: ")
        .split(' ')
        .next()
        .unwrap();
    let (c, n) = frac.split_once('/').unwrap();
    let accuracy = c.parse::<f64>().unwrap() / n.parse::<f64>().unwrap();
    // Far above the majority class (knowledge, 278 of 404 = 69%).
    assert!(accuracy >= 0.90, "{stdout}");
    for class in ["code", "knowledge", "math", "reading", "translate"] {
        assert!(
            stdout.contains(class),
            "confusion matrix lacks {class}: {stdout}"
        );
    }

    // Per-prompt lines without --summary: line number, class, rule, label, mapped label.
    let stdout = common::cli::run_ok([
        "classify",
        "--rules",
        "simulations/classifier/routerarena-rules.toml",
        "--input",
        "simulations/data/routerarena/gemini-2.0-flash-001.jsonl",
    ]);
    let first = stdout.lines().next().unwrap();
    assert_eq!(first.split('\t').count(), 3, "{first}");
    assert!(!stdout.contains("accuracy"), "no labels, no accuracy");

    // A broken rules file names the key.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[classifier]\ndefault = \"qa\"\n[[classifier.rules]]\nname = \"x\"\nclass = \"qa\"\nregex = \"(\"\n").unwrap();
    let out = common::cli::run([
        "classify",
        "--rules",
        bad.to_str().unwrap(),
        "--input",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("classifier.rules[0].regex"));
}

/// The service with a data dir, in this process; stopped gracefully by the returned sender.
async fn start_stored(
    data: &std::path::Path,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), switchyard::server::ServeError>>,
) {
    use switchyard::server::{self, ServeOptions};
    let store = switchyard::store::Store::open_with(data, 8).unwrap();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        store: Some(store),
        ..Default::default()
    };
    let handle = tokio::spawn(server::serve_with(
        config(false),
        options,
        listener,
        async {
            let _ = rx.await;
        },
    ));
    (addr, tx, handle)
}

async fn connect(addr: std::net::SocketAddr) -> RouteClient<Channel> {
    let url = format!("http://{addr}");
    for _ in 0..250 {
        if let Ok(c) = RouteClient::connect(url.clone()).await {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("server at {url} did not accept connections");
}

#[tokio::test]
async fn a_classified_decision_keeps_its_rule_counts_and_limit_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut req = prompt_req(
        "",
        "Please summarize: the quarterly numbers rose by a tenth.",
    );
    req.request_id = "restart-1".into();
    let (addr, stop, handle) = start_stored(data.path()).await;
    let mut client = connect(addr).await;
    let first = route(&mut client, req.clone()).await;
    assert_eq!(
        (first.task_class.as_str(), first.classified_by.as_str()),
        ("summarize", "summarize-request")
    );
    assert_eq!(first.max_output_tokens, 128);
    assert!(first.input_tokens > 0);
    drop(client);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();

    let (addr, stop, handle) = start_stored(data.path()).await;
    let mut client = connect(addr).await;
    let again = route(&mut client, req).await;
    assert!(again.replayed, "the pending decision was restored");
    assert_eq!(again.decision_id, first.decision_id);
    assert_eq!(
        (
            again.classified_by.as_str(),
            again.max_output_tokens,
            again.input_tokens
        ),
        (
            first.classified_by.as_str(),
            first.max_output_tokens,
            first.input_tokens
        )
    );
    drop(client);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}
