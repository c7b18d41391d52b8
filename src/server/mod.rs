//! The tonic service: `switchyard.v1.Route` over the engine, plus grpc.health.v1 and server
//! reflection (v1 and v1alpha), served until a shutdown future resolves.
//!
//! The engine sits behind one `std::sync::Mutex` that is held only for the synchronous engine call
//! and never across an `.await`; the clock is read here, not in the engine.

pub mod alerts;
pub mod convert;
pub mod probes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::config::Config;
use crate::engine::{ArmFilter, BudgetAlert, Engine, FeedbackInput, HealthInput, RouteInput};
use crate::proto;
use crate::proto::route_server::RouteServer;
use convert::status;

/// How often expired pending decisions are swept.
pub const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Engine and RNG, locked together.
struct Core {
    engine: Engine,
    rng: SmallRng,
}

pub use alerts::{ALERT_BACKOFF_BASE, ALERT_BACKOFF_MAX, ALERT_QUEUE_CAPACITY};

/// State shared by all handlers.
pub struct Shared {
    core: Mutex<Core>,
    /// Where budget alerts go; `None` = only logged.
    alerts: Option<alerts::AlertSender>,
}

impl Shared {
    /// Shared state whose budget alerts are only logged.
    pub fn new(config: Config) -> Self {
        let rng = match config.policy.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        Shared {
            core: Mutex::new(Core {
                engine: Engine::new(config, now_ms()),
                rng,
            }),
            alerts: None,
        }
    }

    /// Shared state whose budget alerts go to `sender`'s delivery task.
    pub fn with_alerts(config: Config, sender: alerts::AlertSender) -> Self {
        Shared {
            alerts: Some(sender),
            ..Shared::new(config)
        }
    }

    /// Logs and queues crossed budget thresholds; never waits.
    fn publish(&self, crossed: &[BudgetAlert]) {
        match &self.alerts {
            Some(sender) => sender.publish(crossed),
            None => {
                for a in crossed {
                    tracing::warn!(
                        budget_key = %a.budget_key,
                        threshold = a.threshold,
                        spent_usd = a.spent_usd,
                        limit_usd = a.limit_usd,
                        "budget alert threshold crossed"
                    );
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock cannot leave the engine half-updated in a way that matters
        // more than refusing service forever would: keep serving with the state as it is.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the engine under the lock, then logs the breaker transitions it caused (after
    /// the lock is released).
    pub fn with_engine<T>(&self, f: impl FnOnce(&mut Engine, &mut SmallRng) -> T) -> T {
        let (out, transitions) = {
            let mut core = self.lock();
            let Core { engine, rng } = &mut *core;
            let out = f(engine, rng);
            (out, engine.take_transitions())
        };
        for t in transitions {
            let tr = &t.transition;
            info!(
                model = %t.model,
                from = ?tr.from,
                to = ?tr.to,
                cause = ?tr.cause,
                at_ms = tr.at_ms,
                "circuit breaker state change"
            );
        }
        out
    }

    /// Drops expired pending decisions and applies time-driven breaker changes; returns how many
    /// decisions expired.
    pub fn tick(&self) -> usize {
        self.with_engine(|engine, _| {
            let now = now_ms();
            engine.poll_breakers(now);
            engine.expire(now)
        })
    }
}

/// The `switchyard.v1.Route` service.
#[derive(Clone)]
pub struct RouteService {
    shared: Arc<Shared>,
}

impl RouteService {
    pub fn new(shared: Arc<Shared>) -> Self {
        RouteService { shared }
    }
}

#[tonic::async_trait]
impl proto::route_server::Route for RouteService {
    async fn route(
        &self,
        request: Request<proto::RouteRequest>,
    ) -> Result<Response<proto::RouteResponse>, Status> {
        let input = RouteInput::from(request.into_inner());
        let decision = self
            .shared
            .with_engine(|engine, rng| engine.route(&input, now_ms(), rng))
            .map_err(status)?;
        Ok(Response::new(decision.into()))
    }

    async fn feedback(
        &self,
        request: Request<proto::FeedbackRequest>,
    ) -> Result<Response<proto::FeedbackResponse>, Status> {
        let input = FeedbackInput::try_from(request.into_inner())?;
        let result = self
            .shared
            .with_engine(|engine, _| engine.feedback(&input, now_ms()))
            .map_err(status)?;
        self.shared.publish(&result.alerts);
        Ok(Response::new(proto::FeedbackResponse {
            accepted: true,
            duplicate: result.duplicate,
            arm: Some(result.arm.into()),
        }))
    }

    async fn report_health(
        &self,
        request: Request<proto::ReportHealthRequest>,
    ) -> Result<Response<proto::ReportHealthResponse>, Status> {
        let input = HealthInput::try_from(request.into_inner())?;
        let result = self
            .shared
            .with_engine(|engine, _| engine.report_health(&input, now_ms()))
            .map_err(status)?;
        info!(
            models = ?result.models,
            state = ?input.state,
            until_ms = result.until_ms,
            reason = %input.reason,
            "health signal"
        );
        Ok(Response::new(proto::ReportHealthResponse {
            models: result.models,
            until_unix_ms: i64::try_from(result.until_ms).unwrap_or(i64::MAX),
        }))
    }

    async fn get_arm_stats(
        &self,
        request: Request<proto::GetArmStatsRequest>,
    ) -> Result<Response<proto::GetArmStatsResponse>, Status> {
        let r = request.into_inner();
        let filter = ArmFilter {
            task_class: r.task_class,
            model: r.model,
        };
        let arms = self
            .shared
            .lock()
            .engine
            .arm_stats(&filter, now_ms())
            .map_err(status)?;
        Ok(Response::new(proto::GetArmStatsResponse {
            arms: arms.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_budgets(
        &self,
        request: Request<proto::GetBudgetsRequest>,
    ) -> Result<Response<proto::GetBudgetsResponse>, Status> {
        let key = request.into_inner().budget_key;
        let budgets = self
            .shared
            .lock()
            .engine
            .budgets(&key, now_ms())
            .map_err(status)?;
        Ok(Response::new(proto::GetBudgetsResponse {
            budgets: budgets.into_iter().map(Into::into).collect(),
        }))
    }
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
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Accepted connections with TCP_NODELAY set: small unary RPCs must not wait out Nagle's algorithm
/// against the peer's delayed ACK (~40 ms per exchange).
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Serves `switchyard.v1.Route`, health and reflection on `listener` until `shutdown` resolves, then
/// drains in-flight requests and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let probes = config.health_probes.clone();
    // The alert task ends by itself once the last handler (and so the last sender) is gone.
    let (alert_sender, _alert_task) = alerts::spawn(config.alerts.clone());
    let shared = Arc::new(Shared::with_alerts(config, alert_sender));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RouteServer<RouteService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let sweeper = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                let n = shared.tick();
                if n > 0 {
                    tracing::debug!(expired = n, "expired pending decisions");
                }
            }
        })
    };

    let probe_tasks = probes::spawn(&shared, probes.into_values().collect());

    let addr = listener.local_addr().ok();
    info!(?addr, "switchyard serving");
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(RouteServer::new(RouteService::new(Arc::clone(&shared))))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await;
    sweeper.abort();
    for t in probe_tasks {
        t.abort();
    }
    info!("switchyard stopped");
    result.map_err(Into::into)
}
