//! Synthetic scenarios: the service config they run (`[service]`, exactly what a service config file
//! holds, loaded through `Config::from_toml_str`), the truth (`[truth.models."id"]`: what each model
//! really does), the traffic (`[traffic]`), events at given times (`[[events]]`) and an optional
//! `[accounting]` budget that the report measures overrun against.
//!
//! Errors name the key and the bad value, as config errors do.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::SimError;
use crate::config::Config;

/// Default spread (sd) of per-request quality around its mean.
pub const DEFAULT_QUALITY_SD: f64 = 0.15;
/// Default sigma of ln(latency): p95 = median x e^(1.645 x 0.4) = 1.9 x median, typical of LLM APIs.
pub const DEFAULT_LATENCY_SIGMA: f64 = 0.4;
/// Default sigma of ln(output tokens): answers vary by about a third around their median.
pub const DEFAULT_TOKENS_SIGMA: f64 = 0.35;
/// Default sigma of ln(input tokens) around the class's typical size.
pub const DEFAULT_INPUT_TOKENS_SIGMA: f64 = 0.5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    service: toml::Table,
    truth: RawTruth,
    traffic: RawTraffic,
    #[serde(default)]
    events: Vec<RawEvent>,
    accounting: Option<RawAccounting>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTruth {
    models: BTreeMap<String, RawModelTruth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelTruth {
    quality: f64,
    quality_sd: Option<f64>,
    #[serde(default)]
    quality_by_class: BTreeMap<String, f64>,
    latency_median_ms: f64,
    latency_sigma: Option<f64>,
    output_tokens_median: Option<f64>,
    output_tokens_sigma: Option<f64>,
    error_rate: Option<f64>,
    failure_billed_share: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    requests_per_sec: f64,
    duration_secs: f64,
    mix: BTreeMap<String, f64>,
    input_tokens_sigma: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at_secs: f64,
    kind: String,
    model: Option<String>,
    provider: Option<String>,
    task_class: Option<String>,
    duration_secs: Option<f64>,
    factor: Option<f64>,
    input_usd_per_mtok: Option<f64>,
    output_usd_per_mtok: Option<f64>,
    error_rate: Option<f64>,
    quality: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccounting {
    budget_usd: f64,
    period_secs: f64,
}

/// What one model really does (before events).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelTruth {
    pub provider: String,
    /// Mean quality of a successful answer, per task class (the model's `quality` where not given).
    pub quality: f64,
    pub quality_by_class: BTreeMap<String, f64>,
    pub quality_sd: f64,
    pub latency_median_ms: f64,
    pub latency_sigma: f64,
    /// Median output tokens; `None` = the class's typical output tokens.
    pub output_tokens_median: Option<f64>,
    pub output_tokens_sigma: f64,
    pub error_rate: f64,
    /// Share of the input tokens' price a failed call is billed (0 = failures are free, the
    /// default; 1 = the provider bills the prompt of a failed call in full).
    pub failure_billed_share: f64,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
}

/// Whom an event hits.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Model(String),
    Provider(String),
}

impl Target {
    pub fn hits(&self, model: &str, provider: &str) -> bool {
        match self {
            Target::Model(m) => m == model,
            Target::Provider(p) => p == provider,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Target::Model(m) => format!("model {m}"),
            Target::Provider(p) => format!("provider {p}"),
        }
    }
}

/// What changes at an event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// New list prices (or the old ones times `factor`).
    PriceChange {
        model: String,
        input_usd_per_mtok: f64,
        output_usd_per_mtok: f64,
    },
    /// Latencies multiplied by `factor`.
    LatencySpike { target: Target, factor: f64 },
    /// Error rate replaced by `error_rate`.
    ErrorBurst { target: Target, error_rate: f64 },
    /// Every call fails.
    Outage { target: Target },
    /// The model becomes available (before this, requests pass `candidates` without it).
    NewModel { model: String },
    /// Mean quality replaced (in one task class, or all).
    QualityChange {
        model: String,
        task_class: Option<String>,
        quality: f64,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::PriceChange { .. } => "price_change",
            EventKind::LatencySpike { .. } => "latency_spike",
            EventKind::ErrorBurst { .. } => "error_burst",
            EventKind::Outage { .. } => "outage",
            EventKind::NewModel { .. } => "new_model",
            EventKind::QualityChange { .. } => "quality_change",
        }
    }
}

/// A change in the truth at `at_secs`, lasting `duration_secs` (`None` = for good).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at_secs: f64,
    pub duration_secs: Option<f64>,
    pub kind: EventKind,
}

impl Event {
    pub fn label(&self) -> String {
        format!("{}@{}s", self.kind.name(), self.at_secs)
    }

    pub fn active_at(&self, t_secs: f64) -> bool {
        t_secs >= self.at_secs && self.duration_secs.is_none_or(|d| t_secs < self.at_secs + d)
    }
}

/// Traffic: requests per second (Poisson arrivals), duration, and the mix of task classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    pub requests_per_sec: f64,
    pub duration_secs: f64,
    /// (task class, share), shares summing to 1, in name order.
    pub mix: Vec<(String, f64)>,
    pub input_tokens_sigma: f64,
}

/// A spend limit per period that the report measures overrun against (the engine's own budgets come
/// in through `[service.budgets.*]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accounting {
    pub budget_usd: f64,
    pub period_secs: f64,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The `[service]` table as TOML text (what `Config::from_toml_str` loaded).
    pub service_toml: String,
    pub config: Config,
    pub truth: BTreeMap<String, ModelTruth>,
    pub traffic: Traffic,
    pub events: Vec<Event>,
    pub accounting: Option<Accounting>,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> SimError {
    SimError::new(key, message)
}

fn positive(key: &str, v: f64) -> Result<f64, SimError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(bad(key, format!("must be a finite number > 0, got {v}")))
    }
}

fn non_negative(key: &str, v: f64) -> Result<f64, SimError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(bad(key, format!("must be a finite number >= 0, got {v}")))
    }
}

fn unit(key: &str, v: f64) -> Result<f64, SimError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(bad(key, format!("must be in [0, 1], got {v}")))
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(path.display().to_string(), format!("cannot read: {e}")))?;
        let fallback = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".to_string());
        Self::from_toml_str(&text, &path.display().to_string(), &fallback)
    }

    /// Parses and validates scenario TOML; `origin` names the file in errors, `default_name` is the
    /// name when the file gives none.
    pub fn from_toml_str(
        text: &str,
        origin: &str,
        default_name: &str,
    ) -> Result<Scenario, SimError> {
        let raw: RawScenario = toml::from_str(text)
            .map_err(|e| bad(origin, e.to_string().trim().replace('\n', " ")))?;
        let service_toml = toml::to_string(&raw.service)
            .map_err(|e| bad("service", format!("cannot serialise back to TOML: {e}")))?;
        let config = Config::from_toml_str(&service_toml, &format!("{origin} [service]"))
            .map_err(|e| bad(format!("service.{}", e.key), e.message))?;

        let mut truth = BTreeMap::new();
        for (id, m) in raw.truth.models {
            let key = format!("truth.models.{id}");
            let Some(model) = config.models.get(&id) else {
                return Err(bad(
                    &key,
                    format!("model {id:?} is not in [service.models]; the truth must describe a configured model"),
                ));
            };
            for (class, q) in &m.quality_by_class {
                if !config.task_classes.contains_key(class) {
                    return Err(bad(
                        format!("{key}.quality_by_class.{class}"),
                        format!("unknown task class {class:?}"),
                    ));
                }
                unit(&format!("{key}.quality_by_class.{class}"), *q)?;
            }
            let t = ModelTruth {
                provider: model.provider.clone(),
                quality: unit(&format!("{key}.quality"), m.quality)?,
                quality_by_class: m.quality_by_class,
                quality_sd: unit(
                    &format!("{key}.quality_sd"),
                    m.quality_sd.unwrap_or(DEFAULT_QUALITY_SD),
                )?,
                latency_median_ms: positive(
                    &format!("{key}.latency_median_ms"),
                    m.latency_median_ms,
                )?,
                latency_sigma: non_negative(
                    &format!("{key}.latency_sigma"),
                    m.latency_sigma.unwrap_or(DEFAULT_LATENCY_SIGMA),
                )?,
                output_tokens_median: m
                    .output_tokens_median
                    .map(|v| positive(&format!("{key}.output_tokens_median"), v))
                    .transpose()?,
                output_tokens_sigma: non_negative(
                    &format!("{key}.output_tokens_sigma"),
                    m.output_tokens_sigma.unwrap_or(DEFAULT_TOKENS_SIGMA),
                )?,
                error_rate: unit(&format!("{key}.error_rate"), m.error_rate.unwrap_or(0.0))?,
                failure_billed_share: unit(
                    &format!("{key}.failure_billed_share"),
                    m.failure_billed_share.unwrap_or(0.0),
                )?,
                input_usd_per_mtok: model.input_usd_per_mtok,
                output_usd_per_mtok: model.output_usd_per_mtok,
            };
            truth.insert(id, t);
        }
        for (name, class) in &config.task_classes {
            for m in &class.models {
                if !truth.contains_key(m) {
                    return Err(bad(
                        format!("truth.models.{m}"),
                        format!("missing: model {m:?} is in service.task_classes.{name}.models, so the truth must describe it"),
                    ));
                }
            }
        }

        let tr = raw.traffic;
        let mut mix = Vec::new();
        let mut total = 0.0;
        for (class, share) in tr.mix {
            let key = format!("traffic.mix.{class}");
            if !config.task_classes.contains_key(&class) {
                return Err(bad(
                    key,
                    format!(
                        "unknown task class {class:?}; it must be under [service.task_classes]"
                    ),
                ));
            }
            total += non_negative(&key, share)?;
            mix.push((class, share));
        }
        if total <= 0.0 {
            return Err(bad(
                "traffic.mix",
                "at least one task class needs a share > 0",
            ));
        }
        for (_, s) in &mut mix {
            *s /= total;
        }
        let traffic = Traffic {
            requests_per_sec: positive("traffic.requests_per_sec", tr.requests_per_sec)?,
            duration_secs: positive("traffic.duration_secs", tr.duration_secs)?,
            mix,
            input_tokens_sigma: non_negative(
                "traffic.input_tokens_sigma",
                tr.input_tokens_sigma.unwrap_or(DEFAULT_INPUT_TOKENS_SIGMA),
            )?,
        };

        let mut events = Vec::new();
        for (i, e) in raw.events.into_iter().enumerate() {
            events.push(validate_event(&format!("events[{i}]"), e, &config)?);
        }
        events.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));

        let accounting = raw
            .accounting
            .map(|a| -> Result<Accounting, SimError> {
                Ok(Accounting {
                    budget_usd: positive("accounting.budget_usd", a.budget_usd)?,
                    period_secs: positive("accounting.period_secs", a.period_secs)?,
                })
            })
            .transpose()?;

        Ok(Scenario {
            name: raw.name.unwrap_or_else(|| default_name.to_string()),
            description: raw.description.unwrap_or_default(),
            service_toml,
            config,
            truth,
            traffic,
            events,
            accounting,
        })
    }
}

fn validate_event(key: &str, e: RawEvent, config: &Config) -> Result<Event, SimError> {
    let at_secs = non_negative(&format!("{key}.at_secs"), e.at_secs)?;
    let duration_secs = e
        .duration_secs
        .map(|d| positive(&format!("{key}.duration_secs"), d))
        .transpose()?;
    let model = |required: bool| -> Result<Option<String>, SimError> {
        match &e.model {
            Some(m) if config.models.contains_key(m) => Ok(Some(m.clone())),
            Some(m) => Err(bad(
                format!("{key}.model"),
                format!("unknown model {m:?}; it must be under [service.models]"),
            )),
            None if required => Err(bad(
                format!("{key}.model"),
                format!("is required for kind {:?}", e.kind),
            )),
            None => Ok(None),
        }
    };
    let target = || -> Result<Target, SimError> {
        match (model(false)?, &e.provider) {
            (Some(m), None) => Ok(Target::Model(m)),
            (None, Some(p)) if config.models.values().any(|m| &m.provider == p) => {
                Ok(Target::Provider(p.clone()))
            }
            (None, Some(p)) => Err(bad(
                format!("{key}.provider"),
                format!("no configured model has provider {p:?}"),
            )),
            _ => Err(bad(key, "give exactly one of model or provider")),
        }
    };
    let kind = match e.kind.as_str() {
        "price_change" => {
            let m = model(true)?.unwrap_or_default();
            let cfg = config.models.get(&m);
            let factor = e
                .factor
                .map(|f| positive(&format!("{key}.factor"), f))
                .transpose()?;
            let pick = |given: Option<f64>, field: &str, old: f64| -> Result<f64, SimError> {
                match (given, factor) {
                    (Some(v), _) => non_negative(&format!("{key}.{field}"), v),
                    (None, Some(f)) => Ok(old * f),
                    (None, None) => Err(bad(
                        format!("{key}.{field}"),
                        "give the new price or a factor",
                    )),
                }
            };
            EventKind::PriceChange {
                input_usd_per_mtok: pick(
                    e.input_usd_per_mtok,
                    "input_usd_per_mtok",
                    cfg.map_or(0.0, |c| c.input_usd_per_mtok),
                )?,
                output_usd_per_mtok: pick(
                    e.output_usd_per_mtok,
                    "output_usd_per_mtok",
                    cfg.map_or(0.0, |c| c.output_usd_per_mtok),
                )?,
                model: m,
            }
        }
        "latency_spike" => EventKind::LatencySpike {
            target: target()?,
            factor: positive(
                &format!("{key}.factor"),
                e.factor
                    .ok_or_else(|| bad(format!("{key}.factor"), "is required for latency_spike"))?,
            )?,
        },
        "error_burst" => EventKind::ErrorBurst {
            target: target()?,
            error_rate: unit(
                &format!("{key}.error_rate"),
                e.error_rate.ok_or_else(|| {
                    bad(format!("{key}.error_rate"), "is required for error_burst")
                })?,
            )?,
        },
        "outage" => EventKind::Outage { target: target()? },
        "new_model" => EventKind::NewModel {
            model: model(true)?.unwrap_or_default(),
        },
        "quality_change" => {
            if let Some(c) = &e.task_class {
                if !config.task_classes.contains_key(c) {
                    return Err(bad(
                        format!("{key}.task_class"),
                        format!("unknown task class {c:?}"),
                    ));
                }
            }
            EventKind::QualityChange {
                model: model(true)?.unwrap_or_default(),
                task_class: e.task_class.clone(),
                quality: unit(
                    &format!("{key}.quality"),
                    e.quality.ok_or_else(|| {
                        bad(format!("{key}.quality"), "is required for quality_change")
                    })?,
                )?,
            }
        }
        other => {
            return Err(bad(
                format!("{key}.kind"),
                format!(
                    "unknown event kind {other:?}; expected one of price_change, latency_spike, \
                     error_burst, outage, new_model, quality_change"
                ),
            ))
        }
    };
    Ok(Event {
        at_secs,
        duration_secs,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SMALL: &str = r#"
name = "small"
[service.models.a]
provider = "p1"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0
[service.models.b]
provider = "p2"
input_usd_per_mtok = 0.1
output_usd_per_mtok = 0.2
[service.task_classes.qa]
models = ["a", "b"]
[truth.models.a]
quality = 0.8
latency_median_ms = 800.0
[truth.models.b]
quality = 0.5
latency_median_ms = 400.0
[traffic]
requests_per_sec = 2.0
duration_secs = 100.0
mix = { qa = 1.0 }
"#;

    #[test]
    fn a_small_scenario_loads() {
        let s = Scenario::from_toml_str(SMALL, "t.toml", "x").unwrap();
        assert_eq!(s.name, "small");
        assert_eq!(s.truth["b"].input_usd_per_mtok, 0.1);
        assert_eq!(s.config.task_classes["qa"].models, vec!["a", "b"]);
    }

    #[test]
    fn errors_name_the_key_and_value() {
        let e = Scenario::from_toml_str(&SMALL.replace("quality = 0.8", "quality = 1.8"), "t", "x")
            .unwrap_err();
        assert_eq!(e.context, "truth.models.a.quality");
        assert!(e.message.contains("1.8"), "{e}");

        let e = Scenario::from_toml_str(
            &SMALL.replace("models = [\"a\", \"b\"]", "models = [\"a\", \"zz\"]"),
            "t",
            "x",
        )
        .unwrap_err();
        assert_eq!(e.context, "service.task_classes.qa.models[1]");

        let e = Scenario::from_toml_str(
            &format!("{SMALL}\n[[events]]\nat_secs = 5.0\nkind = \"latency_spike\"\nmodel = \"a\"\nfactor = -2.0\n"),
            "t",
            "x",
        )
        .unwrap_err();
        assert_eq!(e.context, "events[0].factor");
        assert!(e.message.contains("-2"), "{e}");

        let e = Scenario::from_toml_str(
            &format!("{SMALL}\n[[events]]\nat_secs = 5.0\nkind = \"meteor\"\n"),
            "t",
            "x",
        )
        .unwrap_err();
        assert_eq!(e.context, "events[0].kind");
        assert!(e.message.contains("meteor"), "{e}");
    }
}
