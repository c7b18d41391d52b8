//! TOML configuration: raw serde types (unknown keys rejected) validated into runtime types, so
//! nothing downstream sees an invalid value. Every error names the key path and the bad value.
//! The built-in default (`default_config.toml`, printed by `switchyard config print-default`) goes
//! through the very same validation.

pub mod anomaly;
mod cache;
pub mod classifier;
mod cluster;
mod defaults;
pub mod experiment;
pub mod prompt;
mod raw;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::breaker::BreakerConfig;
use crate::budget::BudgetConfig;
use crate::policy::objective::{Objective, Valuation};
use crate::policy::{ArmPrior, PolicySettings, Weights};

pub use anomaly::AnomalyConfig;
pub use cache::*;
pub use cluster::*;
pub use defaults::*;
use raw::RawConfig;

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
    /// Bound of the decision log's encoded bytes (keys included).
    pub event_log_max_bytes: u64,
    /// sled's page cache in MiB.
    pub cache_mb: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            durability: Durability::Sync,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            event_log_max_age_secs: DEFAULT_EVENT_LOG_MAX_AGE_SECS,
            event_log_max_events: DEFAULT_EVENT_LOG_MAX_EVENTS,
            event_log_max_bytes: DEFAULT_EVENT_LOG_MAX_BYTES,
            cache_mb: DEFAULT_CACHE_MB,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime types.

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Connection and request limits (`[server]`).
    pub connections: ConnectionLimits,
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
    /// `[server]` TLS, plaintext rule and drain time.
    pub security: SecurityConfig,
    /// `[auth]`: API keys and tenants; `None` = every RPC is open (loopback development).
    pub auth: Option<crate::auth::AuthConfig>,
    /// `[classifier]`: the prompt rules for Route without a task class; `None` = not configured.
    pub classifier: Option<crate::prompt::classify::Classifier>,
    /// `[anomaly]`: cost anomaly alerts.
    pub anomaly: AnomalyConfig,
    /// `[cluster]`: replicas sharing state through Redis; `None` = a single node.
    pub cluster: Option<ClusterConfig>,
}

/// `[server]`'s transport security and shutdown settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityConfig {
    /// `server.tls`; `None` = plaintext.
    pub tls: Option<TlsConfig>,
    /// `server.metrics_tls`: TLS for the metrics listener; `None` = plaintext.
    pub metrics_tls: Option<TlsConfig>,
    /// `server.allow_plaintext`: serve plaintext on a non-loopback address (behind a TLS-terminating
    /// proxy, say).
    pub allow_plaintext: bool,
    /// `server.drain_secs`: how long health reports NOT_SERVING while requests are still served
    /// after SIGTERM, so load balancers move traffic away first.
    pub drain_secs: f64,
}

/// `server.tls`: PEM files, read at start and on every reload (certificate rotation).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose certificates clients must present (mutual TLS); `None` = no client certificates.
    pub client_ca: Option<PathBuf>,
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
    /// Total exploration floor over the eligible arms (`policy::floor`).
    pub min_propensity: f64,
    /// Dual step of the `min_cost` objective's multiplier (`policy::objective`).
    pub quality_step: f64,
}

/// What a broken SLA or cost cap does to an arm's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintMode {
    /// Subtract `violation_penalty`.
    Penalty,
    /// Exclude the arm unless every arm breaks a constraint (then the least-bad wins).
    Exclude,
}

/// How many connections and requests the server takes, and when it closes a silent connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionLimits {
    pub idle_timeout_secs: f64,
    pub keepalive_interval_secs: f64,
    pub keepalive_timeout_secs: f64,
    pub max_connections: usize,
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub pending_ttl_secs: f64,
    pub max_pending: usize,
    pub max_fallbacks: usize,
    /// Largest accepted `cost_usd` of one Feedback (INVALID_ARGUMENT beyond it).
    pub max_cost_usd_per_call: f64,
    /// How long a budgeted decision that expired or was evicted still accepts a late Feedback
    /// that charges its spend.
    pub tombstone_ttl_secs: f64,
    /// Most tombstones kept per budget (oldest dropped first).
    pub max_tombstones: usize,
}

impl Limits {
    /// The tombstone bounds in the ledger's terms.
    pub fn tombstones(&self) -> crate::budget::TombstoneLimits {
        crate::budget::TombstoneLimits {
            ttl_ms: (self.tombstone_ttl_secs * 1000.0) as u64,
            max: self.max_tombstones,
        }
    }
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
    /// How Route counts a prompt for this model (`tokenizer`, else implied by the id).
    pub tokenizer: crate::prompt::tokens::Tokenizer,
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
    /// What the class optimises (`policy::objective`).
    pub objective: Objective,
    /// USD one unit of quality is worth (utility in money instead of weights).
    pub value_usd_per_quality: Option<f64>,
    /// USD one second of latency costs.
    pub value_usd_per_second: Option<f64>,
    /// `max_output_tokens = { default, cap }`: output-length governance; `None` = none.
    pub output_limit: Option<prompt::OutputLimit>,
    /// Shadow traffic and the A/B experiment (`experiment.rs`).
    pub shadow: Option<experiment::ShadowConfig>,
    pub experiment: Option<experiment::ExperimentConfig>,
    /// The class's response cache; `None` = no caching.
    pub cache: Option<CacheConfig>,
}

impl TaskClassConfig {
    /// How the class values draws outside `min_cost`: in money when `value_usd_per_quality` is set.
    pub fn valuation(&self) -> Valuation {
        match self.value_usd_per_quality {
            Some(v) => Valuation::Money {
                usd_per_quality: v,
                usd_per_second: self.value_usd_per_second.unwrap_or(0.0),
            },
            None => Valuation::Weights,
        }
    }

    /// The class's own quality target under `min_cost`.
    pub fn quality_target(&self) -> Option<f64> {
        match self.objective {
            Objective::MinCost { quality_target } => Some(quality_target),
            Objective::Utility => None,
        }
    }
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

impl Config {
    /// Validates `[auth]` against the configured task classes.
    fn check_auth(self) -> Result<Config, ConfigError> {
        self.key_table()?;
        Ok(self)
    }

    /// The key table of `[auth]`; `None` when there is no `[auth]` (every RPC open).
    pub fn key_table(&self) -> Result<Option<crate::auth::KeyTable>, ConfigError> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let classes = self.task_classes.keys().cloned().collect();
        crate::auth::KeyTable::from_config(auth, &classes)
            .map(Some)
            .map_err(|e| err(e.key, e.message))
    }

    /// The first setting that differs from `other` among those a reload cannot change (listen
    /// address, data dir, storage, TLS files and the plaintext rule), as its key path.
    pub fn restart_only_change(&self, other: &Config) -> Option<&'static str> {
        if self.listen != other.listen {
            Some("server.listen")
        } else if self.data_dir != other.data_dir {
            Some("server.data_dir")
        } else if self.storage != other.storage {
            Some("storage")
        } else if self.security.tls.is_some() != other.security.tls.is_some() {
            // Turning TLS on or off changes the listener; its files rotate on reload.
            Some("server.tls")
        } else if self.security.metrics_tls.is_some() != other.security.metrics_tls.is_some() {
            Some("server.metrics_tls")
        } else if self.security.allow_plaintext != other.security.allow_plaintext {
            Some("server.allow_plaintext")
        } else {
            None
        }
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
