//! The service's edge: TLS (rustls through tonic), the plaintext rule, the API-key gate and config
//! reload.
//!
//! Plaintext is fine on loopback (development, a sidecar) but on any other address it would send
//! keys and prompts' metadata in the clear, so it is refused there unless `server.allow_plaintext`
//! says a TLS-terminating proxy sits in front. The key table sits behind a lock as an `Arc` so a
//! reload swaps it whole while calls in flight finish with the table they started with.
//! `switchyard.v1.Route` handlers check the key themselves (each knows its RPC name); health and
//! reflection go through an interceptor that knows its service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use super::{now_ms, Shared};
use crate::auth::{Access, KeyTable, Principal};
use crate::config::{Config, ConfigError, SecurityConfig, TlsConfig};
use crate::engine::Reconfigured;

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
         and request metadata would cross the network unencrypted. Set server.tls = {{ cert, key }} \
         or, behind a TLS-terminating proxy, server.allow_plaintext = true"
    )]
    Plaintext {
        what: &'static str,
        addr: SocketAddr,
    },
    #[error("server.tls.{field}: cannot read {path}: {detail}")]
    Read {
        field: &'static str,
        path: String,
        detail: String,
    },
}

/// Refuses plaintext on a non-loopback address unless allowed.
pub fn check_plaintext(
    what: &'static str,
    addr: SocketAddr,
    tls: bool,
    security: &SecurityConfig,
) -> Result<(), SecurityError> {
    if tls || security.allow_plaintext || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(SecurityError::Plaintext { what, addr })
    }
}

fn read(field: &'static str, path: &PathBuf) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| SecurityError::Read {
        field,
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// tonic's TLS settings from the PEM files; with `client_ca`, clients must present a certificate it
/// signed (mutual TLS).
pub fn tls_config(tls: &TlsConfig) -> Result<ServerTlsConfig, SecurityError> {
    let identity = Identity::from_pem(read("cert", &tls.cert)?, read("key", &tls.key)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read("client_ca", ca)?));
    }
    Ok(config)
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
    #[error(
        "reload refused, nothing changed: `{0}` differs from the running config and needs a restart"
    )]
    RestartNeeded(&'static str),
}

/// Reads, validates and swaps in the config: engine (keeping learned state) and key table.
pub fn reload(
    shared: &Shared,
    keys: &Keys,
    source: &ReloadSource,
) -> Result<(Reconfigured, usize), ReloadError> {
    let config = source.load().map_err(ReloadError::Invalid)?;
    let table = config.key_table().map_err(ReloadError::Invalid)?;
    let n_keys = table.as_ref().map_or(0, KeyTable::len);
    let classes: Vec<_> = config.task_classes.values().cloned().collect();
    let bounds = super::cache::candidate_bounds(&config);
    let changed = shared.with_engine(|engine, _| {
        if let Some(key) = engine.config().restart_only_change(&config) {
            return Err(ReloadError::RestartNeeded(key));
        }
        Ok(engine.reconfigure(config, now_ms()))
    })?;
    shared.cache_reconfigure(&classes, &changed.removed, bounds);
    keys.set(table);
    Ok((changed, n_keys))
}

/// [`reload`], logged either way (SIGHUP has nobody else to tell).
pub fn reload_logged(
    shared: &Shared,
    keys: &Keys,
    source: &ReloadSource,
) -> Result<(Reconfigured, usize), ReloadError> {
    let result = reload(shared, keys, source);
    match &result {
        Ok((c, n)) => tracing::info!(
            added = ?c.added,
            removed = ?c.removed,
            repriced = ?c.repriced,
            keys = n,
            "config reloaded"
        ),
        Err(e) => tracing::error!(error = %e, "config reload failed"),
    }
    result
}
