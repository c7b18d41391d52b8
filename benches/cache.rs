//! Response-cache lookups at 1,000, 10,000 and 100,000 entries: exact (a hash map) and semantic
//! (the built-in 256-dimension lexical embeddings through the cache's index: an exhaustive cosine
//! scan up to 4,096 entries, SimHash codes then an exact rescore above), plus the embedding itself,
//! the index alone in both modes (two stages against the exact scan it replaces) and the bare f32
//! scan of the same rows. `cargo bench --bench cache`; figures in README ("Response cache").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard::cache::{embed, Reported, ResponseCache, VectorSpace};
use switchyard::config::Config;
use switchyard::engine::RouteInput;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn cache(mode: &str, entries: usize) -> ResponseCache {
    let text = format!(
        "[models.a]\nprovider = \"p\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
         [task_classes.qa]\nmodels = [\"a\"]\ncache = {{ mode = \"{mode}\", max_entries = {entries} }}\n"
    );
    let config = Config::from_toml_str(&text, "bench").unwrap();
    let mut c = ResponseCache::new(config.task_classes.values(), 60_000, entries + 1);
    for i in 0..entries {
        let q = c.query(&input(&prompt(i)), "").unwrap().unwrap();
        let id = format!("d{i}");
        c.remember(&id, q, 0);
        c.report(
            Reported {
                decision_id: id,
                model: "a".into(),
                succeeded: Some(true),
                response: "an answer of a typical length, a few sentences long".into(),
                ..Reported::default()
            },
            0,
        );
    }
    assert_eq!(c.stats()[0].entries, entries as u64);
    c
}

fn prompt(i: usize) -> String {
    format!(
        "Customer {} asks about order {} and the {} policy for item {}",
        i % 997,
        i,
        ["refund", "shipping", "warranty", "exchange"][i % 4],
        i / 7
    )
}

fn input(prompt: &str) -> RouteInput {
    RouteInput {
        task_class: "qa".into(),
        prompt: prompt.into(),
        ..RouteInput::default()
    }
}

fn bench(c: &mut Criterion) {
    let text = prompt(123_456_789);
    c.bench_function("lexical embedding of a 70-character prompt", |b| {
        b.iter(|| embed::lexical(black_box(&text)))
    });
    for mode in ["exact", "semantic"] {
        let mut group = c.benchmark_group(format!("{mode} lookup"));
        for entries in SIZES {
            let mut cache = cache(mode, entries);
            let hit = cache
                .query(&input(&prompt(entries * 42 / 100)), "")
                .unwrap()
                .unwrap();
            let miss = cache
                .query(&input("something else entirely"), "")
                .unwrap()
                .unwrap();
            group.bench_function(BenchmarkId::new("hit", entries), |b| {
                b.iter(|| assert!(cache.lookup(black_box(&hit), 1).is_some()))
            });
            group.bench_function(BenchmarkId::new("miss", entries), |b| {
                b.iter(|| assert!(cache.lookup(black_box(&miss), 1).is_none()))
            });
            let s = &cache.stats()[0];
            eprintln!(
                "{mode}: {} entries, ~{:.1} MiB, {} bytes per entry",
                s.entries,
                s.bytes as f64 / 1048576.0,
                s.bytes / s.entries.max(1)
            );
        }
        group.finish();
    }
    // The index alone: the two-stage lookup against the exhaustive scan, on the same rows.
    let mut group = c.benchmark_group("semantic index");
    for entries in SIZES {
        let mut space = VectorSpace::new(embed::LEXICAL_DIM);
        for i in 0..entries {
            space.push(&embed::lexical(&prompt(i)), 0, i);
        }
        let hit = embed::lexical(&prompt(entries * 42 / 100).to_uppercase());
        let miss = embed::lexical("something else entirely");
        for (name, q, found) in [("hit", &hit, true), ("miss", &miss, false)] {
            group.bench_function(
                BenchmarkId::new(format!("two-stage {name}"), entries),
                |b| b.iter(|| assert_eq!(space.nearest(black_box(q), 0, 0.95).is_some(), found)),
            );
            group.bench_function(BenchmarkId::new(format!("exact {name}"), entries), |b| {
                b.iter(|| assert_eq!(space.nearest_exact(black_box(q), 0, 0.95).is_some(), found))
            });
        }
    }
    group.finish();
    // The bare scan of the same rows, without the cache around it, under the same load.
    let mut group = c.benchmark_group("bare f32 scan");
    for entries in SIZES {
        let rows: Vec<f32> = (0..entries)
            .flat_map(|i| embed::lexical(&prompt(i)))
            .collect();
        let q = embed::lexical("something else entirely");
        group.bench_function(BenchmarkId::new("miss", entries), |b| {
            b.iter(|| {
                rows.chunks_exact(embed::LEXICAL_DIM)
                    .map(|r| embed::dot(black_box(&q), r))
                    .fold(f32::MIN, f32::max)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
