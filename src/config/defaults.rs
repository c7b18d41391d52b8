//! Every configuration default in one place, each with the reason for its value.

/// The built-in configuration, used when `serve` gets no `--config`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../default_config.toml");

/// Default listen address: loopback only, so a fresh install is not reachable from the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default drain time after SIGTERM: none. A single instance without a load balancer has nobody to
/// tell; behind one, set `server.drain_secs` to its health-check interval times its unhealthy
/// threshold (README, Drain) so it moves traffic before the listener closes.
pub const DEFAULT_DRAIN_SECS: f64 = 0.0;
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "switchyard-data";
/// Default time a connection may stay silent (no byte read or written) before it is closed: two
/// minutes outlasts any client's pause between calls on a channel it means to use (gRPC clients
/// reconnect transparently), and frees a slot held by a socket that never speaks.
pub const DEFAULT_IDLE_TIMEOUT_SECS: f64 = 120.0;
/// Default HTTP/2 keepalive: a ping every 30 s, and a connection whose peer does not answer within
/// 10 s is closed (a vanished client stops holding a slot).
pub const DEFAULT_KEEPALIVE_INTERVAL_SECS: f64 = 30.0;
pub const DEFAULT_KEEPALIVE_TIMEOUT_SECS: f64 = 10.0;
/// Default bound on open client connections: half the usual 1,024 open-file limit, so the server
/// keeps descriptors for its data dir, metrics and alerts. Further clients wait in the listen
/// backlog until a connection closes (or idles out).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default bound on requests handled at once across all connections (more wait their turn).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Default evidence half-life: one day, slow enough to average out hourly noise, fast enough to follow
/// a provider whose quality or latency drifts over days.
pub const DEFAULT_HALF_LIFE_SECS: f64 = 86_400.0;
/// Default prior strength: priors count as two observations, so a handful of real ones outweigh them.
pub const DEFAULT_PRIOR_STRENGTH: f64 = 2.0;
/// Default size of each arm's Thompson pool of posterior draws (`policy::pool`): a decision picks one
/// of the 64 indices and its logged propensity is the exact share of indices at which the chosen arm
/// wins, so propensities come in steps of 1/64 (finer than off-policy estimates need) while a
/// decision scores only 64 draws per arm; raise it for finer propensities where the decision rate
/// allows.
pub const DEFAULT_PROPENSITY_SAMPLES: u32 = 64;
/// Default `policy.min_propensity`: 1% of decisions spread over the eligible arms, so every arm keeps
/// support (off-policy estimates of other policies need it) at a cost of 1% exploration.
pub const DEFAULT_MIN_PROPENSITY: f64 = 0.01;
/// Default UCB exploration multiplier (1 = the textbook sqrt(2 ln t) width).
pub const DEFAULT_UCB_EXPLORATION: f64 = 1.0;
/// Default epsilon of the epsilon-greedy baseline.
pub const DEFAULT_EPSILON: f64 = 0.1;
/// Default utility penalty per broken constraint in `penalty` mode: one full unit of quality.
pub const DEFAULT_VIOLATION_PENALTY: f64 = 1.0;
/// Penalty used in `exclude` mode: larger than any achievable utility, so a violating arm is chosen
/// only when every arm violates (the least-bad one then wins).
pub const EXCLUDE_PENALTY: f64 = 1e6;
/// Default time a decision waits for feedback: an hour covers slow graders and human ratings.
pub const DEFAULT_PENDING_TTL_SECS: f64 = 3600.0;
/// Default bound on pending decisions: ~100 k x ~0.5 KB = ~50 MB at most.
pub const DEFAULT_MAX_PENDING: usize = 100_000;
/// Default number of fallbacks returned with a decision.
pub const DEFAULT_MAX_FALLBACKS: usize = 3;
/// Default ceiling on one call's reported cost: far above any real LLM call (10^6 output tokens of
/// the dearest model is ~$100), low enough that every sum and mean of costs stays representable.
pub const DEFAULT_MAX_COST_USD_PER_CALL: f64 = 1000.0;
/// Default time a budgeted decision's tombstone keeps accepting a late Feedback after the decision
/// expired or was evicted: a day covers batch graders and retried webhooks.
pub const DEFAULT_TOMBSTONE_TTL_SECS: f64 = 86_400.0;
/// Default bound on tombstones per budget (~150 bytes each: ~15 MB at most).
pub const DEFAULT_MAX_TOMBSTONES: usize = 100_000;
/// Longest accepted latency (ms): one day. A call slower than that is a timeout, and the bound keeps
/// every latency sum and mean finite.
pub const MAX_LATENCY_MS: f64 = 86_400_000.0;
/// Largest accepted token count (10^8, a hundred times the largest context windows): keeps token
/// times price finite for any configured price.
pub const MAX_TOKENS: i64 = 100_000_000;
/// Largest accepted request weight: weights are relative, and the bound keeps utilities finite.
pub const MAX_WEIGHT: f64 = 1e6;
/// Largest accepted Route `max_cost_usd` (a cap above this is no cap).
pub const MAX_COST_CAP_USD: f64 = 1e9;
/// Default prior success rate of a model without one in config.
pub const DEFAULT_SUCCESS_RATE: f64 = 0.99;
/// Default spread of ln(cost) around the price-table cost (output lengths vary by ~35%).
pub const DEFAULT_COST_LOG_SD: f64 = 0.3;
/// Default multiplier on a DEGRADED model's quality: it keeps traffic when clearly best, loses it
/// when close.
pub const DEFAULT_DEGRADED_QUALITY_FACTOR: f64 = 0.8;
/// Default hold of an outside health signal without a ttl: five minutes, long enough to ride out a
/// provider incident, short enough that a forgotten DOWN does not exile a model for the day.
pub const DEFAULT_HEALTH_TTL_SECS: f64 = 300.0;
/// Default soft-failure rule: a successful call slower than 3x the model's own p95 counts as a soft
/// failure (0 disables).
pub const DEFAULT_SOFT_FAILURE_LATENCY_FACTOR: f64 = 3.0;
/// Default fraction of latency and success evidence kept when a breaker closes after an outage:
/// a quarter, so the router re-learns from fresh calls rather than pre-outage numbers.
pub const DEFAULT_RECOVERY_EVIDENCE_FACTOR: f64 = 0.25;
/// Default interval between active health probes of a provider.
pub const DEFAULT_PROBE_INTERVAL_SECS: f64 = 10.0;
/// Default timeout of one active health probe.
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 2000;

/// Longest accepted request_id or decision_id, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Default timeout of one alert webhook POST: 5 s is ample for a chat or incident webhook, and an
/// alert that slow is better retried than waited for.
pub const DEFAULT_ALERT_TIMEOUT_MS: u64 = 5_000;
/// Default retries of a failed alert POST (after the first attempt): with exponential backoff from
/// [`crate::server::ALERT_BACKOFF_BASE`], 5 retries span about 3 s, enough to ride out a restart
/// of the receiver without queueing alerts for long.
pub const DEFAULT_ALERT_MAX_RETRIES: u32 = 5;
/// Largest accepted `alerts.max_retries`: beyond this the backoff exceeds an hour.
pub const MAX_ALERT_RETRIES: i64 = 20;

/// Default flush interval of `periodic` durability: a crash can lose at most this window.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 200;
/// Default age bound of the event log: a week of traffic for `trace export`.
pub const DEFAULT_EVENT_LOG_MAX_AGE_SECS: u64 = 7 * 86_400;
/// Default size bound of the event log (events, ~300 bytes each: ~300 MB).
pub const DEFAULT_EVENT_LOG_MAX_EVENTS: u64 = 1_000_000;
/// The decision log's encoded size bound: a million decisions at ~200 bytes each fit, so the count
/// bound usually trims first; the byte bound caps a log of unusually large records (long request
/// ids, many tags) and keeps the data dir within ~400 MB with sled's own overhead.
pub const DEFAULT_EVENT_LOG_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// sled's page cache: see [`crate::store::DEFAULT_CACHE_MB`].
pub const DEFAULT_CACHE_MB: u64 = crate::store::DEFAULT_CACHE_MB;
