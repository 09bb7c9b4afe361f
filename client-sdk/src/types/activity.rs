//! Read markers, unread counts, typing, presence and server notices.

use std::time::Duration;

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1;

use super::{NoticeLevel, PresenceStatus, channel_id, optional_seq, user_id};
use crate::error::Error;

/// A read marker: how far a user has read a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadMarker {
    /// The channel.
    pub channel: ChannelId,
    /// The reader.
    pub user: UserId,
    /// Read up to here.
    pub seq: Seq,
    /// Entries after it.
    pub unread_count: u64,
    /// When it moved (Unix ms).
    pub updated_at_ms: u64,
}

impl TryFrom<v1::ReadMarker> for ReadMarker {
    type Error = Error;

    fn try_from(m: v1::ReadMarker) -> Result<Self, Error> {
        Ok(Self {
            channel: channel_id(m.channel_id)?,
            user: user_id(m.user_id)?,
            seq: Seq(m.seq),
            unread_count: m.unread_count,
            updated_at_ms: m.updated_at_ms,
        })
    }
}

/// Unread counts of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelUnread {
    /// The channel.
    pub channel: ChannelId,
    /// This user's read marker.
    pub last_read: Seq,
    /// The channel's last seq.
    pub head: Seq,
    /// Entries after the marker.
    pub unread_count: u64,
    /// Of those, how many mention this user.
    pub mention_count: u64,
}

/// Unread counts of several channels.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnreadCounts {
    /// Per channel.
    pub channels: Vec<ChannelUnread>,
    /// The sum over all of this user's channels.
    pub total_unread: u64,
}

impl TryFrom<v1::UnreadCounts> for UnreadCounts {
    type Error = Error;

    fn try_from(u: v1::UnreadCounts) -> Result<Self, Error> {
        let channels = u
            .channels
            .into_iter()
            .map(|c| {
                Ok(ChannelUnread {
                    channel: channel_id(c.channel_id)?,
                    last_read: Seq(c.last_read_seq),
                    head: Seq(c.head_seq),
                    unread_count: c.unread_count,
                    mention_count: c.mention_count,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            channels,
            total_unread: u.total_unread,
        })
    }
}

/// Someone started or stopped typing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Typing {
    /// The channel.
    pub channel: ChannelId,
    /// Who.
    pub user: UserId,
    /// Started (true) or stopped.
    pub typing: bool,
    /// The thread's composer, when not the channel's.
    pub thread: Option<Seq>,
    /// Treat it as stopped after this long without a renewal.
    pub expires_in: Duration,
}

impl TryFrom<v1::TypingEvent> for Typing {
    type Error = Error;

    fn try_from(t: v1::TypingEvent) -> Result<Self, Error> {
        Ok(Self {
            channel: channel_id(t.channel_id)?,
            user: user_id(t.user_id)?,
            typing: t.typing,
            thread: optional_seq(t.thread_parent_seq),
            expires_in: Duration::from_millis(u64::from(t.expires_in_ms)),
        })
    }
}

/// An app-defined ephemeral event on a subscribed channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CustomEvent {
    /// The channel.
    pub channel: ChannelId,
    /// Who sent it.
    pub user: UserId,
    /// The app's name for the event.
    pub kind: String,
    /// Its data.
    pub payload: bytes::Bytes,
    /// The thread it belongs to, if any.
    pub thread: Option<Seq>,
    /// When the server relayed it (Unix ms).
    pub sent_at_ms: u64,
}

impl TryFrom<v1::CustomEvent> for CustomEvent {
    type Error = Error;

    fn try_from(e: v1::CustomEvent) -> Result<Self, Error> {
        Ok(Self {
            channel: channel_id(e.channel_id)?,
            user: user_id(e.user_id)?,
            kind: e.r#type,
            payload: e.payload,
            thread: optional_seq(e.thread_parent_seq),
            sent_at_ms: e.sent_at_ms,
        })
    }
}

/// A user's presence changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Presence {
    /// Who.
    pub user: UserId,
    /// Their status.
    pub status: PresenceStatus,
    /// Their own words for it.
    pub status_text: String,
    /// When they were last connected (Unix ms).
    pub last_seen_ms: u64,
}

impl TryFrom<v1::Presence> for Presence {
    type Error = Error;

    fn try_from(p: v1::Presence) -> Result<Self, Error> {
        Ok(Self {
            user: user_id(p.user_id)?,
            status: PresenceStatus::from_proto(p.status),
            status_text: p.status_text,
            last_seen_ms: p.last_seen_ms,
        })
    }
}

/// A message from the server operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Notice {
    /// How important it is.
    pub level: NoticeLevel,
    /// A machine-readable code (for the app to pick a translation).
    pub code: String,
    /// The text.
    pub text: String,
}

impl From<v1::ServerNotice> for Notice {
    fn from(n: v1::ServerNotice) -> Self {
        let level = match v1::NoticeLevel::try_from(n.level) {
            Ok(v1::NoticeLevel::Info) => NoticeLevel::Info,
            Ok(v1::NoticeLevel::Warning) => NoticeLevel::Warning,
            _ => NoticeLevel::Unknown,
        };
        Self {
            level,
            code: n.code,
            text: n.text,
        }
    }
}
