//! What the indexer thread and the index's users share: the pending work (dirty channels,
//! commands, stop), the wake-up, the serving generation and the counters.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use chorus_protocol::ids::{ChannelId, UserId};
use tokio::sync::oneshot;

use crate::error::SearchError;
use crate::status::{Building, Counters};

/// Commands (erasures, syncs, rebuilds) waiting at most; more are refused as busy.
const MAX_COMMANDS: usize = 64;

pub(crate) enum Command {
    /// Remove every document the user wrote, committed before answering (erasure).
    ForgetAuthor(UserId, oneshot::Sender<Result<(), SearchError>>),
    /// Index everything notified so far and commit before answering.
    Sync(oneshot::Sender<Result<(), SearchError>>),
    /// Start building a new generation from the log.
    Reindex(oneshot::Sender<Result<u64, SearchError>>),
}

#[derive(Default)]
pub(crate) struct Pending {
    /// Channels with entries to index, and since when.
    pub(crate) dirty: HashMap<ChannelId, Instant>,
    /// Look at every channel of the store (after retention removed entries).
    pub(crate) rescan: bool,
    pub(crate) commands: VecDeque<Command>,
    pub(crate) stop: bool,
}

/// What the indexer thread and the index's users share.
pub(crate) struct Shared {
    pub(crate) pending: Mutex<Pending>,
    pub(crate) wake: Condvar,
    /// The generation that serves queries.
    pub(crate) serving: RwLock<Arc<crate::query::Serving>>,
    pub(crate) counters: Counters,
    /// The rebuild in progress.
    pub(crate) building: Mutex<Option<Building>>,
    /// Why the indexer stopped, once it has.
    pub(crate) failed: Mutex<Option<String>>,
    /// The oldest notification not yet searchable, as ms since `epoch`; `u64::MAX`: none.
    pub(crate) oldest_inflight_ms: AtomicU64,
    pub(crate) epoch: Instant,
}

impl Shared {
    /// The pending work (a poisoned lock still holds valid state: every change is one field).
    pub(crate) fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the pending work and wakes the indexer.
    pub(crate) fn signal(&self, change: impl FnOnce(&mut Pending)) {
        change(&mut self.pending());
        self.wake.notify_one();
    }

    /// The generation serving queries now.
    pub(crate) fn serving(&self) -> Arc<crate::query::Serving> {
        self.serving
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn notify(&self, channel: &str) {
        self.counters.notified.fetch_add(1, Ordering::Relaxed);
        let mut p = self.pending();
        if p.dirty.contains_key(channel) {
            return;
        }
        // Ids from the store are valid; anything else has nothing to index.
        let Ok(id) = ChannelId::new(channel) else {
            return;
        };
        let first = p.dirty.is_empty();
        p.dirty.insert(id, Instant::now());
        drop(p);
        // One wake-up per batch: the indexer takes every dirty channel when it wakes.
        if first {
            self.wake.notify_one();
        }
    }

    pub(crate) fn command(&self, c: Command) -> Result<(), SearchError> {
        if let Some(why) = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(SearchError::Stopped(why));
        }
        let mut p = self.pending();
        if p.stop {
            return Err(SearchError::Stopped("shutting down".into()));
        }
        if p.commands.len() >= MAX_COMMANDS {
            return Err(SearchError::Stopped(
                "too many index commands waiting".into(),
            ));
        }
        p.commands.push_back(c);
        drop(p);
        self.wake.notify_one();
        Ok(())
    }

    pub(crate) fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}
