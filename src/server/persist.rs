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
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use tonic::Status;

use super::Shared;

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

/// Handle to the writer thread.
pub struct Writer {
    requested: AtomicU64,
    tx: mpsc::Sender<Msg>,
    done: tokio::sync::watch::Sender<Cycle>,
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    flush_every: Duration,
}

impl Writer {
    /// A writer that flushes at least every `flush_every` once started.
    pub fn new(flush_every: Duration) -> Writer {
        let (tx, rx) = mpsc::channel();
        Writer {
            requested: AtomicU64::new(0),
            tx,
            done: tokio::sync::watch::Sender::new(Cycle::default()),
            rx: Mutex::new(Some(rx)),
            thread: Mutex::new(None),
            flush_every,
        }
    }

    /// Starts the thread over `shared` (which owns this writer).
    pub fn start(shared: &Arc<Shared>) -> std::io::Result<()> {
        let Some(writer) = shared.writer.as_ref() else {
            return Ok(());
        };
        let Some(rx) = lock(&writer.rx).take() else {
            return Ok(()); // already started
        };
        let weak: Weak<Shared> = Arc::downgrade(shared);
        let flush_every = writer.flush_every;
        let handle = std::thread::Builder::new()
            .name("switchyard-writer".into())
            .spawn(move || run(weak, rx, flush_every))?;
        *lock(&writer.thread) = Some(handle);
        Ok(())
    }

    /// Waits until every change made before this call is written and flushed.
    pub async fn wait(&self) -> Result<(), Status> {
        let target = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.done.subscribe();
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

fn run(weak: Weak<Shared>, rx: mpsc::Receiver<Msg>, flush_every: Duration) {
    let mut last_flush = std::time::Instant::now();
    let mut done = 0;
    loop {
        let mut stop = match rx.recv_timeout(WRITE_INTERVAL) {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => true,
            Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => false,
        };
        while let Ok(m) = rx.try_recv() {
            stop |= matches!(m, Msg::Stop);
        }
        let Some(shared) = weak.upgrade() else { break };
        let Some(writer) = shared.writer.as_ref() else {
            break;
        };
        let upto = writer.requested.load(Ordering::SeqCst);
        let flush = stop || upto > done || last_flush.elapsed() >= flush_every;
        if flush {
            last_flush = std::time::Instant::now();
        }
        let error = match shared.persist_cycle(flush) {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot persist engine state");
                shared.metrics.store_error();
                Some(Arc::from(e.to_string()))
            }
        };
        done = upto;
        writer.done.send_replace(Cycle { upto, error });
        if stop {
            break;
        }
    }
}
