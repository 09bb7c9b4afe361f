//! One channel's in-memory log: its sequencing state, the appends on their way to disk, and
//! the tail cache of its newest durable entries. The writer tells it what became durable
//! through [`Durable`].

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chorus_protocol::ids::{ChannelId, Epoch, Seq};
use tokio::sync::oneshot;

use super::LogPosition;
use super::derived::Overlay;
use crate::commit::{CommitListener, Durable, ListenerSlot};
use crate::engine::{Direction, Engine};
use crate::error::{ReadError, StoreError};
use crate::idem_filter::IdemFilter;
use crate::keys;
use crate::records::{LogEntry, decode_entry};

/// A channel keeps at least this many cached entries even when the global budget is spent.
const MIN_TAIL: usize = 8;

pub(super) type Waiter = oneshot::Sender<Result<Arc<LogEntry>, StoreError>>;

/// An append on its way to disk; retries with its key wait here for its outcome.
pub(super) struct Pending {
    pub(super) waiters: Vec<Waiter>,
}

pub(super) struct LogState {
    pub(super) epoch: Epoch,
    /// The next seq to assign.
    pub(super) next_seq: Seq,
    /// The ordinal of the newest assigned entry.
    pub(super) assigned_ordinal: u64,
    pub(super) durable_head: Seq,
    pub(super) durable_ordinal: u64,
    pub(super) first_available: Seq,
    /// Durable entries, contiguous and ending at `durable_head` when not empty.
    pub(super) tail: VecDeque<Arc<LogEntry>>,
    pub(super) tail_bytes: usize,
    /// Appends queued but not yet durable, by (author, client_msg_id).
    pub(super) pending: HashMap<(String, String), Pending>,
    /// Made at the first append with an idempotency key (channels only read need none).
    pub(super) idem_filter: Option<IdemFilter>,
    /// Derived records set by entries not durable yet.
    pub(super) overlay: Overlay,
    /// Repeats of a derived action (the same reaction again) whose first entry is not durable
    /// yet, waiting for it.
    pub(super) seq_waiters: HashMap<Seq, Vec<Waiter>>,
}

/// The in-memory side of one channel's log.
pub(crate) struct ChannelLog {
    pub(super) id: ChannelId,
    /// Where its entries are keyed.
    pub(crate) keys: keys::LogKeys,
    pub(super) state: Mutex<LogState>,
    pub(super) listener: ListenerSlot,
    pub(super) cache_bytes: Arc<AtomicUsize>,
    pub(super) tail_entries: usize,
    pub(super) tail_bytes: usize,
    pub(super) total_bytes: usize,
}

impl ChannelLog {
    pub(super) fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn position(state: &LogState) -> LogPosition {
        LogPosition {
            epoch: state.epoch,
            head: state.durable_head,
            first_available: state.first_available,
            message_count: state.durable_ordinal,
        }
    }

    fn publish(&self, entry: &Arc<LogEntry>, idem: Option<&(String, String)>) {
        let mut state = self.lock();
        state.durable_head = entry.seq;
        state.durable_ordinal = entry.ordinal;
        if state
            .tail
            .back()
            .is_some_and(|last| last.seq.next() != entry.seq)
        {
            self.clear_tail(&mut state);
        }
        state.tail.push_back(entry.clone());
        let bytes = entry.approx_bytes();
        state.tail_bytes += bytes;
        let total = self.cache_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let keep = if total > self.total_bytes {
            MIN_TAIL
        } else {
            self.tail_entries
        };
        while state.tail.len() > keep
            || (state.tail.len() > 1 && state.tail_bytes > self.tail_bytes)
        {
            self.pop_tail(&mut state);
        }
        state.overlay.settle(entry.seq);
        if !state.seq_waiters.is_empty()
            && let Some(waiters) = state.seq_waiters.remove(&entry.seq)
        {
            for waiter in waiters {
                let _ = waiter.send(Ok(entry.clone()));
            }
        }
        if let Some(key) = idem
            && let Some(pending) = state.pending.remove(key)
        {
            for waiter in pending.waiters {
                let _ = waiter.send(Ok(entry.clone()));
            }
        }
    }

    /// Called by the writer when a queued append failed.
    fn fail_pending(&self, idem: Option<&(String, String)>, error: &StoreError) {
        let mut state = self.lock();
        if let Some(key) = idem
            && let Some(pending) = state.pending.remove(key)
        {
            for waiter in pending.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        // After a failed write nothing later becomes durable: every wait for a seq ends here,
        // and the overlay's values, which may never reach the engine, go (a later derivation
        // reads the engine, and its append is refused by the failed store).
        state.overlay = Overlay::default();
        for (_, waiters) in state.seq_waiters.drain() {
            for waiter in waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }

    /// Called by the writer once a rewritten entry is durable.
    fn replaced(&self, entry: Arc<LogEntry>) {
        let mut state = self.lock();
        let Some(front) = state.tail.front().map(|e| e.seq) else {
            return;
        };
        if entry.seq >= front
            && let Some(slot) = state.tail.get_mut((entry.seq.get() - front.get()) as usize)
        {
            let old = slot.approx_bytes();
            let new = entry.approx_bytes();
            *slot = entry;
            state.tail_bytes = state.tail_bytes + new - old;
            self.cache_bytes.fetch_add(new, Ordering::Relaxed);
            self.cache_bytes.fetch_sub(old, Ordering::Relaxed);
        }
    }

    fn pop_tail(&self, state: &mut LogState) {
        if let Some(old) = state.tail.pop_front() {
            let bytes = old.approx_bytes();
            state.tail_bytes -= bytes;
            self.cache_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    fn clear_tail(&self, state: &mut LogState) {
        self.cache_bytes
            .fetch_sub(state.tail_bytes, Ordering::Relaxed);
        state.tail.clear();
        state.tail_bytes = 0;
    }

    /// Cached entries with seq in `lo..=hi`, if the cache covers the whole range.
    pub(super) fn cached(state: &LogState, lo: Seq, hi: Seq) -> Option<Vec<Arc<LogEntry>>> {
        let front = state.tail.front()?.seq;
        if lo < front || hi > state.durable_head {
            return None;
        }
        let start = (lo.get() - front.get()) as usize;
        let end = (hi.get() - front.get()) as usize;
        Some(state.tail.range(start..=end).cloned().collect())
    }
}

impl Drop for ChannelLog {
    fn drop(&mut self) {
        let bytes = self.lock().tail_bytes;
        self.cache_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Durable for ChannelLog {
    fn on_durable(
        &self,
        entry: &Arc<LogEntry>,
        idem: Option<&(String, String)>,
    ) -> Option<Arc<dyn CommitListener>> {
        self.publish(entry, idem);
        // Told by the writer outside the channel lock, still in order, once the appender has
        // its answer.
        self.listener.get().cloned()
    }

    fn on_failed(&self, idem: Option<&(String, String)>, error: &StoreError) {
        self.fail_pending(idem, error);
    }

    fn on_replaced(&self, entry: Arc<LogEntry>) {
        self.replaced(entry);
    }
}

impl ChannelLog {
    /// One entry by seq (durable and still available), from the cache or the engine.
    pub(crate) fn entry_at(
        &self,
        engine: &dyn Engine,
        seq: Seq,
    ) -> Result<Option<Arc<LogEntry>>, ReadError> {
        let log = self;
        let epoch = {
            let state = log.lock();
            if seq < state.first_available || seq > state.durable_head || seq.get() == 0 {
                return Ok(None);
            }
            if let Some(mut hit) = ChannelLog::cached(&state, seq, seq) {
                return Ok(hit.pop());
            }
            state.epoch
        };
        let key = log.keys.key(seq);
        match engine.get(&key)? {
            Some(v) => Ok(Some(Arc::new(to_log_entry(&log.id, epoch, seq, &key, &v)?))),
            None => Ok(None),
        }
    }

    /// Entries `lo..=hi` (clamped by the caller to the durable range).
    pub(crate) fn range(
        &self,
        engine: &dyn Engine,
        lo: Seq,
        hi: Seq,
    ) -> Result<Vec<Arc<LogEntry>>, ReadError> {
        let log = self;
        if lo > hi {
            return Ok(Vec::new());
        }
        let epoch = {
            let state = log.lock();
            if let Some(hit) = ChannelLog::cached(&state, lo, hi) {
                return Ok(hit);
            }
            state.epoch
        };
        let start = log.keys.key(lo);
        let end = log.keys.key(hi);
        let limit = (hi.get() - lo.get() + 1) as usize;
        engine
            .scan(
                Bound::Included(&start),
                Bound::Included(&end),
                Direction::Forward,
                limit,
            )?
            .into_iter()
            .map(|(k, v)| {
                let seq = Seq(keys::trailing_u64(&k).unwrap_or_default());
                Ok(Arc::new(to_log_entry(&log.id, epoch, seq, &k, &v)?))
            })
            .collect()
    }
}

fn to_log_entry(
    channel: &ChannelId,
    epoch: Epoch,
    seq: Seq,
    key: &[u8],
    value: &[u8],
) -> Result<LogEntry, ReadError> {
    let stored = decode_entry(key, value)?;
    let mut event = stored.event;
    event.channel_id = channel.to_string();
    event.seq = seq.get();
    event.epoch = epoch.get();
    Ok(LogEntry::new(seq, stored.ordinal, event, value.len()).with_withheld(stored.withheld))
}

/// Cuts entries below `cut` from the in-memory state (after the cut is durable).
pub(crate) fn cut_tail(log: &ChannelLog, cut: Seq, new_epoch: Option<Epoch>) {
    let mut state = log.lock();
    state.first_available = state.first_available.max(cut);
    if let Some(epoch) = new_epoch {
        state.epoch = epoch;
        log.clear_tail(&mut state);
    }
    while state.tail.front().is_some_and(|e| e.seq < cut) {
        log.pop_tail(&mut state);
    }
}

/// The in-memory position, for retention and truncation.
pub(crate) fn position_of(log: &ChannelLog) -> LogPosition {
    ChannelLog::position(&log.lock())
}

/// The newest assigned seq and its ordinal, durable or not: a truncation cuts above appends
/// still in flight, so none of them survives into the new epoch.
pub(crate) fn assigned_head(log: &ChannelLog) -> (Seq, u64) {
    let state = log.lock();
    (Seq(state.next_seq.get() - 1), state.assigned_ordinal)
}

/// The channel id of a log.
pub(crate) fn id_of(log: &ChannelLog) -> &ChannelId {
    &log.id
}

#[cfg(test)]
mod failure_tests {
    use std::sync::Arc;

    use chorus_protocol::ids::{ChannelId, Seq, UserId};
    use chorus_protocol::v1::ChannelKind;

    use crate::commit::Durable;
    use crate::engine::memory::MemoryEngine;
    use crate::error::StoreError;
    use crate::{NewChannel, RetentionPolicy, Store, StoreConfig};

    /// A failed write leaves nothing a later derivation reads, and nobody waiting: the overlay
    /// empties and every wait for a seq is answered with the failure.
    #[tokio::test]
    async fn a_failed_write_empties_the_overlay_and_answers_the_waits() {
        let store = Store::with_engine(Arc::new(MemoryEngine::new()), StoreConfig::new("/none"));
        let id = ChannelId::new("c").unwrap_or_else(|_| unreachable!());
        store
            .create_channel(NewChannel {
                id: id.clone(),
                kind: ChannelKind::Group,
                name: "c".into(),
                topic: String::new(),
                created_by: UserId::new("alice").unwrap_or_else(|_| unreachable!()),
                created_at_ms: 1,
                members: Vec::new(),
                custom: bytes::Bytes::new(),
                retention: RetentionPolicy::default(),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let log = store.inner.logs.get(&id).unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut state = log.lock();
            state
                .overlay
                .record(vec![(b"k".to_vec(), Some(b"v".to_vec()))], Seq(9));
            state.seq_waiters.entry(Seq(9)).or_default().push(tx);
        }
        log.on_failed(None, &StoreError::OutcomeUnknown("disk".into()));
        assert!(log.lock().overlay.is_empty());
        assert!(log.lock().seq_waiters.is_empty());
        assert!(matches!(rx.await, Ok(Err(StoreError::OutcomeUnknown(_)))));
    }
}
