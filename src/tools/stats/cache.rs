//! The response cache's part of `switchyard stats`: one line per caching task class.

use super::render::usd;
use crate::proto;

/// One line per class: entries against the bound, hit rate, and what the hits saved.
pub fn render_cache(cache: &[proto::CacheStats]) -> String {
    if cache.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nresponse cache\n");
    for c in cache {
        out.push_str(&format!(
            "  {} ({}): {}/{} entries (~{:.1} MiB), hit rate {:.1}% ({} of {} lookups), saved {} \
             and {:.1} s of model time; stored {}, evicted {}, expired {}, invalidated {}\n",
            c.task_class,
            c.mode,
            c.entries,
            c.max_entries,
            c.bytes as f64 / (1024.0 * 1024.0),
            c.hit_rate * 100.0,
            c.hits,
            c.lookups,
            usd(c.saved_cost_usd),
            c.saved_latency_ms / 1000.0,
            c.stored,
            c.evicted,
            c.expired,
            c.invalidated
        ));
        if c.restored + c.shared_hits + c.adopted > 0 {
            out.push_str(&format!(
                "    restored {} from the data dir; {} hits found in redis, {} entries from other \
                 replicas\n",
                c.restored, c.shared_hits, c.adopted
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_class_with_rate_and_savings() {
        let text = render_cache(&[proto::CacheStats {
            task_class: "qa".into(),
            mode: "semantic".into(),
            entries: 3,
            max_entries: 10,
            lookups: 8,
            hits: 2,
            hit_rate: 0.25,
            saved_cost_usd: 0.5,
            saved_latency_ms: 2500.0,
            ..Default::default()
        }]);
        assert!(text.contains("qa (semantic): 3/10 entries"), "{text}");
        assert!(
            text.contains("hit rate 25.0% (2 of 8 lookups), saved $0.500"),
            "{text}"
        );
        assert!(text.contains("2.5 s of model time"), "{text}");
        assert!(!text.contains("restored"), "{text}");
        let shared = render_cache(&[proto::CacheStats {
            restored: 4,
            shared_hits: 2,
            adopted: 7,
            ..Default::default()
        }]);
        assert!(
            shared.contains("restored 4 from the data dir; 2 hits found in redis, 7 entries"),
            "{shared}"
        );
        assert_eq!(render_cache(&[]), "");
    }
}
