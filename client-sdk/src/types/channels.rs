//! Channels, their members, and this user's membership.

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, Epoch, Seq, UserId};
use chorus_protocol::v1;

use super::entries::Entry;
use super::{ChannelKind, Role, channel_id, optional_user, required, user_id};
use crate::error::Error;

/// A channel as the server describes it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Channel {
    /// Its id.
    pub id: ChannelId,
    /// Its kind.
    pub kind: ChannelKind,
    /// Display name (empty for direct channels).
    pub name: String,
    /// Topic.
    pub topic: String,
    /// Who created it (none for channels made by an operator).
    pub created_by: Option<UserId>,
    /// When it was created (Unix ms).
    pub created_at_ms: u64,
    /// Archived channels are read-only.
    pub archived: bool,
    /// The log's history generation.
    pub epoch: Epoch,
    /// The last seq.
    pub head: Seq,
    /// The oldest seq still stored.
    pub first_available: Seq,
    /// How many members it has.
    pub member_count: u32,
    /// The app's own data for the channel.
    pub custom: Bytes,
    /// Slow mode: a member waits this long between two posts (0: off).
    pub slow_mode_ms: u32,
    /// The channel's blocklist: shown to its moderators and owners only (the generated type:
    /// set it with [`Client::update_channel`](crate::Client::update_channel)).
    pub blocklist: Option<v1::Blocklist>,
    /// Whether mutes and bans are logged for the members to see.
    pub moderation_logged: bool,
}

impl TryFrom<v1::Channel> for Channel {
    type Error = Error;

    fn try_from(c: v1::Channel) -> Result<Self, Error> {
        Ok(Self {
            id: channel_id(c.channel_id)?,
            kind: ChannelKind::from_proto(c.kind),
            name: c.name,
            topic: c.topic,
            created_by: optional_user(c.created_by),
            created_at_ms: c.created_at_ms,
            archived: c.archived,
            epoch: Epoch(c.epoch),
            head: Seq(c.head_seq),
            first_available: Seq(c.first_available_seq),
            member_count: c.member_count,
            custom: c.custom,
            slow_mode_ms: c.slow_mode_ms,
            blocklist: c.blocklist,
            moderation_logged: c.moderation_log != v1::ModerationLog::None as i32,
        })
    }
}

/// A channel with this user's place in it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChannelSummary {
    /// The channel.
    pub channel: Channel,
    /// This user's role; `None` when not a member (a public channel to discover).
    pub my_role: Option<Role>,
    /// This user's read marker.
    pub last_read: Seq,
    /// Entries after the read marker.
    pub unread_count: u64,
    /// The latest message, when the server sent it.
    pub last_message: Option<Entry>,
}

impl TryFrom<v1::ChannelSummary> for ChannelSummary {
    type Error = Error;

    fn try_from(s: v1::ChannelSummary) -> Result<Self, Error> {
        let channel = Channel::try_from(required(s.channel, "channel")?)?;
        let last_message = s.last_message.map(|e| Entry::from_proto(e, &channel.id));
        Ok(Self {
            my_role: Role::from_proto(s.my_role),
            last_read: Seq(s.last_read_seq),
            unread_count: s.unread_count,
            last_message,
            channel,
        })
    }
}

/// A page of channels.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChannelPage {
    /// The channels.
    pub channels: Vec<ChannelSummary>,
    /// Pass it to the next `list_channels` for the next page; empty after the last.
    pub next_cursor: String,
}

impl TryFrom<v1::ChannelList> for ChannelPage {
    type Error = Error;

    fn try_from(l: v1::ChannelList) -> Result<Self, Error> {
        Ok(Self {
            channels: l
                .channels
                .into_iter()
                .map(ChannelSummary::try_from)
                .collect::<Result<_, _>>()?,
            next_cursor: l.next_cursor,
        })
    }
}

/// A channel to create: [`NewChannel::group`], [`NewChannel::public`] or
/// [`NewChannel::direct`], then optional settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChannel {
    kind: ChannelKind,
    id: Option<ChannelId>,
    name: String,
    topic: String,
    members: Vec<UserId>,
    custom: Bytes,
}

impl NewChannel {
    fn new(kind: ChannelKind, id: Option<ChannelId>, name: &str) -> Self {
        Self {
            kind,
            id,
            name: name.to_owned(),
            topic: String::new(),
            members: Vec::new(),
            custom: Bytes::new(),
        }
    }

    /// A group channel (members only).
    pub fn group(id: &ChannelId, name: &str) -> Self {
        Self::new(ChannelKind::Group, Some(id.clone()), name)
    }

    /// A public channel, which anyone can find and join.
    pub fn public(id: &ChannelId, name: &str) -> Self {
        Self::new(ChannelKind::Public, Some(id.clone()), name)
    }

    /// The direct channel with `user` (the server picks its id; the same channel every time).
    pub fn direct(user: &UserId) -> Self {
        let mut c = Self::new(ChannelKind::Direct, None, "");
        c.members.push(user.clone());
        c
    }

    /// First members besides the creator.
    pub fn members(mut self, users: &[UserId]) -> Self {
        self.members.extend_from_slice(users);
        self
    }

    /// A topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// The app's own data for the channel.
    pub fn custom(mut self, custom: impl Into<Bytes>) -> Self {
        self.custom = custom.into();
        self
    }

    pub(crate) fn into_proto(self) -> v1::CreateChannel {
        v1::CreateChannel {
            kind: self.kind.to_proto(),
            channel_id: self.id.map(ChannelId::into_string).unwrap_or_default(),
            name: self.name,
            topic: self.topic,
            member_ids: self.members.into_iter().map(UserId::into_string).collect(),
            custom: self.custom,
        }
    }
}

/// A channel member.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// The user.
    pub user: UserId,
    /// The role (`None` for a role this SDK does not know).
    pub role: Option<Role>,
    /// When they joined (Unix ms).
    pub joined_at_ms: u64,
    /// Muted until then (Unix ms; 0: not muted).
    pub muted_until_ms: u64,
}

/// A page of members.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberPage {
    /// The members.
    pub members: Vec<Member>,
    /// Pass it to the next `list_members` for the next page; empty after the last.
    pub next_cursor: String,
}

impl TryFrom<v1::MemberList> for MemberPage {
    type Error = Error;

    fn try_from(l: v1::MemberList) -> Result<Self, Error> {
        let members = l
            .members
            .into_iter()
            .map(|m| {
                Ok(Member {
                    user: user_id(m.user_id)?,
                    role: Role::from_proto(m.role),
                    joined_at_ms: m.joined_at_ms,
                    muted_until_ms: m.muted_until_ms,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            members,
            next_cursor: l.next_cursor,
        })
    }
}

/// This user joined or left a channel (or was added or removed).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Membership {
    /// The channel as it is now.
    pub channel: ChannelSummary,
    /// Whether this user is a member now.
    pub member: bool,
}

impl TryFrom<v1::MembershipUpdate> for Membership {
    type Error = Error;

    fn try_from(m: v1::MembershipUpdate) -> Result<Self, Error> {
        Ok(Self {
            channel: ChannelSummary::try_from(required(m.channel, "channel")?)?,
            member: m.member,
        })
    }
}
