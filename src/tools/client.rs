//! Client-side helpers shared by the operator tools (`switchyard stats`, `switchyard bench`).

use tonic::transport::Endpoint;

/// Turns `host:port` or `http://host:port` into a gRPC endpoint; `https` is refused because the
/// service speaks plaintext gRPC. The error is the reason the address is not one.
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
