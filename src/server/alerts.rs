//! Budget alert delivery: handlers hand crossed thresholds to a bounded queue without waiting; one
//! task drains it and POSTs each alert as JSON to the configured webhook, retrying with exponential
//! backoff. Every crossing is also a `tracing` warning, webhook or not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::AlertsConfig;
use crate::engine::BudgetAlert;

/// Capacity of the alert queue: alerts fire at most a few times per budget and period, so 1024
/// only fills if the webhook is down while very many budgets cross thresholds at once.
pub const ALERT_QUEUE_CAPACITY: usize = 1024;
/// First retry delay of a failed webhook POST; doubles per retry.
pub const ALERT_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay between two attempts: past a minute, a down receiver is better served by the next
/// alert than by hammering.
pub const ALERT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertPayload {
    pub budget_key: String,
    pub threshold: f64,
    pub spent_usd: f64,
    pub limit_usd: f64,
    pub period_start_unix_ms: u64,
    pub period_end_unix_ms: u64,
    pub at_unix_ms: u64,
}

impl From<&BudgetAlert> for AlertPayload {
    fn from(a: &BudgetAlert) -> Self {
        AlertPayload {
            budget_key: a.budget_key.clone(),
            threshold: a.threshold,
            spent_usd: a.spent_usd,
            limit_usd: a.limit_usd,
            period_start_unix_ms: a.period_start_ms,
            period_end_unix_ms: a.period_end_ms,
            at_unix_ms: a.at_ms,
        }
    }
}

/// The sending side, held by the handlers.
#[derive(Debug)]
pub struct AlertSender {
    tx: mpsc::Sender<BudgetAlert>,
    dropped: AtomicU64,
}

impl AlertSender {
    /// Logs each alert and queues it for the webhook without ever waiting: when the queue is full
    /// the alert is dropped (logged and counted).
    pub fn publish(&self, alerts: &[BudgetAlert]) {
        for a in alerts {
            tracing::warn!(
                budget_key = %a.budget_key,
                threshold = a.threshold,
                spent_usd = a.spent_usd,
                limit_usd = a.limit_usd,
                period_end_unix_ms = a.period_end_ms,
                "budget alert threshold crossed"
            );
            match self.tx.try_send(a.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        budget_key = %a.budget_key,
                        threshold = a.threshold,
                        dropped_total = n,
                        "alert queue full; webhook delivery of this alert dropped"
                    );
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::debug!("alert task stopped; webhook delivery skipped");
                }
            }
        }
    }

    /// Alerts dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the delivery task; it ends when every [`AlertSender`] is gone and the queue is drained.
pub fn spawn(config: AlertsConfig) -> (AlertSender, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<BudgetAlert>(ALERT_QUEUE_CAPACITY);
    let handle = tokio::spawn(async move {
        let client = match &config.webhook_url {
            None => None,
            Some(url) => match reqwest::Client::builder()
                .timeout(Duration::from_millis(config.timeout_ms))
                .build()
            {
                Ok(c) => Some((c, url.clone())),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the webhook HTTP client; alerts are logged only");
                    None
                }
            },
        };
        while let Some(alert) = rx.recv().await {
            if let Some((client, url)) = &client {
                // One task per alert, so a receiver that is down delays no other alert.
                tokio::spawn(deliver(
                    client.clone(),
                    url.clone(),
                    AlertPayload::from(&alert),
                    config.max_retries,
                ));
            }
        }
    });
    (
        AlertSender {
            tx,
            dropped: AtomicU64::new(0),
        },
        handle,
    )
}

/// Delay before retry `attempt` (1-based): base x 2^(attempt-1), capped.
pub fn backoff(attempt: u32) -> Duration {
    ALERT_BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(ALERT_BACKOFF_MAX)
}

/// POSTs one alert, retrying failures (transport errors and non-2xx answers).
async fn deliver(client: reqwest::Client, url: String, payload: AlertPayload, max_retries: u32) {
    for attempt in 0..=max_retries {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let error = match client.post(&url).json(&payload).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(budget_key = %payload.budget_key, threshold = payload.threshold, "alert delivered");
                return;
            }
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        tracing::warn!(
            budget_key = %payload.budget_key,
            threshold = payload.threshold,
            attempt,
            max_retries,
            error = %error,
            "alert webhook POST failed"
        );
    }
    tracing::error!(
        budget_key = %payload.budget_key,
        threshold = payload.threshold,
        "alert webhook delivery gave up"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), ALERT_BACKOFF_BASE);
        assert_eq!(backoff(2), ALERT_BACKOFF_BASE * 2);
        assert_eq!(backoff(4), ALERT_BACKOFF_BASE * 8);
        assert_eq!(backoff(40), ALERT_BACKOFF_MAX);
    }

    #[test]
    fn payload_has_the_documented_fields() {
        let a = BudgetAlert {
            budget_key: "team".into(),
            threshold: 0.8,
            spent_usd: 8.0,
            limit_usd: 10.0,
            period_start_ms: 1,
            period_end_ms: 2,
            at_ms: 3,
        };
        let v = serde_json::to_value(AlertPayload::from(&a)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys.len(),
            7,
            "{v}: budget_key, threshold, spent_usd, limit_usd, period_start_unix_ms, \
             period_end_unix_ms, at_unix_ms"
        );
        assert_eq!(v["budget_key"], "team");
        assert_eq!(v["threshold"], 0.8);
        assert_eq!(v["period_end_unix_ms"], 2);
        assert_eq!(v["at_unix_ms"], 3);
    }
}
