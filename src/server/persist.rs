//! The data dir's single writer: a thread that persists the engine's changes off the request path.
//!
//! Handlers change the engine under its lock and leave; the engine tracks what changed. The writer
//! wakes every `flush_interval_ms`, or at once when a caller must wait for durability, and runs a
//! *cycle*: under the engine lock it takes the changes and the new events and encodes them; outside
//! it, it applies them to sled and flushes. Under load one cycle covers many requests, so a class's
//! arms touched by a thousand requests are encoded and written once.
//!
//! Durability waits work by generations: a caller takes a *ticket* (bumps `requested`) after its
//! engine call, wakes the writer and waits until a finished cycle covers its number. The writer
//! reads `requested` before it takes the lock, so every change made before a caller's bump is in
//! the cycle that satisfies it; concurrent callers share one cycle and one flush.
//!
//! Failures and recovery. A cycle that cannot write keeps everything it had: change sets not yet
//! encoded, batches not yet committed, and batches committed but not yet flushed (sled loses
//! those when it is reopened). The writer then retries with exponential backoff (up to
//! [`MAX_RETRY_DELAY`]); each retry first reopens the data dir ([`StoreSlot::reopen`]), because
//! sled keeps its first I/O error for good, then commits the kept batches again in order and
//! flushes. While it fails, `switchyard.v1.Store` health is NOT_SERVING and sync Feedbacks are
//! answered UNAVAILABLE; their changes stay applied in memory and are persisted by the first
//! cycle that succeeds (the documented choice: applied, then persisted), so after recovery memory
//! and disk agree. A writer thread that dies fails every waiting and later caller with
//! UNAVAILABLE. Nothing here is persisted itself: a restart reads the data dir as last flushed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tonic::Status;

use crate::engine::Changes as EngineChanges;
use crate::store::{Batch, StoreError, StoreSlot};

/// How often the writer writes what changed (flushes follow `storage.flush_interval_ms`).
pub const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// Logged events the writer may fall behind by before a Route waits for its next cycle.
///
/// Route does not wait for the disk, so when requests arrive faster than the writer persists them
/// (closed-loop load on two shared cores: ~14 000 decisions/s against writer cycles of 0.5-1.4 s)
/// each cycle takes a bigger batch, takes longer, and the next is bigger still; every queued
/// decision holds its record, so resident memory grew by gigabytes within minutes and kept growing
/// after the load stopped while the writer caught up (docs/performance-history.md: the soak).
/// Past this backlog (about two seconds of writes at the measured rate) Route waits for the
/// writer's next cycle, so throughput follows what the disk takes and memory stays bounded.
pub const MAX_BACKLOG: usize = 20_000;

/// What a finished cycle covered.
#[derive(Debug, Clone, Default)]
struct Cycle {
    /// Cycles finished so far.
    seq: u64,
    /// Every request numbered up to this is persisted (or failed with `error`).
    upto: u64,
    /// Every request numbered up to this is committed (and flushed): what a failed cycle leaves
    /// behind is not, until a later cycle succeeds.
    committed: u64,
    /// The cycle's error, if its write or flush failed.
    error: Option<Arc<str>>,
}

enum Msg {
    Wake,
    Stop,
}

/// Takes the engine's change set (under the engine lock, which it releases before returning).
pub type TakeChanges = Box<dyn Fn() -> EngineChanges + Send>;

/// How long one successful cycle took: the whole cycle (taking the changes, encoding, committing,
/// flushing), the taking of the changes alone (waiting for the engine lock and holding it: every
/// Route and Feedback waits while the writer holds it), and the flush alone when it flushed. A
/// `sync` Feedback waits for up to two cycles.
#[derive(Debug, Clone, Copy)]
pub struct CycleTimes {
    pub total: Duration,
    pub take: Duration,
    pub flush: Option<Duration>,
}

/// What the writer tells the service about its cycles (the metrics), from its own thread.
pub trait Observe: Send {
    /// A cycle wrote (and, if asked, flushed) everything it had.
    fn cycle(&self, times: &CycleTimes);
    /// A cycle failed; it is retried.
    fn failed(&self, error: &StoreError);
}

/// Nothing observes the cycles.
impl Observe for () {
    fn cycle(&self, _: &CycleTimes) {}
    fn failed(&self, _: &StoreError) {}
}

/// Handle to the writer thread. The thread owns the store and a way to take the engine's changes;
/// it knows nothing of the service, so data flows one way: engine -> changes -> writer -> store.
pub struct Writer {
    requested: Arc<AtomicU64>,
    tx: mpsc::Sender<Msg>,
    done: tokio::sync::watch::Receiver<Cycle>,
    healthy: tokio::sync::watch::Receiver<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the thread: it writes what `take` hands out every [`WRITE_INTERVAL`] (at once when
    /// woken), flushes at least every `flush_every`, and tells `observe` how each cycle went.
    pub fn start(
        store: Arc<StoreSlot>,
        take: TakeChanges,
        flush_every: Duration,
        observe: Box<dyn Observe>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = tokio::sync::watch::channel(Cycle::default());
        let (healthy_tx, healthy) = tokio::sync::watch::channel(true);
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
                    &healthy_tx,
                    flush_every,
                    &*observe,
                );
                // Dropping done_tx here (also when run panics) fails every waiting caller with
                // UNAVAILABLE rather than leaving it hanging.
            })?;
        Ok(Writer {
            requested,
            tx,
            done,
            healthy,
            thread: Mutex::new(Some(handle)),
        })
    }

    /// Waits until every change made before this call is written and flushed.
    pub async fn wait(&self) -> Result<(), Status> {
        let target = self.ticket()?;
        let mut rx = self.done.clone();
        let cycle = rx
            .wait_for(|c| c.upto >= target)
            .await
            .map_err(|_| stopped())?
            .clone();
        match cycle.error {
            None => Ok(()),
            Some(e) => Err(Status::unavailable(format!("cannot persist state: {e}"))),
        }
    }

    /// Waits until the writer finishes a cycle started after this call (no flush asked; its
    /// outcome is not the caller's: Route decides from memory whatever the disk does).
    pub async fn next_cycle(&self) {
        let mut rx = self.done.clone();
        let start = rx.borrow().seq;
        if self.tx.send(Msg::Wake).is_err() {
            return;
        }
        // A cycle already running may have taken its changes before this call: wait for two.
        let _ = rx.wait_for(|c| c.seq >= start + 2).await;
    }

    /// Numbers the changes made so far and wakes the writer: a cycle covering the number writes
    /// them all.
    pub fn ticket(&self) -> Result<u64, Status> {
        let target = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.tx.send(Msg::Wake).map_err(|_| stopped())?;
        Ok(target)
    }

    /// Resolves to true once the changes numbered up to `ticket` are committed and flushed, or
    /// to false when the writer stops first.
    pub fn committed(&self, ticket: u64) -> impl std::future::Future<Output = bool> + Send {
        let mut rx = self.done.clone();
        async move { rx.wait_for(|c| c.committed >= ticket).await.is_ok() }
    }

    /// Whether the last cycle reached the disk (false while failed cycles are being retried).
    pub fn healthy(&self) -> tokio::sync::watch::Receiver<bool> {
        self.healthy.clone()
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

fn stopped() -> Status {
    Status::unavailable("storage writer stopped; the data dir is no longer written")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the writer holds that is not yet on disk, oldest first (see the module doc).
#[derive(Default)]
pub struct Backlog {
    /// Change sets taken from the engine but not yet encoded (encoding reads the store).
    unprepared: VecDeque<EngineChanges>,
    /// Encoded but not yet committed.
    queue: VecDeque<Batch>,
    /// Committed but not yet flushed: committed again after a reopen.
    unflushed: Vec<Batch>,
    /// The store was reopened and the log's counters need a recount.
    reopened: bool,
}

impl Backlog {
    /// After a reopen: what was committed but not flushed goes first in the queue again.
    fn requeue(&mut self) {
        for b in self.unflushed.drain(..).rev() {
            self.queue.push_front(b);
        }
        // What they read at encoding may not be on the reopened disk.
        for b in &mut self.queue {
            b.distrust();
        }
        self.reopened = true;
    }
}

/// One writer cycle: take the engine's changes (copies, under its lock); then, without the lock,
/// commit what a failed cycle left, in order, then encode and commit each change set (each is
/// encoded against the store as the one before left it: a Feedback's record is read back from
/// it), and flush when `flush`.
pub fn cycle(
    slot: &StoreSlot,
    take: &TakeChanges,
    backlog: &mut Backlog,
    flush: bool,
) -> Result<CycleTimes, StoreError> {
    let started = Instant::now();
    let changes = Some(take()).filter(|c| !c.is_empty());
    let locked = started.elapsed();
    if let Some(c) = changes {
        backlog.unprepared.push_back(c);
    }
    slot.with(|store| {
        while let Some(batch) = backlog.queue.pop_front() {
            if let Err(e) = store.commit(&batch) {
                backlog.queue.push_front(batch);
                return Err(e);
            }
            backlog.unflushed.push(batch);
        }
        while let Some(c) = backlog.unprepared.front() {
            match store.prepare(c) {
                Ok(batch) => {
                    backlog.unprepared.pop_front();
                    if let Err(e) = store.commit(&batch) {
                        backlog.queue.push_back(batch);
                        return Err(e);
                    }
                    backlog.unflushed.push(batch);
                }
                // Freshly reopened and still not encodable: the change set itself is bad (a
                // value refused before persisting); keeping it would block every later write.
                Err(e) if backlog.reopened => {
                    tracing::error!(error = %e, "dropping a change set that cannot be encoded");
                    backlog.unprepared.pop_front();
                }
                Err(e) => return Err(e),
            }
        }
        let committed = started.elapsed();
        let mut flushed = None;
        if flush {
            let flush_started = Instant::now();
            store.flush()?;
            flushed = Some(flush_started.elapsed());
            backlog.unflushed.clear();
            if backlog.reopened {
                store.recount()?;
                store.flush()?;
                backlog.reopened = false;
            }
        }
        tracing::debug!(
            locked_us = locked.as_micros() as u64,
            committed_us = committed.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "writer cycle"
        );
        Ok(CycleTimes {
            total: started.elapsed(),
            take: locked,
            flush: flushed,
        })
    })
}

/// Longest wait between retries of a failing cycle.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
fn run(
    store: &StoreSlot,
    take: &TakeChanges,
    rx: &mpsc::Receiver<Msg>,
    requested: &AtomicU64,
    done_tx: &tokio::sync::watch::Sender<Cycle>,
    healthy: &tokio::sync::watch::Sender<bool>,
    flush_every: Duration,
    observe: &dyn Observe,
) {
    let mut last_flush = Instant::now();
    let (mut done, mut committed) = (0, 0);
    let mut seq = 0;
    let mut backlog = Backlog::default();
    // While cycles fail: the delay before the next retry (doubling up to MAX_RETRY_DELAY).
    let mut retry: Option<(Instant, Duration)> = None;
    loop {
        let wait = retry.map_or(WRITE_INTERVAL, |(at, _)| {
            at.saturating_duration_since(Instant::now())
                .max(WRITE_INTERVAL)
        });
        let mut stop = match rx.recv_timeout(wait) {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => true,
            Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => false,
        };
        while let Ok(m) = rx.try_recv() {
            stop |= matches!(m, Msg::Stop);
        }
        let upto = requested.load(Ordering::SeqCst);
        if let Some((at, _)) = retry {
            if Instant::now() < at && !stop {
                // Backing off: callers that asked meanwhile are told at once.
                if upto > done {
                    done = upto;
                    let error = Some(Arc::from("the data dir cannot be written; retrying"));
                    seq += 1;
                    done_tx.send_replace(Cycle {
                        seq,
                        upto,
                        committed,
                        error,
                    });
                }
                continue;
            }
        }
        let flush = stop || upto > done || last_flush.elapsed() >= flush_every || retry.is_some();
        if flush {
            last_flush = Instant::now();
        }
        let result = match retry {
            // sled keeps its first I/O error: retry on a freshly opened data dir.
            Some(_) => store.reopen().map(|()| backlog.requeue()),
            None => Ok(()),
        };
        let error = match result.and_then(|()| cycle(store, take, &mut backlog, flush)) {
            Ok(times) => {
                observe.cycle(&times);
                committed = upto;
                if retry.take().is_some() {
                    tracing::info!("storage writer recovered: the data dir is written again");
                    healthy.send_replace(true);
                }
                None
            }
            Err(e) => {
                let delay = retry.map_or(WRITE_INTERVAL * 2, |(_, d)| (d * 2).min(MAX_RETRY_DELAY));
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, queued = backlog.queue.len() + backlog.unflushed.len(), "cannot persist engine state");
                observe.failed(&e);
                if retry.is_none() {
                    healthy.send_replace(false);
                }
                retry = Some((Instant::now() + delay, delay));
                Some(Arc::from(e.to_string()))
            }
        };
        done = upto;
        seq += 1;
        done_tx.send_replace(Cycle {
            seq,
            upto,
            committed,
            error,
        });
        if stop {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::sync::atomic::AtomicBool;

    /// A writer whose thread dies (here: taking the changes panics) fails a waiting caller and
    /// every later one with UNAVAILABLE instead of leaving them hanging.
    #[tokio::test]
    async fn a_dead_writer_fails_waiting_callers_with_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let slot = Arc::new(StoreSlot::new(Store::open_with(dir.path(), 8).unwrap(), 8));
        let die = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&die);
        let take: TakeChanges = Box::new(move || {
            assert!(!flag.load(Ordering::SeqCst), "writer thread dies here");
            EngineChanges::default()
        });
        let writer = Writer::start(slot, take, Duration::from_millis(5), Box::new(())).unwrap();
        writer.wait().await.unwrap();
        die.store(true, Ordering::SeqCst);
        let err = writer.wait().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(err.message().contains("storage writer stopped"), "{err:?}");
        let err = writer.wait().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(!writer.committed(u64::MAX).await);
    }
}
