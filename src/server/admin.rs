//! The admin side of the service: the `Backup` and `Reload` RPCs and SIGHUP, which reloads like
//! `Reload`. Kept apart from the request path (`mod.rs`), which they share nothing with but the
//! engine's lock.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::info;

use super::metrics::Method;
use super::{convert, security, RouteService, Shared};
use crate::proto;

impl RouteService {
    /// A consistent copy of the data dir into a new directory (see [`store`]'s backup module).
    pub(super) async fn backup_impl(
        &self,
        request: Request<proto::BackupRequest>,
    ) -> Result<Response<proto::BackupResponse>, Status> {
        self.caller(Method::Backup, request.metadata())?;
        let to = request.into_inner().to_dir;
        if to.trim().is_empty() {
            return Err(Status::invalid_argument(
                "to_dir is empty; give a new directory on the service's host",
            ));
        }
        let Some(slot) = self.shared.store.clone() else {
            return Err(Status::failed_precondition(
                "no data dir to back up: storage.durability is memory",
            ));
        };
        let dir = std::path::PathBuf::from(&to);
        let copied = tokio::task::spawn_blocking(move || slot.with(|s| s.backup_to(&dir)))
            .await
            .map_err(|e| Status::internal(format!("backup task failed: {e}")))?
            .map_err(|e| {
                Status::failed_precondition(format!(
                    "backup to {} failed: {}",
                    crate::validation::echo(&to),
                    crate::validation::echo(&e.to_string())
                ))
            })?;
        info!(to_dir = %crate::validation::echo(&to), generation = copied.generation, records = copied.records, "data dir backed up");
        Ok(Response::new(proto::BackupResponse {
            generation: copied.generation,
            records: copied.records,
        }))
    }
}

impl RouteService {
    pub(super) async fn reload_impl(
        &self,
        request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        self.caller(Method::Reload, request.metadata())?;
        let (shared, edge, source) = (
            Arc::clone(&self.shared),
            Arc::clone(&self.edge),
            Arc::clone(&self.reload),
        );
        // Reading files blocks: off the async workers.
        let result =
            tokio::task::spawn_blocking(move || security::reload_logged(&shared, &edge, &source))
                .await
                .map_err(|e| Status::internal(format!("reload task failed: {e}")))?;
        let r = result.map_err(convert::reload_status)?;
        let names =
            |v: Vec<(String, String)>| v.into_iter().map(|(c, m)| format!("{c}/{m}")).collect();
        Ok(Response::new(proto::ReloadResponse {
            added: names(r.engine.added),
            removed: names(r.engine.removed),
            repriced: names(r.engine.repriced),
            keys: u32::try_from(r.keys).unwrap_or(u32::MAX),
        }))
    }
}

/// Reloads the config on every SIGHUP until aborted.
pub(super) fn spawn_sighup(
    shared: &Arc<Shared>,
    edge: &Arc<security::Edge>,
    source: &Arc<security::ReloadSource>,
) -> tokio::task::JoinHandle<()> {
    let (shared, edge, source) = (Arc::clone(shared), Arc::clone(edge), Arc::clone(source));
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGHUP; reload only by RPC");
                    return;
                }
            };
            while hup.recv().await.is_some() {
                let (shared, edge, source) =
                    (Arc::clone(&shared), Arc::clone(&edge), Arc::clone(&source));
                // Errors are logged inside; a bad file changes nothing.
                let _ = tokio::task::spawn_blocking(move || {
                    security::reload_logged(&shared, &edge, &source)
                })
                .await;
            }
        }
        #[cfg(not(unix))]
        let _ = (shared, edge, source);
    })
}
