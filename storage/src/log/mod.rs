//! Channel logs: sequencing, appends through group commit, the idempotency index, the tail
//! cache and reads. [`Logs`] is the component the store's inner state owns; it depends on the
//! writer's [`Queue`] and the engine, never on the store itself.
//!
//! - [`channel`]: one channel's in-memory state and tail cache; what the writer tells it.
//! - [`append`], [`rewrite`], [`read`]: the operations, as methods of [`Logs`].
//! - [`derived`]: the records entries derive (reactions, threads, pins), computed under the
//!   append lock; [`summaries`]: their reads.
//!
//! Each channel has one in-memory `ChannelLog`, loaded on first use. Its mutex orders the
//! channel's appends: seq assignment and queueing to the writer happen under it, so the writer
//! receives a channel's entries in seq order and makes them durable in that order. Readers only
//! ever see entries up to `durable_head`: an entry the engine holds but the writer has not yet
//! synced is invisible, so nobody can observe an entry that a crash could still take back.

mod append;
mod channel;
mod derived;
mod read;
mod rewrite;
mod summaries;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chorus_protocol::ids::{ChannelId, Epoch, Seq, UserId};
use chorus_protocol::v1::channel_event::Body;
use dashmap::DashMap;

pub use append::AppendTicket;
use channel::LogState;
pub(crate) use channel::{ChannelLog, assigned_head, cut_tail, id_of, position_of};
pub use derived::AggregateLimits;
use derived::{Overlay, SharedLimits};
pub use summaries::{ThreadCursor, ThreadPage};

use crate::commit::{CommitListener, ListenerSlot, Queue};
use crate::config::StoreConfig;
use crate::engine::{Direction, Engine, as_ref_bound, prefix_bounds};
use crate::error::ReadError;
use crate::keys;
use crate::records::{ChannelRecord, LogEntry, decode_entry, decode_record};

/// Mentions counted at most per unread query; beyond it the count saturates.
pub(crate) const MAX_MENTION_COUNT: usize = 1000;
/// Stripes serializing rewrites of one entry.
const REWRITE_STRIPES: usize = 64;

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Who acts; `None` for server-made events.
    pub author: Option<UserId>,
    /// Server time of the append, unix ms.
    pub time_ms: u64,
    /// What happened.
    pub body: Body,
    /// The idempotency key (at most 64 bytes). A second append with the same author and key
    /// stores nothing and returns the first entry.
    pub client_msg_id: Option<String>,
    /// Only the author may see the entry (see [`LogEntry::event_for`]); it derives nothing
    /// others would see (no thread, no mentions).
    pub withheld: bool,
}

/// The result of an append.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The durable entry, ready to send to subscribers.
    pub entry: Arc<LogEntry>,
    /// True when the entry was stored by an earlier append with the same key.
    pub duplicate: bool,
}

/// Where a page of the log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The newest entries.
    Latest,
    /// Entries with seq below this one.
    Before(Seq),
    /// Entries with seq above this one.
    After(Seq),
    /// Entries around this one, the entry itself included.
    Around(Seq),
}

/// A read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuery {
    /// Where the page starts.
    pub anchor: Anchor,
    /// Most entries returned.
    pub limit: usize,
    /// Only the thread whose root has this seq: the root and its replies.
    pub thread: Option<Seq>,
}

/// A page of the log, ascending by seq.
#[derive(Debug, Clone)]
pub struct LogPage {
    /// The entries.
    pub entries: Vec<Arc<LogEntry>>,
    /// Entries exist before the page.
    pub has_more_before: bool,
    /// Entries exist after the page.
    pub has_more_after: bool,
    /// The channel's position when the page was read.
    pub position: LogPosition,
}

/// Where a channel's log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// The history generation.
    pub epoch: Epoch,
    /// The newest durable seq (0 = nothing was ever appended).
    pub head: Seq,
    /// The oldest seq still stored; `head + 1` when the log is empty.
    pub first_available: Seq,
    /// Messages appended up to `head` (the ordinal of the newest message).
    pub message_count: u64,
}

/// The channel logs of a store: each loaded on first use and kept while in use, with what they
/// share (the engine, the writer's queue, the commit listener, the tail-cache budget).
pub(crate) struct Logs {
    map: DashMap<ChannelId, Arc<ChannelLog>>,
    engine: Arc<dyn Engine>,
    queue: Arc<Queue>,
    listener: ListenerSlot,
    cache_bytes: Arc<AtomicUsize>,
    tail_entries: usize,
    tail_bytes: usize,
    total_bytes: usize,
    rewrite_stripes: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
    limits: SharedLimits,
}

impl Logs {
    /// The logs over `engine`, writing through `queue`, with the tail-cache sizes of `config`.
    pub(crate) fn new(engine: Arc<dyn Engine>, queue: Arc<Queue>, config: &StoreConfig) -> Self {
        Self {
            map: DashMap::new(),
            engine,
            queue,
            listener: Arc::new(std::sync::OnceLock::new()),
            cache_bytes: Arc::new(AtomicUsize::new(0)),
            tail_entries: config.tail_cache_entries.max(1),
            tail_bytes: config.tail_cache_bytes_per_channel,
            total_bytes: config.tail_cache_total_bytes,
            rewrite_stripes: (0..REWRITE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            limits: SharedLimits::new(AggregateLimits::default()),
        }
    }

    /// Sets the limits derivation enforces (reactions, pins).
    pub(crate) fn set_aggregate_limits(&self, limits: AggregateLimits) {
        self.limits.set(limits);
    }

    /// Sets the commit listener (once; a second call returns false and changes nothing).
    pub(crate) fn set_listener(&self, listener: Arc<dyn CommitListener>) -> bool {
        self.listener.set(listener).is_ok()
    }

    /// The channel's log state, loaded from the engine on first use.
    pub(crate) fn get(&self, channel: &ChannelId) -> Result<Arc<ChannelLog>, ReadError> {
        if let Some(log) = self.map.get(channel) {
            return Ok(log.clone());
        }
        let entry = self.map.entry(channel.clone());
        if let dashmap::Entry::Occupied(o) = &entry {
            return Ok(o.get().clone());
        }
        let key = keys::channel(channel);
        let record: ChannelRecord = match self.engine.get(&key)? {
            Some(v) => decode_record(&key, &v)?,
            None => return Err(ReadError::ChannelNotFound(channel.clone())),
        };
        let first_available = Seq(record.first_available_seq.max(1));
        let log_keys = keys::LogKeys::of(channel, record.log_number);
        let (start, end) = prefix_bounds(log_keys.prefix());
        let last = self.engine.scan(
            as_ref_bound(&start),
            as_ref_bound(&end),
            Direction::Reverse,
            1,
        )?;
        let (head, ordinal) = match last.first() {
            Some((k, v)) => {
                let seq = keys::trailing_u64(k).map(Seq).unwrap_or_default();
                (seq, decode_entry(k, v)?.ordinal)
            }
            None => (Seq(first_available.get() - 1), record.removed_ordinal),
        };
        let log = Arc::new(ChannelLog {
            id: channel.clone(),
            keys: log_keys,
            state: Mutex::new(LogState {
                epoch: Epoch(record.epoch),
                next_seq: head.next(),
                assigned_ordinal: ordinal,
                durable_head: head,
                durable_ordinal: ordinal,
                first_available,
                tail: VecDeque::new(),
                tail_bytes: 0,
                pending: HashMap::new(),
                idem_filter: None,
                overlay: Overlay::default(),
                seq_waiters: HashMap::new(),
            }),
            listener: self.listener.clone(),
            cache_bytes: self.cache_bytes.clone(),
            tail_entries: self.tail_entries,
            tail_bytes: self.tail_bytes,
            total_bytes: self.total_bytes,
        });
        entry.or_insert(log.clone());
        Ok(log)
    }

    /// Forgets a channel's loaded state (a channel created anew under an old id).
    pub(crate) fn forget(&self, channel: &ChannelId) {
        self.map.remove(channel);
    }

    /// The stripe serializing rewrites of one key.
    fn stripe(&self, key: &impl std::hash::Hash) -> &tokio::sync::Mutex<()> {
        use std::hash::BuildHasher;
        &self.rewrite_stripes[self.hasher.hash_one(key) as usize % REWRITE_STRIPES]
    }

    /// Drops the cached state of channels with no append in flight, so that idle channels do
    /// not hold memory. Returns how many were dropped.
    pub(crate) fn evict_idle(&self) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, log| Arc::strong_count(log) > 1 || !log.lock().pending.is_empty());
        before - self.map.len()
    }

    /// Bytes held by all tail caches.
    pub(crate) fn tail_cache_bytes(&self) -> usize {
        self.cache_bytes.load(Ordering::Relaxed)
    }
}
