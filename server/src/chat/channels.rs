//! Channels: create (direct, group, public), look up, list, update and archive.

use std::sync::Arc;

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{
    self, ChannelKind, ChannelSummary, MemberAction, Role, channel_event::Body,
};
use chorus_storage::{Anchor, ChannelInfo, ChannelPatch, LogEntry, LogQuery, NewChannel, Store};
use prost::Message;

use super::view::channel_message;
use super::{Actor, Chat, Error, channel_id, clamp_limit, user_id};
use crate::clock::unix_ms;
use crate::ids::random_id;

/// Memberships read per step of a walk over a user's channels.
pub(crate) const MEMBERSHIP_PAGE: usize = 512;
/// The longest channel name, bytes.
const MAX_NAME_BYTES: usize = 256;
/// The longest topic, bytes.
const MAX_TOPIC_BYTES: usize = 1024;
/// The most members a channel is created with.
pub(crate) const MAX_INITIAL_MEMBERS: usize = 1000;

/// A group or public channel to create.
#[derive(Debug)]
pub struct NewGroup {
    /// Its id; `None`: a random one.
    pub id: Option<ChannelId>,
    /// Group or public.
    pub kind: ChannelKind,
    /// Display name.
    pub name: String,
    /// Topic line.
    pub topic: String,
    /// Opaque application data.
    pub custom: Bytes,
    /// Who owns it (the creator, for a user).
    pub owner: UserId,
    /// The other initial members; one named twice is added once.
    pub members: Vec<UserId>,
}

impl Chat<'_> {
    /// Creates a group or public channel with its owner and initial members, logging each
    /// membership (`JOINED` for the owner, `ADDED` for the others).
    pub async fn create_group(&self, new: NewGroup) -> Result<ChannelInfo, Error> {
        if !matches!(new.kind, ChannelKind::Group | ChannelKind::Public) {
            return Err(Error::invalid(
                "kind",
                "kind must be direct, group or public",
            ));
        }
        self.check_texts(Some(&new.name), Some(&new.topic), Some(&new.custom))?;
        let id = match new.id {
            Some(id) => id,
            None => channel_id("channel_id", &random_id("c-"))?,
        };
        let mut members: Vec<(UserId, Role)> = Vec::with_capacity(new.members.len());
        for user in new.members {
            // Named twice, added once: one `ADDED` entry per member.
            if user != new.owner && !members.iter().any(|(u, _)| *u == user) {
                members.push((user, Role::Member));
            }
        }
        if members.len() > MAX_INITIAL_MEMBERS {
            return Err(Error::TooLarge {
                field: None,
                message: format!("at most {MAX_INITIAL_MEMBERS} initial members"),
            });
        }
        self.membership_room(std::iter::once(&new.owner).chain(members.iter().map(|(u, _)| u)))
            .map_err(|e| e.with_field("member_ids"))?;
        self.take_membership_budget()?;
        self.node
            .store()
            .create_channel(NewChannel {
                id: id.clone(),
                kind: new.kind,
                name: new.name,
                topic: new.topic,
                created_by: new.owner.clone(),
                created_at_ms: unix_ms(),
                members: members.clone(),
                custom: new.custom,
                retention: Default::default(),
            })
            .await?;
        self.member_event(&id, &new.owner, MemberAction::Joined, Role::Owner)
            .await?;
        for (user, _) in &members {
            self.member_event(&id, user, MemberAction::Added, Role::Member)
                .await?;
        }
        self.existing_channel(&id)
    }

    /// The direct channel of the acting user and `other`, created on first use (both are
    /// owners); the existing one after that.
    pub async fn direct(&self, other: &UserId) -> Result<ChannelInfo, Error> {
        let Actor::User(me) = self.actor else {
            return Err(Error::Forbidden(
                "direct channels are made by their users".into(),
            ));
        };
        if other == me {
            return Err(Error::invalid(
                "member_ids",
                "a direct channel needs two different users",
            ));
        }
        let store = self.node.store();
        if store.direct_channel_of(me, other)?.is_none() {
            self.membership_room([me, other])
                .map_err(|e| e.with_field("member_ids"))?;
            self.take_membership_budget()?;
        }
        let id = channel_id("channel_id", &random_id("dm-"))?;
        let (info, created) = store.direct_channel(me, other, id, unix_ms()).await?;
        if created {
            self.member_event(&info.id, me, MemberAction::Joined, Role::Owner)
                .await?;
            self.member_event(&info.id, other, MemberAction::Added, Role::Owner)
                .await?;
        }
        Ok(store.channel(&info.id)?.unwrap_or(info))
    }

    /// `CreateChannel` from a session.
    pub async fn create_channel(&self, c: v1::CreateChannel) -> Result<ChannelSummary, Error> {
        let Actor::User(me) = self.actor else {
            return Err(Error::Forbidden("a user creates channels here".into()));
        };
        let kind = ChannelKind::try_from(c.kind).unwrap_or(ChannelKind::Unspecified);
        self.check_texts(Some(&c.name), Some(&c.topic), Some(&c.custom))?;
        if kind == ChannelKind::Unspecified {
            return Err(Error::invalid(
                "kind",
                "kind must be direct, group or public",
            ));
        }
        let info = match kind {
            ChannelKind::Direct => {
                let [other] = c.member_ids.as_slice() else {
                    return Err(Error::invalid(
                        "member_ids",
                        "a direct channel names exactly one other user",
                    ));
                };
                self.direct(&user_id("member_ids", other)?).await?
            }
            _ => {
                let id = if c.channel_id.is_empty() {
                    None
                } else {
                    Some(channel_id("channel_id", &c.channel_id)?)
                };
                let members = c
                    .member_ids
                    .iter()
                    .map(|m| user_id("member_ids", m))
                    .collect::<Result<Vec<_>, _>>()?;
                self.create_group(NewGroup {
                    id,
                    kind,
                    name: c.name,
                    topic: c.topic,
                    custom: c.custom,
                    owner: me.clone(),
                    members,
                })
                .await?
            }
        };
        self.summary(&info)
    }

    /// The channel as the actor sees it, if readable.
    pub fn get_channel(&self, id: &ChannelId) -> Result<ChannelSummary, Error> {
        let info = self.readable(id)?;
        self.summary(&info)
    }

    /// Changes a channel's settings (owners) and logs the change.
    pub async fn change_channel(
        &self,
        id: &ChannelId,
        patch: ChannelPatch,
        change: v1::ChannelChanged,
    ) -> Result<ChannelInfo, Error> {
        let (info, _) = self.require_role(id, Role::Owner)?;
        if info.record.kind() == ChannelKind::Direct {
            return Err(Error::Forbidden("direct channels have no settings".into()));
        }
        self.check_texts(
            patch.name.as_ref(),
            patch.topic.as_ref(),
            patch.custom.as_ref(),
        )?;
        self.node.store().update_channel(id, patch).await?;
        self.append_event(id, Body::ChannelChanged(change)).await?;
        self.existing_channel(id)
    }

    /// Archives (`true`) or restores a channel.
    pub async fn archive(&self, id: &ChannelId, archived: bool) -> Result<ChannelInfo, Error> {
        let patch = ChannelPatch {
            archived: Some(archived),
            ..Default::default()
        };
        let change = v1::ChannelChanged {
            archived: Some(archived),
            ..Default::default()
        };
        self.change_channel(id, patch, change).await
    }

    /// Name, topic and custom data within their limits.
    fn check_texts(
        &self,
        name: Option<&String>,
        topic: Option<&String>,
        custom: Option<&Bytes>,
    ) -> Result<(), Error> {
        if name.is_some_and(|n| n.len() > MAX_NAME_BYTES)
            || topic.is_some_and(|t| t.len() > MAX_TOPIC_BYTES)
        {
            return Err(Error::TooLarge {
                field: None,
                message: "name or topic too long".into(),
            });
        }
        if custom.is_some_and(|c| c.len() > self.node.limits().max_message_bytes as usize) {
            return Err(Error::too_large("custom", "custom data too large"));
        }
        Ok(())
    }

    /// A channel as the acting user sees it: role, read position, the newest entry.
    pub fn summary(&self, info: &ChannelInfo) -> Result<ChannelSummary, Error> {
        match self.actor {
            Actor::User(user) => self.summary_for(user, info),
            Actor::Admin => Ok(ChannelSummary {
                channel: Some(channel_message(info)),
                last_message: newest_entry(self.node.store(), &info.id)?.map(|e| e.event.clone()),
                ..Default::default()
            }),
        }
    }

    /// A channel as `user` sees it.
    pub(crate) fn summary_for(
        &self,
        user: &UserId,
        info: &ChannelInfo,
    ) -> Result<ChannelSummary, Error> {
        let store = self.node.store();
        let state = self.read_state_of(user, &info.id)?;
        let last = newest_entry(store, &info.id)?;
        let role = store
            .member(&info.id, user)?
            .map_or(Role::Unspecified, |m| m.role());
        Ok(ChannelSummary {
            channel: Some(channel_message(info)),
            my_role: role as i32,
            last_read_seq: state.last_read.get(),
            unread_count: state.unread,
            last_message: last.map(|e| e.event.clone()),
        })
    }

    /// The acting user's channels, newest activity first (the time of the newest entry, or
    /// the creation for an empty log; ties by id). Every membership is read to sort them, at
    /// most `max_memberships_per_user`.
    pub fn list_channels(
        &self,
        l: v1::ListChannels,
        max_reply_bytes: usize,
    ) -> Result<v1::ChannelList, Error> {
        let Actor::User(me) = self.actor else {
            return Err(Error::Forbidden("a user lists their channels".into()));
        };
        let limits = self.node.limits();
        let limit = clamp_limit(l.limit, 50, limits.announced().max_list_limit);
        let store = self.node.store();
        let after = if l.cursor.is_empty() {
            None
        } else {
            Some(
                ActivityCursor::parse(&l.cursor)
                    .ok_or_else(|| Error::invalid("cursor", "bad cursor"))?,
            )
        };
        let max = limits.max_memberships_per_user as usize;
        let mut mine: Vec<(ActivityCursor, ChannelInfo)> = Vec::new();
        let mut from: Option<ChannelId> = None;
        while mine.len() < max {
            let page =
                store.user_channels(me, from.as_ref(), MEMBERSHIP_PAGE.min(max - mine.len()))?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for id in page {
                if let Some(info) = store.channel(&id)? {
                    mine.push((ActivityCursor::of(store, &info)?, info));
                }
            }
            from = Some(last);
        }
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        // Public channels found below carry no cursor: such a listing is one page.
        let mut infos: Vec<(Option<ActivityCursor>, ChannelInfo)> = mine
            .into_iter()
            .filter(|(key, _)| after.as_ref().is_none_or(|a| key > a))
            .map(|(key, info)| (Some(key), info))
            .take(limit + 1)
            .collect();
        let more_mine = infos.len() > limit;
        infos.truncate(limit);
        if l.include_public && infos.len() < limit {
            // Public channels the user has not joined, after the joined ones.
            let mut from = None;
            while infos.len() < limit {
                let page = store.channels(from.as_ref(), 256)?;
                let Some(last) = page.last().cloned() else {
                    break;
                };
                for id in page {
                    if infos.len() >= limit || infos.iter().any(|(_, i)| i.id == id) {
                        continue;
                    }
                    if let Some(info) = store.channel(&id)?
                        && info.record.kind() == ChannelKind::Public
                        && self.role(&id)?.is_none()
                    {
                        infos.push((None, info));
                    }
                }
                from = Some(last);
            }
        }
        let mut channels = Vec::with_capacity(infos.len());
        let mut bytes = 0;
        let mut cut_after: Option<ActivityCursor> = None;
        for (key, info) in &infos {
            let summary = self.summary(info)?;
            bytes += summary.encoded_len() + 8;
            if bytes > max_reply_bytes && !channels.is_empty() {
                break;
            }
            channels.push(summary);
            cut_after = key.clone();
        }
        let full_page = more_mine || channels.len() < infos.len();
        let next_cursor = if full_page && !l.include_public {
            cut_after.map(|c| c.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(v1::ChannelList {
            channels,
            next_cursor,
        })
    }
}

/// The newest entry of a channel's log, if any.
pub(crate) fn newest_entry(store: &Store, id: &ChannelId) -> Result<Option<Arc<LogEntry>>, Error> {
    let page = store.read(
        id,
        &LogQuery {
            anchor: Anchor::Latest,
            limit: 1,
            thread: None,
        },
    )?;
    Ok(page.entries.last().cloned())
}

/// A channel's place in a `ListChannels` listing, newest activity first, and the cursor that
/// continues after it (`<activity_ms>:<channel_id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ActivityCursor {
    activity_ms: u64,
    id: ChannelId,
}

impl ActivityCursor {
    /// When the channel was last active: its newest entry's time, else its creation.
    fn of(store: &Store, info: &ChannelInfo) -> Result<Self, Error> {
        let activity_ms = newest_entry(store, &info.id)?
            .map_or(info.record.created_at_ms, |e| e.event.server_time_ms);
        Ok(Self {
            activity_ms,
            id: info.id.clone(),
        })
    }

    fn parse(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once(':')?;
        Some(Self {
            activity_ms: ms.parse().ok()?,
            id: ChannelId::new(id).ok()?,
        })
    }
}

impl std::fmt::Display for ActivityCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.activity_ms, self.id)
    }
}

/// Listing order: newest activity first, then by id.
impl Ord for ActivityCursor {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .activity_ms
            .cmp(&self.activity_ms)
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for ActivityCursor {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
