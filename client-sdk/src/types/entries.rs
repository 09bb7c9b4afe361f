//! Log entries, history pages, and what publishing and subscribing return.

use chorus_protocol::ids::{ChannelId, Epoch, Seq, UserId};
use chorus_protocol::resume::SubscribeOutcome;
use chorus_protocol::v1::{self, RecoveryFailure, channel_event::Body};

use super::{MemberAction, Role, TombstoneReason, optional_seq, optional_user};

/// A durable entry of a channel's log.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Entry {
    /// The channel.
    pub channel: ChannelId,
    /// Its position in the channel.
    pub seq: Seq,
    /// The channel's history generation.
    pub epoch: Epoch,
    /// When the server stored it (Unix ms).
    pub server_time_ms: u64,
    /// Its author; none for entries the server made itself.
    pub author: Option<UserId>,
    /// What it is.
    pub body: EntryBody,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EntryBody {
    /// A message.
    Message(v1::Message),
    /// New content for the message at `target_seq`.
    MessageEdited(v1::MessageEdited),
    /// The message at `target` became a tombstone.
    MessageDeleted {
        /// The deleted message.
        target: Seq,
        /// Deleted by a moderator rather than its author.
        by_moderator: bool,
    },
    /// A reaction on `target`.
    ReactionAdded {
        /// The message.
        target: Seq,
        /// The reaction.
        emoji: String,
    },
    /// A reaction taken back.
    ReactionRemoved {
        /// The message.
        target: Seq,
        /// The reaction.
        emoji: String,
    },
    /// A moderator pinned the message at `target`.
    MessagePinned {
        /// The message.
        target: Seq,
    },
    /// A moderator unpinned the message at `target`.
    MessageUnpinned {
        /// The message.
        target: Seq,
    },
    /// A membership change.
    MemberChanged(MemberChange),
    /// The channel's name, topic, archived flag or data changed (the fields that are set).
    ChannelChanged(v1::ChannelChanged),
    /// A removed entry: its seq stays, so the log stays gapless.
    Tombstone {
        /// Why it was removed.
        reason: TombstoneReason,
        /// The thread it was in, if any.
        thread_parent: Option<Seq>,
    },
    /// A kind of entry this SDK does not know; it still takes its seq.
    Unknown,
}

/// A membership change entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberChange {
    /// The member concerned.
    pub user: Option<UserId>,
    /// What happened.
    pub action: MemberAction,
    /// The role they hold afterwards.
    pub role: Option<Role>,
    /// For mutes and bans: until then (Unix ms; 0: indefinitely).
    pub until_ms: u64,
}

impl Entry {
    /// An entry of `channel` (the server leaves the id out of some entries, such as a
    /// summary's last message).
    pub(crate) fn from_proto(e: v1::ChannelEvent, channel: &ChannelId) -> Self {
        let channel = ChannelId::new(e.channel_id).unwrap_or_else(|_| channel.clone());
        let body = match e.body {
            Some(Body::Message(m)) => EntryBody::Message(m),
            Some(Body::MessageEdited(m)) => EntryBody::MessageEdited(m),
            Some(Body::MessageDeleted(d)) => EntryBody::MessageDeleted {
                target: Seq(d.target_seq),
                by_moderator: d.by_moderator,
            },
            Some(Body::ReactionAdded(r)) => EntryBody::ReactionAdded {
                target: Seq(r.target_seq),
                emoji: r.emoji,
            },
            Some(Body::ReactionRemoved(r)) => EntryBody::ReactionRemoved {
                target: Seq(r.target_seq),
                emoji: r.emoji,
            },
            Some(Body::MemberChanged(m)) => EntryBody::MemberChanged(MemberChange {
                user: optional_user(m.user_id),
                action: MemberAction::from_proto(m.action),
                role: Role::from_proto(m.role),
                until_ms: m.until_ms,
            }),
            Some(Body::ChannelChanged(c)) => EntryBody::ChannelChanged(c),
            Some(Body::MessagePinned(p)) => EntryBody::MessagePinned {
                target: Seq(p.target_seq),
            },
            Some(Body::MessageUnpinned(p)) => EntryBody::MessageUnpinned {
                target: Seq(p.target_seq),
            },
            Some(Body::Tombstone(t)) => EntryBody::Tombstone {
                reason: TombstoneReason::from_proto(t.reason),
                thread_parent: optional_seq(t.thread_parent_seq),
            },
            None => EntryBody::Unknown,
        };
        Self {
            channel,
            seq: Seq(e.seq),
            epoch: Epoch(e.epoch),
            server_time_ms: e.server_time_ms,
            author: optional_user(e.author_id),
            body,
        }
    }

    /// The text of a message entry.
    pub fn text(&self) -> Option<&str> {
        match &self.body {
            EntryBody::Message(m) => Some(&m.text),
            _ => None,
        }
    }
}

/// A publish's acknowledgement: the message is durable at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message's position in the channel.
    pub seq: Seq,
    /// The channel's history generation.
    pub epoch: Epoch,
    /// When the server stored it.
    pub server_time_ms: u64,
    /// The server had already stored this `client_msg_id` (a resend): `seq` is the original.
    pub duplicate: bool,
    /// The idempotency key the message was sent with.
    pub client_msg_id: String,
}

impl Published {
    pub(crate) fn new(a: v1::Appended, client_msg_id: String) -> Self {
        Self {
            seq: Seq(a.seq),
            epoch: Epoch(a.epoch),
            server_time_ms: a.server_time_ms,
            duplicate: a.duplicate,
            client_msg_id,
        }
    }
}

/// A subscription's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The channel's history generation.
    pub epoch: Epoch,
    /// The channel's last seq when the subscription started.
    pub head: Seq,
    /// The oldest seq still stored.
    pub first_available: Seq,
    /// What the app has to do: nothing (`Recovered`), load older entries if it wants
    /// (`Fresh`), or reload the channel up to `head` (`Reload`).
    pub outcome: SubscribeOutcome,
}

impl Subscription {
    pub(crate) fn from_reply(s: &v1::Subscribed) -> Self {
        let head = Seq(s.head_seq);
        let outcome = if s.recovered {
            SubscribeOutcome::Recovered
        } else {
            match RecoveryFailure::try_from(s.failure).unwrap_or(RecoveryFailure::Unspecified) {
                RecoveryFailure::NoCursor | RecoveryFailure::Unspecified => {
                    SubscribeOutcome::Fresh { head }
                }
                reason => SubscribeOutcome::Reload { reason, head },
            }
        };
        Self {
            epoch: Epoch(s.epoch),
            head,
            first_available: Seq(s.first_available_seq),
            outcome,
        }
    }
}
