//! `switchyard health`: one grpc.health.v1 `Check` against a running service, for container health
//! checks and scripts. Exit code 0 means SERVING; anything else (NOT_SERVING, an unknown service,
//! no answer within the deadline, a refused connection) prints why and exits 1, which is what
//! Docker's HEALTHCHECK and Kubernetes' exec probes read.
//!
//! Deciding is apart from asking: [`verdict`] turns what the check returned into the line to print
//! and the exit code, and is pure, so tests cover every status without a server.

use std::process::ExitCode;
use std::time::Duration;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// How long to wait for the TCP connection: a local service answers in milliseconds, and a health
/// check that hangs is worse than one that fails (the runtime's own timeout would kill it anyway).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Deadline for the Check RPC, which the service answers from memory.
const DEFAULT_TIMEOUT_SECS: u64 = 3;

/// `switchyard health`: a grpc.health.v1 check of a running service.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Address of the service: host:port or http://host:port.
    #[arg(long, default_value = crate::tools::stats::DEFAULT_ADDR)]
    pub addr: String,
    /// Service to check: empty (the default) is the server as a whole;
    /// `switchyard.v1.Route` is the routing service.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Deadline for the whole check in seconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub client: crate::tools::client::ClientArgs,
}

/// What a check returned: the status, or the gRPC error.
pub type CheckResult = Result<ServingStatus, tonic::Status>;

/// The line to print and whether the service counts as healthy.
pub fn verdict(addr: &str, service: &str, result: &CheckResult) -> (String, bool) {
    let what = if service.is_empty() {
        format!("{addr} (server)")
    } else {
        format!("{addr} service {service}")
    };
    match result {
        Ok(ServingStatus::Serving) => (format!("{what}: SERVING"), true),
        Ok(ServingStatus::NotServing) => (
            format!("{what}: NOT_SERVING (the service is up but refuses traffic, e.g. draining)"),
            false,
        ),
        Ok(other) => (format!("{what}: {}", other.as_str_name()), false),
        Err(s) if s.code() == Code::NotFound => (
            format!(
                "{what}: unknown service `{}`; leave --service empty for the server, or use switchyard.v1.Route",
                service.chars().take(200).collect::<String>()
            ),
            false,
        ),
        Err(s) => (
            format!("{what}: check failed: {:?}: {}", s.code(), s.message()),
            false,
        ),
    }
}

/// Runs one check; the error is why there was no answer (bad address, no connection, deadline).
pub async fn check(args: &HealthArgs) -> Result<CheckResult, String> {
    let bearer = args.client.bearer()?;
    let endpoint = args
        .client
        .endpoint(&args.addr)
        .map_err(|e| format!("--addr {:?}: {e}", args.addr))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(args.timeout_secs.max(1)));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("{}: cannot connect: {e}", args.addr))?;
    let answer = HealthClient::new(channel)
        .check(crate::tools::client::request(
            HealthCheckRequest {
                service: args.service.clone(),
            },
            bearer.as_ref(),
        ))
        .await;
    Ok(answer
        .map(|r| ServingStatus::try_from(r.into_inner().status).unwrap_or(ServingStatus::Unknown)))
}

/// The subcommand: one check, one line, exit 0 when SERVING and 1 otherwise.
pub fn run(args: HealthArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard health: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deadline = Duration::from_secs(args.timeout_secs.max(1)) + CONNECT_TIMEOUT;
    let outcome = runtime.block_on(async { tokio::time::timeout(deadline, check(&args)).await });
    let (line, healthy) = match outcome {
        Ok(Ok(result)) => verdict(&args.addr, &args.service, &result),
        Ok(Err(e)) => (e, false),
        Err(_) => (
            format!("{}: no answer within {} s", args.addr, deadline.as_secs()),
            false,
        ),
    };
    if healthy {
        println!("{line}");
        ExitCode::SUCCESS
    } else {
        eprintln!("{line}");
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serving_is_healthy() {
        let cases: [(CheckResult, bool, &str); 6] = [
            (Ok(ServingStatus::Serving), true, "SERVING"),
            (Ok(ServingStatus::NotServing), false, "NOT_SERVING"),
            (Ok(ServingStatus::Unknown), false, "UNKNOWN"),
            (Ok(ServingStatus::ServiceUnknown), false, "SERVICE_UNKNOWN"),
            (
                Err(tonic::Status::not_found("unknown service")),
                false,
                "unknown service `x.Y`",
            ),
            (
                Err(tonic::Status::unavailable("connection reset")),
                false,
                "Unavailable: connection reset",
            ),
        ];
        for (result, healthy, text) in cases {
            let (line, ok) = verdict("127.0.0.1:1", "x.Y", &result);
            assert_eq!(ok, healthy, "{line}");
            assert!(
                line.contains(text) && line.contains("127.0.0.1:1"),
                "{line}"
            );
        }
        let (line, _) = verdict("h:1", "", &Ok(ServingStatus::Serving));
        assert_eq!(line, "h:1 (server): SERVING");
    }
}
