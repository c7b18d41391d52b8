//! TLS for the gRPC and metrics listeners, with certificates that rotate without a restart.
//!
//! Why not tonic's own `tls_config`: it builds its acceptor once, so a renewed certificate (a
//! cert-manager or ACME renewal every few weeks) would need a restart that drops every connection.
//! Here the rustls `ServerConfig` sits behind a lock as an `Arc`; each accepted TCP connection
//! takes the current one for its handshake, and a reload (SIGHUP or the Reload RPC) re-reads the
//! PEM files and swaps in a new one atomically. Connections already established keep the session
//! they negotiated; only new connections see the new certificate (and the new client CA, for
//! mutual TLS). A file that does not parse changes nothing: the old certificate keeps serving.
//!
//! Handshakes run concurrently (up to [`MAX_HANDSHAKES`] at once, each bounded by
//! [`HANDSHAKE_TIMEOUT`]), so one slow client cannot stall the accept loop. Nothing here persists:
//! the files are the state, read at start and on every reload.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::security::SecurityError;
use crate::config::TlsConfig;

/// Longest a TLS handshake may take before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in progress at once per listener; further accepted connections wait.
pub const MAX_HANDSHAKES: usize = 64;

/// ALPN of the gRPC listener (HTTP/2 only).
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];

/// ALPN of the metrics listener (axum serves HTTP/1.1).
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// A listener's TLS settings, swapped whole on reload.
pub struct Rotating {
    /// The config key the files come from (`server.tls`, `server.metrics_tls`), for messages.
    field: &'static str,
    alpn: &'static [&'static [u8]],
    current: RwLock<Arc<ServerConfig>>,
}

impl Rotating {
    /// Reads the PEM files of `tls` (named `field` in messages) and builds the first config.
    pub fn load(
        field: &'static str,
        alpn: &'static [&'static [u8]],
        tls: &TlsConfig,
    ) -> Result<Arc<Rotating>, SecurityError> {
        let config = build(field, alpn, tls)?;
        Ok(Arc::new(Rotating {
            field,
            alpn,
            current: RwLock::new(config),
        }))
    }

    /// Reads `tls`'s files into a config ready to [`Rotating::swap`] in; changes nothing yet, so a
    /// reload can prepare every part before committing any.
    pub fn prepare(&self, tls: &TlsConfig) -> Result<Arc<ServerConfig>, SecurityError> {
        build(self.field, self.alpn, tls)
    }

    /// New connections handshake with `config` from now on.
    pub fn swap(&self, config: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The config key this listener's files come from.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

fn read(field: &'static str, part: &str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| SecurityError::Read {
        field: format!("{field}.{part}"),
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

fn invalid(
    field: &'static str,
    part: &str,
    path: &Path,
    detail: impl Into<String>,
) -> SecurityError {
    SecurityError::Invalid {
        field: format!("{field}.{part}"),
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

fn certificates(
    field: &'static str,
    part: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let pem = read(field, part, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(field, part, path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            field,
            part,
            path,
            "holds no `-----BEGIN CERTIFICATE-----` block; expected a PEM certificate (chain)",
        ));
    }
    Ok(certs)
}

/// A rustls server config from the PEM files, with the ring provider tonic also uses.
fn build(
    field: &'static str,
    alpn: &[&[u8]],
    tls: &TlsConfig,
) -> Result<Arc<ServerConfig>, SecurityError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(field, "cert", &tls.cert)?;
    let key_pem = read(field, "key", &tls.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        invalid(
            field,
            "key",
            &tls.key,
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) found: {e}"),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(field, "cert", &tls.cert, e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certificates(field, "client_ca", ca)?);
            if added == 0 {
                return Err(invalid(field, "client_ca", ca, "no usable CA certificate"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(field, "client_ca", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        invalid(
            field,
            "key",
            &tls.key,
            format!(
                "does not match the certificate in {}: {e}",
                tls.cert.display()
            ),
        )
    })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// TLS connections from a stream of accepted TCP connections: each handshakes with the config
/// current when it was accepted. A failed or timed-out handshake yields an error item (the
/// servers log and skip those).
pub fn incoming<S, IO>(
    tcp: S,
    tls: Arc<Rotating>,
) -> impl Stream<Item = io::Result<TlsStream<IO>>> + Send
where
    S: Stream<Item = io::Result<IO>> + Send,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tcp.map(move |conn| {
        let acceptor = TlsAcceptor::from(tls.current());
        async move {
            let io = conn?;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            }
        }
    })
    .buffer_unordered(MAX_HANDSHAKES)
}

/// An axum listener over TLS connections (the metrics endpoint); failed handshakes are skipped.
pub struct TlsListener {
    local: std::net::SocketAddr,
    conns: Pin<Box<dyn Stream<Item = io::Result<TlsStream<tokio::net::TcpStream>>> + Send>>,
}

impl TlsListener {
    pub fn new(listener: tokio::net::TcpListener, tls: Arc<Rotating>) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let tcp = tokio_stream::wrappers::TcpListenerStream::new(listener);
        Ok(TlsListener {
            local,
            conns: Box::pin(incoming(tcp, tls)),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.conns.next().await {
                Some(Ok(io)) => {
                    let peer = io.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (io, peer);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "metrics TLS connection failed"),
                // The TCP listener never ends its stream; should it, accept nothing more.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
