//! Appends: validation, the idempotency check, seq assignment and queueing under the channel
//! lock, and the ticket that waits for durability.

use std::sync::Arc;

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::limits::MAX_CLIENT_MSG_ID_BYTES;
use chorus_protocol::v1::{ChannelEvent, channel_event::Body};
use tokio::sync::oneshot;

use super::channel::{ChannelLog, Pending};
use super::derived::{self, Derivation};
use super::{Appended, Logs, NewEntry};
use crate::commit::Completion;
use crate::engine::{Engine, MAX_VALUE_BYTES, Op};
use crate::error::StoreError;
use crate::idem_filter::IdemFilter;
use crate::keys;
use crate::records::{LogEntry, encode_entry};

impl Logs {
    /// The first half of an append: validates, waits for room in the writer's queue, assigns
    /// the seq and queues the entry. Appends begun one after another by one caller get
    /// increasing seqs, so a connection can pipeline publishes and still keep their order;
    /// the returned ticket resolves when the entry is durable.
    pub(crate) async fn begin_append(
        &self,
        channel: &ChannelId,
        new: NewEntry,
    ) -> Result<AppendTicket, StoreError> {
        if let Some(key) = &new.client_msg_id
            && (key.is_empty() || key.len() > MAX_CLIENT_MSG_ID_BYTES)
        {
            return Err(StoreError::ClientMsgIdLength {
                len: key.len(),
                max: MAX_CLIENT_MSG_ID_BYTES,
            });
        }
        let log = self.get(channel)?;
        let permit = self.queue.reserve_growth().await?;
        let author = new.author.as_ref().map_or("", UserId::as_str).to_owned();
        let idem_key = new.client_msg_id.clone().map(|k| (author.clone(), k));
        // A reply's thread names its root's author: read here, as the lock is not held yet.
        let root_author = match &new.body {
            Body::Message(m) if m.thread_parent_seq != 0 => log
                .entry_at(&*self.engine, Seq(m.thread_parent_seq))?
                .map(|e| e.event.author_id.clone()),
            _ => None,
        };
        let step = self.queue_append(
            &log,
            channel,
            new,
            permit,
            (author, idem_key),
            root_author.as_deref(),
        )?;
        Ok(AppendTicket {
            engine: self.engine.clone(),
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
        (author, idem_key): (String, Option<(String, String)>),
        root_author: Option<&str>,
    ) -> Result<Step, StoreError> {
        // Built before the channel lock is taken: the critical section orders the channel's appends.
        let idem_bytes = idem_key.as_ref().map(|(a, k)| keys::idem(channel, a, k));
        let mut state = log.lock();
        if let (Some(key), Some(bytes)) = (&idem_key, &idem_bytes) {
            if let Some(pending) = state.pending.get_mut(key) {
                // The first append with this key is still on its way to disk: share its fate.
                let (tx, rx) = oneshot::channel();
                pending.waiters.push(tx);
                return Ok(Step::Wait(rx));
            }
            let filter = state
                .idem_filter
                .get_or_insert_with(|| IdemFilter::new(&keys::idem_prefix(channel).into_vec()));
            filter.scan_step(&*self.engine)?;
            // Under the lock: the writer removes a pending key only after the entry is in
            // the engine, so a committed duplicate is found here.
            if filter.may_contain(bytes)
                && let Some(v) = self.engine.get(bytes)?
            {
                return Ok(Step::Stored(
                    Seq(keys::trailing_u64(&v).unwrap_or_default()),
                ));
            }
        }

        let seq = state.next_seq;
        let cx = derived::Context {
            engine: &*self.engine,
            channel,
            seq,
            author: &author,
            time_ms: new.time_ms,
            limits: self.limits.get(),
            root_author,
        };
        let view = derived::View {
            overlay: &state.overlay,
            first_available: state.first_available,
        };
        // A withheld entry changes nothing others see: no thread summary, no mention counts.
        let derives = (!new.withheld).then_some(&new.body);
        let writes = match derived::derive(&view, &cx, derives)? {
            Derivation::Write(writes) => writes,
            Derivation::Already(earlier) if earlier <= state.durable_head => {
                return Ok(Step::Stored(earlier));
            }
            Derivation::Already(earlier) => {
                // Its entry is still on its way to disk: share its fate.
                let (tx, rx) = oneshot::channel();
                state.seq_waiters.entry(earlier).or_default().push(tx);
                return Ok(Step::Wait(rx));
            }
        };
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
        let value = encode_entry(ordinal, idem, &event, new.withheld);
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::EntryTooLarge {
                len: value.len(),
                max: MAX_VALUE_BYTES,
            });
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
            if new.withheld && key.first() == Some(&keys::MENTION) {
                continue;
            }
            ops.push(Op::Put(key, Vec::new()));
        }
        ops.extend(derived::ops(&writes));
        let entry =
            Arc::new(LogEntry::new(seq, ordinal, event, stored_len).with_withheld(new.withheld));
        let (tx, rx) = oneshot::channel();
        let completion = Completion::Append {
            log: log.clone(),
            entry,
            idem_key: idem_key.clone(),
            tx,
        };
        self.queue.enqueue(ops, completion, permit)?;
        state.overlay.record(writes, seq);
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
}

/// A begun append; [`AppendTicket::durable`] waits for its outcome.
pub struct AppendTicket {
    engine: Arc<dyn Engine>,
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
                let entry = self.log.entry_at(&*self.engine, seq)?.ok_or_else(|| {
                    StoreError::EntryNotFound {
                        channel: self.channel.clone(),
                        seq,
                    }
                })?;
                (entry, true)
            }
        };
        Ok(Appended { entry, duplicate })
    }
}

/// What an append found and did under the channel lock.
pub(super) enum Step {
    /// Queued for the writer; the answer comes when it is durable.
    Queued(oneshot::Receiver<Result<Arc<LogEntry>, StoreError>>),
    /// The same key is on its way to disk: wait for its outcome.
    Wait(oneshot::Receiver<Result<Arc<LogEntry>, StoreError>>),
    /// The same key is stored at this seq.
    Stored(Seq),
}
