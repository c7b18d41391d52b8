//! The listeners' setup: the plaintext rule and TLS of the gRPC and metrics listeners, and the
//! Prometheus endpoint (plain or TLS). Split from the service so the serve loop reads top to
//! bottom; the TLS itself (rotating certificates) is in [`super::tls`].

use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use std::net::SocketAddr;

use super::{metrics, security, tls, Shared};
use crate::config::Config;
use crate::store::StoreError;

/// Serves the Prometheus endpoint (over TLS when `tls` is set) until the task is aborted.
pub(super) fn spawn_metrics(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<Arc<tls::Rotating>>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let shared = Arc::clone(&shared);
            async move {
                let body = shared.metrics_text();
                (
                    [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                    body,
                )
            }
        }),
    );
    let addr = listener.local_addr().ok();
    info!(
        ?addr,
        tls = tls.is_some(),
        "metrics endpoint serving /metrics"
    );
    Ok(match tls {
        None => serve_metrics(listener, app),
        Some(t) => {
            let listener =
                tls::TlsListener::new(listener, t).map_err(|source| ServeError::Bind {
                    addr: addr.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
                    source,
                })?;
            serve_metrics(listener, app)
        }
    })
}

fn serve_metrics<L>(listener: L, app: axum::Router) -> tokio::task::JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    })
}

/// Listener TLS, when on.
type ListenerTls = Option<Arc<tls::Rotating>>;

/// The tonic server builder and the listeners' TLS (rotating certificates) when configured;
/// refuses plaintext on non-loopback addresses, the metrics listener's included.
pub(super) fn server_builder(
    config: &Config,
    listener: &TcpListener,
    metrics: Option<&TcpListener>,
) -> Result<(tonic::transport::Server, ListenerTls, ListenerTls), ServeError> {
    let sec = &config.security;
    if let Ok(addr) = listener.local_addr() {
        security::check_plaintext("gRPC", "server.tls", addr, sec.tls.is_some(), sec)?;
    }
    let metrics_addr = metrics.and_then(|m| m.local_addr().ok());
    if let Some(addr) = metrics_addr {
        let on = sec.metrics_tls.is_some();
        security::check_plaintext("metrics", "server.metrics_tls", addr, on, sec)?;
    }
    let grpc_tls = match &sec.tls {
        Some(t) => Some(tls::Rotating::load("server.tls", tls::ALPN_GRPC, t)?),
        None => None,
    };
    let metrics_tls = match (&sec.metrics_tls, metrics_addr) {
        (Some(t), Some(_)) => Some(tls::Rotating::load(
            "server.metrics_tls",
            tls::ALPN_HTTP1,
            t,
        )?),
        _ => None,
    };
    Ok((tonic::transport::Server::builder(), grpc_tls, metrics_tls))
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Security(#[from] security::SecurityError),
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}
