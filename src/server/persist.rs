//! The data dir's single writer: a thread that persists the engine's changes off the request path.
//!
//! Handlers change the engine under its lock and leave; the engine tracks what changed. The writer
//! wakes every `flush_interval_ms`, or at once when a caller must wait for durability, and runs a
//! *cycle*: under the engine lock it takes the changes and the new events and encodes them; outside
//! it, it applies them to sled and flushes. Under load one cycle covers many requests, so a class's
//! arms touched by a thousand requests are encoded and written once.
//!
//! Durability waits work by generations: a caller bumps `requested` after its engine call, wakes
//! the writer and waits until a finished cycle covers its number. The writer reads `requested`
//! before it takes the lock, so every change made before a caller's bump is in the cycle that
//! satisfies it; concurrent callers share one cycle and one flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tonic::Status;

use crate::engine::Changes;
use crate::store::{Store, StoreError};

/// How often the writer writes what changed (flushes follow `storage.flush_interval_ms`).
pub const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// What a finished cycle covered.
#[derive(Debug, Clone, Default)]
struct Cycle {
    /// Every request numbered up to this is persisted (or failed with `error`).
    upto: u64,
    /// The cycle's error, if its write or flush failed.
    error: Option<Arc<str>>,
}

enum Msg {
    Wake,
    Stop,
}

/// Takes the engine's change set (under the engine lock, which it releases before returning).
pub type TakeChanges = Box<dyn Fn() -> Changes + Send>;

/// Handle to the writer thread. The thread owns the store and a way to take the engine's changes;
/// it knows nothing of the service, so data flows one way: engine -> changes -> writer -> store.
pub struct Writer {
    requested: Arc<AtomicU64>,
    tx: mpsc::Sender<Msg>,
    done: tokio::sync::watch::Receiver<Cycle>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the thread: it writes what `take` hands out every [`WRITE_INTERVAL`] (at once when
    /// woken), flushes at least every `flush_every`, and reports failed cycles to `on_error`.
    pub fn start(
        store: Arc<Store>,
        take: TakeChanges,
        flush_every: Duration,
        on_error: Box<dyn Fn(&StoreError) + Send>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = tokio::sync::watch::channel(Cycle::default());
        let requested = Arc::new(AtomicU64::new(0));
        let thread_requested = Arc::clone(&requested);
        let handle = std::thread::Builder::new()
            .name("switchyard-writer".into())
            .spawn(move || {
                run(
                    &store,
                    &take,
                    &rx,
                    &thread_requested,
                    &done_tx,
                    flush_every,
                    &*on_error,
                )
            })?;
        Ok(Writer {
            requested,
            tx,
            done,
            thread: Mutex::new(Some(handle)),
        })
    }

    /// Waits until every change made before this call is written and flushed.
    pub async fn wait(&self) -> Result<(), Status> {
        let target = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.done.clone();
        if self.tx.send(Msg::Wake).is_err() {
            return Err(Status::unavailable("storage writer stopped"));
        }
        let cycle = rx
            .wait_for(|c| c.upto >= target)
            .await
            .map_err(|_| Status::unavailable("storage writer stopped"))?
            .clone();
        match cycle.error {
            None => Ok(()),
            Some(e) => Err(Status::unavailable(format!("cannot persist state: {e}"))),
        }
    }

    /// Runs a last cycle and stops the thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(handle) = lock(&self.thread).take() {
            if handle.join().is_err() {
                tracing::error!("storage writer thread panicked");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One writer cycle: take the engine's changes (copies, under its lock); then, without the lock,
/// encode and write them, and flush when `flush`.
pub fn cycle(store: &Store, take: &TakeChanges, flush: bool) -> Result<(), StoreError> {
    let started = Instant::now();
    let changes = Some(take()).filter(|c| !c.is_empty());
    let locked = started.elapsed();
    let batch = changes.map(|c| store.prepare(c)).transpose()?;
    let encoded = started.elapsed();
    if let Some(batch) = batch {
        store.commit(batch)?;
    }
    if flush {
        store.flush()?;
    }
    tracing::debug!(
        locked_us = locked.as_micros() as u64,
        encoded_us = encoded.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "writer cycle"
    );
    Ok(())
}

fn run(
    store: &Store,
    take: &TakeChanges,
    rx: &mpsc::Receiver<Msg>,
    requested: &AtomicU64,
    done_tx: &tokio::sync::watch::Sender<Cycle>,
    flush_every: Duration,
    on_error: &dyn Fn(&StoreError),
) {
    let mut last_flush = Instant::now();
    let mut done = 0;
    loop {
        let mut stop = match rx.recv_timeout(WRITE_INTERVAL) {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => true,
            Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => false,
        };
        while let Ok(m) = rx.try_recv() {
            stop |= matches!(m, Msg::Stop);
        }
        let upto = requested.load(Ordering::SeqCst);
        let flush = stop || upto > done || last_flush.elapsed() >= flush_every;
        if flush {
            last_flush = Instant::now();
        }
        let error = match cycle(store, take, flush) {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot persist engine state");
                on_error(&e);
                Some(Arc::from(e.to_string()))
            }
        };
        done = upto;
        done_tx.send_replace(Cycle { upto, error });
        if stop {
            break;
        }
    }
}
