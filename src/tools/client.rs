//! Client-side helpers shared by the operator tools (`stats`, `bench`, `health`): the address,
//! `--tls-ca` and `--api-key`.

use tonic::transport::Endpoint;

/// Turns `host:port` or `http://host:port` into a gRPC endpoint; an `https://` address is refused
/// (TLS is chosen by `--tls-ca`, see [`ClientArgs::endpoint`]). The error is the reason the address
/// is not one.
pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
    let trimmed = addr.trim();
    let url = if trimmed.starts_with("http://") {
        trimmed.to_string()
    } else if trimmed.contains("://") {
        return Err("only plaintext http:// is supported".into());
    } else {
        format!("http://{trimmed}")
    };
    let ep = Endpoint::from_shared(url).map_err(|e| e.to_string())?;
    let uri = ep.uri();
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if uri.port_u16().is_none() {
        return Err("no port".into());
    }
    if !matches!(uri.path(), "" | "/") {
        return Err("unexpected path".into());
    }
    Ok(ep)
}

/// `--tls-ca` and `--api-key`, shared by the tools that talk to a running service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// CA certificate (PEM) that signed the service's TLS certificate; connects with TLS when
    /// given (the service must have `server.tls`).
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// API key, sent as `authorization: Bearer <key>`; default: the SWITCHYARD_API_KEY environment
    /// variable.
    #[arg(long)]
    pub api_key: Option<String>,
}

/// The environment variable `--api-key` defaults to.
pub const API_KEY_ENV: &str = "SWITCHYARD_API_KEY";

impl ClientArgs {
    /// [`endpoint`], over TLS verified by `--tls-ca` when given.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let ep = endpoint(addr)?;
        let Some(ca) = &self.tls_ca else {
            return Ok(ep);
        };
        let pem = std::fs::read(ca)
            .map_err(|e| format!("--tls-ca {}: cannot read: {e}", ca.display()))?;
        let uri = ep.uri();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or_default();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem))
            .domain_name(host.trim_matches(['[', ']']));
        Endpoint::from_shared(format!("https://{host}:{port}"))
            .and_then(|e| e.tls_config(tls))
            .map_err(|e| e.to_string())
    }

    /// The `authorization` value to send, if a key was given (flag or environment).
    pub fn bearer(&self) -> Result<Option<tonic::metadata::AsciiMetadataValue>, String> {
        let key = self
            .api_key
            .clone()
            .or_else(|| std::env::var(API_KEY_ENV).ok())
            .filter(|k| !k.trim().is_empty());
        key.map(|k| {
            format!("Bearer {}", k.trim())
                .parse()
                .map_err(|_| "the API key must be printable ASCII".to_string())
        })
        .transpose()
    }
}

/// `msg` as a request carrying `bearer` as its `authorization` metadata.
pub fn request<T>(
    msg: T,
    bearer: Option<&tonic::metadata::AsciiMetadataValue>,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(b) = bearer {
        r.metadata_mut().insert("authorization", b.clone());
    }
    r
}
