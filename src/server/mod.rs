//! The tonic service: `switchyard.v1.Route` over the engine, plus grpc.health.v1 and server
//! reflection (v1 and v1alpha), served until a shutdown future resolves.
//!
//! The engine sits behind one `std::sync::Mutex` that is held only for the synchronous engine call
//! and never across an `.await`; the clock is read here, not in the engine.

mod admin;
pub mod alerts;
pub mod cache;
pub mod convert;
mod experiments;
pub mod limits;
mod listeners;
pub use listeners::{bind, ServeError};
pub mod metrics;
pub mod otel;
pub mod persist;
pub mod probes;
pub mod relay;
pub mod security;
mod spend;
pub mod tls;
mod verify;

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::auth::Principal;
use crate::config::{Config, Durability};
use crate::engine::{ArmFilter, BudgetAlert, Engine, FeedbackInput, HealthInput, RouteInput};
use crate::proto;
use crate::proto::route_server::RouteServer;
use crate::store::{self, Store, StoreError, StoreSlot};
use convert::status;
use metrics::Method;

/// How often expired pending decisions are swept.
/// The grpc.health.v1 service name of the data dir's write path.
pub const STORE_HEALTH_SERVICE: &str = "switchyard.v1.Store";
/// The grpc.health.v1 service name of the cluster's shared store (Redis), in cluster mode.
pub const CLUSTER_HEALTH_SERVICE: &str = "switchyard.v1.Cluster";
pub const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often the decision log is trimmed to its bounds. Often, so that each trim is small: at
/// 10 000 decisions a second a trim each second removed 10 000 records in one burst of the two
/// cores' time, which showed in Route's tail latency; every 100 ms it removes ~1 000.
pub const TRIM_INTERVAL: Duration = Duration::from_millis(100);

pub use crate::time::now_ms;

/// Engine and RNG, locked together.
struct Core {
    engine: Engine,
    rng: SmallRng,
}

pub use alerts::{ALERT_BACKOFF_BASE, ALERT_BACKOFF_MAX, ALERT_QUEUE_CAPACITY};

/// Locks the engine. A panic while holding the lock cannot leave the engine half-updated in a way
/// that matters more than refusing service forever would: keep serving with the state as it is.
fn lock_core(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by all handlers.
pub struct Shared {
    /// Shared with the writer thread, which takes the engine's changes from it.
    core: Arc<Mutex<Core>>,
    /// Where budget alerts go; `None` = only logged.
    alerts: Option<alerts::AlertSender>,
    /// The data dir, when persistence is on (reopened in place by the writer after a failure).
    store: Option<Arc<StoreSlot>>,
    /// The data dir's writer, when persistence is on.
    writer: Option<persist::Writer>,
    /// `sync` durability: Feedback and ResetArms wait for the writer.
    sync: bool,
    /// Prometheus series (the writer counts its failures).
    metrics: Arc<metrics::Metrics>,
    /// The response cache (its own lock, never held with the engine's).
    cache: cache::CacheCell,
    /// `[cluster]`: the shared store, when replicas share state.
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// A process's decision-id salt, from OS entropy whatever `policy.seed` says
/// ([`Engine::salt_decision_ids`]).
fn id_salt() -> (u64, u64) {
    use rand::Rng;
    SmallRng::from_os_rng().random()
}

impl Shared {
    /// Shared state whose budget alerts are only logged.
    pub fn new(config: Config) -> Self {
        let rng = match config.policy.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        Shared {
            cache: cache::new_cache(&config),
            core: Arc::new(Mutex::new(Core {
                engine: {
                    // Nothing persists this engine's changes (`with_store` builds its own).
                    let mut engine = Engine::new(config, now_ms());
                    engine.untracked();
                    engine.salt_decision_ids(id_salt());
                    engine.presize_pending();
                    engine
                },
                rng,
            })),
            alerts: None,
            store: None,
            writer: None,
            sync: false,
            metrics: Arc::new(metrics::Metrics::new()),
            cluster: None,
        }
    }

    /// Shared state restored from (and persisted to) `store`; returns warnings about persisted
    /// items the config no longer has. Starts the data dir's writer thread.
    pub fn with_store(
        config: Config,
        store: Arc<StoreSlot>,
        sender: Option<alerts::AlertSender>,
    ) -> Result<(Self, Vec<String>), StoreError> {
        let base = Shared::new(config.clone());
        let mut phase = verify::Phase::start();
        let restored = store.with(|s| s.load(now_ms(), config.limits.max_pending))?;
        phase.done("arms, breakers, ledgers and pending decisions read");
        let (mut engine, warnings) = Engine::restore(config, restored, now_ms());
        engine.salt_decision_ids(id_salt());
        if engine
            .config()
            .task_classes
            .values()
            .any(|c| c.shadow.is_some())
        {
            // Paired shadow comparisons are recomputed from the decision log (shadow.rs).
            engine.restore_pairs(&store.with(|s| s.export(0, u64::MAX))?);
        }
        engine.log_events();
        let interval = Duration::from_millis(engine.config().storage.flush_interval_ms.max(1));
        let sync = engine.config().storage.durability == Durability::Sync;
        let rng = base.lock().rng.clone();
        phase.done("engine restored");
        let cache = cache::restore_cache(engine.config(), &store)?;
        phase.done("response cache restored");
        let core = Arc::new(Mutex::new(Core { engine, rng }));
        let take: persist::TakeChanges = {
            let core = Arc::clone(&core);
            // The buffers are allocated here, before the lock, at the last cycle's sizes.
            let last = std::cell::Cell::new((0usize, 0usize));
            Box::new(move || {
                let (events, pending) = last.get();
                let buffers = crate::engine::ChangeBuffers {
                    events: Vec::with_capacity(events),
                    pending: Vec::with_capacity(pending),
                };
                let changes = lock_core(&core).engine.take_changes_into(buffers);
                last.set((changes.events.len(), changes.pending.len()));
                changes
            })
        };
        // Expiry at restore dropped some pending decisions: persist that now.
        persist::cycle(&store, &take, &mut persist::Backlog::default(), true)?;
        phase.done("first write cycle flushed");
        let metrics = Arc::new(metrics::Metrics::new());
        metrics.skipped_arms(store.with(|s| Ok(s.skipped_arms()))?);
        let writer = persist::Writer::start(
            Arc::clone(&store),
            take,
            interval,
            Box::new(Arc::clone(&metrics)),
        )
        .map_err(|e| StoreError::Io {
            path: String::from("(writer thread)"),
            detail: e.to_string(),
        })?;
        let shared = Shared {
            core,
            alerts: sender,
            store: Some(store),
            writer: Some(writer),
            sync,
            metrics,
            cache,
            cluster: None,
        };
        Ok((shared, warnings))
    }

    /// Shared state whose budget alerts go to `sender`'s delivery task.
    pub fn with_alerts(config: Config, sender: alerts::AlertSender) -> Self {
        Shared {
            alerts: Some(sender),
            ..Shared::new(config)
        }
    }

    /// Delivers alerts the cluster fired (once across replicas).
    pub fn publish_alerts(&self, crossed: &[BudgetAlert]) {
        self.publish(crossed);
    }

    /// Logs and queues crossed budget thresholds; never waits.
    fn publish(&self, crossed: &[BudgetAlert]) {
        self.metrics.budget_alerts(crossed);
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

    /// Counts, logs and queues cost anomalies; never waits.
    pub fn publish_anomalies(&self, spikes: &[crate::spend::Spike]) {
        if spikes.is_empty() {
            return;
        }
        self.metrics.cost_anomalies(spikes);
        match &self.alerts {
            Some(sender) => sender.publish_anomalies(spikes),
            None => spikes.iter().for_each(alerts::log_anomaly),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        lock_core(&self.core)
    }

    /// Runs `f` on the engine under the lock. The engine tracks what changed; the writer persists
    /// it (when there is a data dir). Logs breaker transitions after the lock is released.
    pub fn with_engine<T>(&self, f: impl FnOnce(&mut Engine, &mut SmallRng) -> T) -> T {
        let asked = Instant::now();
        let (out, transitions, got, spikes) = {
            let mut core = self.lock();
            let got = Instant::now();
            let Core { engine, rng } = &mut *core;
            let out = f(engine, rng);
            if self.store.is_none() {
                // Nothing persists: drop the change set the engine tracked.
                engine.discard_changes();
            }
            let transitions = engine.take_transitions();
            if let Some(c) = &self.cluster {
                for t in &transitions {
                    let until = engine
                        .breaker(&t.model)
                        .and_then(|b| b.open_until_ms(now_ms()));
                    crate::cluster::glue::on_transition(c, &t.model, &t.transition, until);
                }
            }
            (out, transitions, got, engine.take_spikes())
        };
        self.publish_anomalies(&spikes);
        self.metrics.engine_lock(got - asked, got.elapsed());
        for t in transitions {
            let tr = &t.transition;
            self.metrics.breaker_transition(&t.model, tr.to);
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

    /// The metrics text, with engine-state gauges read now.
    pub fn metrics_text(&self) -> String {
        {
            let core = self.lock();
            self.metrics.refresh(&core.engine, now_ms());
        }
        self.metrics.cache.refresh(&self.cache_stats());
        self.metrics.encode()
    }

    /// A Feedback's durability and its budget alerts: in `sync` mode waits until its writes are
    /// flushed; the alerts are published only once the write holding their spend is committed
    /// (a task waits for it when the write fails or is not awaited; at once without a data dir).
    /// An alert whose write never commits (the server stops first) is logged, not published.
    async fn settle(self: &Arc<Self>, alerts: Vec<BudgetAlert>) -> Result<(), Status> {
        let Some(w) = &self.writer else {
            self.publish(&alerts);
            return Ok(());
        };
        if alerts.is_empty() {
            return self.durable().await;
        }
        let ticket = w.ticket()?;
        let committed = w.committed(ticket);
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            if committed.await {
                shared.publish(&alerts);
            } else {
                for a in &alerts {
                    tracing::error!(
                        budget_key = %a.budget_key,
                        threshold = a.threshold,
                        "budget alert not published: the spend that crossed it was never persisted"
                    );
                }
            }
        });
        self.durable().await
    }

    /// Waits for the durability rule of a Feedback: in `sync` mode, until its writes are flushed.
    async fn durable(&self) -> Result<(), Status> {
        match &self.writer {
            Some(w) if self.sync => w.wait().await,
            _ => Ok(()),
        }
    }

    /// Persists the response cache (its own write path, cache.rs) and trims the decision log.
    pub async fn trim_events(&self) {
        self.persist_cache().await;
        self.trim_log().await;
    }

    /// Trims the decision log to its configured bounds on a blocking thread (never on the async
    /// runtime's threads); the trimmer runs this every [`TRIM_INTERVAL`].
    pub async fn trim_log(&self) {
        let Some(store) = &self.store else { return };
        let bounds = {
            let core = self.lock();
            let c = core.engine.config();
            store::LogBounds {
                max_age_ms: c.storage.event_log_max_age_secs.saturating_mul(1000),
                max_count: c.storage.event_log_max_events,
                max_bytes: c.storage.event_log_max_bytes,
                keep_pending: c.limits.max_pending as u64,
                pending_ttl_ms: (c.limits.pending_ttl_secs * 1000.0) as u64,
            }
        };
        let store = Arc::clone(store);
        match tokio::task::spawn_blocking(move || store.with(|s| s.trim_events(now_ms(), &bounds)))
            .await
        {
            Ok(Ok(n)) if n > 0 => tracing::debug!(dropped = n, "trimmed decision log"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot trim decision log"),
            Err(e) => tracing::error!(error = %e, "decision log trim task failed"),
        }
    }

    /// Drops expired pending decisions and applies time-driven breaker changes; returns how many
    /// decisions expired.
    pub fn tick(&self) -> usize {
        self.cache().expire(now_ms());
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
    edge: Arc<security::Edge>,
    reload: Arc<security::ReloadSource>,
}

impl RouteService {
    /// A service without `[auth]` whose Reload re-reads the built-in default.
    pub fn new(shared: Arc<Shared>) -> Self {
        RouteService {
            shared,
            edge: Arc::new(security::Edge::plain()),
            reload: Arc::default(),
        }
    }

    /// Checks the caller of `method`: `None` when no `[auth]` is configured.
    fn caller(
        &self,
        method: Method,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<Principal>, Status> {
        self.edge.keys.check(method.path(), metadata)
    }

    /// Runs one handler inside its RPC span (when traces are exported), then counts it and its
    /// handling time.
    async fn timed<T>(
        &self,
        method: Method,
        handler: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        use tracing::Instrument;
        let start = Instant::now();
        let span = otel::rpc_span(method);
        let result = handler.instrument(span.clone()).await;
        let code = result.as_ref().err().map_or(tonic::Code::Ok, Status::code);
        otel::record_status(&span, code);
        self.shared.metrics.rpc(method, code, start.elapsed());
        result
    }
}

#[tonic::async_trait]
impl proto::route_server::Route for RouteService {
    async fn route(
        &self,
        request: Request<proto::RouteRequest>,
    ) -> Result<Response<proto::RouteResponse>, Status> {
        // Boxed: a Route's future is large, and moved by value through `timed`, its span and
        // the trait's box it would be copied at each step (callgrind: 1.2k instructions of
        // memcpy per Route); boxed once, only the pointer moves.
        self.timed(Method::Route, Box::pin(self.route_impl(request)))
            .await
    }

    async fn feedback(
        &self,
        request: Request<proto::FeedbackRequest>,
    ) -> Result<Response<proto::FeedbackResponse>, Status> {
        // Boxed, as Route's.
        self.timed(Method::Feedback, Box::pin(self.feedback_impl(request)))
            .await
    }

    async fn report_health(
        &self,
        request: Request<proto::ReportHealthRequest>,
    ) -> Result<Response<proto::ReportHealthResponse>, Status> {
        self.timed(Method::ReportHealth, self.report_health_impl(request))
            .await
    }

    async fn get_arm_stats(
        &self,
        request: Request<proto::GetArmStatsRequest>,
    ) -> Result<Response<proto::GetArmStatsResponse>, Status> {
        self.timed(Method::GetArmStats, self.get_arm_stats_impl(request))
            .await
    }

    async fn get_budgets(
        &self,
        request: Request<proto::GetBudgetsRequest>,
    ) -> Result<Response<proto::GetBudgetsResponse>, Status> {
        self.timed(Method::GetBudgets, self.get_budgets_impl(request))
            .await
    }

    async fn reset_arms(
        &self,
        request: Request<proto::ResetArmsRequest>,
    ) -> Result<Response<proto::ResetArmsResponse>, Status> {
        self.timed(Method::ResetArms, self.reset_arms_impl(request))
            .await
    }

    async fn reload(
        &self,
        request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        self.timed(Method::Reload, self.reload_impl(request)).await
    }

    async fn get_spend(
        &self,
        request: Request<proto::GetSpendRequest>,
    ) -> Result<Response<proto::GetSpendResponse>, Status> {
        self.timed(Method::GetSpend, self.get_spend_impl(request))
            .await
    }
    async fn get_ab_report(
        &self,
        request: Request<proto::GetAbReportRequest>,
    ) -> Result<Response<proto::GetAbReportResponse>, Status> {
        self.timed(Method::GetAbReport, self.get_ab_report_impl(request))
            .await
    }

    async fn invalidate_cache(
        &self,
        request: Request<proto::InvalidateCacheRequest>,
    ) -> Result<Response<proto::InvalidateCacheResponse>, Status> {
        self.timed(Method::InvalidateCache, self.invalidate_cache_impl(request))
            .await
    }

    async fn backup(
        &self,
        request: Request<proto::BackupRequest>,
    ) -> Result<Response<proto::BackupResponse>, Status> {
        self.timed(Method::Backup, self.backup_impl(request)).await
    }
}

impl RouteService {
    async fn route_impl(
        &self,
        request: Request<proto::RouteRequest>,
    ) -> Result<Response<proto::RouteResponse>, Status> {
        let caller = self.caller(Method::Route, request.metadata())?;
        let mut input = RouteInput::from(request.into_inner());
        if let Some(p) = &caller {
            if input.task_class.is_empty() {
                // Classified from the prompt, among the tenant's classes only.
                input.allowed_classes = p.tenant.as_ref().and_then(|t| t.task_classes.clone());
            } else {
                p.check_class(&input.task_class)
                    .map_err(convert::auth_status)?;
            }
            input.budget_key = p
                .budget_key_for(&input.budget_key)
                .map_err(convert::auth_status)?;
        }
        // Counted here, outside the engine's lock: tokenizing a long prompt takes milliseconds.
        input.prompt_tokens = crate::engine::count_prompt(&input);
        self.shared.classify(&mut input)?;
        otel::record_class(&input.task_class);
        let tenant = caller.as_ref().and_then(|p| p.tenant.as_ref());
        let tenant = tenant.map(|t| t.name.as_str());
        let (query, hit) = self.shared.cache_lookup(&input, tenant).await?;
        let (mut decision, backlog) = self.shared.with_engine(|engine, rng| {
            let d = match hit {
                Some(hit) => engine.route_hit(&input, hit, now_ms(), rng),
                None => engine.route(&input, now_ms(), rng),
            }
            .map_err(status)?;
            // A replayed request_id answers with the decision it named: only to the same tenant.
            if d.replayed {
                let made_under = engine.pending_compact(&d.id).and_then(|p| p.tenant());
                if made_under != tenant {
                    return Err(Status::permission_denied(format!(
                        "request_id {:?} names a decision made under another tenant; use a new request_id",
                        crate::validation::echo(&input.request_id)
                    )));
                }
            } else if tenant.is_some() {
                // A new decision is made without a tenant: only a tenant's key changes it.
                engine.set_tenant(&d.id, tenant);
            }
            Ok((d, engine.unpersisted()))
        })?;
        if let Some(w) = &self.shared.writer {
            self.shared.metrics.store_backlog(backlog);
            if backlog > persist::MAX_BACKLOG {
                self.shared.metrics.store_backpressure();
                w.next_cycle().await;
            }
        }
        otel::record_decision(&decision.model, decision.reason.as_str());
        if let (Some(c), false) = (
            &self.shared.cluster,
            decision.replayed || decision.cache_hit.is_some(),
        ) {
            // Boxed: the cluster's round trip is a large future, and inline it would size (and
            // so copy) every Route's future, clustered or not.
            decision = Box::pin(crate::cluster::glue::route(&self.shared, c, decision)).await?;
        }
        if !decision.replayed {
            self.shared.metrics.decision(&decision);
        }
        self.shared.cache_routed(&decision, query);
        Ok(Response::new(decision.into()))
    }

    async fn feedback_impl(
        &self,
        request: Request<proto::FeedbackRequest>,
    ) -> Result<Response<proto::FeedbackResponse>, Status> {
        let caller = self.caller(Method::Feedback, request.metadata())?;
        let mut request = request.into_inner();
        let response = std::mem::take(&mut request.response);
        let input = FeedbackInput::try_from(request)?;
        // In cluster mode a cache hit is told apart before the Feedback goes to Redis; otherwise
        // the engine tells it apart under the Feedback's own hold of the lock.
        if self.shared.cluster.is_some() {
            if let Some(answer) = self.hit_feedback(caller.as_ref(), &input) {
                let answer = answer?;
                self.shared.durable().await?;
                return Ok(Response::new(answer));
            }
        }
        self.shared
            .feedback(caller.as_ref(), &input, response)
            .await
            .map(Response::new)
    }

    async fn report_health_impl(
        &self,
        request: Request<proto::ReportHealthRequest>,
    ) -> Result<Response<proto::ReportHealthResponse>, Status> {
        self.caller(Method::ReportHealth, request.metadata())?;
        let input = HealthInput::try_from(request.into_inner())?;
        let result = self
            .shared
            .with_engine(|engine, _| engine.report_health(&input, now_ms()))
            .map_err(status)?;
        if let Some(c) = &self.shared.cluster {
            crate::cluster::glue::on_health(c, &input, &result);
        }
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

    async fn get_arm_stats_impl(
        &self,
        request: Request<proto::GetArmStatsRequest>,
    ) -> Result<Response<proto::GetArmStatsResponse>, Status> {
        let caller = self.caller(Method::GetArmStats, request.metadata())?;
        let r = request.into_inner();
        if let (Some(p), false) = (&caller, r.task_class.is_empty()) {
            p.check_class(&r.task_class).map_err(convert::auth_status)?;
        }
        let filter = ArmFilter {
            task_class: r.task_class,
            model: r.model,
        };
        let (mut arms, mut objectives, mut paired) = {
            let shared = self.shared.lock();
            let arms = shared.engine.arm_stats(&filter, now_ms()).map_err(status)?;
            let paired = shared.engine.paired_stats(&filter.task_class);
            (
                arms,
                shared.engine.objective_stats(&filter.task_class),
                paired,
            )
        };
        let mut cache = self.shared.cache_stats();
        cache.retain(|c| filter.task_class.is_empty() || c.task_class == filter.task_class);
        if let Some(p) = &caller {
            arms.retain(|a| p.may_use_class(&a.task_class));
            objectives.retain(|o| p.may_use_class(&o.task_class));
            paired.retain(|o| p.may_use_class(&o.task_class));
            cache.retain(|c| p.may_use_class(&c.task_class));
        }
        if !filter.model.is_empty() {
            paired.retain(|o| o.model == filter.model || o.shadow_model == filter.model);
        }
        let mut arms: Vec<proto::ArmStats> = arms.into_iter().map(Into::into).collect();
        let mut served_by = String::new();
        if let Some(c) = &self.shared.cluster {
            crate::cluster::glue::annotate_arms(c, &mut arms);
            served_by = c.config.replica_id.clone();
        }
        Ok(Response::new(proto::GetArmStatsResponse {
            arms,
            objectives: objectives.into_iter().map(Into::into).collect(),
            paired: paired.into_iter().map(Into::into).collect(),
            cache: cache.into_iter().map(Into::into).collect(),
            served_by,
        }))
    }

    async fn get_budgets_impl(
        &self,
        request: Request<proto::GetBudgetsRequest>,
    ) -> Result<Response<proto::GetBudgetsResponse>, Status> {
        let caller = self.caller(Method::GetBudgets, request.metadata())?;
        let key = request.into_inner().budget_key;
        if let (Some(p), false) = (&caller, key.is_empty()) {
            if !p.may_see_budget(&key) {
                return Err(Status::permission_denied(format!(
                    "key `{}` may only see its tenant's budget; omit budget_key to list it",
                    p.key_name
                )));
            }
        }
        let mut budgets = self
            .shared
            .lock()
            .engine
            .budgets(&key, now_ms())
            .map_err(status)?;
        if let Some(p) = &caller {
            budgets.retain(|b| p.may_see_budget(&b.budget_key));
        }
        let mut budgets: Vec<proto::Budget> = budgets.into_iter().map(Into::into).collect();
        if let Some(c) = &self.shared.cluster {
            crate::cluster::glue::annotate_budgets(c, &mut budgets);
        }
        Ok(Response::new(proto::GetBudgetsResponse { budgets }))
    }

    async fn reset_arms_impl(
        &self,
        request: Request<proto::ResetArmsRequest>,
    ) -> Result<Response<proto::ResetArmsResponse>, Status> {
        self.caller(Method::ResetArms, request.metadata())?;
        let r = request.into_inner();
        let model = (!r.model.is_empty()).then_some(r.model.as_str());
        let n = self
            .shared
            .with_engine(|engine, _| engine.reset_arms(&r.task_class, model, now_ms()));
        let n = n.map_err(status)?;
        self.shared.durable().await?;
        info!(task_class = %r.task_class, model = ?model, reset = n, "arms reset");
        Ok(Response::new(proto::ResetArmsResponse {
            reset: u32::try_from(n).unwrap_or(u32::MAX),
        }))
    }
}

/// Accepted connections with TCP_NODELAY set: small unary RPCs must not wait out Nagle's algorithm
/// against the peer's delayed ACK (~40 ms per exchange).
/// Serves `switchyard.v1.Route`, health and reflection on `listener` until `shutdown` resolves, then
/// drains in-flight requests and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_with(config, ServeOptions::default(), listener, shutdown).await
}

/// What [`serve_with`] runs beside the gRPC service.
#[derive(Default)]
pub struct ServeOptions {
    /// The data dir; `None` = state lives in memory only. The server owns it: after a write
    /// failure its writer closes and reopens it in place.
    pub store: Option<Store>,
    /// A bound listener for the Prometheus endpoint (`GET /metrics`); `None` = no endpoint.
    pub metrics: Option<TcpListener>,
    /// Where Reload (and SIGHUP) read the config.
    pub reload: security::ReloadSource,
    /// Reload on SIGHUP (the binary; tests in one process leave signals alone).
    pub reload_on_sighup: bool,
    /// Called once the data dir is restored, just before serving starts: the binary prints its
    /// `listening on` line here, so whoever waits for that line finds the state ready.
    pub on_ready: Option<Box<dyn FnOnce() + Send>>,
}

/// [`serve`] with a data dir and a metrics endpoint as `options` say.
pub async fn serve_with(
    config: Config,
    options: ServeOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let ServeOptions {
        store,
        metrics: metrics_listener,
        reload,
        reload_on_sighup,
        on_ready,
    } = options;
    let (builder, grpc_tls, metrics_tls) =
        listeners::server_builder(&config, &listener, metrics_listener.as_ref())?;
    let keys = security::Keys::new(config.key_table()?);
    let probes = config.health_probes.clone();
    let conn = config.connections;
    // The alert task ends by itself once the last handler (and so the last sender) is gone.
    let (alert_sender, _alert_task) = alerts::spawn(config.alerts.clone());
    let cache_mb = config.storage.cache_mb;
    let shared = match store {
        None => Shared::with_alerts(config, alert_sender),
        Some(store) => {
            let slot = Arc::new(StoreSlot::new(store, cache_mb));
            let (shared, warnings) = Shared::with_store(config, slot, Some(alert_sender))?;
            for w in warnings {
                tracing::warn!("{w}");
            }
            info!(
                pending = shared.lock().engine.pending_len(),
                "state restored from data dir"
            );
            shared
        }
    };
    let mut shared = shared;
    let cluster_config = shared.lock().engine.config().cluster.clone();
    if let Some(cfg) = cluster_config {
        let c =
            crate::cluster::Cluster::new(cfg).map_err(|e| ServeError::Cluster(e.to_string()))?;
        info!(replica = %c.config.replica_id, "cluster mode: sharing state through redis");
        shared.lock().engine.share_spend();
        let c = Arc::new(c);
        shared.metrics.cluster.attach(Arc::clone(&c));
        if let Some(store) = &shared.store {
            let restored = c
                .outbox
                .attach(Arc::clone(store), shared.sync)
                .map_err(ServeError::Store)?;
            if restored > 0 {
                info!(
                    restored,
                    "deferred feedback restored from the data dir's outbox"
                );
            }
        }
        shared.cluster = Some(c);
    }
    let shared = Arc::new(shared);
    let checked = shared.store.as_ref().map(|s| verify::spawn(Arc::clone(s)));
    let cluster_task = shared.cluster.as_ref().map(|c| {
        tokio::spawn(crate::cluster::sync::run(
            Arc::clone(c),
            Arc::clone(&shared),
        ))
    });
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RouteServer<RouteService>>()
        .await;
    // `switchyard.v1.Store`: SERVING while the writer reaches the disk, NOT_SERVING while its
    // failed cycles are being retried (Route itself keeps serving from memory).
    let store_health = shared.writer.as_ref().map(|w| {
        let mut healthy = w.healthy();
        let reporter = health_reporter.clone();
        tokio::spawn(async move {
            loop {
                let status = if *healthy.borrow_and_update() {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                reporter
                    .set_service_status(STORE_HEALTH_SERVICE, status)
                    .await;
                if healthy.changed().await.is_err() {
                    break;
                }
            }
        })
    });
    // `switchyard.v1.Cluster`: SERVING while Redis answers and nothing is queued for it.
    let cluster_health = shared.cluster.as_ref().map(|c| {
        let (c, reporter) = (Arc::clone(c), health_reporter.clone());
        tokio::spawn(async move {
            let mut last = None;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let up = c.is_up();
                if last != Some(up) {
                    let status = if up {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    reporter
                        .set_service_status(CLUSTER_HEALTH_SERVICE, status)
                        .await;
                    last = Some(up);
                }
            }
        })
    });
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
                shared.persist_cache().await;
            }
        })
    };
    let trimmer = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TRIM_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                shared.trim_log().await;
            }
        })
    };

    let edge = Arc::new(security::Edge {
        keys: Arc::clone(&keys),
        tls: grpc_tls.clone(),
        metrics_tls: metrics_tls.clone(),
        probes: std::sync::Mutex::new(probes::Running::start(&shared, probes)),
    });
    let reload = Arc::new(reload);
    let sighup = reload_on_sighup.then(|| admin::spawn_sighup(&shared, &edge, &reload));
    let metrics_task = match metrics_listener {
        Some(l) => Some(listeners::spawn_metrics(
            Arc::clone(&shared),
            l,
            metrics_tls,
        )?),
        None => None,
    };

    let addr = listener.local_addr().ok();
    info!(?addr, "switchyard serving");
    if let Some(ready) = on_ready {
        ready();
    }
    use tonic::service::interceptor::InterceptedService as Gated;
    let route = RouteService {
        shared: Arc::clone(&shared),
        edge: Arc::clone(&edge),
        reload,
    };
    let failure = verify::Failure::default();
    let shutdown = verify::shutdown_or_failure(
        shutdown,
        checked,
        health_reporter.clone(),
        Arc::clone(&failure),
    );
    let shutdown = drain(shutdown, Arc::clone(&shared), health_reporter);
    let secs = Duration::from_secs_f64;
    let router = builder
        .http2_keepalive_interval(Some(secs(conn.keepalive_interval_secs)))
        .http2_keepalive_timeout(Some(secs(conn.keepalive_timeout_secs)))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            conn.max_in_flight,
        ))
        .layer(tower::util::MapResponseLayer::new(
            limits::oversize_is_resource_exhausted,
        ))
        .add_service(Gated::new(
            health_service,
            security::interceptor(Arc::clone(&keys), crate::auth::HEALTH_SERVICE),
        ))
        .add_service(Gated::new(
            reflection_v1,
            security::interceptor(Arc::clone(&keys), crate::auth::REFLECTION_SERVICES[0]),
        ))
        .add_service(Gated::new(
            reflection_v1alpha,
            security::interceptor(Arc::clone(&keys), crate::auth::REFLECTION_SERVICES[1]),
        ))
        .add_service(RouteServer::new(route));
    let tcp = limits::incoming(listener, conn.max_connections, secs(conn.idle_timeout_secs));
    let result = match grpc_tls {
        Some(t) => {
            router
                .serve_with_incoming_shutdown(tls::incoming(tcp, t), shutdown)
                .await
        }
        None => router.serve_with_incoming_shutdown(tcp, shutdown).await,
    };
    if let Some(t) = sighup {
        t.abort();
    }
    sweeper.abort();
    trimmer.abort();
    for t in [cluster_task, cluster_health].into_iter().flatten() {
        t.abort();
    }
    crate::cluster::spend::flush_on_stop(&shared).await;
    if let Some(t) = store_health {
        t.abort();
    }
    edge.stop_probes();
    if let Some(t) = metrics_task {
        t.abort();
    }
    // The writer's last cycle persists and flushes everything the drained requests changed.
    if shared.writer.is_some() {
        let shared = Arc::clone(&shared);
        let stopped = tokio::task::spawn_blocking(move || {
            if let Some(w) = &shared.writer {
                w.stop();
            }
        })
        .await;
        if stopped.is_err() {
            tracing::error!("storage writer did not stop cleanly");
        }
    }
    // A last trim, so a stopped data dir is within its bounds whatever the sweeper's phase was.
    shared.trim_events().await;
    verify::take_failure(&failure)?;
    if let Some(store) = &shared.store {
        store.with(Store::flush)?;
    }
    info!("switchyard stopped");
    result.map_err(Into::into)
}

/// Resolves after `shutdown` and the drain: health turns NOT_SERVING at once, requests are still
/// served for `server.drain_secs` (so load balancers move traffic away), then the listener closes.
async fn drain(
    shutdown: impl Future<Output = ()> + Send,
    shared: Arc<Shared>,
    health: tonic_health::server::HealthReporter,
) {
    shutdown.await;
    health.set_not_serving::<RouteServer<RouteService>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let secs = shared.lock().engine.config().security.drain_secs;
    info!(drain_secs = secs, "health NOT_SERVING; draining");
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}
