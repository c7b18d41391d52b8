//! OpenTelemetry trace export (`switchyard serve --otlp-endpoint URL`): each `switchyard.v1.Route`
//! RPC becomes a server span named `switchyard.v1.Route/<Method>` carrying the task class, the
//! chosen model and the reason of the decision, sent over OTLP/HTTP (protobuf) to a collector.
//!
//! Why through `tracing`: the service already logs with it, so the spans are `tracing` spans that
//! `tracing-opentelemetry` turns into OpenTelemetry ones; the exporter batches them on its own
//! thread (reqwest's blocking client, already in the tree), so a slow or absent collector never
//! holds up a request: when its queue is full, spans are dropped, not waited for. Without the flag
//! no span is created at all ([`rpc_span`] returns a disabled span), so the default costs one
//! relaxed atomic load per RPC. `RUST_LOG` filters the log lines only; the export takes the RPC
//! spans whatever the log level. Nothing here persists; spans still queued at shutdown are flushed
//! when the [`OtelGuard`] drops.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing::Span;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::metrics::Method;
use crate::logging::LogFormat;

/// The `tracing` target of the RPC spans (the only spans exported).
pub const RPC_TARGET: &str = "switchyard::rpc";

/// The OTLP/HTTP path of traces, appended to an endpoint given without a path.
pub const TRACES_PATH: &str = "/v1/traces";

/// Whether RPC spans are exported (set once by [`init`]).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error(
        "--otlp-endpoint: `{0}` is not an http:// or https:// URL; expected the collector's \
         OTLP/HTTP address, e.g. http://127.0.0.1:4318 (the path /v1/traces is added when absent)"
    )]
    Endpoint(String),
    #[error("--otlp-endpoint: cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// Flushes and stops the exporter when dropped (after the server stopped, outside the runtime).
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("switchyard: flushing OpenTelemetry spans failed: {e}");
        }
    }
}

/// The traces URL for `endpoint`: as given when it has a path, else with [`TRACES_PATH`].
pub fn traces_url(endpoint: &str) -> Result<String, OtelError> {
    let bad = || OtelError::Endpoint(crate::validation::echo(endpoint));
    let uri: http::Uri = endpoint.trim().parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => {}
        _ => return Err(bad()),
    }
    let text = endpoint.trim().trim_end_matches('/');
    Ok(match uri.path() {
        "" | "/" => format!("{text}{TRACES_PATH}"),
        _ => endpoint.trim().to_string(),
    })
}

/// Installs the global subscriber: log lines as [`crate::logging::init_logging`] writes them, plus
/// the RPC spans exported to `endpoint` when given. Call outside the async runtime (the exporter's
/// HTTP client runs its own). A second call leaves the first subscriber in place.
pub fn init(
    format: LogFormat,
    default_level: &str,
    endpoint: Option<&str>,
) -> Result<Option<OtelGuard>, OtelError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Pretty => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    };
    let Some(endpoint) = endpoint else {
        // An error only means a subscriber is already installed, which is then kept.
        let _ = tracing_subscriber::registry().with(logs).try_init();
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint)?)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("switchyard").build())
        .build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("switchyard"))
        .with_filter(Targets::new().with_target(RPC_TARGET, tracing::Level::INFO));
    if tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok()
    {
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Some(OtelGuard { provider }))
}

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The span of one RPC (disabled unless exporting); the handler fills in its fields.
pub fn rpc_span(method: Method) -> Span {
    if !exporting() {
        return Span::none();
    }
    let name = format!("{}/{method:?}", crate::auth::ROUTE_SERVICE);
    tracing::info_span!(
        target: RPC_TARGET,
        "rpc",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = crate::auth::ROUTE_SERVICE,
        rpc.method = ?method,
        rpc.grpc.status_code = Empty,
        switchyard.task_class = Empty,
        switchyard.model = Empty,
        switchyard.reason = Empty,
    )
}

/// Records the gRPC status of the RPC whose span is `span`.
pub fn record_status(span: &Span, code: tonic::Code) {
    if !exporting() {
        return;
    }
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}

/// Records the task class on the current RPC span.
pub fn record_class(task_class: &str) {
    if exporting() {
        Span::current().record("switchyard.task_class", task_class);
    }
}

/// Records the arm a Feedback was about on the current RPC span.
pub fn record_arm(task_class: &str, model: &str) {
    if exporting() {
        let span = Span::current();
        span.record("switchyard.task_class", task_class);
        span.record("switchyard.model", model);
    }
}

/// Records the chosen model and the reason on the current RPC span.
pub fn record_decision(model: &str, reason: &str) {
    if exporting() {
        let span = Span::current();
        span.record("switchyard.model", model);
        span.record("switchyard.reason", reason);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn endpoint_gets_the_traces_path_only_when_it_has_none() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example:4318/").unwrap(),
            "https://otel.example:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/custom/traces").unwrap(),
            "http://c:4318/custom/traces"
        );
        for bad in ["127.0.0.1:4318", "grpc://c:4317", "not a url", ""] {
            let e = traces_url(bad).unwrap_err().to_string();
            assert!(e.contains("http://127.0.0.1:4318"), "{e}");
        }
    }
}
