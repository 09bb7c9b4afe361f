//! Group commit: a writer thread takes requests from many callers and writes them in arrival
//! order; a syncer thread makes everything written so far durable with one sync. A caller learns its result only after the sync
//! that covers its entry, and after a failed write or sync the writer fails everything after it:
//! nothing is acknowledged that could not be persisted, and no later entry overtakes a lost one.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::config::Durability;
use crate::engine::{Engine, Op};
use crate::error::StoreError;
use crate::records::LogEntry;

mod queue;
mod stats;

pub(crate) use queue::Queue;
pub use stats::{CommitStats, LatencyHistogram, LatencySnapshot};

/// Told of every new durable entry, once, in seq order per channel: the hook for fan-out. Runs
/// on the store's syncer thread, so it must not block (push to queues, never await clients).
pub trait CommitListener: Send + Sync + 'static {
    /// `entry` is durable and now visible to readers.
    fn on_commit(&self, entry: &Arc<LogEntry>);
}

/// The listener slot shared by the store and its channel logs.
pub(crate) type ListenerSlot = Arc<std::sync::OnceLock<Arc<dyn CommitListener>>>;

/// What the writer tells a channel's log about the requests it queued. Declared here and
/// implemented by the channel log, so that the writer never depends on the log.
pub(crate) trait Durable: Send + Sync {
    /// `entry` is durable: make it visible to readers (in seq order; the writer calls this
    /// before answering the appender). Returns the listener to tell once the appender is
    /// answered.
    fn on_durable(
        &self,
        entry: &Arc<LogEntry>,
        idem: Option<&(String, String)>,
    ) -> Option<Arc<dyn CommitListener>>;
    /// A queued append failed with `error`: answer the retries waiting on its key.
    fn on_failed(&self, idem: Option<&(String, String)>, error: &StoreError);
    /// A rewritten entry is durable: refresh what readers see of it.
    fn on_replaced(&self, entry: Arc<LogEntry>);
}

/// What to do once a request's ops are durable.
pub(crate) enum Completion {
    /// A new log entry: publish it to the channel's readers, then answer the appender.
    Append {
        log: Arc<dyn Durable>,
        entry: Arc<LogEntry>,
        idem_key: Option<(String, String)>,
        tx: oneshot::Sender<Result<Arc<LogEntry>, StoreError>>,
    },
    /// An entry rewritten in place (a tombstone): refresh the tail cache, then answer.
    Replace {
        log: Arc<dyn Durable>,
        entry: Arc<LogEntry>,
        tx: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Anything else: just answer.
    Done(oneshot::Sender<Result<(), StoreError>>),
}

/// One unit of work for the writer.
pub(crate) struct Request {
    pub(crate) ops: Vec<Op>,
    pub(crate) completion: Completion,
    /// Forces a sync even in relaxed mode (explicit `Store::sync`).
    pub(crate) force_sync: bool,
    /// Holds the caller's place in the bounded queue until the request is answered.
    pub(crate) _permit: Option<OwnedSemaphorePermit>,
    /// When it was queued: commit latency is measured from here to the answer.
    pub(crate) queued_at: Instant,
}

/// The state every caller checks before queueing: set once, when a write or sync fails. The
/// flag keeps the check on the append path to one atomic load; the lock is only taken to read
/// or set the cause.
#[derive(Debug, Default)]
pub(crate) struct FailState {
    failed: std::sync::atomic::AtomicBool,
    cause: Mutex<Option<String>>,
}

impl FailState {
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let cause = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        Err(StoreError::ReadOnly(cause.clone().unwrap_or_default()))
    }

    /// The error for a request refused because the store failed earlier.
    fn refusal(&self) -> StoreError {
        match self.check() {
            Err(e) => e,
            Ok(()) => StoreError::ReadOnly("write failed".into()),
        }
    }

    fn set(&self, cause: String) {
        let mut slot = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(cause);
        self.failed.store(true, Ordering::Release);
    }
}

pub(crate) struct Writer {
    /// `None` is the request to stop (from `Store::close`).
    pub(crate) rx: Receiver<Option<Request>>,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) failed: Arc<FailState>,
    pub(crate) stats: Arc<CommitStats>,
    pub(crate) durability: Durability,
    pub(crate) max_batch: usize,
    pub(crate) max_batch_delay: Duration,
    /// Held (shared) around every engine write; a backup of an engine without snapshots holds
    /// it exclusively to copy a still image.
    pub(crate) gate: Arc<std::sync::RwLock<()>>,
}

impl Writer {
    /// Runs until every sender is gone and the queue is drained; syncs before returning.
    ///
    /// Two threads form a pipeline: this one writes batches to the engine, a syncer makes them
    /// durable and answers the callers. While one sync runs, the next batches are written, so a
    /// cycle costs the longer of a write and a sync instead of their sum. The syncer answers
    /// batches in arrival order, so a channel's entries become visible in seq order.
    pub(crate) fn run(self) {
        let (synced_tx, synced_rx) = std::sync::mpsc::channel::<Vec<Request>>();
        let syncer = Syncer {
            rx: synced_rx,
            engine: self.engine.clone(),
            failed: self.failed.clone(),
            stats: self.stats.clone(),
            interval: match self.durability {
                Durability::Sync => None,
                Durability::RelaxedPeriodicSync { interval } => Some(interval),
            },
        };
        let handle = std::thread::Builder::new()
            .name("chorus-store-sync".into())
            .spawn(move || syncer.run());
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                self.failed
                    .set(format!("cannot start the sync thread: {e}"));
                for request in self.rx.iter().map_while(|r| r) {
                    fail_all(vec![request], self.failed.refusal());
                }
                return;
            }
        };
        let mut closing = false;
        while !closing {
            let Ok(Some(first)) = self.rx.recv() else {
                break;
            };
            let mut batch = vec![first];
            closing = self.fill(&mut batch);
            if self.failed.check().is_err() {
                // Never handed to the engine: nothing of it is stored.
                fail_all(batch, self.failed.refusal());
                continue;
            }
            // One engine batch for the whole group: atomic, and one journal write.
            let ops: Vec<Op> = batch
                .iter_mut()
                .flat_map(|r| std::mem::take(&mut r.ops))
                .collect();
            if let Err(e) = self.write(&ops) {
                let cause = format!("write failed: {e}");
                self.failed.set(cause.clone());
                // Part of the batch may have reached the journal before the failure.
                fail_all(batch, StoreError::OutcomeUnknown(cause));
                continue;
            }
            if let Err(unsent) = synced_tx.send(batch) {
                fail_all(
                    unsent.0,
                    StoreError::OutcomeUnknown("the sync thread stopped".into()),
                );
            }
        }
        drop(synced_tx);
        let _ = handle.join();
    }

    /// Takes more queued requests, up to the batch limit, waiting up to the batch delay.
    /// Returns true when the store is closing (nothing after this batch is taken).
    fn fill(&self, batch: &mut Vec<Request>) -> bool {
        let deadline = Instant::now() + self.max_batch_delay;
        while batch.len() < self.max_batch {
            let next = match self.rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    match self.rx.recv_timeout(left) {
                        Ok(r) => r,
                        Err(RecvTimeoutError::Timeout) => return false,
                        Err(RecvTimeoutError::Disconnected) => return true,
                    }
                }
            };
            match next {
                Some(r) => batch.push(r),
                None => return true,
            }
        }
        false
    }

    fn write(&self, ops: &[Op]) -> Result<(), crate::error::EngineError> {
        if ops.is_empty() {
            return Ok(());
        }
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let start = Instant::now();
        let result = self.engine.write(ops);
        let nanos = start.elapsed().as_nanos() as u64;
        self.stats.write_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.stats
            .max_write_nanos
            .fetch_max(nanos, Ordering::Relaxed);
        result
    }
}

/// The second stage: makes written batches durable and answers their callers.
struct Syncer {
    rx: Receiver<Vec<Request>>,
    engine: Arc<dyn Engine>,
    failed: Arc<FailState>,
    stats: Arc<CommitStats>,
    /// `Some` in relaxed mode: sync at most this often.
    interval: Option<Duration>,
}

impl Syncer {
    fn run(self) {
        let mut unsynced = false;
        let mut last_sync = Instant::now();
        loop {
            let first = match self.interval {
                Some(interval) if unsynced => {
                    let wait = interval.saturating_sub(last_sync.elapsed());
                    match self.rx.recv_timeout(wait) {
                        Ok(b) => b,
                        Err(RecvTimeoutError::Timeout) => {
                            // A failed periodic sync poisons the store; nothing waits on it.
                            self.sync(Vec::new());
                            unsynced = false;
                            last_sync = Instant::now();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match self.rx.recv() {
                    Ok(b) => b,
                    Err(_) => break,
                },
            };
            // Every batch written so far shares this sync.
            let mut ready = first;
            while let Ok(more) = self.rx.try_recv() {
                ready.extend(more);
            }
            // After a failed sync nothing later may be acknowledged, even if a new sync would
            // succeed: an earlier entry may be lost, and a later one must not outlive it.
            if self.failed.check().is_err() {
                // Written to the engine, never synced: a crash may or may not keep it.
                fail_all(
                    ready,
                    StoreError::OutcomeUnknown("written, but an earlier sync failed".into()),
                );
                continue;
            }
            let force = ready.iter().any(|r| r.force_sync);
            let due = self.interval.is_none_or(|i| last_sync.elapsed() >= i);
            let ready = if force || due {
                let Some(ready) = self.sync(ready) else {
                    continue;
                };
                unsynced = false;
                last_sync = Instant::now();
                ready
            } else {
                unsynced = true;
                ready
            };
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .requests
                .fetch_add(ready.len() as u64, Ordering::Relaxed);
            for request in ready {
                self.stats.latency.record(request.queued_at.elapsed());
                complete(request.completion);
            }
        }
        if unsynced {
            self.sync(Vec::new());
        }
    }

    /// Syncs; on failure poisons the store, fails `ready` and returns `None`.
    fn sync(&self, ready: Vec<Request>) -> Option<Vec<Request>> {
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let result = self.engine.sync();
        let nanos = start.elapsed().as_nanos() as u64;
        self.stats.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.stats
            .max_sync_nanos
            .fetch_max(nanos, Ordering::Relaxed);
        match result {
            Ok(()) => Some(ready),
            Err(e) => {
                let cause = format!("sync failed: {e}");
                self.failed.set(cause.clone());
                fail_all(ready, StoreError::OutcomeUnknown(cause));
                None
            }
        }
    }
}

/// Answers every request of `batch` with `error`: [`StoreError::ReadOnly`] for requests the
/// engine never saw (nothing changed), [`StoreError::OutcomeUnknown`] for requests whose write
/// or sync failed (they may be stored).
fn fail_all(batch: Vec<Request>, error: StoreError) {
    for request in batch {
        match request.completion {
            Completion::Append {
                log, idem_key, tx, ..
            } => {
                log.on_failed(idem_key.as_ref(), &error);
                let _ = tx.send(Err(error.clone()));
            }
            Completion::Replace { tx, .. } | Completion::Done(tx) => {
                let _ = tx.send(Err(error.clone()));
            }
        }
    }
}

fn complete(completion: Completion) {
    match completion {
        Completion::Append {
            log,
            entry,
            idem_key,
            tx,
        } => {
            let listener = log.on_durable(&entry, idem_key.as_ref());
            // Released before answering, so that an idle channel is idle once appends return.
            drop(log);
            // The appender may have given up waiting (cancelled); the entry is durable anyway.
            let _ = tx.send(Ok(entry.clone()));
            // The appender is woken before the subscribers' writers: a publisher subscribed to
            // its channel then usually finds its reply and its own copy queued together and
            // gets both in one write instead of two.
            if let Some(listener) = listener {
                listener.on_commit(&entry);
            }
        }
        Completion::Replace { log, entry, tx } => {
            log.on_replaced(entry);
            drop(log);
            let _ = tx.send(Ok(()));
        }
        Completion::Done(tx) => {
            let _ = tx.send(Ok(()));
        }
    }
}
