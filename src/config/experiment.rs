//! Per task class `shadow = { fraction, models }` and `experiment = { control, fraction }`:
//! shadow traffic (a second model run off the user's path on a share of requests, to compare
//! with the chosen one on the same requests) and an A/B experiment against a control policy.
//!
//! Both are configuration only: on restart they come back from the config file; the engine keeps
//! no state of its own for the experiment (a request's group is a stable hash of its request_id).

use serde::Deserialize;

use super::{err, ConfigError};
use crate::policy::{PolicyKind, PolicySettings};

/// `shadow.models`: the models a shadow call may go to.
#[derive(Debug, Clone, PartialEq)]
pub enum ShadowModels {
    /// One of these (uniformly, among those eligible and other than the chosen model).
    Listed(Vec<String>),
    /// The eligible arm whose evidence is weakest (fewest decayed observations), other than the
    /// chosen one: shadow traffic then explores without touching the user's path.
    Explore,
}

/// A class's shadow traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    /// Share of decisions, in (0, 1], that also return a shadow model.
    pub fraction: f64,
    pub models: ShadowModels,
}

/// What an experiment's control group is routed by.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// The arm whose configured priors score best (never revised by feedback).
    StaticBest,
    /// Always this model (when its breaker lets it through; else the static best of the rest).
    Model(String),
    /// A policy of [`PolicyKind`] with the service's settings, some overridden.
    Policy {
        kind: PolicyKind,
        overrides: Vec<(String, f64)>,
    },
}

/// Settings a control policy spec may override (the fields of [`PolicySettings`]).
pub const CONTROL_SETTINGS: [&str; 3] = ["propensity_samples", "ucb_exploration", "epsilon"];

impl Control {
    /// Parses `static_best`, `model:ID` or `KIND[:setting=value...]`.
    pub fn parse(text: &str) -> Result<Control, String> {
        let text = text.trim();
        if text == "static_best" {
            return Ok(Control::StaticBest);
        }
        if let Some(m) = text.strip_prefix("model:") {
            return Ok(Control::Model(m.to_string()));
        }
        let (kind_text, rest) = text.split_once(':').unwrap_or((text, ""));
        let kind = PolicyKind::parse(kind_text).ok_or_else(|| {
            let names: Vec<_> = PolicyKind::ALL.iter().map(|k| k.as_str()).collect();
            format!(
                "unknown control {kind_text:?}; expected \"static_best\", \"model:ID\" or a \
                 policy: {}",
                names.join(", ")
            )
        })?;
        let mut overrides = Vec::new();
        for part in rest.split(':').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("expected setting=value, got {part:?}"))?;
            let k = k.trim();
            if !CONTROL_SETTINGS.contains(&k) {
                return Err(format!(
                    "unknown setting {k:?}; expected one of {}",
                    CONTROL_SETTINGS.join(", ")
                ));
            }
            let v: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("{k}: expected a finite number >= 0, got {v:?}"))?;
            overrides.push((k.to_string(), v));
        }
        Ok(Control::Policy { kind, overrides })
    }

    /// The control's policy settings: `base` (the service's) with the overrides applied.
    pub fn settings(&self, base: &PolicySettings) -> PolicySettings {
        let mut s = *base;
        match self {
            Control::StaticBest | Control::Model(_) => s.kind = PolicyKind::StaticBest,
            Control::Policy { kind, overrides } => {
                s.kind = *kind;
                for (k, v) in overrides {
                    match k.as_str() {
                        "propensity_samples" => s.propensity_samples = *v as u32,
                        "ucb_exploration" => s.ucb_exploration = *v,
                        "epsilon" => s.epsilon = v.min(1.0),
                        _ => {}
                    }
                }
            }
        }
        s
    }

    /// The label decisions of the control record as their policy.
    pub fn label(&self) -> String {
        match self {
            Control::StaticBest => "static_best".to_string(),
            Control::Model(m) => format!("model:{m}"),
            Control::Policy { kind, overrides } => {
                let mut s = kind.as_str().to_string();
                for (k, v) in overrides {
                    s.push_str(&format!(":{k}={v}"));
                }
                s
            }
        }
    }
}

/// A class's A/B experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentConfig {
    pub control: Control,
    /// Share of requests, in (0, 1), routed by the control.
    pub fraction: f64,
}

/// `task_classes.X.shadow` as written.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShadow {
    fraction: f64,
    models: RawShadowModels,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum RawShadowModels {
    Listed(Vec<String>),
    Named(String),
}

/// `task_classes.X.experiment` as written.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExperiment {
    control: String,
    fraction: f64,
}

fn fraction(key: &str, v: f64, upper_inclusive: bool) -> Result<f64, ConfigError> {
    let ok = v.is_finite() && v > 0.0 && if upper_inclusive { v <= 1.0 } else { v < 1.0 };
    if ok {
        Ok(v)
    } else {
        let range = if upper_inclusive { "(0, 1]" } else { "(0, 1)" };
        Err(err(
            key,
            format!("must be a share of requests in {range}, e.g. 0.05; got {v}"),
        ))
    }
}

/// Checks that `m` is one of the class's `models`.
fn class_model(key: &str, m: &str, models: &[String]) -> Result<(), ConfigError> {
    if models.iter().any(|x| x == m) {
        Ok(())
    } else {
        Err(err(
            key,
            format!(
                "model {m:?} is not a model of this class; its models are: {}",
                models.join(", ")
            ),
        ))
    }
}

impl RawShadow {
    /// Validates under `key` (`task_classes.X.shadow`) against the class's models.
    pub(super) fn validate(
        self,
        key: &str,
        models: &[String],
    ) -> Result<ShadowConfig, ConfigError> {
        let fraction = fraction(&format!("{key}.fraction"), self.fraction, true)?;
        let models = match self.models {
            RawShadowModels::Named(s) if s == "explore" => ShadowModels::Explore,
            RawShadowModels::Named(s) => {
                return Err(err(
                    format!("{key}.models"),
                    format!("expected a list of model ids or \"explore\", got {s:?}"),
                ))
            }
            RawShadowModels::Listed(list) => {
                if list.is_empty() {
                    return Err(err(
                        format!("{key}.models"),
                        "lists no model; list one or more of the class's models, or \"explore\"",
                    ));
                }
                for (i, m) in list.iter().enumerate() {
                    class_model(&format!("{key}.models[{i}]"), m, models)?;
                }
                ShadowModels::Listed(list)
            }
        };
        Ok(ShadowConfig { fraction, models })
    }
}

impl RawExperiment {
    /// Validates under `key` (`task_classes.X.experiment`) against the class's models.
    pub(super) fn validate(
        self,
        key: &str,
        models: &[String],
    ) -> Result<ExperimentConfig, ConfigError> {
        let fraction = fraction(&format!("{key}.fraction"), self.fraction, false)?;
        let control =
            Control::parse(&self.control).map_err(|m| err(format!("{key}.control"), m))?;
        if let Control::Model(m) = &control {
            class_model(&format!("{key}.control"), m, models)?;
        }
        Ok(ExperimentConfig { control, fraction })
    }
}

/// Validates a class's optional shadow and experiment tables.
pub(super) fn validate_traffic(
    key: &str,
    models: &[String],
    shadow: Option<RawShadow>,
    experiment: Option<RawExperiment>,
) -> Result<(Option<ShadowConfig>, Option<ExperimentConfig>), ConfigError> {
    let shadow = shadow
        .map(|s| {
            if models.len() < 2 {
                return Err(err(
                    format!("{key}.shadow"),
                    "shadow traffic needs a class of at least two models (the shadow is never \
                     the chosen one)",
                ));
            }
            s.validate(&format!("{key}.shadow"), models)
        })
        .transpose()?;
    let experiment = experiment
        .map(|e| e.validate(&format!("{key}.experiment"), models))
        .transpose()?;
    Ok((shadow, experiment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(Control::parse("static_best"), Ok(Control::StaticBest));
        assert_eq!(Control::parse("model:a"), Ok(Control::Model("a".into())));
        let p = Control::parse("epsilon_greedy:epsilon=0.2").unwrap();
        assert_eq!(p.label(), "epsilon_greedy:epsilon=0.2");
        let base = PolicySettings {
            kind: PolicyKind::Thompson,
            propensity_samples: 10,
            ucb_exploration: 1.0,
            epsilon: 0.1,
        };
        let s = p.settings(&base);
        assert_eq!((s.kind, s.epsilon), (PolicyKind::EpsilonGreedy, 0.2));
        assert!(Control::parse("bogus").unwrap_err().contains("static_best"));
        assert!(Control::parse("ucb:nope=1")
            .unwrap_err()
            .contains("unknown setting"));
    }

    fn class_error(extra: &str) -> String {
        let text = format!(
            "[models.a]\nprovider = \"p\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
             [models.b]\nprovider = \"p\"\ninput_usd_per_mtok = 1.0\noutput_usd_per_mtok = 1.0\n\
             [task_classes.qa]\nmodels = [\"a\", \"b\"]\n{extra}\n"
        );
        match crate::config::Config::from_toml_str(&text, "t") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_shadow_and_experiment_tables_name_the_key_and_what_is_right() {
        assert_eq!(
            class_error("shadow = { fraction = 0.1, models = \"explore\" }"),
            ""
        );
        let e = class_error("shadow = { fraction = 1.5, models = \"explore\" }");
        assert!(
            e.starts_with("task_classes.qa.shadow.fraction") && e.contains("(0, 1]"),
            "{e}"
        );
        let e = class_error("shadow = { fraction = 0.1, models = [\"zz\"] }");
        assert!(e.contains("models[0]") && e.contains("a, b"), "{e}");
        let e = class_error("shadow = { fraction = 0.1, models = \"most\" }");
        assert!(e.contains("\"explore\""), "{e}");
        let e = class_error("experiment = { control = \"model:zz\", fraction = 0.1 }");
        assert!(e.starts_with("task_classes.qa.experiment.control"), "{e}");
        let e = class_error("experiment = { control = \"static_best\", fraction = 1.0 }");
        assert!(e.contains("(0, 1)"), "{e}");
    }
}
