//! TOML configuration: raw serde types (unknown keys rejected) validated into runtime types, so
//! nothing downstream sees an invalid value. Every error names the key path and the bad value.
//! The built-in default (`default_config.toml`, printed by `switchyard config print-default`) goes
//! through the very same validation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::breaker::BreakerConfig;
use crate::budget::{self, BudgetConfig, OnCap, Period};
use crate::policy::{ArmPrior, PolicyKind, PolicySettings, Weights};

/// The built-in configuration, used when `serve` gets no `--config`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default_config.toml");

/// Default listen address: loopback only, so a fresh install is not reachable from the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "switchyard-data";
/// Default evidence half-life: one day, slow enough to average out hourly noise, fast enough to follow
/// a provider whose quality or latency drifts over days.
pub const DEFAULT_HALF_LIFE_SECS: f64 = 86_400.0;
/// Default prior strength: priors count as two observations, so a handful of real ones outweigh them.
pub const DEFAULT_PRIOR_STRENGTH: f64 = 2.0;
/// Default Monte Carlo draws for Thompson propensities: standard error at most 0.5/sqrt(64) = 0.0625
/// (sqrt(p(1-p)/64), so 0.0375 at p = 0.9), at ~30 us per decision over 10 models; raise it where
/// off-policy estimates need tighter propensities and the decision rate allows.
pub const DEFAULT_PROPENSITY_SAMPLES: u32 = 64;
/// Default UCB exploration multiplier (1 = the textbook sqrt(2 ln t) width).
pub const DEFAULT_UCB_EXPLORATION: f64 = 1.0;
/// Default epsilon of the epsilon-greedy baseline.
pub const DEFAULT_EPSILON: f64 = 0.1;
/// Default utility penalty per broken constraint in `penalty` mode: one full unit of quality.
pub const DEFAULT_VIOLATION_PENALTY: f64 = 1.0;
/// Penalty used in `exclude` mode: larger than any achievable utility, so a violating arm is chosen
/// only when every arm violates (the least-bad one then wins).
pub const EXCLUDE_PENALTY: f64 = 1e6;
/// Default time a decision waits for feedback: an hour covers slow graders and human ratings.
pub const DEFAULT_PENDING_TTL_SECS: f64 = 3600.0;
/// Default bound on pending decisions: ~100 k x ~0.5 KB = ~50 MB at most.
pub const DEFAULT_MAX_PENDING: usize = 100_000;
/// Default number of fallbacks returned with a decision.
pub const DEFAULT_MAX_FALLBACKS: usize = 3;
/// Default prior success rate of a model without one in config.
pub const DEFAULT_SUCCESS_RATE: f64 = 0.99;
/// Default spread of ln(cost) around the price-table cost (output lengths vary by ~35%).
pub const DEFAULT_COST_LOG_SD: f64 = 0.3;
/// Default multiplier on a DEGRADED model's quality: it keeps traffic when clearly best, loses it
/// when close.
pub const DEFAULT_DEGRADED_QUALITY_FACTOR: f64 = 0.8;
/// Default hold of an outside health signal without a ttl: five minutes, long enough to ride out a
/// provider incident, short enough that a forgotten DOWN does not exile a model for the day.
pub const DEFAULT_HEALTH_TTL_SECS: f64 = 300.0;
/// Default soft-failure rule: a successful call slower than 3x the model's own p95 counts as a soft
/// failure (0 disables).
pub const DEFAULT_SOFT_FAILURE_LATENCY_FACTOR: f64 = 3.0;
/// Default fraction of latency and success evidence kept when a breaker closes after an outage:
/// a quarter, so the router re-learns from fresh calls rather than pre-outage numbers.
pub const DEFAULT_RECOVERY_EVIDENCE_FACTOR: f64 = 0.25;
/// Default interval between active health probes of a provider.
pub const DEFAULT_PROBE_INTERVAL_SECS: f64 = 10.0;
/// Default timeout of one active health probe.
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 2000;

/// Longest accepted request_id or decision_id, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Default timeout of one alert webhook POST: 5 s is ample for a chat or incident webhook, and an
/// alert that slow is better retried than waited for.
pub const DEFAULT_ALERT_TIMEOUT_MS: u64 = 5_000;
/// Default retries of a failed alert POST (after the first attempt): with exponential backoff from
/// [`crate::server::ALERT_BACKOFF_BASE`], 5 retries span about 3 s, enough to ride out a restart
/// of the receiver without queueing alerts for long.
pub const DEFAULT_ALERT_MAX_RETRIES: u32 = 5;
/// Largest accepted `alerts.max_retries`: beyond this the backoff exceeds an hour.
pub const MAX_ALERT_RETRIES: i64 = 20;

/// A config error: the key path, what is wrong, and what would be right.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw types, as written in TOML.

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    models: BTreeMap<String, RawModel>,
    #[serde(default)]
    task_classes: BTreeMap<String, RawTaskClass>,
    #[serde(default)]
    breaker: BreakerConfig,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    health_probes: BTreeMap<String, RawProbe>,
    #[serde(default)]
    budgets: BTreeMap<String, RawBudget>,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    storage: RawStorage,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    durability: Option<String>,
    flush_interval_ms: Option<i64>,
    event_log_max_age_secs: Option<i64>,
    event_log_max_events: Option<i64>,
}

/// Default flush interval of `periodic` durability: a crash can lose at most this window.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 200;
/// Default age bound of the event log: a week of traffic for `trace export`.
pub const DEFAULT_EVENT_LOG_MAX_AGE_SECS: u64 = 7 * 86_400;
/// Default size bound of the event log (events, ~300 bytes each: ~300 MB).
pub const DEFAULT_EVENT_LOG_MAX_EVENTS: u64 = 1_000_000;

/// When a write is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A Feedback is acknowledged only after its write is flushed (concurrent ones share a flush).
    Sync,
    /// Writes are flushed every `flush_interval_ms`; a crash can lose that window.
    Periodic,
    /// No data dir: state lives in memory only and a restart starts from the priors (for
    /// ephemeral deployments and for measuring what persistence costs).
    Memory,
}

/// `[storage]`: durability and the event log's bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    pub durability: Durability,
    pub flush_interval_ms: u64,
    pub event_log_max_age_secs: u64,
    pub event_log_max_events: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: Durability::Sync,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            event_log_max_age_secs: DEFAULT_EVENT_LOG_MAX_AGE_SECS,
            event_log_max_events: DEFAULT_EVENT_LOG_MAX_EVENTS,
        }
    }
}

impl RawStorage {
    fn validate(self) -> Result<StorageConfig, ConfigError> {
        let d = StorageConfig::default();
        let durability = match self.durability.as_deref() {
            None | Some("sync") => Durability::Sync,
            Some("periodic") => Durability::Periodic,
            Some("memory") => Durability::Memory,
            Some(other) => {
                return Err(err(
                    "storage.durability",
                    format!("must be \"sync\", \"periodic\" or \"memory\", got {other:?}"),
                ))
            }
        };
        let pos = |key: &str, v: Option<i64>, default: u64| match v {
            None => Ok(default),
            Some(v) => positive_int(key, v, 1),
        };
        Ok(StorageConfig {
            durability,
            flush_interval_ms: pos(
                "storage.flush_interval_ms",
                self.flush_interval_ms,
                d.flush_interval_ms,
            )?,
            event_log_max_age_secs: pos(
                "storage.event_log_max_age_secs",
                self.event_log_max_age_secs,
                d.event_log_max_age_secs,
            )?,
            event_log_max_events: pos(
                "storage.event_log_max_events",
                self.event_log_max_events,
                d.event_log_max_events,
            )?,
        })
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    all_open: Option<String>,
    degraded_quality_factor: Option<f64>,
    default_ttl_secs: Option<f64>,
    soft_failure_latency_factor: Option<f64>,
    recovery_evidence_factor: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    period: String,
    limit_usd: f64,
    time_zone: Option<String>,
    on_cap: Option<String>,
    alert_thresholds: Option<Vec<f64>>,
    reservation_ttl_secs: Option<f64>,
    pacing_max_multiplier: Option<f64>,
    pacing_min_multiplier: Option<f64>,
    pacing_gain: Option<f64>,
    pacing_warmup_fraction: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    webhook_url: Option<String>,
    timeout_ms: Option<i64>,
    max_retries: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    url: String,
    interval_secs: Option<f64>,
    timeout_ms: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    kind: Option<String>,
    half_life_secs: Option<f64>,
    prior_strength: Option<f64>,
    propensity_samples: Option<i64>,
    ucb_exploration: Option<f64>,
    epsilon: Option<f64>,
    constraint_mode: Option<String>,
    violation_penalty: Option<f64>,
    seed: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    pending_ttl_secs: Option<f64>,
    max_pending: Option<i64>,
    max_fallbacks: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    provider: String,
    input_usd_per_mtok: f64,
    output_usd_per_mtok: f64,
    quality: Option<f64>,
    latency_ms: Option<f64>,
    latency_p95_ms: Option<f64>,
    success_rate: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskClass {
    models: Vec<String>,
    weights: Option<RawWeights>,
    max_latency_ms: Option<f64>,
    cost_ref_usd: Option<f64>,
    latency_ref_ms: Option<f64>,
    typical_input_tokens: Option<i64>,
    typical_output_tokens: Option<i64>,
    #[serde(default)]
    quality: BTreeMap<String, f64>,
    budget: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawWeights {
    quality: f64,
    cost: f64,
    latency: f64,
}

// ---------------------------------------------------------------------------------------------
// Runtime types.

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub policy: PolicyConfig,
    pub limits: Limits,
    pub models: BTreeMap<String, ModelConfig>,
    /// Shared, so the engine takes a class for a request by reference count, not by copy.
    pub task_classes: BTreeMap<String, Arc<TaskClassConfig>>,
    pub breaker: BreakerConfig,
    pub health: HealthConfig,
    /// Active health probes by provider.
    pub health_probes: BTreeMap<String, ProbeConfig>,
    /// Spend budgets by key (`[budgets.<key>]`).
    pub budgets: BTreeMap<String, BudgetConfig>,
    /// Where budget alerts go (`[alerts]`).
    pub alerts: AlertsConfig,
    /// Durability and event log bounds (`[storage]`).
    pub storage: StorageConfig,
}

/// What Route does when every candidate's breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllOpen {
    /// Route to the model whose breaker reopens soonest, with reason `all_breakers_open`.
    LeastBad,
    /// Answer UNAVAILABLE, listing the models and when each may reopen.
    Unavailable,
}

/// How health signals and outcomes act on routing beyond the breaker thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub all_open: AllOpen,
    pub degraded_quality_factor: f64,
    pub default_ttl_secs: f64,
    /// A success slower than this many times the model's p95 is a soft failure; 0 = off.
    pub soft_failure_latency_factor: f64,
    /// Fraction of latency and success evidence kept when a breaker closes after an outage.
    pub recovery_evidence_factor: f64,
}

/// An active HTTP health probe of one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub provider: String,
    pub url: String,
    pub interval_secs: f64,
    pub timeout_ms: u64,
}

/// Delivery of budget threshold alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// URL that receives a JSON POST per crossed threshold; `None` = log only.
    pub webhook_url: Option<String>,
    /// Timeout of one POST attempt.
    pub timeout_ms: u64,
    /// Retries after a failed first attempt, with exponential backoff.
    pub max_retries: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: None,
            timeout_ms: DEFAULT_ALERT_TIMEOUT_MS,
            max_retries: DEFAULT_ALERT_MAX_RETRIES,
        }
    }
}

/// Policy settings plus the engine-wide learning settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub settings: PolicySettings,
    /// Evidence half-life; `None` = no decay.
    pub half_life_secs: Option<f64>,
    pub prior_strength: f64,
    pub constraint_mode: ConstraintMode,
    /// Utility subtracted per broken constraint (SLA, cost cap).
    pub violation_penalty: f64,
    /// Seed for the service's RNG; `None` = from the OS.
    pub seed: Option<u64>,
}

/// What a broken SLA or cost cap does to an arm's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintMode {
    /// Subtract `violation_penalty`.
    Penalty,
    /// Exclude the arm unless every arm breaks a constraint (then the least-bad wins).
    Exclude,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub pending_ttl_secs: f64,
    pub max_pending: usize,
    pub max_fallbacks: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub id: String,
    pub provider: String,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    pub quality: f64,
    pub latency_ms: f64,
    pub latency_p95_ms: f64,
    pub success_rate: f64,
}

impl ModelConfig {
    /// Price-table cost of a call with these token counts.
    pub fn cost_usd(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_usd_per_mtok
            + output_tokens as f64 * self.output_usd_per_mtok)
            / 1e6
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskClassConfig {
    pub name: String,
    pub models: Vec<String>,
    pub weights: Weights,
    pub max_latency_ms: Option<f64>,
    pub cost_ref_usd: f64,
    pub latency_ref_ms: f64,
    pub typical_input_tokens: u64,
    pub typical_output_tokens: u64,
    /// Per-class quality priors that override the model's.
    pub quality: BTreeMap<String, f64>,
    /// Budget charged when a Route request names none; `None` = unbudgeted.
    pub budget: Option<String>,
}

impl Config {
    /// Parses and validates TOML text; `origin` names the file in parse errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // toml's message names the line, the column and the offending key or value.
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| err(origin, e.to_string().trim().replace('\n', " ")))?;
        raw.validate()
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(path.display().to_string(), format!("cannot read: {e}")))?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The built-in default configuration.
    pub fn builtin() -> Result<Config, ConfigError> {
        Self::from_toml_str(DEFAULT_CONFIG_TOML, "built-in default config")
    }

    /// The prior of one (class, model) arm.
    pub fn arm_prior(&self, class: &TaskClassConfig, model: &ModelConfig) -> ArmPrior {
        ArmPrior {
            quality: class
                .quality
                .get(&model.id)
                .copied()
                .unwrap_or(model.quality),
            success_rate: model.success_rate,
            latency_ms: model.latency_ms,
            latency_p95_ms: model.latency_p95_ms,
            cost_usd: model.cost_usd(class.typical_input_tokens, class.typical_output_tokens),
            cost_log_sd: DEFAULT_COST_LOG_SD,
            strength: self.policy.prior_strength,
        }
    }
}

fn finite_min(key: &str, v: f64, min: f64, inclusive: bool) -> Result<f64, ConfigError> {
    let ok = v.is_finite() && if inclusive { v >= min } else { v > min };
    if ok {
        Ok(v)
    } else {
        let rel = if inclusive { ">=" } else { ">" };
        Err(err(
            key,
            format!("must be a finite number {rel} {min}, got {v}"),
        ))
    }
}

fn unit_interval(key: &str, v: f64) -> Result<f64, ConfigError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(err(key, format!("must be in [0, 1], got {v}")))
    }
}

fn positive_int(key: &str, v: i64, min: i64) -> Result<u64, ConfigError> {
    if v >= min {
        Ok(v as u64)
    } else {
        Err(err(key, format!("must be an integer >= {min}, got {v}")))
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c))
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let listen_text = self
            .server
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            err(
                "server.listen",
                format!("must be an address like 127.0.0.1:50051, got {listen_text:?}"),
            )
        })?;
        let data_dir = self
            .server
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        let policy = self.policy.validate()?;
        let limits = self.limits.validate()?;

        if self.models.is_empty() {
            return Err(err("models", "at least one model must be configured"));
        }
        let mut models = BTreeMap::new();
        for (id, m) in self.models {
            let key = format!("models.{id}");
            if !name_ok(&id) {
                return Err(err(
                    &key,
                    "a model id must be 1-128 characters of letters, digits and -_.:/@",
                ));
            }
            models.insert(id.clone(), m.validate(&key, id)?);
        }

        let mut budgets = BTreeMap::new();
        for (key, b) in self.budgets {
            let path = format!("budgets.{key}");
            if !name_ok(&key) {
                return Err(err(
                    &path,
                    "a budget key must be 1-128 characters of letters, digits and -_.:/@",
                ));
            }
            budgets.insert(key.clone(), b.validate(&path, key)?);
        }
        let alerts = self.alerts.validate()?;
        let storage = self.storage.validate()?;

        if self.task_classes.is_empty() {
            return Err(err(
                "task_classes",
                "at least one task class must be configured",
            ));
        }
        let mut task_classes = BTreeMap::new();
        for (name, c) in self.task_classes {
            let key = format!("task_classes.{name}");
            if !name_ok(&name) {
                return Err(err(
                    &key,
                    "a task class name must be 1-128 characters of letters, digits and -_.:/@",
                ));
            }
            task_classes.insert(
                name.clone(),
                Arc::new(c.validate(&key, name, &models, &budgets)?),
            );
        }

        self.breaker.validate().map_err(|m| err("breaker", m))?;
        let health = self.health.validate()?;
        let mut health_probes = BTreeMap::new();
        for (provider, p) in self.health_probes {
            let key = format!("health_probes.{provider}");
            if !models.values().any(|m| m.provider == provider) {
                return Err(err(
                    &key,
                    format!("provider {provider:?} serves none of the configured models"),
                ));
            }
            health_probes.insert(provider.clone(), p.validate(&key, provider)?);
        }

        Ok(Config {
            listen,
            data_dir,
            policy,
            limits,
            models,
            task_classes,
            breaker: self.breaker,
            health,
            health_probes,
            budgets,
            alerts,
            storage,
        })
    }
}

impl RawBudget {
    fn validate(self, path: &str, key: String) -> Result<BudgetConfig, ConfigError> {
        let period = match self.period.as_str() {
            "daily" => Period::Daily,
            "weekly" => Period::Weekly,
            "monthly" => Period::Monthly,
            other => {
                return Err(err(
                    format!("{path}.period"),
                    format!("must be \"daily\", \"weekly\" or \"monthly\", got {other:?}"),
                ))
            }
        };
        let time_zone = match self.time_zone.as_deref() {
            None => chrono_tz::Tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                err(
                    format!("{path}.time_zone"),
                    format!(
                        "unknown time zone {name:?}; use an IANA name like \"UTC\" or \
                         \"Europe/Berlin\""
                    ),
                )
            })?,
        };
        let on_cap = match self.on_cap.as_deref() {
            None | Some("cheapest") => OnCap::Cheapest,
            Some("reject") => OnCap::Reject,
            Some(other) => {
                return Err(err(
                    format!("{path}.on_cap"),
                    format!("must be \"cheapest\" or \"reject\", got {other:?}"),
                ))
            }
        };
        let mut cfg = BudgetConfig::new(key, period, self.limit_usd);
        cfg.time_zone = time_zone;
        cfg.on_cap = on_cap;
        if let Some(t) = self.alert_thresholds {
            cfg.alert_thresholds = t;
        }
        cfg.reservation_ttl_secs = self
            .reservation_ttl_secs
            .unwrap_or(budget::DEFAULT_RESERVATION_TTL_SECS);
        cfg.pacing_max_multiplier = self
            .pacing_max_multiplier
            .unwrap_or(budget::DEFAULT_PACING_MAX_MULTIPLIER);
        cfg.pacing_min_multiplier = self
            .pacing_min_multiplier
            .unwrap_or(budget::DEFAULT_PACING_MIN_MULTIPLIER);
        cfg.pacing_gain = self.pacing_gain.unwrap_or(budget::DEFAULT_PACING_GAIN);
        cfg.pacing_warmup_fraction = self
            .pacing_warmup_fraction
            .unwrap_or(budget::DEFAULT_PACING_WARMUP_FRACTION);
        // The ledger's own check names the field and value; prefix the key path it belongs to.
        cfg.validate().map_err(|message| {
            let field = [
                "limit_usd",
                "alert_thresholds",
                "reservation_ttl_secs",
                "pacing_max_multiplier",
                "pacing_min_multiplier",
                "pacing_gain",
                "pacing_warmup_fraction",
            ]
            .into_iter()
            .find(|f| message.contains(f));
            let key = match field {
                Some(f) => format!("{path}.{f}"),
                None => path.to_string(),
            };
            err(key, message)
        })?;
        Ok(cfg)
    }
}

impl RawAlerts {
    fn validate(self) -> Result<AlertsConfig, ConfigError> {
        let webhook_url = match self.webhook_url {
            None => None,
            Some(u) => {
                let parsed = reqwest::Url::parse(&u).map_err(|e| {
                    err(
                        "alerts.webhook_url",
                        format!("must be an http(s) URL, got {u:?}: {e}"),
                    )
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(err(
                        "alerts.webhook_url",
                        format!("must be an http or https URL, got {u:?}"),
                    ));
                }
                Some(u)
            }
        };
        let timeout_ms = positive_int(
            "alerts.timeout_ms",
            self.timeout_ms.unwrap_or(DEFAULT_ALERT_TIMEOUT_MS as i64),
            1,
        )?;
        let max_retries = self
            .max_retries
            .unwrap_or(i64::from(DEFAULT_ALERT_MAX_RETRIES));
        if !(0..=MAX_ALERT_RETRIES).contains(&max_retries) {
            return Err(err(
                "alerts.max_retries",
                format!("must be an integer in [0, {MAX_ALERT_RETRIES}], got {max_retries}"),
            ));
        }
        Ok(AlertsConfig {
            webhook_url,
            timeout_ms,
            max_retries: max_retries as u32,
        })
    }
}

impl RawPolicy {
    fn validate(self) -> Result<PolicyConfig, ConfigError> {
        let kind = match self.kind.as_deref() {
            None => PolicyKind::Thompson,
            Some(k) => PolicyKind::parse(k).ok_or_else(|| {
                let names: Vec<_> = PolicyKind::ALL.iter().map(|k| k.as_str()).collect();
                err(
                    "policy.kind",
                    format!("unknown policy {k:?}; expected one of {}", names.join(", ")),
                )
            })?,
        };
        let half_life_secs = match self.half_life_secs {
            None => Some(DEFAULT_HALF_LIFE_SECS),
            Some(h) if h.is_infinite() && h > 0.0 => None,
            Some(h) => Some(
                finite_min("policy.half_life_secs", h, 0.0, false).map_err(|_| {
                    err(
                        "policy.half_life_secs",
                        format!("must be > 0 (or inf for no decay), got {h}"),
                    )
                })?,
            ),
        };
        let prior_strength = finite_min(
            "policy.prior_strength",
            self.prior_strength.unwrap_or(DEFAULT_PRIOR_STRENGTH),
            0.0,
            false,
        )?;
        let propensity_samples = positive_int(
            "policy.propensity_samples",
            self.propensity_samples
                .unwrap_or(i64::from(DEFAULT_PROPENSITY_SAMPLES)),
            1,
        )?;
        if propensity_samples > 100_000 {
            return Err(err(
                "policy.propensity_samples",
                format!("must be at most 100000, got {propensity_samples}"),
            ));
        }
        let ucb_exploration = finite_min(
            "policy.ucb_exploration",
            self.ucb_exploration.unwrap_or(DEFAULT_UCB_EXPLORATION),
            0.0,
            true,
        )?;
        let epsilon = unit_interval("policy.epsilon", self.epsilon.unwrap_or(DEFAULT_EPSILON))?;
        let constraint_mode = match self.constraint_mode.as_deref() {
            None | Some("penalty") => ConstraintMode::Penalty,
            Some("exclude") => ConstraintMode::Exclude,
            Some(other) => {
                return Err(err(
                    "policy.constraint_mode",
                    format!("must be \"penalty\" or \"exclude\", got {other:?}"),
                ))
            }
        };
        let violation_penalty = finite_min(
            "policy.violation_penalty",
            self.violation_penalty.unwrap_or(DEFAULT_VIOLATION_PENALTY),
            0.0,
            true,
        )?;
        Ok(PolicyConfig {
            settings: PolicySettings {
                kind,
                propensity_samples: propensity_samples as u32,
                ucb_exploration,
                epsilon,
            },
            half_life_secs,
            prior_strength,
            constraint_mode,
            violation_penalty,
            seed: self.seed,
        })
    }
}

impl PolicyConfig {
    /// The penalty per broken constraint that scoring applies in the configured mode.
    pub fn effective_penalty(&self) -> f64 {
        match self.constraint_mode {
            ConstraintMode::Penalty => self.violation_penalty,
            ConstraintMode::Exclude => EXCLUDE_PENALTY,
        }
    }
}

impl RawHealth {
    fn validate(self) -> Result<HealthConfig, ConfigError> {
        let all_open = match self.all_open.as_deref() {
            None | Some("least_bad") => AllOpen::LeastBad,
            Some("unavailable") => AllOpen::Unavailable,
            Some(other) => {
                return Err(err(
                    "health.all_open",
                    format!("must be \"least_bad\" or \"unavailable\", got {other:?}"),
                ))
            }
        };
        Ok(HealthConfig {
            all_open,
            degraded_quality_factor: unit_interval(
                "health.degraded_quality_factor",
                self.degraded_quality_factor
                    .unwrap_or(DEFAULT_DEGRADED_QUALITY_FACTOR),
            )?,
            default_ttl_secs: finite_min(
                "health.default_ttl_secs",
                self.default_ttl_secs.unwrap_or(DEFAULT_HEALTH_TTL_SECS),
                0.0,
                false,
            )?,
            soft_failure_latency_factor: finite_min(
                "health.soft_failure_latency_factor",
                self.soft_failure_latency_factor
                    .unwrap_or(DEFAULT_SOFT_FAILURE_LATENCY_FACTOR),
                0.0,
                true,
            )?,
            recovery_evidence_factor: unit_interval(
                "health.recovery_evidence_factor",
                self.recovery_evidence_factor
                    .unwrap_or(DEFAULT_RECOVERY_EVIDENCE_FACTOR),
            )?,
        })
    }
}

impl RawProbe {
    fn validate(self, key: &str, provider: String) -> Result<ProbeConfig, ConfigError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://"))
            || reqwest::Url::parse(&self.url).is_err()
        {
            return Err(err(
                format!("{key}.url"),
                format!("must be an http:// or https:// URL, got {:?}", self.url),
            ));
        }
        let interval_secs = finite_min(
            &format!("{key}.interval_secs"),
            self.interval_secs.unwrap_or(DEFAULT_PROBE_INTERVAL_SECS),
            0.0,
            false,
        )?;
        let timeout_ms = positive_int(
            &format!("{key}.timeout_ms"),
            self.timeout_ms.unwrap_or(DEFAULT_PROBE_TIMEOUT_MS as i64),
            1,
        )?;
        Ok(ProbeConfig {
            provider,
            url: self.url,
            interval_secs,
            timeout_ms,
        })
    }
}

impl RawLimits {
    fn validate(self) -> Result<Limits, ConfigError> {
        Ok(Limits {
            pending_ttl_secs: finite_min(
                "limits.pending_ttl_secs",
                self.pending_ttl_secs.unwrap_or(DEFAULT_PENDING_TTL_SECS),
                0.0,
                false,
            )?,
            max_pending: positive_int(
                "limits.max_pending",
                self.max_pending.unwrap_or(DEFAULT_MAX_PENDING as i64),
                1,
            )? as usize,
            max_fallbacks: positive_int(
                "limits.max_fallbacks",
                self.max_fallbacks.unwrap_or(DEFAULT_MAX_FALLBACKS as i64),
                0,
            )? as usize,
        })
    }
}

impl RawModel {
    fn validate(self, key: &str, id: String) -> Result<ModelConfig, ConfigError> {
        if !name_ok(&self.provider) {
            return Err(err(
                format!("{key}.provider"),
                format!(
                    "must be 1-128 characters of letters, digits and -_.:/@, got {:?}",
                    self.provider
                ),
            ));
        }
        let latency_ms = finite_min(
            &format!("{key}.latency_ms"),
            self.latency_ms.unwrap_or(1000.0),
            0.0,
            false,
        )?;
        let latency_p95_ms = finite_min(
            &format!("{key}.latency_p95_ms"),
            self.latency_p95_ms.unwrap_or(latency_ms * 2.5),
            0.0,
            false,
        )?;
        if latency_p95_ms < latency_ms {
            return Err(err(
                format!("{key}.latency_p95_ms"),
                format!("must be >= latency_ms ({latency_ms}), got {latency_p95_ms}"),
            ));
        }
        Ok(ModelConfig {
            input_usd_per_mtok: finite_min(
                &format!("{key}.input_usd_per_mtok"),
                self.input_usd_per_mtok,
                0.0,
                true,
            )?,
            output_usd_per_mtok: finite_min(
                &format!("{key}.output_usd_per_mtok"),
                self.output_usd_per_mtok,
                0.0,
                true,
            )?,
            quality: unit_interval(&format!("{key}.quality"), self.quality.unwrap_or(0.5))?,
            latency_ms,
            latency_p95_ms,
            success_rate: unit_interval(
                &format!("{key}.success_rate"),
                self.success_rate.unwrap_or(DEFAULT_SUCCESS_RATE),
            )?,
            provider: self.provider,
            id,
        })
    }
}

impl RawTaskClass {
    fn validate(
        self,
        key: &str,
        name: String,
        models: &BTreeMap<String, ModelConfig>,
        budgets: &BTreeMap<String, BudgetConfig>,
    ) -> Result<TaskClassConfig, ConfigError> {
        if let Some(b) = &self.budget {
            if !budgets.contains_key(b) {
                let known: Vec<&str> = budgets.keys().map(String::as_str).collect();
                return Err(err(
                    format!("{key}.budget"),
                    format!(
                        "unknown budget {b:?}; it must be defined under [budgets.\"{b}\"] \
                         (configured budgets: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
        if self.models.is_empty() {
            return Err(err(format!("{key}.models"), "must list at least one model"));
        }
        for (i, m) in self.models.iter().enumerate() {
            if !models.contains_key(m) {
                return Err(err(
                    format!("{key}.models[{i}]"),
                    format!("unknown model {m:?}; it must be defined under [models.\"{m}\"]"),
                ));
            }
            if self.models[..i].contains(m) {
                return Err(err(
                    format!("{key}.models[{i}]"),
                    format!("model {m:?} is listed twice"),
                ));
            }
        }
        for (m, q) in &self.quality {
            if !self.models.contains(m) {
                return Err(err(
                    format!("{key}.quality.{m}"),
                    format!("model {m:?} is not in {key}.models"),
                ));
            }
            unit_interval(&format!("{key}.quality.{m}"), *q)?;
        }
        let w = self.weights.unwrap_or(RawWeights {
            quality: 1.0,
            cost: 0.3,
            latency: 0.2,
        });
        let weights = Weights {
            quality: finite_min(&format!("{key}.weights.quality"), w.quality, 0.0, true)?,
            cost: finite_min(&format!("{key}.weights.cost"), w.cost, 0.0, true)?,
            latency: finite_min(&format!("{key}.weights.latency"), w.latency, 0.0, true)?,
        };
        if weights.quality + weights.cost + weights.latency <= 0.0 {
            return Err(err(
                format!("{key}.weights"),
                "at least one weight must be > 0",
            ));
        }
        let max_latency_ms = match self.max_latency_ms {
            None => None,
            Some(v) => Some(finite_min(&format!("{key}.max_latency_ms"), v, 0.0, false)?),
        };
        let typical_input_tokens = positive_int(
            &format!("{key}.typical_input_tokens"),
            self.typical_input_tokens.unwrap_or(500),
            1,
        )?;
        let typical_output_tokens = positive_int(
            &format!("{key}.typical_output_tokens"),
            self.typical_output_tokens.unwrap_or(300),
            1,
        )?;
        // Reference cost: by default the median list cost of the class's models at typical size.
        let cost_ref_usd = match self.cost_ref_usd {
            Some(v) => finite_min(&format!("{key}.cost_ref_usd"), v, 0.0, false)?,
            None => {
                let mut costs: Vec<f64> = self
                    .models
                    .iter()
                    .filter_map(|m| models.get(m))
                    .map(|m| m.cost_usd(typical_input_tokens, typical_output_tokens))
                    .collect();
                costs.sort_by(f64::total_cmp);
                costs[costs.len() / 2].max(1e-9)
            }
        };
        let latency_ref_ms = finite_min(
            &format!("{key}.latency_ref_ms"),
            self.latency_ref_ms.unwrap_or(1000.0),
            0.0,
            false,
        )?;
        Ok(TaskClassConfig {
            name,
            models: self.models,
            weights,
            max_latency_ms,
            cost_ref_usd,
            latency_ref_ms,
            typical_input_tokens,
            typical_output_tokens,
            quality: self.quality,
            budget: self.budget,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

        let e =
            with("[policy]\nkind = \"magic\"\n[task_classes.qa]\nmodels = [\"a\"]\n").unwrap_err();
        assert_eq!(e.key, "policy.kind");
        assert!(
            e.message.contains("magic") && e.message.contains("thompson"),
            "{e}"
        );

        let e = with("[policy]\nepsilon = 1.5\n[task_classes.qa]\nmodels = [\"a\"]\n").unwrap_err();
        assert_eq!(e.key, "policy.epsilon");

        let e = with("[task_classes.qa]\nmodels = [\"a\"]\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");

        let e = with("[server]\nlisten = \"nowhere\"\n[task_classes.qa]\nmodels = [\"a\"]\n")
            .unwrap_err();
        assert_eq!(e.key, "server.listen");
        assert!(e.message.contains("nowhere"));
    }

    #[test]
    fn breaker_and_probe_errors_name_the_key() {
        let e = with("[breaker]\nhalf_open_probes = 1\nsuccesses_to_close = 3\n[task_classes.qa]\nmodels = [\"a\"]\n")
            .unwrap_err();
        assert_eq!(e.key, "breaker");
        assert!(e.message.contains("successes_to_close"), "{e}");
        let e =
            with("[health_probes.p1]\nurl = \"ftp://x\"\n[task_classes.qa]\nmodels = [\"a\"]\n")
                .unwrap_err();
        assert_eq!(e.key, "health_probes.p1.url");
        let e = with("[health_probes.nobody]\nurl = \"http://127.0.0.1:1/\"\n[task_classes.qa]\nmodels = [\"a\"]\n")
            .unwrap_err();
        assert!(e.message.contains("nobody"), "{e}");
        let e = with("[health]\nall_open = \"panic\"\n[task_classes.qa]\nmodels = [\"a\"]\n")
            .unwrap_err();
        assert_eq!(e.key, "health.all_open");
    }

    #[test]
    fn infinite_half_life_means_no_decay() {
        let c =
            with("[policy]\nhalf_life_secs = inf\n[task_classes.qa]\nmodels = [\"a\", \"b\"]\n")
                .unwrap();
        assert_eq!(c.policy.half_life_secs, None);
        let e = with("[policy]\nhalf_life_secs = -3.0\n[task_classes.qa]\nmodels = [\"a\"]\n")
            .unwrap_err();
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
                "budgets.t.alert_thresholds",
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
}

// ---------------------------------------------------------------------------------------------
// Layered configs: a base file plus fragments (e.g. the `[policy]` table `switchyard tune` writes).

/// Merges `over` into `base`: tables merge key by key (recursively), any other value replaces.
fn merge_toml(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_toml(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Config {
    /// Reads several config files, merges their TOML tables in order (later files override earlier
    /// keys; tables merge key by key), then validates the result once, as a single file would be.
    /// The built-in default when `paths` is empty.
    pub fn load_layered(paths: &[PathBuf]) -> Result<Config, ConfigError> {
        if paths.is_empty() {
            return Self::builtin();
        }
        let mut merged = toml::Table::new();
        for path in paths {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(&origin, format!("cannot read: {e}")))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| err(&origin, e.to_string().trim().replace('\n', " ")))?;
            merge_toml(&mut merged, table);
        }
        let origins: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let raw: RawConfig =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    err(origins.join(" + "), e.to_string().trim().replace('\n', " "))
                })?;
        raw.validate()
    }
}

#[cfg(test)]
mod layered_tests {
    use super::*;

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
}
