//! Alert delivery: handlers hand crossed budget thresholds and cost anomalies to a bounded queue
//! without waiting; one task drains it and POSTs each alert as JSON to the configured webhook,
//! retrying with exponential backoff. Every alert is also a `tracing` warning, webhook or not.
//! A cost anomaly's body carries `"kind": "cost_anomaly"`; a budget alert's body is unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::AlertsConfig;
use crate::engine::BudgetAlert;
use crate::spend::Spike;

/// One alert to deliver.
#[derive(Debug, Clone, PartialEq)]
pub enum Alert {
    Budget(BudgetAlert),
    CostAnomaly(Spike),
}

/// A cost anomaly's webhook body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyPayload {
    /// Always `cost_anomaly`.
    pub kind: &'static str,
    /// `budget_key` or `model`.
    pub scope: &'static str,
    /// The budget key or model.
    pub name: String,
    pub hour_start_unix_ms: u64,
    pub at_unix_ms: u64,
    /// The hour's spend so far, and the baseline's level and spread, USD per hour.
    pub hour_usd: f64,
    pub baseline_usd: f64,
    pub sigma_usd: f64,
    pub sigmas: f64,
}

impl From<&Spike> for AnomalyPayload {
    fn from(s: &Spike) -> Self {
        AnomalyPayload {
            kind: "cost_anomaly",
            scope: s.scope.as_str(),
            name: s.name.clone(),
            hour_start_unix_ms: s.hour_start_ms,
            at_unix_ms: s.at_ms,
            hour_usd: s.hour_usd,
            baseline_usd: s.baseline_usd,
            sigma_usd: s.sigma_usd,
            sigmas: s.sigmas,
        }
    }
}

/// A webhook body of either kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    Budget(AlertPayload),
    CostAnomaly(AnomalyPayload),
}

impl Payload {
    fn of(a: &Alert) -> Payload {
        match a {
            Alert::Budget(b) => Payload::Budget(b.into()),
            Alert::CostAnomaly(s) => Payload::CostAnomaly(s.into()),
        }
    }

    /// What the log lines name: the budget key and threshold, or the anomaly's scope and name.
    fn subject(&self) -> String {
        match self {
            Payload::Budget(b) => format!("budget {} threshold {}", b.budget_key, b.threshold),
            Payload::CostAnomaly(a) => format!("cost anomaly of {} {}", a.scope, a.name),
        }
    }
}

/// Logs a cost anomaly (the same line whether or not a webhook is configured).
pub fn log_anomaly(s: &Spike) {
    tracing::warn!(
        scope = s.scope.as_str(),
        name = %s.name,
        hour_usd = s.hour_usd,
        baseline_usd = s.baseline_usd,
        sigma_usd = s.sigma_usd,
        sigmas = s.sigmas,
        hour_start_unix_ms = s.hour_start_ms,
        "cost anomaly: hourly spend far above its baseline"
    );
}

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
    tx: mpsc::Sender<Alert>,
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
            self.queue(Alert::Budget(a.clone()));
        }
    }

    /// Logs each cost anomaly and queues it for the webhook, like [`AlertSender::publish`].
    pub fn publish_anomalies(&self, spikes: &[Spike]) {
        for s in spikes {
            log_anomaly(s);
            self.queue(Alert::CostAnomaly(s.clone()));
        }
    }

    fn queue(&self, a: Alert) {
        match self.tx.try_send(a) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(a)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    alert = %Payload::of(&a).subject(),
                    dropped_total = n,
                    "alert queue full; webhook delivery of this alert dropped"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("alert task stopped; webhook delivery skipped");
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
    let (tx, mut rx) = mpsc::channel::<Alert>(ALERT_QUEUE_CAPACITY);
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
                    Payload::of(&alert),
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
async fn deliver(client: reqwest::Client, url: String, payload: Payload, max_retries: u32) {
    let subject = payload.subject();
    for attempt in 0..=max_retries {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let error = match client.post(&url).json(&payload).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(alert = %subject, "alert delivered");
                return;
            }
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        tracing::warn!(
            alert = %subject,
            attempt,
            max_retries,
            error = %error,
            "alert webhook POST failed"
        );
    }
    tracing::error!(alert = %subject, "alert webhook delivery gave up");
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

    #[test]
    fn an_anomaly_body_says_its_kind_and_a_budget_body_is_unchanged() {
        let s = Spike {
            scope: crate::spend::Scope::Model,
            name: "gpt".into(),
            hour_start_ms: 3_600_000,
            at_ms: 3_700_000,
            hour_usd: 90.0,
            baseline_usd: 20.0,
            sigma_usd: 5.0,
            sigmas: 14.0,
        };
        let v = serde_json::to_value(Payload::of(&Alert::CostAnomaly(s))).unwrap();
        assert_eq!(v["kind"], "cost_anomaly");
        assert_eq!(
            (v["scope"].as_str(), v["name"].as_str()),
            (Some("model"), Some("gpt"))
        );
        assert_eq!(v["hour_usd"], 90.0);
        let b = BudgetAlert {
            budget_key: "team".into(),
            threshold: 0.5,
            spent_usd: 5.0,
            limit_usd: 10.0,
            period_start_ms: 1,
            period_end_ms: 2,
            at_ms: 3,
        };
        let v = serde_json::to_value(Payload::of(&Alert::Budget(b))).unwrap();
        assert!(v.get("kind").is_none(), "{v}");
        assert_eq!(v.as_object().map(|o| o.len()), Some(7));
    }
}
