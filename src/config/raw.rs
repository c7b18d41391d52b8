//! The configuration as written in TOML (serde types that reject unknown keys) and its validation
//! into the runtime types: every error names the key path and the bad value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::*;
use crate::breaker::BreakerConfig;
use crate::budget::{self, BudgetConfig, OnCap, Period};
use crate::policy::{PolicyKind, PolicySettings, Weights};
use crate::validation::FieldError;

mod budgets;
use budgets::{RawAlerts, RawBudget};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
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
    #[serde(default)]
    auth: Option<crate::auth::AuthConfig>,
    classifier: Option<super::classifier::RawClassifier>,
    #[serde(default)]
    anomaly: AnomalyConfig,
    cluster: Option<super::cluster::RawCluster>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    durability: Option<String>,
    flush_interval_ms: Option<i64>,
    event_log_max_age_secs: Option<i64>,
    event_log_max_events: Option<i64>,
    event_log_max_bytes: Option<i64>,
    cache_mb: Option<i64>,
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
            event_log_max_bytes: pos(
                "storage.event_log_max_bytes",
                self.event_log_max_bytes,
                d.event_log_max_bytes,
            )?,
            cache_mb: pos("storage.cache_mb", self.cache_mb, d.cache_mb)?,
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
    tls: Option<RawTls>,
    metrics_tls: Option<RawTls>,
    allow_plaintext: Option<bool>,
    drain_secs: Option<f64>,
    idle_timeout_secs: Option<f64>,
    keepalive_interval_secs: Option<f64>,
    keepalive_timeout_secs: Option<f64>,
    max_connections: Option<i64>,
    max_in_flight: Option<i64>,
}

/// `server.tls = { cert, key, client_ca? }`: PEM file paths.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
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
    min_propensity: Option<f64>,
    quality_step: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    pending_ttl_secs: Option<f64>,
    max_pending: Option<i64>,
    max_fallbacks: Option<i64>,
    max_cost_usd_per_call: Option<f64>,
    tombstone_ttl_secs: Option<f64>,
    max_tombstones: Option<i64>,
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
    tokenizer: Option<String>,
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
    objective: Option<String>,
    quality_target: Option<f64>,
    value_usd_per_quality: Option<f64>,
    value_usd_per_second: Option<f64>,
    max_output_tokens: Option<super::prompt::RawOutputLimit>,
    shadow: Option<super::experiment::RawShadow>,
    experiment: Option<super::experiment::RawExperiment>,
    cache: Option<super::cache::RawCache>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawWeights {
    quality: f64,
    cost: f64,
    latency: f64,
}

/// A settings type's own validation error, put under the key path `table` of its table.
fn field_err(table: &str, e: FieldError) -> ConfigError {
    err(format!("{table}.{}", e.field), e.message)
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

/// `limits.max_cost_usd_per_call`: > 0 and small enough that a sum of 10^9 such costs is finite.
fn bounded_cost_ceiling(v: f64) -> Result<f64, ConfigError> {
    const KEY: &str = "limits.max_cost_usd_per_call";
    let v = finite_min(KEY, v, 0.0, false)?;
    if v > MAX_COST_CAP_USD {
        return Err(err(
            KEY,
            format!("must be at most {MAX_COST_CAP_USD:e}, got {v:e}"),
        ));
    }
    Ok(v)
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
    pub(super) fn validate(self) -> Result<Config, ConfigError> {
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
        let security = security(
            self.server.tls,
            self.server.metrics_tls,
            self.server.allow_plaintext,
            self.server.drain_secs,
        )?;

        let connections = ConnectionLimits {
            idle_timeout_secs: finite_min(
                "server.idle_timeout_secs",
                self.server
                    .idle_timeout_secs
                    .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS),
                0.0,
                false,
            )?,
            keepalive_interval_secs: finite_min(
                "server.keepalive_interval_secs",
                self.server
                    .keepalive_interval_secs
                    .unwrap_or(DEFAULT_KEEPALIVE_INTERVAL_SECS),
                0.0,
                false,
            )?,
            keepalive_timeout_secs: finite_min(
                "server.keepalive_timeout_secs",
                self.server
                    .keepalive_timeout_secs
                    .unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT_SECS),
                0.0,
                false,
            )?,
            max_connections: positive_int(
                "server.max_connections",
                self.server
                    .max_connections
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS as i64),
                1,
            )? as usize,
            max_in_flight: positive_int(
                "server.max_in_flight",
                self.server
                    .max_in_flight
                    .unwrap_or(DEFAULT_MAX_IN_FLIGHT as i64),
                1,
            )? as usize,
        };
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
            budgets.insert(
                key.clone(),
                b.validate(&path, key, limits.pending_ttl_secs)?,
            );
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

        self.breaker
            .validate()
            .map_err(|e| field_err("breaker", e))?;
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

        let classifier = self
            .classifier
            .map(|c| c.validate(Some(&task_classes)))
            .transpose()?;
        Ok(Config {
            listen,
            data_dir,
            connections,
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
            security,
            auth: self.auth,
            classifier,
            anomaly: self
                .anomaly
                .validate()
                .map_err(|e| field_err("anomaly", e))?,
            cluster: self.cluster.map(|c| c.validate()).transpose()?,
        })
        .and_then(Config::check_auth)
    }
}

/// `[server]`'s TLS, plaintext and drain settings.
fn security(
    tls: Option<RawTls>,
    metrics_tls: Option<RawTls>,
    allow_plaintext: Option<bool>,
    drain_secs: Option<f64>,
) -> Result<SecurityConfig, ConfigError> {
    let drain_secs = drain_secs.unwrap_or(DEFAULT_DRAIN_SECS);
    if !(drain_secs.is_finite() && (0.0..=3600.0).contains(&drain_secs)) {
        return Err(err(
            "server.drain_secs",
            format!("must be between 0 and 3600 seconds, got {drain_secs}"),
        ));
    }
    let tls_config = |t: RawTls| TlsConfig {
        cert: t.cert,
        key: t.key,
        client_ca: t.client_ca,
    };
    Ok(SecurityConfig {
        tls: tls.map(tls_config),
        metrics_tls: metrics_tls.map(tls_config),
        allow_plaintext: allow_plaintext.unwrap_or(false),
        drain_secs,
    })
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
        let min_propensity = self.min_propensity.unwrap_or(DEFAULT_MIN_PROPENSITY);
        if !(min_propensity.is_finite() && (0.0..1.0).contains(&min_propensity)) {
            return Err(err(
                "policy.min_propensity",
                format!(
                    "must be in [0, 1): the total exploration share spread over the eligible \
                     arms (each of k gets at least min_propensity / k), got {min_propensity}"
                ),
            ));
        }
        let quality_step = finite_min(
            "policy.quality_step",
            self.quality_step
                .unwrap_or(crate::policy::objective::DEFAULT_STEP),
            0.0,
            false,
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
            min_propensity,
            quality_step,
        })
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
            max_cost_usd_per_call: bounded_cost_ceiling(
                self.max_cost_usd_per_call
                    .unwrap_or(DEFAULT_MAX_COST_USD_PER_CALL),
            )?,
            tombstone_ttl_secs: finite_min(
                "limits.tombstone_ttl_secs",
                self.tombstone_ttl_secs
                    .unwrap_or(DEFAULT_TOMBSTONE_TTL_SECS),
                0.0,
                true,
            )?,
            max_tombstones: positive_int(
                "limits.max_tombstones",
                self.max_tombstones.unwrap_or(DEFAULT_MAX_TOMBSTONES as i64),
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
            tokenizer: super::prompt::tokenizer(key, &id, self.tokenizer.as_deref())?,
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
        let (objective, value_usd_per_quality, value_usd_per_second) = self.objective(key)?;
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
        let (shadow, experiment) =
            super::experiment::validate_traffic(key, &self.models, self.shadow, self.experiment)?;
        Ok(TaskClassConfig {
            shadow,
            experiment,
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
            objective,
            value_usd_per_quality,
            value_usd_per_second,
            output_limit: self
                .max_output_tokens
                .map(|l| l.validate(key))
                .transpose()?,
            cache: super::cache::RawCache::validate_in(self.cache, key)?,
        })
    }

    /// `objective`, `quality_target`, `value_usd_per_quality` and `value_usd_per_second`, checked
    /// together: each trade-off is stated once.
    #[allow(clippy::type_complexity)]
    fn objective(&self, key: &str) -> Result<(Objective, Option<f64>, Option<f64>), ConfigError> {
        let money = |name: &str, v: Option<f64>| -> Result<Option<f64>, ConfigError> {
            v.map(|v| finite_min(&format!("{key}.{name}"), v, 0.0, true))
                .transpose()
        };
        let v_q = money("value_usd_per_quality", self.value_usd_per_quality)?;
        let v_s = money("value_usd_per_second", self.value_usd_per_second)?;
        if v_q.is_some() && self.weights.is_some() {
            return Err(err(
                format!("{key}.value_usd_per_quality"),
                format!(
                    "{key}.weights.cost and {key}.value_usd_per_quality both set the cost \
                     trade-off; keep one (value_usd_per_quality states it in USD)"
                ),
            ));
        }
        let objective = match (self.objective.as_deref(), self.quality_target) {
            (None | Some("utility"), None) => Objective::Utility,
            (None | Some("utility"), Some(_)) => {
                return Err(err(
                    format!("{key}.quality_target"),
                    format!("applies to objective = \"min_cost\" only; set {key}.objective = \"min_cost\" or drop it"),
                ))
            }
            (Some("min_cost"), None) => {
                return Err(err(
                    format!("{key}.quality_target"),
                    "is required with objective = \"min_cost\": the share of the best model's \
                     quality to keep, in (0, 1], e.g. 0.95",
                ))
            }
            (Some("min_cost"), Some(t)) => {
                if !(t.is_finite() && t > 0.0 && t <= 1.0) {
                    return Err(err(
                        format!("{key}.quality_target"),
                        format!("must be in (0, 1] (a share of the best model's quality), got {t}"),
                    ));
                }
                if v_q.is_some() {
                    return Err(err(
                        format!("{key}.value_usd_per_quality"),
                        "does not apply with objective = \"min_cost\", which prices quality by \
                         its own multiplier; drop one",
                    ));
                }
                Objective::MinCost { quality_target: t }
            }
            (Some(other), _) => {
                return Err(err(
                    format!("{key}.objective"),
                    format!("must be \"utility\" or \"min_cost\", got {other:?}"),
                ))
            }
        };
        if v_s.is_some() && v_q.is_none() && objective == Objective::Utility {
            return Err(err(
                format!("{key}.value_usd_per_second"),
                format!(
                    "needs {key}.value_usd_per_quality (or objective = \"min_cost\"): latency \
                     in USD is weighed against quality in USD"
                ),
            ));
        }
        Ok((objective, v_q, v_s))
    }
}
