//! The service's edge: the plaintext rule, the API-key gate and config reload (engine, keys,
//! certificates and probes; TLS itself is in [`super::tls`]).
//!
//! Plaintext is fine on loopback (development, a sidecar) but on any other address it would send
//! keys and prompts' metadata in the clear, so it is refused there unless `server.allow_plaintext`
//! says a TLS-terminating proxy sits in front. The key table sits behind a lock as an `Arc` so a
//! reload swaps it whole while calls in flight finish with the table they started with.
//! `switchyard.v1.Route` handlers check the key themselves (each knows its RPC name); health and
//! reflection go through an interceptor that knows its service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use super::tls::Rotating;
use super::{now_ms, probes, Shared};
use crate::auth::{Access, KeyTable, Principal};
use crate::config::{Config, ConfigError, SecurityConfig};
use crate::engine::{DecisionOwner, Engine, Reconfigured};

/// The reloadable key table; `None` = no `[auth]`, every RPC open.
#[derive(Default)]
pub struct Keys(RwLock<Option<Arc<KeyTable>>>);

impl Keys {
    pub fn new(table: Option<KeyTable>) -> Arc<Keys> {
        Arc::new(Keys(RwLock::new(table.map(Arc::new))))
    }

    fn current(&self) -> Option<Arc<KeyTable>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, table: Option<KeyTable>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = table.map(Arc::new);
    }

    /// Checks the caller of `path` (`/package.Service/Method`): `None` when no key was needed.
    pub fn check(&self, path: &str, metadata: &MetadataMap) -> Result<Option<Principal>, Status> {
        let Some(table) = self.current() else {
            return Ok(None);
        };
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        match table.authorize(path, header) {
            Ok(Access::Open) => Ok(None),
            Ok(Access::Key(p)) => Ok(Some(p)),
            Err(e) => Err(super::convert::auth_status(e)),
        }
    }
}

/// An interceptor for a whole service (health, reflection): open unless `[auth]` closes it.
pub fn interceptor(
    keys: Arc<Keys>,
    service: &'static str,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        keys.check(&format!("/{service}/"), request.metadata())?;
        Ok(request)
    }
}

/// Errors of the edge's setup.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(
        "refusing to serve {what} in plaintext on {addr}: it is not a loopback address, so API keys \
         and request metadata would cross the network unencrypted. Set {fix} = {{ cert, key }} \
         or, behind a TLS-terminating proxy, server.allow_plaintext = true"
    )]
    Plaintext {
        what: &'static str,
        addr: SocketAddr,
        /// The config key that would turn TLS on for this listener.
        fix: &'static str,
    },
    #[error("{field}: cannot read {path}: {detail}")]
    Read {
        field: String,
        path: String,
        detail: String,
    },
    #[error("{field}: {path} {detail}")]
    Invalid {
        field: String,
        path: String,
        detail: String,
    },
}

/// Refuses plaintext on a non-loopback address unless allowed; `fix` names the config key that
/// turns TLS on for this listener.
pub fn check_plaintext(
    what: &'static str,
    fix: &'static str,
    addr: SocketAddr,
    tls: bool,
    security: &SecurityConfig,
) -> Result<(), SecurityError> {
    if tls || security.allow_plaintext || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(SecurityError::Plaintext { what, addr, fix })
    }
}

/// What a reload swaps besides the engine: the key table, the listeners' certificates and the
/// active health probes. Shared by the Reload RPC and the SIGHUP task.
pub struct Edge {
    pub keys: Arc<Keys>,
    /// The gRPC listener's TLS (`server.tls`), when on.
    pub tls: Option<Arc<Rotating>>,
    /// The metrics listener's TLS (`server.metrics_tls`), when on and a metrics listener runs.
    pub metrics_tls: Option<Arc<Rotating>>,
    /// The running probe tasks and the config they run.
    pub probes: Mutex<probes::Running>,
}

impl Edge {
    /// An edge without TLS, keys or probes (a service built in-process).
    pub fn plain() -> Edge {
        Edge {
            keys: Arc::default(),
            tls: None,
            metrics_tls: None,
            probes: Mutex::new(probes::Running::default()),
        }
    }

    fn probes(&self) -> std::sync::MutexGuard<'_, probes::Running> {
        self.probes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the probe tasks (at shutdown).
    pub fn stop_probes(&self) {
        self.probes().stop();
    }
}

/// Where a reload reads its config: the files `serve` started with and the command-line overrides
/// it applied.
#[derive(Debug, Clone, Default)]
pub struct ReloadSource {
    /// The `--config` files; empty = the built-in default (then a reload changes nothing).
    pub paths: Vec<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// `--allow-plaintext`.
    pub allow_plaintext: bool,
}

impl ReloadSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load_layered(&self.paths)?;
        if let Some(l) = self.listen {
            config.listen = l;
        }
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        config.security.allow_plaintext |= self.allow_plaintext;
        Ok(config)
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload refused, nothing changed: {0}")]
    Invalid(ConfigError),
    #[error("reload refused, nothing changed: {0}")]
    Tls(SecurityError),
    #[error(
        "reload refused, nothing changed: `{0}` differs from the running config and needs a restart"
    )]
    RestartNeeded(&'static str),
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Arms added, removed and repriced by the engine.
    pub engine: Reconfigured,
    /// Keys in the new table.
    pub keys: usize,
    /// Listeners whose certificates were re-read (`server.tls`, `server.metrics_tls`).
    pub certificates: Vec<&'static str>,
    /// Whether the probe tasks were restarted (their config changed).
    pub probes_restarted: bool,
}

/// Reads, validates and swaps in the config: engine (keeping learned state), key table,
/// certificates and probes. Every part is read and checked before any is swapped, so a bad file
/// (config, certificate or key) changes nothing.
pub fn reload(
    shared: &Arc<Shared>,
    edge: &Edge,
    source: &ReloadSource,
) -> Result<Reloaded, ReloadError> {
    let config = source.load().map_err(ReloadError::Invalid)?;
    let table = config.key_table().map_err(ReloadError::Invalid)?;
    let n_keys = table.as_ref().map_or(0, KeyTable::len);
    let sec = &config.security;
    // Whether TLS is on at all needs a restart (checked below); the files may change.
    let mut certs = Vec::new();
    for (rotating, tls) in [(&edge.tls, &sec.tls), (&edge.metrics_tls, &sec.metrics_tls)] {
        if let (Some(r), Some(t)) = (rotating, tls) {
            certs.push((Arc::clone(r), r.prepare(t).map_err(ReloadError::Tls)?));
        }
    }
    let probes = config.health_probes.clone();
    let classes: Vec<_> = config.task_classes.values().cloned().collect();
    let bounds = super::cache::candidate_bounds(&config);
    let changed = shared.with_engine(|engine, _| {
        if let Some(key) = engine.config().restart_only_change(&config) {
            return Err(ReloadError::RestartNeeded(key));
        }
        Ok(engine.reconfigure(config, now_ms()))
    })?;
    shared.cache_reconfigure(&classes, &changed.removed, bounds);
    edge.keys.set(table);
    let certificates = certs
        .into_iter()
        .map(|(r, c)| {
            r.swap(c);
            r.field()
        })
        .collect();
    let probes_restarted = edge.probes().replace(shared, probes);
    Ok(Reloaded {
        engine: changed,
        keys: n_keys,
        certificates,
        probes_restarted,
    })
}

/// [`reload`], logged either way (SIGHUP has nobody else to tell).
pub fn reload_logged(
    shared: &Arc<Shared>,
    edge: &Edge,
    source: &ReloadSource,
) -> Result<Reloaded, ReloadError> {
    let result = reload(shared, edge, source);
    match &result {
        Ok(r) => tracing::info!(
            added = ?r.engine.added,
            removed = ?r.engine.removed,
            repriced = ?r.engine.repriced,
            keys = r.keys,
            certificates = ?r.certificates,
            probes_restarted = r.probes_restarted,
            "config reloaded"
        ),
        Err(e) => tracing::error!(error = %e, "config reload failed"),
    }
    result
}

/// Feedback from a keyed caller: a tenant's key only for decisions made under its tenant
/// (PERMISSION_DENIED otherwise). A decision no longer pending but kept as a budget tombstone is
/// judged by its budget (a tenant's keys charge only its budget); an unknown one is left to
/// Feedback's own NOT_FOUND.
pub fn check_feedback_tenant(
    caller: &Principal,
    engine: &Engine,
    decision_id: &str,
) -> Result<(), Status> {
    let made_under = match engine.decision_owner(decision_id) {
        DecisionOwner::Pending(tenant) => tenant,
        DecisionOwner::Late {
            tenant: Some(tenant),
            ..
        } => tenant,
        // A tombstone from before tenants were recorded: a tenant's keys charge only its budget.
        DecisionOwner::Late {
            budget_key,
            tenant: None,
        } => caller
            .tenant
            .as_ref()
            .filter(|t| t.budget_key == budget_key)
            .map(|t| t.name.as_str()),
        DecisionOwner::Unknown => return Ok(()),
    };
    caller
        .check_decision(made_under)
        .map_err(super::convert::auth_status)
}
