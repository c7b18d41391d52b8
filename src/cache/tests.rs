//! The cache's rules with time passed in: storing only successful, good-enough responses,
//! expiry, LRU eviction, invalidation and reloads.

use super::*;
use crate::config::Config;
use crate::engine::ChatMessage;

const TTL_MS: u64 = 60_000;

fn config(cache: &str) -> Config {
    let text = format!(
        r#"
[models.a]
provider = "p"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0
[models.b]
provider = "q"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0
[task_classes.qa]
models = ["a", "b"]
cache = {cache}
[task_classes.plain]
models = ["a"]
"#
    );
    match Config::from_toml_str(&text, "test") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn cache(c: &str) -> ResponseCache {
    let config = config(c);
    ResponseCache::new(config.task_classes.values(), TTL_MS, 1000)
}

fn input(prompt: &str) -> RouteInput {
    RouteInput {
        task_class: "qa".to_string(),
        prompt: prompt.to_string(),
        ..RouteInput::default()
    }
}

fn q(c: &ResponseCache, prompt: &str) -> Query {
    match c.query(&input(prompt), "") {
        Ok(Some(q)) => q,
        other => panic!("no query for {prompt:?}: {other:?}"),
    }
}

fn report(id: &str, model: &str, ok: Option<bool>, quality: Option<f64>, resp: &str) -> Reported {
    Reported {
        decision_id: id.to_string(),
        model: model.to_string(),
        provider: "p".to_string(),
        succeeded: ok,
        quality,
        cost_usd: Some(0.01),
        latency_ms: Some(800.0),
        response: resp.to_string(),
    }
}

/// Routes `prompt` as decision `id` and stores `answer` for it.
fn store(c: &mut ResponseCache, id: &str, prompt: &str, answer: &str, now: u64) {
    let query = q(c, prompt);
    c.remember(id, query, now);
    let r = c.report(report(id, "a", Some(true), Some(0.9), answer), now);
    assert_eq!(r, Stored::Stored);
}

#[test]
fn exact_hits_only_the_same_normalised_prompt_and_parameters() {
    let mut c = cache(r#"{ mode = "exact" }"#);
    store(
        &mut c,
        "d1",
        "What is  the capital of France?",
        "Paris",
        1000,
    );
    let hit = c.lookup(&q(&c, " What is the capital of France? "), 2000);
    let hit = hit.map(|h| (h.response.to_string(), h.age_ms, h.saved_cost_usd));
    assert_eq!(hit, Some(("Paris".to_string(), 1000, 0.01)));
    assert_eq!(
        c.lookup(&q(&c, "what is the capital of france?"), 2000),
        None
    );
    // Another tenant, system prompt or output cap never hits.
    let other = |f: &dyn Fn(&mut RouteInput)| {
        let mut i = input("What is the capital of France?");
        f(&mut i);
        let tenant = if i.request_id == "t" { "other" } else { "" };
        c.query(&i, tenant).ok().flatten()
    };
    let variants = [
        other(&|i| i.request_id = "t".to_string()),
        other(&|i| {
            i.messages = vec![ChatMessage {
                role: "system".to_string(),
                content: "Answer in French".to_string(),
            }]
        }),
        other(&|i| i.max_output_tokens = 5),
    ];
    for v in variants {
        let v = v.unwrap_or_else(|| panic!("no query"));
        assert_eq!(c.lookup(&v, 2000), None);
    }
    let s = &c.stats()[0];
    assert_eq!((s.lookups, s.hits, s.entries, s.stored), (5, 1, 1, 1));
}

#[test]
fn semantic_hits_near_copies_and_not_negations() {
    let mut c = cache(r#"{ mode = "semantic" }"#);
    store(
        &mut c,
        "d1",
        "How do I enable 2FA?",
        "Settings > Security",
        0,
    );
    store(
        &mut c,
        "d2",
        "How do I reset my password from the account settings page?",
        "Click 'forgot password'",
        0,
    );
    let hit = c.lookup(
        &q(
            &c,
            "how do I reset my pasword from the account settings page",
        ),
        1,
    );
    assert_eq!(hit.map(|h| h.source_decision_id), Some("d2".to_string()));
    assert_eq!(c.lookup(&q(&c, "How do I disable 2FA?"), 1), None);
    let exact = c.lookup(&q(&c, "HOW DO I ENABLE 2FA"), 1);
    assert!(exact.is_some_and(|h| h.similarity > 0.999));
}

#[test]
fn caller_embeddings_need_the_configured_dimension() {
    let mut c = cache(r#"{ mode = "semantic", dimensions = 3 }"#);
    let with = |e: Vec<f32>| RouteInput {
        embedding: e,
        ..input("anything")
    };
    let err = c.query(&with(vec![1.0, 0.0]), "");
    assert!(
        matches!(&err, Err(EngineError::InvalidArgument { field, message })
            if field == "embedding" && message.contains("exactly 3")),
        "{err:?}"
    );
    assert!(c.query(&with(vec![0.0, 0.0, 0.0]), "").is_err());
    assert!(c.query(&with(vec![f32::NAN, 0.0, 1.0]), "").is_err());
    let Ok(Some(stored)) = c.query(&with(vec![1.0, 0.0, 0.0]), "") else {
        panic!("no query")
    };
    c.remember("d1", stored, 0);
    c.report(report("d1", "a", Some(true), None, "x"), 0);
    // cos = 0.96 hits at 0.95; 0.94 does not.
    let near = |y: f32| c.query(&with(vec![1.0, y, 0.0]), "").ok().flatten();
    let (hit, miss) = (near(0.2917), near(0.3630));
    let (Some(hit), Some(miss)) = (hit, miss) else {
        panic!("no query")
    };
    assert!(c.lookup(&hit, 1).is_some());
    assert!(c.lookup(&miss, 1).is_none());
    // The lexical space is apart: the prompt alone does not find the caller's entry.
    assert!(c.lookup(&q(&c, "anything"), 1).is_none());
}

#[test]
fn only_successful_good_enough_responses_are_stored() {
    let mut c = cache(r#"{ mode = "exact", min_quality = 0.7 }"#);
    let p = "Summarise this";
    c.remember("d1", q(&c, p), 0);
    // The response first, then the outcome, then the quality: stored on the last.
    assert_eq!(
        c.report(report("d1", "a", None, None, "S"), 0),
        Stored::Waiting
    );
    assert_eq!(
        c.report(report("d1", "a", Some(true), None, ""), 0),
        Stored::Waiting
    );
    assert_eq!(c.lookup(&q(&c, p), 1), None);
    assert_eq!(
        c.report(report("d1", "a", None, Some(0.8), ""), 0),
        Stored::Stored
    );
    assert!(c.lookup(&q(&c, p), 1).is_some());
    // Too low a quality, or a failed call, is refused.
    c.remember("d2", q(&c, "other"), 0);
    let low = report("d2", "a", Some(true), Some(0.5), "bad");
    assert_eq!(c.report(low, 0), Stored::Refused);
    c.remember("d3", q(&c, "third"), 0);
    assert_eq!(
        c.report(report("d3", "a", Some(false), None, "err"), 0),
        Stored::Refused
    );
    assert_eq!(
        c.report(report("nope", "a", Some(true), None, "x"), 0),
        Stored::NotCandidate
    );
    assert_eq!(c.stats()[0].entries, 1);
}

#[test]
fn entries_expire_and_candidates_close_with_their_decisions() {
    let mut c = cache(r#"{ mode = "exact", ttl_secs = 10 }"#);
    store(&mut c, "d1", "p", "r", 0);
    assert!(c.lookup(&q(&c, "p"), 9_999).is_some());
    assert!(c.lookup(&q(&c, "p"), 10_000).is_none());
    store(&mut c, "d2", "p2", "r", 20_000);
    assert_eq!(c.expire(30_000), 1);
    c.remember("d3", q(&c, "p3"), 40_000);
    c.expire(40_000 + TTL_MS);
    assert_eq!(c.candidates_len(), 0);
    let s = &c.stats()[0];
    assert_eq!((s.entries, s.expired), (0, 2));
}

#[test]
fn the_least_recently_used_entry_makes_room() {
    let mut c = cache(r#"{ mode = "exact", max_entries = 2 }"#);
    store(&mut c, "d1", "one", "1", 0);
    store(&mut c, "d2", "two", "2", 1);
    assert!(c.lookup(&q(&c, "one"), 2).is_some());
    store(&mut c, "d3", "three", "3", 3);
    assert!(c.lookup(&q(&c, "one"), 4).is_some());
    assert!(c.lookup(&q(&c, "two"), 4).is_none());
    let s = &c.stats()[0];
    assert_eq!((s.entries, s.evicted), (2, 1));
}

#[test]
fn invalidation_by_prefix_tag_and_reload() {
    let mut c = cache(r#"{ mode = "semantic" }"#);
    store(&mut c, "d1", "Weather in Paris today", "sunny", 0);
    store(&mut c, "d2", "Weather in Rome today", "rain", 0);
    store(&mut c, "d3", "Define entropy", "...", 0);
    assert_eq!(c.invalidate("", "WEATHER in paris", ""), 1);
    assert_eq!(c.invalidate("qa", "", "model:b"), 0);
    assert_eq!(c.invalidate("qa", "weather", "model:a"), 1);
    assert_eq!(c.stats()[0].entries, 1);
    // A reload that removes model a from qa drops its entries; one that keeps the mode keeps them.
    let config = config(r#"{ mode = "semantic", ttl_secs = 5 }"#);
    let removed = [("qa".to_string(), "b".to_string())];
    assert_eq!(
        c.reconfigure(config.task_classes.values(), &removed, TTL_MS, 10),
        0
    );
    let removed = [("qa".to_string(), "a".to_string())];
    assert_eq!(
        c.reconfigure(config.task_classes.values(), &removed, TTL_MS, 10),
        1
    );
    store(&mut c, "d4", "Define entropy", "...", 0);
    let exact = super::tests::config(r#"{ mode = "exact" }"#);
    assert_eq!(
        c.reconfigure(exact.task_classes.values(), &[], TTL_MS, 10),
        1
    );
    assert_eq!(c.stats()[0].mode, "exact");
}

#[test]
fn bad_cache_settings_name_their_key_and_what_is_right() {
    let text = |cache: &str| {
        format!(
            "[models.a]\nprovider = \"p\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
             [task_classes.qa]\nmodels = [\"a\"]\ncache = {cache}\n"
        )
    };
    for (cache, key, hint) in [
        (
            r#"{ mode = "fuzzy" }"#,
            "task_classes.qa.cache.mode",
            "\"exact\" or \"semantic\"",
        ),
        (
            r#"{ mode = "exact", similarity = 1.5 }"#,
            "task_classes.qa.cache.similarity",
            "(0, 1]",
        ),
        (
            r#"{ mode = "exact", ttl_secs = 0.0 }"#,
            "task_classes.qa.cache.ttl_secs",
            "(0, ",
        ),
        (
            r#"{ mode = "exact", max_entries = 0 }"#,
            "task_classes.qa.cache.max_entries",
            "[1, ",
        ),
        (
            r#"{ mode = "exact", dimensions = 8 }"#,
            "task_classes.qa.cache.dimensions",
            "semantic",
        ),
        (
            r#"{ mode = "semantic", min_quality = 2.0 }"#,
            "task_classes.qa.cache.min_quality",
            "[0, 1]",
        ),
    ] {
        match Config::from_toml_str(&text(cache), "t") {
            Err(e) => assert!(e.key == key && e.message.contains(hint), "{cache}: {e}"),
            Ok(_) => panic!("{cache} was accepted"),
        }
    }
}

/// The two-stage index (`index.rs`) against the exact scan it replaces above 4,096 rows.
mod two_stage {
    use super::*;
    use crate::cache::embed::{lexical, normalise};
    use crate::cache::index::{VectorSpace, EXACT_SCAN_ROWS};
    use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
    use rand_distr::StandardNormal;

    const SEED: u64 = 18;

    /// `v` plus Gaussian noise of norm about `sigma`, to unit length: its cosine with a unit `v`
    /// is about 1/sqrt(1 + sigma^2).
    fn perturbed(rng: &mut StdRng, v: &[f32], sigma: f32) -> Vec<f32> {
        let scale = sigma / (v.len() as f32).sqrt();
        let mut out: Vec<f32> = v
            .iter()
            .map(|x| x + scale * rng.sample::<f32, _>(StandardNormal))
            .collect();
        normalise(&mut out);
        out
    }

    /// Asserts that the two stages return the exact scan's answer (owner and similarity) for at
    /// least 99% of `queries`, of which at least `min_hits` hit (else the workload tests no hits).
    fn assert_agreement(
        name: &str,
        space: &VectorSpace,
        queries: &[Vec<f32>],
        min: f32,
        min_hits: usize,
    ) {
        let (mut same, mut hits) = (0, 0);
        for q in queries {
            let exact = space.nearest_exact(q, 0, min);
            hits += usize::from(exact.is_some());
            same += usize::from(space.nearest(q, 0, min) == exact);
        }
        let n = queries.len();
        eprintln!("{name}: {same}/{n} queries answered as the exact scan ({hits} hits at cosine >= {min})");
        assert!(same * 100 >= n * 99, "{name}: {same} of {n}");
        assert!(hits >= min_hits, "{name}: only {hits} hits");
    }

    #[test]
    fn clustered_vectors_get_the_exact_answer() {
        // 100,000 vectors of 256 dimensions around 1,000 centres: each at cosine 0.96-0.995 from
        // its centre, so a cluster's members are near duplicates of each other (cosine ~0.92-0.99).
        let dim = 256;
        let mut rng = StdRng::seed_from_u64(SEED);
        let centres: Vec<Vec<f32>> = (0..1_000)
            .map(|_| perturbed(&mut rng, &vec![0.0; dim], 1.0))
            .collect();
        let mut space = VectorSpace::new(dim);
        let mut rows = Vec::new();
        for (c, centre) in centres.iter().enumerate() {
            for _ in 0..100 {
                let sigma = rng.random_range(0.1..0.29);
                let v = perturbed(&mut rng, centre, sigma);
                space.push(&v, 0, c);
                rows.push(v);
            }
        }
        // 1,000 queries: 900 perturbed copies of stored vectors (cosine ~0.96-0.999 with it), 100
        // unrelated vectors that must miss.
        let queries: Vec<Vec<f32>> = (0..1_000)
            .map(|i| match (i % 10, rows.choose(&mut rng)) {
                (0, _) | (_, None) => perturbed(&mut rng, &vec![0.0; dim], 1.0),
                (_, Some(v)) => {
                    let sigma = rng.random_range(0.05..0.3);
                    perturbed(&mut rng, v, sigma)
                }
            })
            .collect();
        let min = 0.92;
        assert_agreement("clustered", &space, &queries, min, 800);
    }

    /// Prompts of a support desk and a coding assistant, from templates.
    fn prompt(rng: &mut StdRng) -> String {
        const VERBS: [&str; 10] = [
            "reset", "change", "export", "delete", "rename", "share", "restore", "move", "sync",
            "lock",
        ];
        const THINGS: [&str; 12] = [
            "my password",
            "the billing address",
            "a shared folder",
            "my profile picture",
            "the API key",
            "an old invoice",
            "the team calendar",
            "my phone number",
            "a project board",
            "the backup settings",
            "a webhook",
            "my email alias",
        ];
        const PLACES: [&str; 6] = [
            "from the mobile app",
            "in the admin console",
            "on the website",
            "with the command line tool",
            "for my whole organisation",
            "without losing data",
        ];
        const LANGS: [&str; 6] = ["Rust", "Python", "Go", "TypeScript", "Java", "C"];
        const TASKS: [&str; 8] = [
            "parse a CSV file",
            "read a JSON config",
            "retry an HTTP request",
            "sort a list of records by date",
            "hash a password",
            "stream a large file",
            "spawn a worker pool",
            "format a timestamp",
        ];
        let n = rng.random_range(2..500);
        let pick = |rng: &mut StdRng, list: &[&'static str]| list[rng.random_range(0..list.len())];
        match rng.random_range(0..4) {
            0 => format!(
                "How do I {} {} {}?",
                pick(rng, &VERBS),
                pick(rng, &THINGS),
                pick(rng, &PLACES)
            ),
            1 => format!(
                "Write a {} function to {} and explain each step",
                pick(rng, &LANGS),
                pick(rng, &TASKS)
            ),
            2 => format!(
                "Order {n} was charged twice; can you refund {} and {}?",
                pick(rng, &THINGS),
                pick(rng, &VERBS)
            ),
            _ => format!(
                "In {}, what is the fastest way to {} with {n} items?",
                pick(rng, &LANGS),
                pick(rng, &TASKS)
            ),
        }
    }

    /// A near copy of `p`: other case, no punctuation, a typo, or a word more.
    fn edited(rng: &mut StdRng, p: &str) -> String {
        match rng.random_range(0..4) {
            0 => p.to_uppercase(),
            1 => p.replace(['?', ';', ','], ""),
            2 => {
                let mut chars: Vec<char> = p.chars().collect();
                let i = rng.random_range(1..chars.len() - 1);
                chars.swap(i, i + 1);
                chars.into_iter().collect()
            }
            _ => format!("Please, {p}"),
        }
    }

    #[test]
    fn lexical_embeddings_of_prompts_get_the_exact_answer() {
        // 20,000 stored prompts from templates (so many share most of their trigrams), queried by
        // near copies, by prompts of the same templates, and by negations.
        let mut rng = StdRng::seed_from_u64(SEED);
        let mut space = VectorSpace::new(embed::LEXICAL_DIM);
        let stored: Vec<String> = (0..20_000).map(|_| prompt(&mut rng)).collect();
        for (i, p) in stored.iter().enumerate() {
            space.push(&lexical(p), 0, i);
        }
        assert!(space.len() > EXACT_SCAN_ROWS);
        let queries: Vec<Vec<f32>> = (0..1_000)
            .map(|i| {
                let p = &stored[rng.random_range(0..stored.len())];
                let text = match i % 4 {
                    0 | 1 => edited(&mut rng, p),
                    2 => prompt(&mut rng),
                    _ => format!("{p} I don't want that"),
                };
                lexical(&text)
            })
            .collect();
        let min = 0.95;
        assert_agreement("lexical", &space, &queries, min, 400);
    }

    #[test]
    fn a_large_semantic_cache_hits_and_invalidates_through_the_codes() {
        let config = config(r#"{ mode = "semantic", max_entries = 10000 }"#);
        let mut c = ResponseCache::new(config.task_classes.values(), TTL_MS, 10_000);
        let mut rng = StdRng::seed_from_u64(SEED);
        let n = EXACT_SCAN_ROWS + 500;
        for i in 0..n {
            let p = format!("{} (ticket {i})", prompt(&mut rng));
            store(&mut c, &format!("d{i}"), &p, &format!("answer {i}"), 0);
        }
        let target = format!("{} (ticket 77)", "Weather in Paris today");
        store(&mut c, "paris", &target, "sunny", 0);
        let hit = c.lookup(&q(&c, "weather in PARIS today (ticket 77)"), 1);
        assert_eq!(hit.map(|h| h.source_decision_id), Some("paris".to_string()));
        assert_eq!(c.invalidate("qa", "weather in paris", ""), 1);
        assert_eq!(
            c.lookup(&q(&c, "weather in PARIS today (ticket 77)"), 1),
            None
        );
        let s = &c.stats()[0];
        assert_eq!(s.entries, n as u64);
        // Each entry's vector and code are in the bytes, and the hyperplanes once.
        assert!(
            s.bytes >= n as u64 * (256 * 4 + 32) + 256 * 256 * 4,
            "{}",
            s.bytes
        );
    }
}
