//! The decision log's check after start, on a background thread (see `src/store/deferred.rs`):
//! the server starts serving once arms, breakers, ledgers and the pending decisions are loaded and
//! every tree but the decision log matches the manifest; this thread then reads the decision log
//! a chunk at a time and compares it with the flush the data dir was checked against.
//!
//! On a mismatch (or a read that fails or panics) the store already refuses every write, so
//! nothing on disk is overwritten. Here, `switchyard.v1.Store` turns NOT_SERVING, the error is
//! logged naming the file and what to do, and the server stops as on SIGTERM (drain, then exit),
//! returning that error, so the process exits non-zero with the same message a refused start
//! prints. The documented choice: stop, rather than serve on with writes refused.
//!
//! Also here: [`Phase`], which logs each phase of a start with its duration.
//!
//! Restart and replicas: nothing is kept; every start of every replica checks its own data dir.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{Step, StoreError, StoreSlot};

/// Consecutive failed reads of an open store before the check gives up (100 ms apart).
const MAX_READ_ERRORS: u32 = 50;

/// The check's failure, once it failed.
pub type Failure = Arc<Mutex<Option<StoreError>>>;

/// Starts the check of `store`'s decision log; the receiver gets the error if it fails.
pub fn spawn(store: Arc<StoreSlot>) -> tokio::sync::oneshot::Receiver<StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("store-verify".into())
        .spawn(move || {
            if let Err(e) = run(&store) {
                store.fail_check(&e);
                let _ = tx.send(e);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the decision log's check after start");
    }
    rx
}

/// Steps through the decision log. Each step holds the lock commits take, so the thread pauses
/// as long as each step took: the writer gets at least half of the time.
fn run(store: &StoreSlot) -> Result<(), StoreError> {
    let mut errors = 0;
    loop {
        let started = Instant::now();
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.with(|s| s.verify_step())
        }));
        match step {
            Ok(Ok(Step::More)) => errors = 0,
            Ok(Ok(Step::Done { .. })) => return Ok(()),
            Ok(Err(e @ StoreError::Corrupt { .. })) => return Err(e),
            // Closed after a write failure: its reopen verifies in full, so this only waits.
            Ok(Err(_)) if store.is_closed() => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Ok(Err(e)) => {
                errors += 1;
                if errors >= MAX_READ_ERRORS {
                    return Err(e);
                }
                tracing::warn!(error = %e, "the decision log's check after start: retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "sled panicked".into());
                return Err(store.corrupt(format!(
                    "the decision log cannot be read (found by the check after start): {what}"
                )));
            }
        }
        std::thread::sleep(started.elapsed().max(Duration::from_millis(1)));
    }
}

/// Resolves when `shutdown` does or when the check `failed` (then sets `switchyard.v1.Store`
/// NOT_SERVING, logs the error and keeps it in `failure`).
pub async fn shutdown_or_failure(
    shutdown: impl Future<Output = ()> + Send,
    failed: Option<tokio::sync::oneshot::Receiver<StoreError>>,
    health: tonic_health::server::HealthReporter,
    failure: Failure,
) {
    let failed = async move {
        match failed {
            Some(rx) => match rx.await {
                Ok(e) => e,
                // The check passed (its sender dropped): wait for the shutdown alone.
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = shutdown => {}
        e = failed => {
            health
                .set_service_status(super::STORE_HEALTH_SERVICE, tonic_health::ServingStatus::NotServing)
                .await;
            tracing::error!(error = %e, "the data dir failed its check after start: writes refused; stopping");
            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
    }
}

/// The check's failure, if it failed (taken: the server returns it as its error).
pub fn take_failure(failure: &Failure) -> Result<(), StoreError> {
    match failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Times the phases of a start, each logged with its duration ("start: ...").
pub struct Phase(Instant);

impl Phase {
    pub fn start() -> Phase {
        Phase(Instant::now())
    }

    /// Logs `what` with the time since the last phase ended, and starts the next.
    pub fn done(&mut self, what: &str) {
        let ms = self.0.elapsed().as_millis() as u64;
        tracing::info!(ms, "start: {what}");
        self.0 = Instant::now();
    }
}
