//! Active health probes: one task per configured provider polls its URL with reqwest at an interval;
//! a failure (connection error, timeout or a non-2xx status) feeds that provider's models' breakers,
//! a success lets a half-open breaker count a probe success.
//!
//! A reload that changes `[health_probes]` stops the running tasks and starts the new set
//! ([`Running::replace`]); one that leaves it alone keeps them (and their interval phase). The
//! tasks hold no state of their own beyond the HTTP client: a restart starts them afresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{now_ms, Shared};
use crate::config::ProbeConfig;

/// The probe tasks running and the config they were started from.
#[derive(Default)]
pub struct Running {
    config: BTreeMap<String, ProbeConfig>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts the probes of `config`.
    pub fn start(shared: &Arc<Shared>, config: BTreeMap<String, ProbeConfig>) -> Running {
        let tasks = spawn(shared, config.values().cloned().collect());
        Running { config, tasks }
    }

    /// Restarts the tasks when `config` differs from the running one; returns whether it did.
    /// Must run inside the tokio runtime (a blocking-pool thread is fine).
    pub fn replace(&mut self, shared: &Arc<Shared>, config: BTreeMap<String, ProbeConfig>) -> bool {
        if config == self.config {
            return false;
        }
        self.stop();
        *self = Running::start(shared, config);
        true
    }

    /// Aborts every task.
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

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
