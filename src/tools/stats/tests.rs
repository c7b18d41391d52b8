use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::render::*;
use super::*;

const NOW: i64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z

fn beta(alpha: f64, beta: f64) -> proto::BetaParams {
    proto::BetaParams {
        alpha,
        beta,
        mean: alpha / (alpha + beta),
    }
}

fn arm(class: &str, model: &str, success: (f64, f64), quality: (f64, f64)) -> proto::ArmStats {
    let s = beta(success.0, success.1);
    let q = beta(quality.0, quality.1);
    proto::ArmStats {
        task_class: class.into(),
        model: model.into(),
        provider: "acme".into(),
        pulls: 120,
        success_rate_mean: s.mean,
        quality_mean: q.mean,
        success_posterior: Some(s),
        quality_posterior: Some(q),
        latency_mean_ms: 812.4,
        latency_p50_ms: 700.0,
        latency_p95_ms: 1990.6,
        cost_mean_usd: 0.000_123_4,
        traffic_share: 0.4237,
        breaker_state: proto::BreakerState::Closed as i32,
        last_feedback_unix_ms: NOW - 42_000,
        ..Default::default()
    }
}

fn view() -> View {
    View {
        now_unix_ms: NOW,
        width: DEFAULT_WIDTH,
    }
}

/// The rendered line of `model`'s row (model names are unique in these tests).
fn row<'a>(text: &'a str, model: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(model))
        .unwrap_or_else(|| panic!("no row for {model} in:\n{text}"))
}

/// Parses "0.83 [0.71, 0.92]" into (mean, lo, hi).
fn parse_interval(cell: &str) -> (f64, f64, f64) {
    let (mean, rest) = cell.split_once(" [").unwrap();
    let (lo, hi) = rest.trim_end_matches(']').split_once(", ").unwrap();
    (
        mean.parse().unwrap(),
        lo.parse().unwrap(),
        hi.parse().unwrap(),
    )
}

#[test]
fn intervals_contain_the_mean_and_narrow_with_evidence() {
    let mut prev_width = f64::INFINITY;
    for n in [2.0, 5.0, 20.0, 100.0, 1000.0, 1e5] {
        for p in [0.02, 0.1, 0.5, 0.83, 0.97] {
            let (a, b) = (p * n, (1.0 - p) * n);
            let (lo, hi) = beta_interval_95(a, b).unwrap();
            let mean = a / (a + b);
            assert!(lo < mean && mean < hi, "Beta({a}, {b}): {lo} {mean} {hi}");
            assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
            if p == 0.5 {
                assert!(hi - lo < prev_width, "n={n}: {lo}..{hi}");
                prev_width = hi - lo;
            }
        }
    }
}

#[test]
fn interval_matches_closed_forms() {
    // Beta(1, 1) is uniform: quantiles are the probabilities themselves.
    let (lo, hi) = beta_interval_95(1.0, 1.0).unwrap();
    assert!(
        (lo - 0.025).abs() < 1e-9 && (hi - 0.975).abs() < 1e-9,
        "{lo} {hi}"
    );
    // Beta(a, 1) has CDF x^a, so its q-quantile is q^(1/a).
    let (lo, hi) = beta_interval_95(3.0, 1.0).unwrap();
    assert!((lo - 0.025f64.powf(1.0 / 3.0)).abs() < 1e-9, "{lo}");
    assert!((hi - 0.975f64.powf(1.0 / 3.0)).abs() < 1e-9, "{hi}");
}

#[test]
fn improper_params_have_no_interval_and_never_panic() {
    for (a, b) in [
        (0.0, 1.0),
        (1.0, 0.0),
        (-1.0, 2.0),
        (f64::NAN, 1.0),
        (1.0, f64::INFINITY),
        (f64::NEG_INFINITY, 1.0),
    ] {
        assert_eq!(beta_interval_95(a, b), None, "Beta({a}, {b})");
    }
    // Extreme but proper parameters answer (or decline) without hanging or panicking; shapes
    // near 1e9 hung statrs before they were scaled down.
    let shapes = [
        1e-12, 1e-6, 1e-3, 0.01, 0.5, 1.0, 7.0, 1e4, 1e6, 1e9, 1e12, 1e15, 1e300,
    ];
    for a in shapes {
        for b in shapes {
            if let Some((lo, hi)) = beta_interval_95(a, b) {
                assert!(lo <= hi, "Beta({a}, {b}): {lo} {hi}");
            }
        }
    }
    // Seeded log-uniform shapes over the whole range the router can produce.
    let mut rng = SmallRng::seed_from_u64(11);
    for _ in 0..5000 {
        let a = 10f64.powf(rng.random_range(-12.0..12.0));
        let b = 10f64.powf(rng.random_range(-12.0..12.0));
        let (lo, hi) = beta_interval_95(a, b).unwrap_or_else(|| panic!("Beta({a}, {b})"));
        assert!(
            0.0 <= lo && lo <= hi && hi <= 1.0,
            "Beta({a}, {b}): {lo} {hi}"
        );
    }
    // A huge, lopsided posterior still brackets its mean (to display precision).
    let (lo, hi) = beta_interval_95(9e8, 1e8).unwrap();
    assert!(lo <= 0.9 && 0.9 <= hi && hi - lo < 0.002, "{lo} {hi}");
}

#[test]
fn rendered_cells_show_mean_inside_its_interval() {
    let arms = vec![
        arm("qa", "m-small", (3.0, 1.0), (14.2, 5.8)),
        arm("qa", "m-large", (950.0, 50.0), (80.0, 20.0)),
    ];
    let text = render(&arms, &[], &view());
    for model in ["m-small", "m-large"] {
        let line = row(&text, model);
        let cells: Vec<&str> = line
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let intervals: Vec<(f64, f64, f64)> = cells
            .iter()
            .filter(|c| c.contains(" ["))
            .map(|c| parse_interval(c))
            .collect();
        assert_eq!(intervals.len(), 2, "success and quality in {line:?}");
        for (mean, lo, hi) in intervals {
            assert!(lo <= mean && mean <= hi, "{line}");
            assert!(lo < hi, "{line}");
        }
    }
    // Beta(3, 1): mean 0.75, 2.5% quantile 0.025^(1/3) = 0.292, 97.5% 0.975^(1/3) = 0.992.
    assert!(
        row(&text, "m-small").contains("0.75 [0.29, 0.99]"),
        "{text}"
    );
}

#[test]
fn bad_posteriors_render_a_dash_and_the_rest_of_the_row_stays() {
    let mut bad = arm("qa", "m-bad", (0.0, 1.0), (f64::NAN, 2.0));
    bad.latency_mean_ms = f64::NAN;
    bad.latency_p95_ms = f64::INFINITY;
    bad.cost_mean_usd = f64::NAN;
    let mut missing = arm("qa", "m-missing", (1.0, 1.0), (1.0, 1.0));
    missing.success_posterior = None;
    missing.quality_posterior = Some(beta(-2.0, 3.0));
    let text = render(&[bad, missing], &[], &view());
    let line = row(&text, "m-bad");
    let cells: Vec<&str> = line.split_whitespace().collect();
    // model, provider, share, pulls, success, quality, latency, p95, cost, breaker, age...
    assert_eq!(
        &cells[..10],
        &["m-bad", "acme", "42.4%", "120", "-", "-", "-", "-", "-", "closed"],
        "{text}"
    );
    assert!(!line.contains('['), "{line}");
    let line = row(&text, "m-missing");
    assert_eq!(line.split_whitespace().nth(4), Some("-"), "{line}");
    assert_eq!(line.split_whitespace().nth(5), Some("-"), "{line}");
    assert!(!line.contains('['), "{line}");
}

#[test]
fn shares_are_percentages_and_costs_keep_their_digits() {
    let mut a = arm("qa", "m-a", (5.0, 1.0), (5.0, 1.0));
    a.traffic_share = 0.0;
    let mut b = arm("qa", "m-b", (5.0, 1.0), (5.0, 1.0));
    b.traffic_share = 1.0;
    b.cost_mean_usd = 0.0153;
    let text = render(
        &[a.clone(), b, arm("qa", "m-c", (5.0, 1.0), (5.0, 1.0))],
        &[],
        &view(),
    );
    assert!(row(&text, "m-a").contains(" 0.0% "), "{text}");
    assert!(row(&text, "m-b").contains(" 100.0% "), "{text}");
    assert!(row(&text, "m-c").contains(" 42.4% "), "{text}");
    assert!(row(&text, "m-c").contains("$0.000123"), "{text}");
    assert!(row(&text, "m-b").contains("$0.0153"), "{text}");
    assert!(!text.contains("0.4237"), "{text}");
}

#[test]
fn usd_precision() {
    assert_eq!(usd(0.000_123_4), "$0.000123");
    assert_eq!(usd(0.0015), "$0.00150");
    assert_eq!(usd(0.5), "$0.500");
    assert_eq!(usd(250.0), "$250.00");
    assert_eq!(usd(0.0), "$0");
    assert_eq!(usd(-0.25), "-$0.250");
    assert_eq!(usd(f64::NAN), "-");
    assert_eq!(usd(3e-12), "$3.0e-12");
}

#[test]
fn one_table_per_class_in_service_order() {
    let arms = vec![
        arm("qa", "m-1", (2.0, 1.0), (2.0, 1.0)),
        arm("code", "m-2", (2.0, 1.0), (2.0, 1.0)),
        arm("qa", "m-3", (2.0, 1.0), (2.0, 1.0)),
    ];
    let text = render(&arms, &[], &view());
    let qa = text.find("task class qa (2 models)").unwrap();
    let code = text.find("task class code (1 model)").unwrap();
    assert!(qa < code, "{text}");
    let m3 = text.find("m-3").unwrap();
    assert!(m3 < code, "m-3 belongs to qa's table: {text}");
    assert_eq!(text.matches("success [95% CI]").count(), 2, "{text}");
}

#[test]
fn breaker_states_degraded_and_open_until() {
    let mut open = arm("qa", "m-open", (2.0, 1.0), (2.0, 1.0));
    open.breaker_state = proto::BreakerState::Open as i32;
    open.breaker_until_unix_ms = NOW + 600_000; // 16:10:00Z
    let mut later = open.clone();
    later.model = "m-later".into();
    later.breaker_until_unix_ms = NOW + 2 * 86_400_000;
    let mut half = arm("qa", "m-half", (2.0, 1.0), (2.0, 1.0));
    half.breaker_state = proto::BreakerState::HalfOpen as i32;
    let mut deg = arm("qa", "m-deg", (2.0, 1.0), (2.0, 1.0));
    deg.degraded = true;
    let mut never = arm("qa", "m-never", (2.0, 1.0), (2.0, 1.0));
    never.last_feedback_unix_ms = 0;
    never.breaker_state = 42;
    let arms = [open, later, half, deg, never];
    let wide = View {
        now_unix_ms: NOW,
        width: 200,
    };
    let text = render(&arms, &[], &wide);
    assert!(
        row(&text, "m-open").contains("open until 16:10:00Z"),
        "{text}"
    );
    assert!(
        row(&text, "m-later").contains("open until 2025-11-26 16:00Z"),
        "{text}"
    );
    assert!(row(&text, "m-half").contains("half-open"), "{text}");
    assert!(row(&text, "m-deg").contains("closed, degraded"), "{text}");
    assert!(row(&text, "m-deg").contains("42s ago"), "{text}");
    assert!(row(&text, "m-never").ends_with("never"), "{text}");
    assert!(row(&text, "m-never").contains("  -  "), "{text}");
    // Stacked into the narrow layout, the state still starts on the model's line.
    let text = render(&arms, &[], &view());
    assert!(row(&text, "m-open").ends_with("open until"), "{text}");
    assert!(row(&text, "m-deg").ends_with("closed,"), "{text}");
}

#[test]
fn ages_are_coarse_and_never_negative() {
    assert_eq!(age(NOW - 59_999, NOW), "59s ago");
    assert_eq!(age(NOW - 3 * 60_000, NOW), "3m ago");
    assert_eq!(age(NOW - 5 * 3_600_000, NOW), "5h ago");
    assert_eq!(age(NOW - 3 * 86_400_000, NOW), "3d ago");
    assert_eq!(age(NOW + 5_000, NOW), "0s ago");
    assert_eq!(age(0, NOW), "never");
}

fn budget() -> proto::Budget {
    proto::Budget {
        budget_key: "team-a".into(),
        period: "monthly".into(),
        limit_usd: 250.0,
        spent_usd: 123.456,
        reserved_usd: 0.0421,
        period_start_unix_ms: 1_761_951_600_000, // 2025-11-01T00:00+01:00
        period_end_unix_ms: 1_764_543_600_000,   // 2025-12-01T00:00+01:00
        pacing_multiplier: 1.5,
        state: proto::BudgetState::BudgetPacing as i32,
        on_cap: "cheapest".into(),
        time_zone: "Europe/Berlin".into(),
        alert_thresholds_crossed: vec![0.25, 0.5],
        alert_thresholds: vec![0.25, 0.5, 0.8],
        ..Default::default()
    }
}

#[test]
fn budgets_table_shows_every_column() {
    let text = render(
        &[arm("qa", "m-1", (2.0, 1.0), (2.0, 1.0))],
        &[budget()],
        &view(),
    );
    let line = row(&text, "team-a");
    for want in [
        "monthly",
        "$123.46",
        "$0.0421",
        "$250.00",
        "49.4%",
        "x1.50",
        "pacing",
        "cheapest",
        "2025-12-01 00:00 +01:00",
        "25%, 50%",
    ] {
        assert!(line.contains(want), "{want:?} missing from {line:?}");
    }
    assert!(!text.contains("none configured"), "{text}");
}

#[test]
fn no_budgets_is_one_line_and_no_table() {
    let text = render(&[arm("qa", "m-1", (2.0, 1.0), (2.0, 1.0))], &[], &view());
    assert!(text.contains("budgets: none configured\n"), "{text}");
    assert!(!text.contains("reserved"), "{text}");
    let mut b = budget();
    b.limit_usd = 0.0;
    b.time_zone = "Not/AZone".into();
    b.alert_thresholds_crossed.clear();
    let line = render(&[], &[b], &view());
    let line = row(&line, "team-a");
    assert!(line.contains("2025-11-30 23:00 +00:00"), "{line}");
    assert!(line.contains(" - "), "{line}");
    assert!(line.trim_end().ends_with("none"), "{line}");
}

#[test]
fn fits_the_width_it_is_given() {
    let mut long = arm("qa", "claude-3-7-sonnet-20250219", (2.0, 1.0), (2.0, 1.0));
    long.breaker_state = proto::BreakerState::Open as i32;
    long.breaker_until_unix_ms = NOW + 2 * 86_400_000;
    long.degraded = true;
    let arms = vec![long, arm("qa", "gpt-4o-mini", (30.0, 2.0), (20.0, 8.0))];
    for width in [80u16, 100, 120] {
        let view = View {
            now_unix_ms: NOW,
            width,
        };
        let text = render(&arms, &[budget()], &view);
        for line in text.lines() {
            assert!(
                line.chars().count() <= usize::from(width),
                "{width}: {} columns: {line:?}\n{text}",
                line.chars().count()
            );
        }
        assert!(text.contains("gpt-4o-mini"), "{text}");
    }
    let arms = vec![
        arm("qa", "claude-3-7-sonnet-20250219", (2.0, 1.0), (2.0, 1.0)),
        arm("qa", "gpt-4o-mini", (30.0, 2.0), (20.0, 8.0)),
    ];
    // Wide enough: one line per model (heading, header, rule, two rows; then a blank line and
    // the budget note).
    let wide = View {
        now_unix_ms: NOW,
        width: 200,
    };
    let text = render(&arms, &[], &wide);
    assert_eq!(text.lines().count(), 7, "{text}");
    assert!(
        row(&text, "gpt-4o-mini").contains("0.94 [0.83, 0.99]"),
        "{text}"
    );
    // At 120 the longest default model name no longer fits on one line with everything else:
    // values stack in two-line cells and the name stays whole, provider below it.
    let text = render(&arms, &[], &view());
    assert!(text.lines().all(|l| l.chars().count() <= 120), "{text}");
    let name = text
        .lines()
        .position(|l| l.starts_with("claude-3-7-sonnet-20250219 "));
    let name = name.unwrap_or_else(|| panic!("{text}"));
    let below = text.lines().nth(name + 1).unwrap();
    assert!(below.starts_with("acme "), "{text}");
    assert!(
        below.contains(" 120  [0.16, 0.99]  [0.16, 0.99] "),
        "{text}"
    );
}

#[test]
fn addresses() {
    for ok in [
        "127.0.0.1:50051",
        "http://127.0.0.1:50051",
        "localhost:1",
        "[::1]:8080",
    ] {
        assert!(endpoint(ok).is_ok(), "{ok}");
    }
    for bad in [
        "https://127.0.0.1:50051",
        "127.0.0.1",
        "",
        "http://",
        "a b:1",
        "h:1/x",
    ] {
        let e = endpoint(bad).unwrap_err();
        assert!(matches!(e, StatsError::InvalidAddr { .. }), "{bad}: {e}");
        assert!(e.to_string().contains("host:port"), "{e}");
    }
}

#[test]
fn default_addr_is_the_default_configs_listen_address() {
    let cfg = crate::config::Config::builtin().unwrap();
    assert_eq!(cfg.listen.to_string(), DEFAULT_ADDR);
}

#[test]
fn objectives_show_target_achievement_and_trade_off() {
    assert_eq!(render_objectives(&[]), "");
    let o = |class_target: bool, decisions: u64| proto::ClassObjective {
        task_class: "qa".into(),
        objective: "min_cost".into(),
        quality_target: 0.95,
        class_target,
        achieved_share: 0.961,
        realised_quality: 0.8125,
        usd_per_quality: 0.0123,
        decisions,
    };
    let text = render_objectives(&[o(true, 40), o(false, 0)]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("  qa")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("class target 95.0%"), "{text}");
    assert!(lines[0].contains("achieving 96.1%"), "{text}");
    assert!(
        lines[0].contains("0.812") || lines[0].contains("0.813"),
        "{text}"
    );
    assert!(lines[0].contains(&usd(0.0123)), "{text}");
    assert!(
        lines[1].contains("request target") && lines[1].contains("no decisions"),
        "{text}"
    );
}

#[test]
fn cluster_note_names_the_replica_and_fallback_shares() {
    let mut a = arm("qa", "m", (1.0, 1.0), (1.0, 1.0));
    assert_eq!(cluster_note(&[a.clone()], &[]), "");
    a.served_by = "r1".into();
    a.live_replicas = 3;
    a.cluster_wide = true;
    a.cluster_synced_unix_ms = 1_700_000_000_000;
    let mut b = budget();
    b.fallback = true;
    b.fallback_allowance_usd = 1.5;
    b.fallback_spent_usd = 0.25;
    let note = cluster_note(&[a], &[b.clone()]);
    assert!(
        note.starts_with("served by replica r1 of 3 live: cluster-wide"),
        "{note}"
    );
    assert!(
        note.contains(&format!("budget {}: Redis unreachable", b.budget_key)),
        "{note}"
    );
}
