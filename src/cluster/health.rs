//! Health broadcast: a ReportHealth signal or a breaker opening on one replica is appended to a
//! Redis stream (`P:health`, capped near 1000 entries); every replica reads the stream every
//! [`HEALTH_POLL_MS`] and applies the other replicas' signals that have not yet expired as outside
//! signals of its own. Breakers stay per replica (as in Envoy and linkerd): a broadcast open
//! arrives as a DOWN for the rest of the open interval. Signals received are not re-broadcast.
//! A replica that starts reads the whole stream, so a DOWN still in force reaches it too.

use serde::{Deserialize, Serialize};

use super::*;

/// How often a replica reads the health stream: a DOWN reaches every replica well within a second.
pub const HEALTH_POLL_MS: u64 = 100;
/// Entries kept in the stream (approximately).
pub const HEALTH_STREAM_LEN: usize = 1000;

/// One broadcast health signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The replica that sent it.
    pub origin: String,
    pub model: String,
    pub provider: String,
    /// "down", "degraded" or "healthy".
    pub state: String,
    /// When it expires (Unix ms).
    pub until_ms: u64,
    pub reason: String,
}

impl Cluster {
    /// Queues a signal for the next broadcast (never waits).
    pub fn queue_signal(&self, s: Signal) {
        self.state().health_out.push(s);
    }

    /// Sends the queued signals.
    pub async fn send_signals(&self) -> Result<(), ClusterError> {
        let out = std::mem::take(&mut self.state().health_out);
        if out.is_empty() {
            return Ok(());
        }
        let key = self.key(&["health"]);
        let mut pipe = redis::pipe();
        for s in &out {
            let json =
                serde_json::to_string(s).map_err(|e| ClusterError::Protocol(e.to_string()))?;
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(HEALTH_STREAM_LEN)
                .arg("*")
                .arg("s")
                .arg(json)
                .ignore();
        }
        let r = self
            .call(|mut con| async move {
                pipe.query_async::<()>(&mut con).await?;
                Ok(())
            })
            .await;
        if r.is_err() {
            // Not lost: sent when Redis answers again.
            let mut st = self.state();
            let mut again = out;
            again.append(&mut st.health_out);
            st.health_out = again;
        }
        r
    }

    /// Reads the signals after `cursor` (a stream id; "0" at start), advancing it; returns those
    /// of other replicas.
    pub async fn poll_signals(&self, cursor: &mut String) -> Result<Vec<Signal>, ClusterError> {
        let key = self.key(&["health"]);
        let from = format!("({cursor}");
        let entries: Vec<(String, Vec<String>)> = self
            .call(|mut con| async move {
                Ok(redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(&from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut con)
                    .await?)
            })
            .await?;
        let mut out = Vec::new();
        for (id, fields) in entries {
            *cursor = id;
            if let Some(json) = fields.get(1) {
                match serde_json::from_str::<Signal>(json) {
                    Ok(s) if s.origin != self.config.replica_id => out.push(s),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "unreadable health signal in redis"),
                }
            }
        }
        Ok(out)
    }
}
