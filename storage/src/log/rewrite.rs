//! Rewrites: an entry's content replaced in place (a deleted message, an erased user), its seq,
//! author and time kept so that the log stays gapless.

use std::sync::Arc;

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::channel_event::Body;
use tokio::sync::oneshot;

use super::Logs;
use crate::commit::Completion;
use crate::engine::Op;
use crate::error::StoreError;
use crate::keys;
use crate::records::{LogEntry, decode_entry, encode_entry};

impl Logs {
    /// Replaces the content of the entry at `seq`, and its author when `author` is given:
    /// erasing a user leaves their entries with an anonymous author.
    pub(crate) async fn rewrite_as(
        &self,
        channel: &ChannelId,
        seq: Seq,
        body: Body,
        author: Option<&str>,
    ) -> Result<Arc<LogEntry>, StoreError> {
        let log = self.get(channel)?;
        // Stripe before queue permit, as everywhere else: a permit holder waiting on a stripe
        // whose holder waits for a permit would stall both.
        let _stripe = self.stripe(&(b"rewrite", channel, seq)).lock().await;
        let permit = self.queue.reserve().await?;
        let old = log
            .entry_at(&*self.engine, seq)?
            .ok_or_else(|| StoreError::EntryNotFound {
                channel: channel.clone(),
                seq,
            })?;
        let key = log.keys.key(seq);
        let mut idem = match self.engine.get(&key)? {
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
        let value = encode_entry(old.ordinal, &idem, &event, old.withheld);
        event.channel_id = channel_id;
        event.seq = seq.get();
        event.epoch = epoch;
        let entry = Arc::new(
            LogEntry::new(seq, old.ordinal, event, value.len()).with_withheld(old.withheld),
        );
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
        self.queue.enqueue(ops, completion, permit)?;
        rx.await.map_err(|_| StoreError::Closed)??;
        Ok(entry)
    }

    /// Puts `anonymous` in place of `user` in the derived records that name them (thread
    /// participants of `roots`, pins they made), for an erasure. Derived like an entry's
    /// records, under the append lock and through the overlay, so that no concurrent
    /// derivation loses the change; the values wait in the overlay under the next seq, which
    /// cannot become durable before this write.
    pub(crate) async fn anonymise_derived(
        &self,
        channel: &ChannelId,
        roots: &[Seq],
        user: &str,
        anonymous: &str,
    ) -> Result<(), StoreError> {
        let log = self.get(channel)?;
        let permit = self.queue.reserve().await?;
        let rx = {
            let mut state = log.lock();
            let view = super::derived::View {
                overlay: &state.overlay,
                first_available: state.first_available,
            };
            let writes =
                super::derived::anonymise(&view, &*self.engine, channel, roots, user, anonymous)?;
            if writes.is_empty() {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            let ops = super::derived::ops(&writes);
            self.queue.enqueue(ops, Completion::Done(tx), permit)?;
            let next = state.next_seq;
            state.overlay.record(writes, next);
            rx
        };
        // `log` stays held until the write is durable: the channel's state (and its overlay)
        // is not evicted meanwhile.
        rx.await.map_err(|_| StoreError::Closed)??;
        drop(log);
        Ok(())
    }
}
