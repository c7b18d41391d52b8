use super::*;
use crate::budget::{self, OnCap, Period};
use crate::policy::PolicyKind;

#[test]
fn builtin_default_is_valid_and_realistic() {
    let c = Config::builtin().unwrap();
    assert!(c.task_classes.len() >= 3);
    for class in c.task_classes.values() {
        assert!(class.models.len() >= 3, "{}", class.name);
        let providers: std::collections::BTreeSet<_> = class
            .models
            .iter()
            .map(|m| c.models[m].provider.clone())
            .collect();
        assert!(providers.len() >= 2, "{}", class.name);
    }
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
}

fn with(extra: &str) -> Result<Config, ConfigError> {
    let base = r#"
[models.a]
provider = "p1"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0
[models.b]
provider = "p2"
input_usd_per_mtok = 0.5
output_usd_per_mtok = 1.0
"#;
    Config::from_toml_str(&format!("{base}\n{extra}"), "test.toml")
}

#[test]
fn errors_name_the_key_and_value() {
    let e = with("[task_classes.qa]\nmodels = [\"a\", \"zz\"]\n").unwrap_err();
    assert_eq!(e.key, "task_classes.qa.models[1]");
    assert!(e.message.contains("\"zz\""), "{e}");

    let e = with("[task_classes.qa]\nmodels = [\"a\"]\nweights = { quality = -1.0, cost = 0.0, latency = 0.0 }\n")
        .unwrap_err();
    assert_eq!(e.key, "task_classes.qa.weights.quality");
    assert!(e.message.contains("-1"), "{e}");

    let e = with("[policy]\nkind = \"magic\"\n[task_classes.qa]\nmodels = [\"a\"]\n").unwrap_err();
    assert_eq!(e.key, "policy.kind");
    assert!(
        e.message.contains("magic") && e.message.contains("thompson"),
        "{e}"
    );

    let e = with("[policy]\nepsilon = 1.5\n[task_classes.qa]\nmodels = [\"a\"]\n").unwrap_err();
    assert_eq!(e.key, "policy.epsilon");

    let e = with("[task_classes.qa]\nmodels = [\"a\"]\nbogus = 1\n").unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");

    let e =
        with("[server]\nlisten = \"nowhere\"\n[task_classes.qa]\nmodels = [\"a\"]\n").unwrap_err();
    assert_eq!(e.key, "server.listen");
    assert!(e.message.contains("nowhere"));
}

#[test]
fn breaker_and_probe_errors_name_the_key() {
    let e = with("[breaker]\nhalf_open_probes = 1\nsuccesses_to_close = 3\n[task_classes.qa]\nmodels = [\"a\"]\n")
        .unwrap_err();
    assert_eq!(e.key, "breaker.successes_to_close");
    assert!(e.message.contains("half_open_probes"), "{e}");
    let e = with("[health_probes.p1]\nurl = \"ftp://x\"\n[task_classes.qa]\nmodels = [\"a\"]\n")
        .unwrap_err();
    assert_eq!(e.key, "health_probes.p1.url");
    let e = with("[health_probes.nobody]\nurl = \"http://127.0.0.1:1/\"\n[task_classes.qa]\nmodels = [\"a\"]\n")
        .unwrap_err();
    assert!(e.message.contains("nobody"), "{e}");
    let e =
        with("[health]\nall_open = \"panic\"\n[task_classes.qa]\nmodels = [\"a\"]\n").unwrap_err();
    assert_eq!(e.key, "health.all_open");
}

#[test]
fn infinite_half_life_means_no_decay() {
    let c = with("[policy]\nhalf_life_secs = inf\n[task_classes.qa]\nmodels = [\"a\", \"b\"]\n")
        .unwrap();
    assert_eq!(c.policy.half_life_secs, None);
    let e =
        with("[policy]\nhalf_life_secs = -3.0\n[task_classes.qa]\nmodels = [\"a\"]\n").unwrap_err();
    assert_eq!(e.key, "policy.half_life_secs");
}

#[test]
fn default_cost_reference_is_median_list_cost() {
    let c = with("[task_classes.qa]\nmodels = [\"a\", \"b\"]\ntypical_input_tokens = 1000\ntypical_output_tokens = 1000\n")
        .unwrap();
    // a: 3e-3, b: 1.5e-3; median of two (upper) = a's
    assert!((c.task_classes["qa"].cost_ref_usd - 0.003).abs() < 1e-12);
}

#[test]
fn budgets_parse_with_defaults_and_time_zone() {
    let c = with(
        "[budgets.team-a]\nperiod = \"monthly\"\nlimit_usd = 100.0\ntime_zone = \"Europe/Berlin\"\non_cap = \"reject\"\nalert_thresholds = [0.5, 0.9]\n\
         [alerts]\nwebhook_url = \"http://127.0.0.1:9/hook\"\nmax_retries = 2\n\
         [task_classes.qa]\nmodels = [\"a\"]\nbudget = \"team-a\"\n",
    )
    .unwrap();
    let b = &c.budgets["team-a"];
    assert_eq!(b.key, "team-a");
    assert_eq!(b.period, Period::Monthly);
    assert_eq!(b.time_zone, chrono_tz::Europe::Berlin);
    assert_eq!(b.on_cap, OnCap::Reject);
    assert_eq!(b.alert_thresholds, vec![0.5, 0.9]);
    assert_eq!(b.reservation_ttl_secs, budget::DEFAULT_RESERVATION_TTL_SECS);
    assert_eq!(c.task_classes["qa"].budget.as_deref(), Some("team-a"));
    assert_eq!(
        c.alerts.webhook_url.as_deref(),
        Some("http://127.0.0.1:9/hook")
    );
    assert_eq!(c.alerts.max_retries, 2);
    assert_eq!(c.alerts.timeout_ms, DEFAULT_ALERT_TIMEOUT_MS);

    let plain = with("[task_classes.qa]\nmodels = [\"a\"]\n").unwrap();
    assert!(plain.budgets.is_empty());
    assert_eq!(plain.alerts, AlertsConfig::default());
}

#[test]
fn budget_errors_name_the_key_and_value() {
    let cases = [
        (
            "[budgets.t]\nperiod = \"hourly\"\nlimit_usd = 1.0\n",
            "budgets.t.period",
            "hourly",
        ),
        (
            "[budgets.t]\nperiod = \"daily\"\nlimit_usd = 1.0\ntime_zone = \"Mars/Olympus\"\n",
            "budgets.t.time_zone",
            "Mars/Olympus",
        ),
        (
            "[budgets.t]\nperiod = \"daily\"\nlimit_usd = 1.0\non_cap = \"panic\"\n",
            "budgets.t.on_cap",
            "panic",
        ),
        (
            "[budgets.t]\nperiod = \"daily\"\nlimit_usd = -2.0\n",
            "budgets.t.limit_usd",
            "-2",
        ),
        (
            "[budgets.t]\nperiod = \"daily\"\nlimit_usd = 1.0\nalert_thresholds = [0.5, 1.5]\n",
            "budgets.t.alert_thresholds[1]",
            "1.5",
        ),
        (
            "[budgets.t]\nperiod = \"daily\"\nlimit_usd = 1.0\npacing_max_multiplier = 0.5\n",
            "budgets.t.pacing_max_multiplier",
            "0.5",
        ),
        (
            "[alerts]\nwebhook_url = \"not a url\"\n",
            "alerts.webhook_url",
            "not a url",
        ),
        (
            "[alerts]\nwebhook_url = \"ftp://x/y\"\n",
            "alerts.webhook_url",
            "ftp://x/y",
        ),
        ("[alerts]\nmax_retries = 99\n", "alerts.max_retries", "99"),
    ];
    for (text, key, value) in cases {
        let e = with(&format!("{text}[task_classes.qa]\nmodels = [\"a\"]\n")).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(value), "{e}");
    }
    let e = with("[task_classes.qa]\nmodels = [\"a\"]\nbudget = \"nope\"\n").unwrap_err();
    assert_eq!(e.key, "task_classes.qa.budget");
    assert!(e.message.contains("\"nope\""), "{e}");
    let e = with("[budgets.t]\nperiod = \"daily\"\nlimit_usd = 1.0\nbogus = 1\n[task_classes.qa]\nmodels = [\"a\"]\n")
        .unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn a_tuned_fragment_overrides_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.toml");
    let tuned = dir.path().join("tuned.toml");
    std::fs::write(&base, DEFAULT_CONFIG_TOML).unwrap();
    std::fs::write(
        &tuned,
        "[policy]\nkind = \"ucb\"\nhalf_life_secs = 600.0\nprior_strength = 8.0\n",
    )
    .unwrap();
    let c = Config::load_layered(&[base.clone(), tuned.clone()]).unwrap();
    assert_eq!(c.policy.settings.kind, PolicyKind::Ucb);
    assert_eq!(c.policy.half_life_secs, Some(600.0));
    assert_eq!(c.policy.prior_strength, 8.0);
    // Keys the fragment does not name keep the base's values.
    let b = Config::load(&base).unwrap();
    assert_eq!(c.models, b.models);
    assert_eq!(
        c.policy.settings.propensity_samples,
        b.policy.settings.propensity_samples
    );
    // A bad value in a fragment is reported with its key.
    std::fs::write(&tuned, "[policy]\nprior_strength = -1.0\n").unwrap();
    let e = Config::load_layered(&[base, tuned]).unwrap_err();
    assert_eq!(e.key, "policy.prior_strength");
}

#[test]
fn objective_keys_are_validated_together() {
    use crate::policy::objective::{Objective, Valuation};
    let class = |extra: &str| {
        with(&format!(
            "[task_classes.qa]\nmodels = [\"a\", \"b\"]\n{extra}"
        ))
    };
    let c = class("objective = \"min_cost\"\nquality_target = 0.95\nvalue_usd_per_second = 0.001")
        .unwrap();
    let qa = &c.task_classes["qa"];
    assert_eq!(
        qa.objective,
        Objective::MinCost {
            quality_target: 0.95
        }
    );
    assert_eq!(qa.quality_target(), Some(0.95));
    assert_eq!(c.policy.min_propensity, DEFAULT_MIN_PROPENSITY);
    let c = class("value_usd_per_quality = 0.05\nvalue_usd_per_second = 0.001").unwrap();
    assert_eq!(
        c.task_classes["qa"].valuation(),
        Valuation::Money {
            usd_per_quality: 0.05,
            usd_per_second: 0.001
        }
    );
    assert_eq!(
        class("").unwrap().task_classes["qa"].valuation(),
        Valuation::Weights
    );

    let e = class(
        "value_usd_per_quality = 0.05\nweights = { quality = 1.0, cost = 0.3, latency = 0.0 }",
    )
    .unwrap_err();
    assert!(
        e.message.contains("task_classes.qa.weights.cost")
            && e.message.contains("task_classes.qa.value_usd_per_quality"),
        "{e}"
    );
    let e = class("objective = \"min_cost\"").unwrap_err();
    assert_eq!(e.key, "task_classes.qa.quality_target");
    assert!(e.message.contains("required"), "{e}");
    for bad in ["0.0", "1.5", "-0.1", "nan"] {
        let e = class(&format!("objective = \"min_cost\"\nquality_target = {bad}")).unwrap_err();
        assert_eq!(e.key, "task_classes.qa.quality_target", "{bad}");
        assert!(e.message.contains("(0, 1]"), "{bad}: {e}");
    }
    let e = class("quality_target = 0.9").unwrap_err();
    assert_eq!(e.key, "task_classes.qa.quality_target");
    let e = class("objective = \"cheapest\"").unwrap_err();
    assert_eq!(e.key, "task_classes.qa.objective");
    assert!(e.message.contains("\"cheapest\""), "{e}");
    let e = class("value_usd_per_second = 0.01").unwrap_err();
    assert_eq!(e.key, "task_classes.qa.value_usd_per_second");
    let e = class("value_usd_per_quality = -1.0").unwrap_err();
    assert_eq!(e.key, "task_classes.qa.value_usd_per_quality");

    let policy = |p: &str| {
        with(&format!(
            "[policy]\n{p}\n[task_classes.qa]\nmodels = [\"a\"]\n"
        ))
    };
    assert_eq!(
        policy("min_propensity = 0.05")
            .unwrap()
            .policy
            .min_propensity,
        0.05
    );
    assert_eq!(
        policy("min_propensity = 0.0")
            .unwrap()
            .policy
            .min_propensity,
        0.0
    );
    for bad in ["1.0", "-0.01", "nan"] {
        let e = policy(&format!("min_propensity = {bad}")).unwrap_err();
        assert_eq!(e.key, "policy.min_propensity", "{bad}");
        assert!(e.message.contains("min_propensity / k"), "{bad}: {e}");
    }
    assert_eq!(
        policy("quality_step = 0").unwrap_err().key,
        "policy.quality_step"
    );
}

#[test]
fn a_reservation_ttl_below_the_pending_ttl_is_an_error_naming_both_keys() {
    let e =
        with("[budgets.team]\nperiod = \"daily\"\nlimit_usd = 1.0\nreservation_ttl_secs = 60.0")
            .unwrap_err();
    assert_eq!(e.key, "budgets.team.reservation_ttl_secs");
    assert!(
        e.message.contains("limits.pending_ttl_secs"),
        "{}",
        e.message
    );
    // Unset, it follows the pending TTL: the defaults are consistent.
    let c = with(
        "[budgets.team]\nperiod = \"daily\"\nlimit_usd = 1.0\n[task_classes.qa]\nmodels = [\"a\"]",
    )
    .unwrap();
    assert!(c.budgets["team"].reservation_ttl_secs >= c.limits.pending_ttl_secs);
    let e = with("[limits]\nmax_cost_usd_per_call = 1e300").unwrap_err();
    assert_eq!(e.key, "limits.max_cost_usd_per_call");
}
