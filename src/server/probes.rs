//! Active health probes: one task per configured provider polls its URL with reqwest at an interval;
//! a failure (connection error, timeout or a non-2xx status) feeds that provider's models' breakers,
//! a success lets a half-open breaker count a probe success.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{now_ms, Shared};
use crate::config::ProbeConfig;

/// Starts one polling task per probe; the caller aborts them at shutdown.
pub fn spawn(shared: &Arc<Shared>, probes: Vec<ProbeConfig>) -> Vec<JoinHandle<()>> {
    probes
        .into_iter()
        .map(|probe| {
            let shared = Arc::clone(shared);
            tokio::spawn(async move { run(shared, probe).await })
        })
        .collect()
}

async fn run(shared: Arc<Shared>, probe: ProbeConfig) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(probe.timeout_ms))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(provider = %probe.provider, error = %e, "health probe disabled: no HTTP client");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(probe.interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = match client.get(&probe.url).send().await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                debug!(provider = %probe.provider, status = %r.status(), "health probe failed");
                false
            }
            Err(e) => {
                debug!(provider = %probe.provider, error = %e, "health probe failed");
                false
            }
        };
        let provider = probe.provider.clone();
        shared.with_engine(move |engine, _| engine.record_probe(&provider, ok, now_ms()));
    }
}
