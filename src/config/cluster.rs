//! `[cluster]`: replicas of one config sharing state through Redis (see `crate::cluster`).
//! Without the section nothing changes: the service is one process with its own data dir.

use serde::Deserialize;

use super::{err, ConfigError};

/// Default of `cluster.sync_interval_ms`: evidence deltas go to Redis and merged totals come back
/// once a second, the "learning shared within about a second" the cluster promises.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 1000;
/// Default of `cluster.heartbeat_ms`: a replica refreshes its registration this often and counts
/// as live for [`LIVE_HEARTBEATS`] heartbeats.
pub const DEFAULT_HEARTBEAT_MS: u64 = 1000;
/// A replica unseen for this many heartbeats is no longer counted as live.
pub const LIVE_HEARTBEATS: u64 = 3;
/// Default of `cluster.fallback_share_factor`: during a Redis outage each replica may spend half
/// of its equal share of the remaining budget, leaving room for replicas that were not yet seen
/// (a restart during the outage) and for in-flight settlements larger than their reservations.
pub const DEFAULT_FALLBACK_SHARE_FACTOR: f64 = 0.5;
/// Default of `cluster.redis_timeout_ms`: how long Route and Feedback wait on Redis before the
/// replica counts it as down and falls back to local state. A same-datacentre round trip is well
/// under a millisecond, so 500 ms only trips on a real outage.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 500;
/// Default of `cluster.key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "switchyard";

/// `[cluster]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    redis_url: Option<String>,
    replica_id: Option<String>,
    sync_interval_ms: Option<i64>,
    heartbeat_ms: Option<i64>,
    fallback_share_factor: Option<f64>,
    redis_timeout_ms: Option<i64>,
    key_prefix: Option<String>,
}

/// `[cluster]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]` (or `rediss://` for TLS).
    pub redis_url: String,
    /// This replica's name in Redis (heartbeats, `served_by` in stats).
    pub replica_id: String,
    pub sync_interval_ms: u64,
    pub heartbeat_ms: u64,
    /// Safety factor in (0, 1] on a replica's equal share of the remaining budget while Redis is
    /// unreachable.
    pub fallback_share_factor: f64,
    pub redis_timeout_ms: u64,
    /// Prefix of every Redis key, so several clusters (or tests) can share one Redis.
    pub key_prefix: String,
}

impl RawCluster {
    pub(super) fn validate(self) -> Result<ClusterConfig, ConfigError> {
        let redis_url = match self.redis_url {
            Some(u) if u.starts_with("redis://") || u.starts_with("rediss://") => u,
            Some(u) => {
                return Err(err(
                    "cluster.redis_url",
                    format!(
                        "must be a URL like redis://127.0.0.1:6379 (or rediss:// for TLS), got {}",
                        crate::validation::echo(&u)
                    ),
                ))
            }
            None => {
                return Err(err(
                    "cluster.redis_url",
                    "is required in [cluster], e.g. redis_url = \"redis://127.0.0.1:6379\"",
                ))
            }
        };
        let replica_id = match self.replica_id {
            Some(id) if valid_name(&id) => id,
            Some(id) => {
                return Err(err(
                    "cluster.replica_id",
                    format!(
                        "must be 1-64 characters of letters, digits and -_.:, got {}",
                        crate::validation::echo(&id)
                    ),
                ))
            }
            None => default_replica_id(),
        };
        let key_prefix = match self.key_prefix {
            Some(p) if valid_name(&p) => p,
            Some(p) => {
                return Err(err(
                    "cluster.key_prefix",
                    format!(
                        "must be 1-64 characters of letters, digits and -_.:, got {}",
                        crate::validation::echo(&p)
                    ),
                ))
            }
            None => DEFAULT_KEY_PREFIX.to_string(),
        };
        let fallback_share_factor = match self.fallback_share_factor {
            None => DEFAULT_FALLBACK_SHARE_FACTOR,
            Some(f) if f.is_finite() && f > 0.0 && f <= 1.0 => f,
            Some(f) => {
                return Err(err(
                    "cluster.fallback_share_factor",
                    format!("must be in (0, 1] (a safety factor on a replica's share), got {f}"),
                ))
            }
        };
        Ok(ClusterConfig {
            redis_url,
            replica_id,
            sync_interval_ms: millis(
                "cluster.sync_interval_ms",
                self.sync_interval_ms,
                DEFAULT_SYNC_INTERVAL_MS,
            )?,
            heartbeat_ms: millis(
                "cluster.heartbeat_ms",
                self.heartbeat_ms,
                DEFAULT_HEARTBEAT_MS,
            )?,
            fallback_share_factor,
            redis_timeout_ms: millis(
                "cluster.redis_timeout_ms",
                self.redis_timeout_ms,
                DEFAULT_REDIS_TIMEOUT_MS,
            )?,
            key_prefix,
        })
    }
}

/// A millisecond setting in [10, 600000].
fn millis(key: &str, v: Option<i64>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(ms) if (10..=600_000).contains(&ms) => Ok(ms as u64),
        Some(ms) => Err(err(
            key,
            format!("must be a whole number of milliseconds in [10, 600000], got {ms}"),
        )),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// The host name plus the pid: unique per process on a host, and readable in stats.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                .take(48)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_string());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawCluster {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_fill_everything_but_the_url() {
        let c = raw("redis_url = \"redis://127.0.0.1:6379\"")
            .validate()
            .unwrap();
        assert_eq!(c.sync_interval_ms, DEFAULT_SYNC_INTERVAL_MS);
        assert_eq!(c.fallback_share_factor, DEFAULT_FALLBACK_SHARE_FACTOR);
        assert!(c.replica_id.ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn bad_values_name_the_key_and_the_rule() {
        let e = raw("").validate().unwrap_err();
        assert_eq!(e.key, "cluster.redis_url");
        let e = raw("redis_url = \"http://x\"").validate().unwrap_err();
        assert!(e.message.contains("redis://"), "{e}");
        let e = raw("redis_url = \"redis://x\"\nfallback_share_factor = 1.5")
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "cluster.fallback_share_factor");
        let e = raw("redis_url = \"redis://x\"\nsync_interval_ms = 0")
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "cluster.sync_interval_ms");
        let e = raw("redis_url = \"redis://x\"\nreplica_id = \"a b\"")
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "cluster.replica_id");
    }
}
