//! Pages: of a channel's log (with what the log derived for its messages: reactions, threads,
//! pins, quoted entries), of its threads and of its pins.

use chorus_protocol::ids::{ChannelId, Epoch, Seq, UserId};
use chorus_protocol::v1;

use super::entries::Entry;
use super::{channel_id, optional_user, user_id};
use crate::error::Error;

/// A page of a channel's log.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistoryPage {
    /// The channel.
    pub channel: ChannelId,
    /// The channel's history generation.
    pub epoch: Epoch,
    /// The entries, oldest first, as they were appended (edits and reactions are entries of
    /// their own).
    pub entries: Vec<Entry>,
    /// Older entries exist.
    pub has_more_before: bool,
    /// Newer entries exist.
    pub has_more_after: bool,
    /// The oldest seq still stored.
    pub first_available: Seq,
    /// The channel's last seq.
    pub head: Seq,
    /// What the log derived for the page's messages that have reactions, replies or a pin.
    pub summaries: Vec<MessageSummary>,
    /// The entries the page's messages quote that the page does not hold, as they read now.
    pub quoted: Vec<Entry>,
}

impl HistoryPage {
    /// The summary of the message at `seq`, if it has one.
    pub fn summary(&self, seq: Seq) -> Option<&MessageSummary> {
        self.summaries.iter().find(|s| s.seq == seq)
    }
}

impl TryFrom<v1::HistoryPage> for HistoryPage {
    type Error = Error;

    fn try_from(p: v1::HistoryPage) -> Result<Self, Error> {
        let channel = channel_id(p.channel_id)?;
        let summaries = p
            .summaries
            .into_iter()
            .map(|s| MessageSummary::from_proto(s, &channel))
            .collect::<Result<_, Error>>()?;
        let quoted = p
            .quoted
            .into_iter()
            .map(|e| Entry::from_proto(e, &channel))
            .collect();
        Ok(Self {
            summaries,
            quoted,
            entries: p
                .events
                .into_iter()
                .map(|e| Entry::from_proto(e, &channel))
                .collect(),
            channel,
            epoch: Epoch(p.epoch),
            has_more_before: p.has_more_before,
            has_more_after: p.has_more_after,
            first_available: Seq(p.first_available_seq),
            head: Seq(p.head_seq),
        })
    }
}

/// One emoji's reactions to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reaction {
    /// The emoji or `:short_name:`.
    pub emoji: String,
    /// Users who reacted with it.
    pub count: u32,
    /// Whether this client's user did.
    pub reacted: bool,
    /// Some of them (at most 3), the earliest first.
    pub users: Vec<UserId>,
}

/// A thread as its root shows it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ThreadSummary {
    /// The root message.
    pub root: Seq,
    /// Replies posted (deleted ones included).
    pub reply_count: u32,
    /// The newest reply.
    pub last_reply: Seq,
    /// Its time, Unix ms.
    pub last_reply_ms: u64,
    /// The root's author, then repliers in the order of their first reply (at most 10).
    pub participants: Vec<UserId>,
    /// The root entry as it reads now (in thread lists; `None` in history summaries).
    pub root_entry: Option<Entry>,
}

/// What the log derived for one message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MessageSummary {
    /// The message.
    pub seq: Seq,
    /// Its reactions, by emoji in the order of each emoji's first reaction.
    pub reactions: Vec<Reaction>,
    /// The thread it roots, if it has replies.
    pub thread: Option<ThreadSummary>,
    /// Who pinned it and when (Unix ms), if it is pinned.
    pub pinned: Option<(UserId, u64)>,
    /// `reactions` reflects every reaction entry for this message up to this seq: apply live
    /// reaction entries above it only.
    pub reactions_seq: Seq,
    /// `pinned` reflects every pin and unpin entry of the channel up to this seq.
    pub pins_seq: Seq,
}

/// A pinned message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Pin {
    /// The message as it reads now.
    pub message: Entry,
    /// Who pinned it.
    pub pinned_by: Option<UserId>,
    /// When, Unix ms.
    pub pinned_at_ms: u64,
    /// The seq of the pin's entry.
    pub pin_seq: Seq,
}

/// A page of a channel's pins, the most recently pinned first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PinPage {
    /// The pins.
    pub pins: Vec<Pin>,
    /// The cursor of the next page; `None`: no more.
    pub next_cursor: Option<String>,
}

/// A page of a channel's threads, the latest reply first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ThreadPage {
    /// The threads, each with its root entry.
    pub threads: Vec<ThreadSummary>,
    /// The cursor of the next page; `None`: no more.
    pub next_cursor: Option<String>,
}

fn users(ids: Vec<String>) -> Result<Vec<UserId>, Error> {
    ids.into_iter().map(user_id).collect()
}

fn cursor(c: String) -> Option<String> {
    (!c.is_empty()).then_some(c)
}

impl ThreadSummary {
    pub(crate) fn from_proto(t: v1::ThreadSummary, channel: &ChannelId) -> Result<Self, Error> {
        Ok(Self {
            root: Seq(t.root_seq),
            reply_count: t.reply_count,
            last_reply: Seq(t.last_reply_seq),
            last_reply_ms: t.last_reply_ms,
            participants: users(t.participants)?,
            root_entry: t.root.map(|e| Entry::from_proto(e, channel)),
        })
    }
}

impl MessageSummary {
    pub(crate) fn from_proto(s: v1::MessageSummary, channel: &ChannelId) -> Result<Self, Error> {
        Ok(Self {
            seq: Seq(s.seq),
            reactions: s
                .reactions
                .into_iter()
                .map(|r| {
                    Ok(Reaction {
                        emoji: r.emoji,
                        count: r.count,
                        reacted: r.reacted,
                        users: users(r.users)?,
                    })
                })
                .collect::<Result<_, Error>>()?,
            thread: s
                .thread
                .map(|t| ThreadSummary::from_proto(t, channel))
                .transpose()?,
            pinned: match (s.pinned, optional_user(s.pinned_by)) {
                (true, Some(by)) => Some((by, s.pinned_at_ms)),
                _ => None,
            },
            reactions_seq: Seq(s.reactions_seq),
            pins_seq: Seq(s.pins_seq),
        })
    }
}

impl PinPage {
    pub(crate) fn from_proto(p: v1::PinList, channel: &ChannelId) -> Result<Self, Error> {
        let pins = p
            .pins
            .into_iter()
            .filter_map(|pin| {
                let message = pin.message?;
                Some(Pin {
                    message: Entry::from_proto(message, channel),
                    pinned_by: optional_user(pin.pinned_by),
                    pinned_at_ms: pin.pinned_at_ms,
                    pin_seq: Seq(pin.pin_seq),
                })
            })
            .collect();
        Ok(Self {
            pins,
            next_cursor: cursor(p.next_cursor),
        })
    }
}

impl ThreadPage {
    pub(crate) fn from_proto(t: v1::ThreadList, channel: &ChannelId) -> Result<Self, Error> {
        Ok(Self {
            threads: t
                .threads
                .into_iter()
                .map(|t| ThreadSummary::from_proto(t, channel))
                .collect::<Result<_, Error>>()?,
            next_cursor: cursor(t.next_cursor),
        })
    }
}
