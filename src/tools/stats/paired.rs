//! The paired shadow comparisons of `switchyard stats`: per (class, chosen model, shadow model),
//! shadow minus chosen on the same requests, each a mean with its 95% interval. Pure text.

use crate::proto;

/// `mean [lo, hi] (n)` with `fmt` for each number; `-` when nothing was observed.
pub fn interval(i: Option<&proto::MeanInterval>, fmt: impl Fn(f64) -> String) -> String {
    match i {
        Some(i) if i.n > 0 => format!("{} [{}, {}] (n={})", fmt(i.mean), fmt(i.lo), fmt(i.hi), i.n),
        _ => "-".to_string(),
    }
}

/// A signed quality or rate with three decimals.
pub fn signed3(x: f64) -> String {
    format!("{x:+.3}")
}

/// A signed USD amount with four significant decimals (costs per call are often below a cent).
pub fn signed_usd(x: f64) -> String {
    format!("{x:+.6}")
}

/// A signed latency in ms.
pub fn signed_ms(x: f64) -> String {
    format!("{x:+.0}")
}

/// The section of paired comparisons ("" when there are none).
pub fn render_paired(paired: &[proto::PairedComparison]) -> String {
    if paired.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nshadow comparisons (shadow minus chosen on the same requests, 95% intervals)\n",
    );
    for p in paired {
        out.push_str(&format!(
            "  {}: {} vs {}\n    quality {}\n    cost USD {}\n    latency ms {}\n",
            p.task_class,
            p.shadow_model,
            p.model,
            interval(p.quality_diff.as_ref(), signed3),
            interval(p.cost_diff_usd.as_ref(), signed_usd),
            interval(p.latency_diff_ms.as_ref(), signed_ms),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_section_shows_means_intervals_and_counts() {
        let iv = |n, mean, lo, hi| Some(proto::MeanInterval { n, mean, lo, hi });
        let text = render_paired(&[proto::PairedComparison {
            task_class: "qa".into(),
            model: "big".into(),
            shadow_model: "small".into(),
            quality_diff: iv(40, -0.05, -0.09, -0.01),
            cost_diff_usd: iv(41, -0.004, -0.0045, -0.0035),
            latency_diff_ms: iv(0, 0.0, 0.0, 0.0),
        }]);
        assert!(text.contains("qa: small vs big"), "{text}");
        assert!(
            text.contains("quality -0.050 [-0.090, -0.010] (n=40)"),
            "{text}"
        );
        assert!(text.contains("cost USD -0.004000 [-0.004500, -0.003500] (n=41)"));
        assert!(text.contains("latency ms -"), "{text}");
        assert_eq!(render_paired(&[]), "");
    }
}
