//! Channel logs: sequencing, appends through group commit, the idempotency index, the tail
//! cache and reads.
//!
//! Each channel has one in-memory `ChannelLog`, loaded on first use. Its mutex orders the
//! channel's appends: seq assignment and queueing to the writer happen under it, so the writer
//! receives a channel's entries in seq order and makes them durable in that order. Readers only
//! ever see entries up to `durable_head`: an entry the engine holds but the writer has not yet
//! synced is invisible, so nobody can observe an entry that a crash could still take back.

use std::collections::{HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chorus_protocol::ids::{ChannelId, Epoch, Seq, UserId};
use chorus_protocol::limits::MAX_CLIENT_MSG_ID_BYTES;
use chorus_protocol::v1::{ChannelEvent, channel_event::Body};
use tokio::sync::oneshot;

use crate::commit::Completion;
use crate::engine::{Direction, MAX_VALUE_BYTES, Op, as_ref_bound, prefix_bounds};
use crate::error::StoreError;
use crate::idem_filter::IdemFilter;
use crate::keys;
use crate::records::{ChannelRecord, LogEntry, decode_entry, encode_entry};
use crate::store::{Inner, Store};

/// A channel keeps at least this many cached entries even when the global budget is spent.
const MIN_TAIL: usize = 8;
/// Mentions counted at most per unread query; beyond it the count saturates.
pub(crate) const MAX_MENTION_COUNT: usize = 1000;

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

type Waiter = oneshot::Sender<Result<Arc<LogEntry>, StoreError>>;

/// An append on its way to disk; retries with its key wait here for its outcome.
struct Pending {
    waiters: Vec<Waiter>,
}

struct LogState {
    epoch: Epoch,
    /// The next seq to assign.
    next_seq: Seq,
    /// The ordinal of the newest assigned entry.
    assigned_ordinal: u64,
    durable_head: Seq,
    durable_ordinal: u64,
    first_available: Seq,
    /// Durable entries, contiguous and ending at `durable_head` when not empty.
    tail: VecDeque<Arc<LogEntry>>,
    tail_bytes: usize,
    /// Appends queued but not yet durable, by (author, client_msg_id).
    pending: HashMap<(String, String), Pending>,
    /// Made at the first append with an idempotency key (channels only read need none).
    idem_filter: Option<IdemFilter>,
}

/// Told of every new durable entry, once, in seq order per channel: the hook for fan-out. Runs
/// on the store's syncer thread, so it must not block (push to queues, never await clients).
pub trait CommitListener: Send + Sync + 'static {
    /// `entry` is durable and now visible to readers.
    fn on_commit(&self, entry: &Arc<LogEntry>);
}

/// The listener slot shared by the store and its channel logs.
pub(crate) type ListenerSlot = Arc<std::sync::OnceLock<Arc<dyn CommitListener>>>;

/// The in-memory side of one channel's log.
pub(crate) struct ChannelLog {
    id: ChannelId,
    /// Where its entries are keyed.
    pub(crate) keys: keys::LogKeys,
    state: Mutex<LogState>,
    listener: ListenerSlot,
    cache_bytes: Arc<AtomicUsize>,
    tail_entries: usize,
    tail_bytes: usize,
    total_bytes: usize,
}

impl ChannelLog {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn position(state: &LogState) -> LogPosition {
        LogPosition {
            epoch: state.epoch,
            head: state.durable_head,
            first_available: state.first_available,
            message_count: state.durable_ordinal,
        }
    }

    /// Called by the syncer, in seq order, once `entry` is durable: makes it visible. Returns
    /// the listener slot; the syncer tells the listener (outside the channel lock, still in
    /// order) once it has answered the appender.
    pub(crate) fn on_durable(
        &self,
        entry: &Arc<LogEntry>,
        idem: Option<&(String, String)>,
    ) -> ListenerSlot {
        self.publish(entry, idem);
        self.listener.clone()
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
        if let Some(key) = idem
            && let Some(pending) = state.pending.remove(key)
        {
            for waiter in pending.waiters {
                let _ = waiter.send(Ok(entry.clone()));
            }
        }
    }

    /// Called by the writer when a queued append failed.
    pub(crate) fn fail_pending(&self, idem: Option<&(String, String)>, error: &StoreError) {
        if let Some(key) = idem
            && let Some(pending) = self.lock().pending.remove(key)
        {
            for waiter in pending.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }

    /// Called by the writer once a rewritten entry is durable.
    pub(crate) fn on_replaced(&self, entry: Arc<LogEntry>) {
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
    fn cached(state: &LogState, lo: Seq, hi: Seq) -> Option<Vec<Arc<LogEntry>>> {
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

impl Inner {
    /// The channel's log state, loaded from the engine on first use.
    pub(crate) fn channel_log(&self, channel: &ChannelId) -> Result<Arc<ChannelLog>, StoreError> {
        if let Some(log) = self.logs.get(channel) {
            return Ok(log.clone());
        }
        let entry = self.logs.entry(channel.clone());
        if let dashmap::Entry::Occupied(o) = &entry {
            return Ok(o.get().clone());
        }
        let record: ChannelRecord = self
            .record(&keys::channel(channel))?
            .ok_or_else(|| StoreError::ChannelNotFound(channel.to_string()))?;
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
            }),
            listener: self.listener.clone(),
            cache_bytes: self.cache_bytes.clone(),
            tail_entries: self.config.tail_cache_entries.max(1),
            tail_bytes: self.config.tail_cache_bytes_per_channel,
            total_bytes: self.config.tail_cache_total_bytes,
        });
        entry.or_insert(log.clone());
        Ok(log)
    }

    /// One entry by seq (durable and still available), from the cache or the engine.
    pub(crate) fn entry_at(
        &self,
        log: &ChannelLog,
        seq: Seq,
    ) -> Result<Option<Arc<LogEntry>>, StoreError> {
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
        match self.engine.get(&key)? {
            Some(v) => Ok(Some(Arc::new(to_log_entry(&log.id, epoch, seq, &key, &v)?))),
            None => Ok(None),
        }
    }

    /// Entries `lo..=hi` (clamped by the caller to the durable range).
    fn range(&self, log: &ChannelLog, lo: Seq, hi: Seq) -> Result<Vec<Arc<LogEntry>>, StoreError> {
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
        self.engine
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
) -> Result<LogEntry, StoreError> {
    let stored = decode_entry(key, value)?;
    let mut event = stored.event;
    event.channel_id = channel.to_string();
    event.seq = seq.get();
    event.epoch = epoch.get();
    Ok(LogEntry::new(seq, stored.ordinal, event, value.len()))
}

impl Store {
    /// Appends an entry and returns once it is durable (or was stored before under the same
    /// idempotency key).
    pub async fn append(&self, channel: &ChannelId, new: NewEntry) -> Result<Appended, StoreError> {
        self.begin_append(channel, new).await?.durable().await
    }

    /// The first half of an append: validates, waits for room in the writer's queue, assigns
    /// the seq and queues the entry. Appends begun one after another by one caller get
    /// increasing seqs, so a connection can pipeline publishes and still keep their order;
    /// the returned ticket resolves when the entry is durable.
    pub async fn begin_append(
        &self,
        channel: &ChannelId,
        new: NewEntry,
    ) -> Result<AppendTicket, StoreError> {
        let inner = &*self.inner;
        if let Some(key) = &new.client_msg_id
            && (key.is_empty() || key.len() > MAX_CLIENT_MSG_ID_BYTES)
        {
            return Err(StoreError::Invalid(format!(
                "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_BYTES} bytes"
            )));
        }
        let log = inner.channel_log(channel)?;
        let permit = inner.reserve_growth().await?;
        let author = new.author.as_ref().map_or("", UserId::as_str).to_owned();
        let idem_key = new.client_msg_id.clone().map(|k| (author.clone(), k));
        let step = self.queue_append(&log, channel, new, permit, author, idem_key)?;
        Ok(AppendTicket {
            store: self.clone(),
            log,
            channel: channel.clone(),
            step,
        })
    }

    /// The part of an append done under the channel lock: the idempotency check, seq
    /// assignment and queueing, in one critical section so that queue order is seq order.
    fn queue_append(
        &self,
        log: &Arc<ChannelLog>,
        channel: &ChannelId,
        new: NewEntry,
        permit: tokio::sync::OwnedSemaphorePermit,
        author: String,
        idem_key: Option<(String, String)>,
    ) -> Result<Step, StoreError> {
        let inner = &*self.inner;
        // Built before the channel lock is taken: the critical section orders the channel's appends.
        let idem_bytes = idem_key.as_ref().map(|(a, k)| keys::idem(channel, a, k));
        let mut state = log.lock();
        let step = if let (Some(key), Some(bytes)) = (&idem_key, &idem_bytes) {
            if let Some(pending) = state.pending.get_mut(key) {
                // The first append with this key is still on its way to disk: share its fate.
                let (tx, rx) = oneshot::channel();
                pending.waiters.push(tx);
                Step::Wait(rx)
            } else {
                let filter = state
                    .idem_filter
                    .get_or_insert_with(|| IdemFilter::new(&keys::idem_prefix(channel).into_vec()));
                filter.scan_step(&*inner.engine)?;
                // Under the lock: the writer removes a pending key only after the entry is in
                // the engine, so a committed duplicate is found here.
                let stored = if filter.may_contain(bytes) {
                    inner.engine.get(bytes)?
                } else {
                    None
                };
                match stored {
                    Some(v) => Step::Stored(Seq(keys::trailing_u64(&v).unwrap_or_default())),
                    None => Step::Append,
                }
            }
        } else {
            Step::Append
        };
        if !matches!(step, Step::Append) {
            return Ok(step);
        }

        let seq = state.next_seq;
        let is_message = matches!(new.body, Body::Message(_));
        let ordinal = state.assigned_ordinal + u64::from(is_message);
        // Stored without channel, seq and epoch (the key and the channel record hold them);
        // they are filled in after encoding.
        let mut event = ChannelEvent {
            channel_id: String::new(),
            seq: 0,
            epoch: 0,
            server_time_ms: new.time_ms,
            author_id: author,
            body: Some(new.body),
        };
        let idem = new.client_msg_id.as_deref().unwrap_or("");
        let value = encode_entry(ordinal, idem, &event);
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::Invalid(format!(
                "entry of {} bytes is over the limit of {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        let stored_len = value.len();
        event.channel_id = channel.to_string();
        event.seq = seq.get();
        event.epoch = state.epoch.get();
        let mut ops = vec![Op::Put(log.keys.key(seq), value)];
        if let Some(bytes) = idem_bytes {
            if let Some(filter) = state.idem_filter.as_mut() {
                filter.insert(&bytes);
            }
            ops.push(Op::Put(bytes, seq.get().to_be_bytes().to_vec()));
        }
        for key in keys::index_keys(channel, seq, event.body.as_ref()) {
            ops.push(Op::Put(key, Vec::new()));
        }
        let entry = Arc::new(LogEntry::new(seq, ordinal, event, stored_len));
        let (tx, rx) = oneshot::channel();
        let completion = Completion::Append {
            log: log.clone(),
            entry,
            idem_key: idem_key.clone(),
            tx,
        };
        inner.enqueue(ops, completion, permit)?;
        state.next_seq = seq.next();
        state.assigned_ordinal = ordinal;
        if let Some(key) = idem_key {
            state.pending.insert(
                key,
                Pending {
                    waiters: Vec::new(),
                },
            );
        }
        Ok(Step::Queued(rx))
    }

    /// Replaces the content of the entry at `seq` (a deleted message, an erased user), keeping
    /// its seq, author and time so that the log stays gapless.
    pub async fn rewrite(
        &self,
        channel: &ChannelId,
        seq: Seq,
        body: Body,
    ) -> Result<Arc<LogEntry>, StoreError> {
        self.rewrite_as(channel, seq, body, None).await
    }

    /// [`Store::rewrite`], also replacing the author: erasing a user leaves their entries with
    /// an anonymous author.
    pub async fn rewrite_as(
        &self,
        channel: &ChannelId,
        seq: Seq,
        body: Body,
        author: Option<&str>,
    ) -> Result<Arc<LogEntry>, StoreError> {
        let inner = &*self.inner;
        let log = inner.channel_log(channel)?;
        // Stripe before queue permit, as everywhere else: a permit holder waiting on a stripe
        // whose holder waits for a permit would stall both.
        let _stripe = inner.stripe(&(b"rewrite", channel, seq)).lock().await;
        let permit = inner.reserve().await?;
        let old = inner
            .entry_at(&log, seq)?
            .ok_or_else(|| StoreError::EntryNotFound {
                channel: channel.to_string(),
                seq: seq.get(),
            })?;
        let key = log.keys.key(seq);
        let mut idem = match inner.engine.get(&key)? {
            Some(v) => decode_entry(&key, &v)?.client_msg_id,
            None => String::new(),
        };
        // A new author (an erased user's anonymous id) drops the entry's idempotency key: the
        // key names the old author, who can no longer publish, and retention, which finds the
        // key by the entry's author, would never remove it.
        let mut dropped_idem = None;
        if author.is_some_and(|a| a != old.event.author_id) && !idem.is_empty() {
            dropped_idem = Some(keys::idem(channel, &old.event.author_id, &idem));
            idem.clear();
        }
        let mut event = old.event.clone();
        event.body = Some(body);
        if let Some(author) = author {
            author.clone_into(&mut event.author_id);
        }
        let (channel_id, epoch) = (std::mem::take(&mut event.channel_id), event.epoch);
        event.seq = 0;
        event.epoch = 0;
        let value = encode_entry(old.ordinal, &idem, &event);
        event.channel_id = channel_id;
        event.seq = seq.get();
        event.epoch = epoch;
        let entry = Arc::new(LogEntry::new(seq, old.ordinal, event, value.len()));
        // Index entries follow the new body: a tombstone keeps its thread, drops its mentions.
        let before = keys::index_keys(channel, seq, old.event.body.as_ref());
        let after = keys::index_keys(channel, seq, entry.event.body.as_ref());
        let mut ops: Vec<Op> = before
            .into_iter()
            .filter(|k| !after.contains(k))
            .map(Op::Delete)
            .collect();
        ops.extend(after.into_iter().map(|k| Op::Put(k, Vec::new())));
        ops.extend(dropped_idem.map(Op::Delete));
        ops.push(Op::Put(key, value));
        let (tx, rx) = oneshot::channel();
        let completion = Completion::Replace {
            log,
            entry: entry.clone(),
            tx,
        };
        inner.enqueue(ops, completion, permit)?;
        rx.await.map_err(|_| StoreError::Closed)??;
        Ok(entry)
    }

    /// Where the channel's log stands.
    pub fn position(&self, channel: &ChannelId) -> Result<LogPosition, StoreError> {
        let log = self.inner.channel_log(channel)?;
        let state = log.lock();
        Ok(ChannelLog::position(&state))
    }

    /// One entry, if it is durable and still available.
    pub fn entry(
        &self,
        channel: &ChannelId,
        seq: Seq,
    ) -> Result<Option<Arc<LogEntry>>, StoreError> {
        let log = self.inner.channel_log(channel)?;
        self.inner.entry_at(&log, seq)
    }

    /// A page of the log.
    pub fn read(&self, channel: &ChannelId, query: &LogQuery) -> Result<LogPage, StoreError> {
        let inner = &*self.inner;
        let log = inner.channel_log(channel)?;
        let position = ChannelLog::position(&log.lock());
        let limit = query.limit.max(1) as u64;
        if let Some(root) = query.thread {
            return self.read_thread(&log, position, root, query.anchor, limit);
        }
        let first = position.first_available.get();
        let head = position.head.get();
        let (lo, hi) = match query.anchor {
            Anchor::Latest => (head.saturating_sub(limit - 1).max(first), head),
            Anchor::Before(s) => {
                let hi = s.get().saturating_sub(1).min(head);
                (hi.saturating_sub(limit - 1).max(first), hi)
            }
            Anchor::After(s) => {
                let lo = s.get().saturating_add(1).max(first);
                (lo, lo.saturating_add(limit - 1).min(head))
            }
            Anchor::Around(s) => {
                let lo = s.get().saturating_sub((limit - 1) / 2).max(first);
                let hi = lo.saturating_add(limit - 1).min(head);
                (hi.saturating_sub(limit - 1).max(first), hi)
            }
        };
        let entries = inner.range(&log, Seq(lo), Seq(hi))?;
        let (lo_edge, hi_edge) = if lo <= hi { (lo, hi) } else { (hi + 1, lo - 1) };
        Ok(LogPage {
            entries,
            has_more_before: lo_edge > first && lo_edge > 1,
            has_more_after: hi_edge < head,
            position,
        })
    }

    fn read_thread(
        &self,
        log: &ChannelLog,
        position: LogPosition,
        root: Seq,
        anchor: Anchor,
        limit: u64,
    ) -> Result<LogPage, StoreError> {
        let inner = &*self.inner;
        let prefix = keys::thread_prefix(&log.id, root).into_vec();
        let key_at = |s: u64| keys::thread_prefix(&log.id, root).u64(s).into_vec();
        let head = position.head.get();
        let visible = |k: &Vec<u8>| {
            keys::trailing_u64(k).filter(|&s| s <= head && s >= position.first_available.get())
        };
        let (start, end) = prefix_bounds(&prefix);
        let scan =
            |lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, dir, n: u64| -> Result<Vec<u64>, StoreError> {
                let keys =
                    inner
                        .engine
                        .scan(as_ref_bound(&lo), as_ref_bound(&hi), dir, n as usize)?;
                Ok(keys.iter().filter_map(|(k, _)| visible(k)).collect())
            };
        // Replies only; the root is added when the page reaches the thread's start.
        let (mut seqs, more_before, more_after) = match anchor {
            Anchor::Latest => {
                let mut s = scan(start.clone(), end.clone(), Direction::Reverse, limit + 1)?;
                let more = s.len() as u64 > limit;
                s.truncate(limit as usize);
                s.reverse();
                (s, more, false)
            }
            Anchor::Before(b) => {
                let mut s = scan(
                    start.clone(),
                    Bound::Excluded(key_at(b.get())),
                    Direction::Reverse,
                    limit + 1,
                )?;
                let more = s.len() as u64 > limit;
                s.truncate(limit as usize);
                s.reverse();
                let after = !scan(
                    Bound::Included(key_at(b.get())),
                    end.clone(),
                    Direction::Forward,
                    1,
                )?
                .is_empty();
                (s, more, after)
            }
            Anchor::After(a) => {
                let mut s = scan(
                    Bound::Excluded(key_at(a.get())),
                    end.clone(),
                    Direction::Forward,
                    limit + 1,
                )?;
                let more = s.len() as u64 > limit;
                s.truncate(limit as usize);
                let before = !scan(
                    start.clone(),
                    Bound::Included(key_at(a.get())),
                    Direction::Reverse,
                    1,
                )?
                .is_empty();
                (s, before, more)
            }
            Anchor::Around(c) => {
                let half = (limit - 1) / 2;
                let mut before = scan(
                    start.clone(),
                    Bound::Excluded(key_at(c.get())),
                    Direction::Reverse,
                    half + 1,
                )?;
                let more_before = before.len() as u64 > half;
                before.truncate(half as usize);
                before.reverse();
                let rest = limit - before.len() as u64;
                let mut after = scan(
                    Bound::Included(key_at(c.get())),
                    end.clone(),
                    Direction::Forward,
                    rest + 1,
                )?;
                let more_after = after.len() as u64 > rest;
                after.truncate(rest as usize);
                before.extend(after);
                (before, more_before, more_after)
            }
        };
        if !more_before && (seqs.len() as u64) < limit {
            seqs.insert(0, root.get());
        }
        let mut entries = Vec::with_capacity(seqs.len());
        for s in seqs {
            if let Some(e) = inner.entry_at(log, Seq(s))? {
                entries.push(e);
            }
        }
        Ok(LogPage {
            entries,
            has_more_before: more_before,
            has_more_after: more_after,
            position,
        })
    }

    /// Drops the cached state of channels with no append in flight, so that idle channels do
    /// not hold memory. Returns how many were dropped.
    pub fn evict_idle_logs(&self) -> usize {
        let before = self.inner.logs.len();
        self.inner
            .logs
            .retain(|_, log| Arc::strong_count(log) > 1 || !log.lock().pending.is_empty());
        before - self.inner.logs.len()
    }

    /// Bytes held by all tail caches.
    pub fn tail_cache_bytes(&self) -> usize {
        self.inner.cache_bytes.load(Ordering::Relaxed)
    }
}

/// A begun append; [`AppendTicket::durable`] waits for its outcome.
pub struct AppendTicket {
    store: Store,
    log: Arc<ChannelLog>,
    channel: ChannelId,
    step: Step,
}

impl std::fmt::Debug for AppendTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendTicket")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl AppendTicket {
    /// The stored entry, once durable.
    pub async fn durable(self) -> Result<Appended, StoreError> {
        let (entry, duplicate) = match self.step {
            Step::Queued(rx) => (rx.await.map_err(|_| StoreError::Closed)??, false),
            Step::Wait(rx) => (rx.await.map_err(|_| StoreError::Closed)??, true),
            Step::Stored(seq) => {
                let entry = self.store.inner.entry_at(&self.log, seq)?.ok_or_else(|| {
                    StoreError::EntryNotFound {
                        channel: self.channel.to_string(),
                        seq: seq.get(),
                    }
                })?;
                (entry, true)
            }
            Step::Append => return Err(StoreError::Invalid("append was not queued".into())),
        };
        Ok(Appended { entry, duplicate })
    }
}

/// What an append found and did under the channel lock.
enum Step {
    /// Nothing stored under the key yet (internal to `queue_append`).
    Append,
    /// Queued for the writer; the answer comes when it is durable.
    Queued(oneshot::Receiver<Result<Arc<LogEntry>, StoreError>>),
    /// The same key is on its way to disk: wait for its outcome.
    Wait(oneshot::Receiver<Result<Arc<LogEntry>, StoreError>>),
    /// The same key is stored at this seq.
    Stored(Seq),
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
