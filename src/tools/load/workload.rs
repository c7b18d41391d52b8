//! One unit of each workload against the server: a Health check (`floor`), a Route (`route`), or a
//! Route followed by the Feedback for its decision (`pair`). Request contents come from the caller's
//! seeded RNG, so a run with the same `--seed` sends the same requests.

use rand::rngs::SmallRng;
use rand::Rng;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::Workload;
use crate::proto::route_client::RouteClient;
use crate::proto::{FeedbackRequest, Outcome, RouteRequest, RouteResponse};

/// Input-token estimates sent with Route are drawn uniformly from this range: around the built-in
/// classes' typical 500, from a short question to a long document.
pub const INPUT_TOKENS: std::ops::RangeInclusive<i64> = 50..=4000;

/// Output tokens reported with a successful Feedback (the cost is then computed from the price
/// table, as it is for clients that do not send `cost_usd`).
pub const OUTPUT_TOKENS: std::ops::RangeInclusive<i64> = 20..=1200;

/// The reported latency is the decision's expected latency times a factor from this range: close
/// enough to the model's own figures that a successful call is never a soft failure for the
/// breakers (that takes 3x the p95 by default), so the load does not move traffic by itself.
pub const LATENCY_FACTOR: std::ops::Range<f64> = 0.7..1.4;

/// Reported latency when the decision carries no usable expected latency.
pub const FALLBACK_LATENCY_MS: f64 = 800.0;

/// The clients of one connection. Cloning is cheap: clones share the HTTP/2 connection.
#[derive(Clone)]
pub(crate) struct Target {
    pub route: RouteClient<Channel>,
    pub health: HealthClient<Channel>,
    /// The `authorization` value (`--api-key`), if any.
    pub bearer: Option<tonic::metadata::AsciiMetadataValue>,
}

impl Target {
    pub fn new(channel: Channel, bearer: Option<tonic::metadata::AsciiMetadataValue>) -> Target {
        Target {
            route: RouteClient::new(channel.clone()),
            health: HealthClient::new(channel),
            bearer,
        }
    }

    /// `msg` as a request with this target's key.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        crate::tools::client::request(msg, self.bearer.as_ref())
    }
}

/// What one successful unit did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Done {
    /// A `pair` that reported outcome ERROR (the server counts it as a failure of the arm).
    pub error_outcome: bool,
}

/// A failed RPC: which one, and the status the server (or the transport) gave.
#[derive(Debug)]
pub(crate) struct Failure {
    pub rpc: &'static str,
    pub status: tonic::Status,
}

/// The per-workload settings every unit needs.
#[derive(Debug)]
pub(crate) struct Spec {
    pub workload: Workload,
    pub task_class: String,
    pub error_rate: f64,
}

/// Issues one unit of `spec.workload` on `target`.
pub(crate) async fn issue(
    spec: &Spec,
    target: &mut Target,
    rng: &mut SmallRng,
) -> Result<Done, Failure> {
    match spec.workload {
        Workload::Floor => {
            let request = target.request(HealthCheckRequest {
                service: String::new(),
            });
            target
                .health
                .check(request)
                .await
                .map_err(|status| Failure {
                    rpc: "Health/Check",
                    status,
                })?;
            Ok(Done {
                error_outcome: false,
            })
        }
        Workload::Route => {
            route(spec, target, rng).await?;
            Ok(Done {
                error_outcome: false,
            })
        }
        Workload::Pair => {
            let (decision, input_tokens) = route(spec, target, rng).await?;
            let feedback = feedback_for(&decision, input_tokens, spec.error_rate, rng);
            let error_outcome = feedback.outcome == Outcome::Error as i32;
            let request = target.request(feedback);
            target
                .route
                .feedback(request)
                .await
                .map_err(|status| Failure {
                    rpc: "Feedback",
                    status,
                })?;
            Ok(Done { error_outcome })
        }
    }
}

async fn route(
    spec: &Spec,
    target: &mut Target,
    rng: &mut SmallRng,
) -> Result<(RouteResponse, i64), Failure> {
    let input_tokens = rng.random_range(INPUT_TOKENS);
    let request = target.request(RouteRequest {
        task_class: spec.task_class.clone(),
        input_tokens,
        ..Default::default()
    });
    let response = target
        .route
        .route(request)
        .await
        .map_err(|status| Failure {
            rpc: "Route",
            status,
        })?;
    Ok((response.into_inner(), input_tokens))
}

/// The Feedback a client would send after calling the decided model: SUCCESS with a quality score,
/// or (with probability `error_rate`) ERROR without one; `cost_usd` absent.
pub(crate) fn feedback_for(
    decision: &RouteResponse,
    input_tokens: i64,
    error_rate: f64,
    rng: &mut SmallRng,
) -> FeedbackRequest {
    let failed = rng.random::<f64>() < error_rate;
    let expected_ms = decision
        .expected
        .as_ref()
        .map(|e| e.latency_ms)
        .filter(|l| l.is_finite() && *l > 0.0)
        .unwrap_or(FALLBACK_LATENCY_MS);
    let latency_ms = expected_ms * rng.random_range(LATENCY_FACTOR);
    FeedbackRequest {
        decision_id: decision.decision_id.clone(),
        outcome: if failed {
            Outcome::Error
        } else {
            Outcome::Success
        } as i32,
        latency_ms: Some(latency_ms),
        input_tokens: Some(input_tokens),
        output_tokens: (!failed).then(|| rng.random_range(OUTPUT_TOKENS)),
        cost_usd: None,
        // The server refuses a quality score for a failed call.
        quality: (!failed).then(|| rng.random_range(0.0..=1.0)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::proto::Expected;

    #[test]
    fn feedback_is_valid_and_errors_come_at_the_rate() {
        let decision = RouteResponse {
            decision_id: "d".into(),
            expected: Some(Expected {
                latency_ms: 500.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let mut errors = 0;
        for _ in 0..10_000 {
            let f = feedback_for(&decision, 100, 0.02, &mut rng);
            let lat = f.latency_ms.unwrap();
            assert!((350.0..700.0).contains(&lat), "{lat}");
            assert_eq!(f.cost_usd, None);
            if f.outcome == Outcome::Error as i32 {
                errors += 1;
                assert_eq!(f.quality, None);
            } else {
                let q = f.quality.unwrap();
                assert!((0.0..=1.0).contains(&q));
            }
        }
        assert!((120..280).contains(&errors), "{errors} errors of 10000");
    }

    #[test]
    fn no_expected_latency_falls_back() {
        let mut rng = SmallRng::seed_from_u64(2);
        let f = feedback_for(&RouteResponse::default(), 1, 0.0, &mut rng);
        let lat = f.latency_ms.unwrap();
        assert!((FALLBACK_LATENCY_MS * 0.7..FALLBACK_LATENCY_MS * 1.4).contains(&lat));
        assert_eq!(f.outcome, Outcome::Success as i32);
    }
}
