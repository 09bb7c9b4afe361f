//! The SDK's own types: what the app passes to [`Client`](crate::Client) calls and gets back
//! from them and from the event stream. Ids are newtypes, positions are [`Seq`]s, and every kind,
//! role or action is an enum rather than the wire's `i32`. The generated chorus.v1 types stay
//! available under [`proto`](crate::proto) for content the SDK passes through unchanged
//! (message bodies, attachments) and for tools that speak the protocol themselves.
//!
//! Values from the server are checked once, here: an id that is not valid, or a missing
//! required field, makes the call fail with [`Error::Protocol`]; an enum value this SDK does not
//! know (a newer server) reads as the enum's `Unknown`.
//!
//! This module holds the enums; [`channels`] channels, members and membership, [`entries`] log
//! entries and call results, [`pages`] history pages (with reactions, threads and pins), thread
//! and pin pages, [`activity`] read markers, unread counts, typing,
//! presence and notices.

mod activity;
mod channels;
mod entries;
mod moderation;
mod pages;
mod search;

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1;

use crate::error::Error;

pub use activity::{
    ChannelUnread, CustomEvent, Notice, Presence, ReadMarker, Typing, UnreadCounts,
};
pub use channels::{
    Channel, ChannelPage, ChannelSummary, Member, MemberPage, Membership, NewChannel,
};
pub use entries::{Entry, EntryBody, MemberChange, Published, Subscription};
pub use moderation::{Flag, FlagPage, FlagResolution};
pub use pages::{HistoryPage, MessageSummary, Pin, PinPage, Reaction, ThreadPage, ThreadSummary};
pub use search::{SearchHit, SearchOrder, SearchPage, SearchQuery, Snippet};

/// A channel's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelKind {
    /// Two users; made with [`Client::direct_channel`](crate::Client::direct_channel).
    Direct,
    /// Members only.
    Group,
    /// Anyone can find and join it.
    Public,
    /// A kind this SDK does not know.
    Unknown,
}

impl ChannelKind {
    fn from_proto(kind: i32) -> Self {
        match v1::ChannelKind::try_from(kind) {
            Ok(v1::ChannelKind::Direct) => Self::Direct,
            Ok(v1::ChannelKind::Group) => Self::Group,
            Ok(v1::ChannelKind::Public) => Self::Public,
            _ => Self::Unknown,
        }
    }

    fn to_proto(self) -> i32 {
        match self {
            Self::Direct => v1::ChannelKind::Direct as i32,
            Self::Group => v1::ChannelKind::Group as i32,
            Self::Public => v1::ChannelKind::Public as i32,
            Self::Unknown => v1::ChannelKind::Unspecified as i32,
        }
    }
}

/// A member's role in a channel, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Reads and posts.
    Member,
    /// Also removes messages and members of lower roles, changes the channel's name and topic.
    Moderator,
    /// Also changes roles and archives the channel.
    Owner,
}

impl Role {
    /// `None` for no role (not a member) and for roles this SDK does not know.
    fn from_proto(role: i32) -> Option<Self> {
        match v1::Role::try_from(role) {
            Ok(v1::Role::Member) => Some(Self::Member),
            Ok(v1::Role::Moderator) => Some(Self::Moderator),
            Ok(v1::Role::Owner) => Some(Self::Owner),
            _ => None,
        }
    }

    pub(crate) fn to_proto(self) -> i32 {
        match self {
            Self::Member => v1::Role::Member as i32,
            Self::Moderator => v1::Role::Moderator as i32,
            Self::Owner => v1::Role::Owner as i32,
        }
    }
}

/// What happened to a member (in a [`MemberChange`] entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberAction {
    /// Joined a public channel, or created the channel.
    Joined,
    /// Added by another member.
    Added,
    /// Removed by a moderator or owner.
    Removed,
    /// Left.
    Left,
    /// Given another role.
    RoleChanged,
    /// Muted until `until_ms`.
    Muted,
    /// No longer muted.
    Unmuted,
    /// Banned from the channel.
    Banned,
    /// No longer banned.
    Unbanned,
    /// An action this SDK does not know.
    Unknown,
}

impl MemberAction {
    fn from_proto(action: i32) -> Self {
        use v1::MemberAction as A;
        match A::try_from(action) {
            Ok(A::Joined) => Self::Joined,
            Ok(A::Added) => Self::Added,
            Ok(A::Removed) => Self::Removed,
            Ok(A::Left) => Self::Left,
            Ok(A::RoleChanged) => Self::RoleChanged,
            Ok(A::Muted) => Self::Muted,
            Ok(A::Unmuted) => Self::Unmuted,
            Ok(A::Banned) => Self::Banned,
            Ok(A::Unbanned) => Self::Unbanned,
            _ => Self::Unknown,
        }
    }
}

/// Why an entry is a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TombstoneReason {
    /// Deleted by its author or a moderator.
    Deleted,
    /// Its author's account was erased.
    UserErased,
    /// Removed by an operator.
    AdminRemoved,
    /// Withheld by moderation (its author was shadow-banned); only the author reads it.
    Withheld,
    /// A reason this SDK does not know.
    Unknown,
}

impl TombstoneReason {
    fn from_proto(reason: i32) -> Self {
        use v1::tombstone::Reason as R;
        match R::try_from(reason) {
            Ok(R::Deleted) => Self::Deleted,
            Ok(R::UserErased) => Self::UserErased,
            Ok(R::AdminRemoved) => Self::AdminRemoved,
            Ok(R::Withheld) => Self::Withheld,
            _ => Self::Unknown,
        }
    }
}

/// A user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PresenceStatus {
    /// Connected and active.
    Online,
    /// Connected, idle.
    Away,
    /// Connected, not to be disturbed.
    DoNotDisturb,
    /// Not connected (or appearing offline).
    Offline,
    /// Connected and appearing offline to others (only the user's own sessions read this).
    Invisible,
    /// A status this SDK does not know.
    Unknown,
}

impl PresenceStatus {
    fn from_proto(status: i32) -> Self {
        use v1::PresenceStatus as P;
        match P::try_from(status) {
            Ok(P::Online) => Self::Online,
            Ok(P::Away) => Self::Away,
            Ok(P::DoNotDisturb) => Self::DoNotDisturb,
            Ok(P::Offline) => Self::Offline,
            Ok(P::Invisible) => Self::Invisible,
            _ => Self::Unknown,
        }
    }

    pub(crate) fn to_proto(self) -> i32 {
        use v1::PresenceStatus as P;
        (match self {
            Self::Online => P::Online,
            Self::Away => P::Away,
            Self::DoNotDisturb => P::DoNotDisturb,
            Self::Offline => P::Offline,
            Self::Invisible => P::Invisible,
            Self::Unknown => P::Unspecified,
        }) as i32
    }
}

/// How important a server notice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoticeLevel {
    /// For information.
    Info,
    /// Something the user should act on (a maintenance window, a policy change).
    Warning,
    /// A level this SDK does not know.
    Unknown,
}

/// A server-sent id, checked: an invalid one is the server's fault.
fn channel_id(id: String) -> Result<ChannelId, Error> {
    ChannelId::new(id).map_err(|e| Error::Protocol(format!("the server sent an invalid {e}")))
}

fn user_id(id: String) -> Result<UserId, Error> {
    UserId::new(id).map_err(|e| Error::Protocol(format!("the server sent an invalid {e}")))
}

/// An optional server-sent user id: empty (a system entry) or invalid reads as none.
fn optional_user(id: String) -> Option<UserId> {
    UserId::new(id).ok()
}

fn optional_seq(seq: u64) -> Option<Seq> {
    (seq != 0).then_some(Seq(seq))
}

fn required<T>(value: Option<T>, what: &'static str) -> Result<T, Error> {
    value.ok_or_else(|| Error::Protocol(format!("the server sent no {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_become_enums_and_unknown_values_stay_readable() {
        assert_eq!(ChannelKind::from_proto(2), ChannelKind::Group);
        assert_eq!(ChannelKind::from_proto(99), ChannelKind::Unknown);
        assert_eq!(Role::from_proto(v1::Role::Owner as i32), Some(Role::Owner));
        assert_eq!(Role::from_proto(0), None, "no role: not a member");
        assert_eq!(MemberAction::from_proto(99), MemberAction::Unknown);
        let new = NewChannel::group(&ChannelId::new("g").unwrap_or_else(|e| panic!("{e}")), "G")
            .topic("t")
            .into_proto();
        assert_eq!(
            (new.kind, new.channel_id.as_str(), new.topic.as_str()),
            (v1::ChannelKind::Group as i32, "g", "t")
        );
    }

    #[test]
    fn invalid_ids_from_the_server_are_protocol_errors() {
        let page = v1::HistoryPage {
            channel_id: "no spaces allowed".into(),
            ..Default::default()
        };
        assert!(matches!(
            HistoryPage::try_from(page),
            Err(Error::Protocol(_))
        ));
        let summary = v1::ChannelSummary::default();
        assert!(matches!(
            ChannelSummary::try_from(summary),
            Err(Error::Protocol(_))
        ));
        let entry = Entry::from_proto(
            v1::ChannelEvent {
                seq: 3,
                author_id: String::new(),
                ..Default::default()
            },
            &ChannelId::new("c").unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(
            (entry.channel.as_str(), entry.seq, entry.author, entry.body),
            ("c", Seq(3), None, EntryBody::Unknown)
        );
    }
}
