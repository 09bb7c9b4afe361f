//! Reads of derived state: message summaries (reactions, thread, pin), a channel's threads by
//! latest reply, its pins. Each reads a bounded number of records, never the log.
//!
//! They read the engine, which may already hold the records of a batch whose sync is under
//! way: a count can run ahead of the entry that made it by that one sync, never behind.

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1;

use super::Logs;
use super::channel::ChannelLog;
use crate::engine::{Direction, as_ref_bound, prefix_bounds};
use crate::error::ReadError;
use crate::keys::{self, Derived};
use crate::records::{
    PinRecord, PinsRecord, ReactionsRecord, ThreadRecord, UserReactionsRecord, decode_record,
};

/// Where a page of threads goes on: after the thread with this latest reply and root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCursor {
    /// The latest reply of the last thread returned.
    pub last_reply: Seq,
    /// Its root.
    pub root: Seq,
}

/// A page of a channel's threads, the latest reply first.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadPage {
    /// The threads (without their root entries).
    pub threads: Vec<v1::ThreadSummary>,
    /// Where the next page starts; `None`: no more.
    pub next: Option<ThreadCursor>,
}

impl Logs {
    /// The summaries of the messages at `seqs` that have reactions, replies or a pin, in the
    /// order asked; `reader` decides `ReactionCount.reacted`.
    pub(crate) fn summaries(
        &self,
        channel: &ChannelId,
        seqs: &[Seq],
        reader: Option<&str>,
    ) -> Result<Vec<v1::MessageSummary>, ReadError> {
        let log = self.get(channel)?;
        let first = first_available(&log);
        let pins: PinsRecord = self.record(&keys::pins(channel))?.unwrap_or_default();
        let pins_seq = pins.last_seq;
        let pins: Vec<PinRecord> = pins
            .pins
            .into_iter()
            .filter(|p| p.target_seq >= first.get())
            .collect();
        let mut out = Vec::new();
        for &seq in seqs {
            if seq < first {
                continue;
            }
            let mut summary = v1::MessageSummary {
                seq: seq.get(),
                pins_seq,
                ..Default::default()
            };
            let reactions: Option<ReactionsRecord> =
                self.record(&keys::derived(channel, seq, Derived::Reactions).into_vec())?;
            if let Some(r) = reactions {
                summary.reactions_seq = r.last_seq;
                let mine: UserReactionsRecord = match reader {
                    Some(user) => self
                        .record(
                            &keys::derived(channel, seq, Derived::UserReactions)
                                .str(user)
                                .into_vec(),
                        )?
                        .unwrap_or_default(),
                    None => UserReactionsRecord::default(),
                };
                summary.reactions = r
                    .emojis
                    .into_iter()
                    .map(|e| v1::ReactionCount {
                        reacted: mine.reactions.iter().any(|m| m.emoji == e.emoji),
                        emoji: e.emoji,
                        count: e.count,
                        users: e.users,
                    })
                    .collect();
            }
            let thread: Option<ThreadRecord> =
                self.record(&keys::derived(channel, seq, Derived::Thread).into_vec())?;
            summary.thread = thread.map(|t| thread_summary(seq, t));
            if let Some(p) = pins.iter().find(|p| p.target_seq == seq.get()) {
                summary.pinned = true;
                summary.pinned_by.clone_from(&p.pinned_by);
                summary.pinned_at_ms = p.pinned_at_ms;
            }
            if summary.reactions_seq != 0 || summary.thread.is_some() || summary.pinned {
                out.push(summary);
            }
        }
        Ok(out)
    }

    /// A page of the channel's threads, the latest reply first, from `after` on.
    pub(crate) fn threads(
        &self,
        channel: &ChannelId,
        after: Option<ThreadCursor>,
        limit: usize,
    ) -> Result<ThreadPage, ReadError> {
        let log = self.get(channel)?;
        let first = first_available(&log);
        let prefix = keys::thread_activity_prefix(channel).into_vec();
        let (start, end) = prefix_bounds(&prefix);
        let end = match after {
            Some(c) => {
                std::ops::Bound::Excluded(keys::thread_activity(channel, c.last_reply, c.root))
            }
            None => end,
        };
        let rows = self.engine.scan(
            as_ref_bound(&start),
            as_ref_bound(&end),
            Direction::Reverse,
            limit + 1,
        )?;
        let more = rows.len() > limit;
        let mut threads = Vec::with_capacity(limit.min(rows.len()));
        let mut next = None;
        for (k, _) in rows.into_iter().take(limit) {
            let (Some(last_reply), Some(root)) = (
                k.get(prefix.len()..prefix.len() + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes),
                keys::trailing_u64(&k),
            ) else {
                continue;
            };
            next = Some(ThreadCursor {
                last_reply: Seq(last_reply),
                root: Seq(root),
            });
            if root < first.get() {
                continue;
            }
            let record: Option<ThreadRecord> =
                self.record(&keys::derived(channel, Seq(root), Derived::Thread).into_vec())?;
            // A key left by a reply whose newer one replaced it in the same instant is stale.
            if let Some(t) = record.filter(|t| t.last_reply_seq == last_reply) {
                threads.push(thread_summary(Seq(root), t));
            }
        }
        Ok(ThreadPage {
            threads,
            next: if more { next } else { None },
        })
    }

    /// The channel's pins, the most recently pinned first.
    pub(crate) fn pins(&self, channel: &ChannelId) -> Result<Vec<PinRecord>, ReadError> {
        let log = self.get(channel)?;
        self.pins_of(channel, first_available(&log))
    }

    fn pins_of(&self, channel: &ChannelId, first: Seq) -> Result<Vec<PinRecord>, ReadError> {
        let pins: PinsRecord = self.record(&keys::pins(channel))?.unwrap_or_default();
        Ok(pins
            .pins
            .into_iter()
            .filter(|p| p.target_seq >= first.get())
            .collect())
    }

    fn record<M: prost::Message + Default>(&self, key: &[u8]) -> Result<Option<M>, ReadError> {
        self.engine
            .get(key)?
            .map(|v| decode_record(key, &v))
            .transpose()
    }
}

fn first_available(log: &ChannelLog) -> Seq {
    ChannelLog::position(&log.lock()).first_available
}

fn thread_summary(root: Seq, t: ThreadRecord) -> v1::ThreadSummary {
    v1::ThreadSummary {
        root_seq: root.get(),
        reply_count: t.reply_count,
        last_reply_seq: t.last_reply_seq,
        last_reply_ms: t.last_reply_ms,
        participants: t.participants,
        root: None,
    }
}
