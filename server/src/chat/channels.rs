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
        let joining: Vec<&UserId> = std::iter::once(&new.owner)
            .chain(members.iter().map(|(u, _)| u))
            .collect();
        self.membership_room(&joining)
            .await
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
            self.membership_room(&[me, other])
                .await
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
        if change != v1::ChannelChanged::default() {
            self.append_event(id, Body::ChannelChanged(change)).await?;
        }
        self.existing_channel(id)
    }

    /// Applies an `UpdateChannel` (owners, admins): name, topic, custom data, slow mode and
    /// blocklist. Every change but the blocklist's is logged as `ChannelChanged`.
    pub async fn update_channel(&self, u: v1::UpdateChannel) -> Result<ChannelInfo, Error> {
        let id = channel_id("channel_id", &u.channel_id)?;
        let patch = ChannelPatch {
            name: u.name.clone(),
            topic: u.topic.clone(),
            custom: u.custom.clone(),
            slow_mode_ms: super::policy::slow_mode_patch(u.slow_mode_ms)?,
            blocklist: super::policy::blocklist_patch(u.blocklist.as_ref())?,
            moderation_log: u.moderation_log,
            ..Default::default()
        };
        let change = v1::ChannelChanged {
            name: u.name,
            topic: u.topic,
            archived: None,
            custom: u.custom,
            slow_mode_ms: u.slow_mode_ms,
        };
        self.change_channel(&id, patch, change).await
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
                channel: Some({
                    let mut c = channel_message(info);
                    super::policy::with_blocklist(&mut c, info, None);
                    c
                }),
                last_message: newest_entry(self.node.store(), &info.id)?
                    .map(|e| self.event_view(&e)),
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
        let mut channel = channel_message(info);
        super::policy::with_blocklist(&mut channel, info, Some(role));
        Ok(ChannelSummary {
            channel: Some(channel),
            my_role: role as i32,
            last_read_seq: state.last_read.get(),
            unread_count: state.unread,
            last_message: last.map(|e| self.event_view(&e)),
        })
    }

    /// The acting user's channels, newest activity first (the time of the newest entry, or
    /// the creation for an empty log; ties by id), then, with `include_public`, the public
    /// channels the user has not joined, by id. Every membership is read to sort them (at
    /// most `max_memberships_per_user`); the public part examines at most `public_list_scan`
    /// channel records per page.
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
        let cursor =
            ListCursor::parse(&l.cursor).ok_or_else(|| Error::invalid("cursor", "bad cursor"))?;
        // Each listed channel with the cursor that continues after it.
        let mut infos: Vec<(ListCursor, ChannelInfo)> = Vec::new();
        // Where the next page starts when this one is not cut short by its size.
        let mut next: Option<ListCursor> = None;
        let public_from = match cursor {
            ListCursor::Public(after) => Some(after),
            ListCursor::Start | ListCursor::Mine(_) => {
                let after = match cursor {
                    ListCursor::Mine(a) => Some(a),
                    ListCursor::Start | ListCursor::Public(_) => None,
                };
                let mine = self.my_channels(me, limits.max_memberships_per_user as usize)?;
                let mut rest = mine
                    .into_iter()
                    .filter(|(key, _)| after.as_ref().is_none_or(|a| key > a))
                    .map(|(key, info)| (ListCursor::Mine(key), info));
                infos.extend(rest.by_ref().take(limit));
                if rest.next().is_some() {
                    next = infos.last().map(|(c, _)| c.clone());
                    None
                } else if l.include_public && infos.len() < limit {
                    Some(None)
                } else if l.include_public {
                    next = Some(ListCursor::Public(None));
                    None
                } else {
                    None
                }
            }
        };
        if let Some(after) = public_from {
            next =
                self.public_channels(after, limit, limits.public_list_scan as usize, &mut infos)?;
        }
        let mut channels = Vec::with_capacity(infos.len());
        let mut bytes = 0;
        for (i, (_, info)) in infos.iter().enumerate() {
            let summary = self.summary(info)?;
            bytes += summary.encoded_len() + 8;
            if bytes > max_reply_bytes && !channels.is_empty() {
                // Cut by size: the next page starts after the last channel sent.
                next = Some(infos[i - 1].0.clone());
                break;
            }
            channels.push(summary);
        }
        Ok(v1::ChannelList {
            channels,
            next_cursor: next.map(|c| c.to_string()).unwrap_or_default(),
        })
    }

    /// Every channel of `user` (at most `max`), in listing order.
    fn my_channels(
        &self,
        user: &UserId,
        max: usize,
    ) -> Result<Vec<(ActivityCursor, ChannelInfo)>, Error> {
        let store = self.node.store();
        let mut mine = Vec::new();
        let mut from: Option<ChannelId> = None;
        while mine.len() < max {
            let page =
                store.user_channels(user, from.as_ref(), MEMBERSHIP_PAGE.min(max - mine.len()))?;
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
        Ok(mine)
    }

    /// Public channels the acting user has not joined, by id after `after`, into `infos`
    /// until it holds `limit` or `budget` channel records were examined. Returns the cursor
    /// of the next page, `None` when no channel is left.
    fn public_channels(
        &self,
        after: Option<ChannelId>,
        limit: usize,
        budget: usize,
        infos: &mut Vec<(ListCursor, ChannelInfo)>,
    ) -> Result<Option<ListCursor>, Error> {
        let store = self.node.store();
        let mut from = after;
        let mut examined = 0;
        while infos.len() < limit && examined < budget {
            let ask = PUBLIC_PAGE.min(budget - examined);
            let page = store.channels(from.as_ref(), ask)?;
            let exhausted = page.len() < ask;
            for id in page {
                if infos.len() >= limit {
                    return Ok(Some(ListCursor::Public(from)));
                }
                examined += 1;
                from = Some(id.clone());
                // Not a channel the user is banned from: they may not read it.
                if let Some(info) = store.channel(&id)?
                    && info.record.kind() == ChannelKind::Public
                    && self.role(&id)?.is_none()
                    && self.ban_of(&id)?.is_none_or(|b| b.shadow)
                {
                    infos.push((ListCursor::Public(Some(id)), info));
                }
            }
            if exhausted {
                return Ok(None);
            }
        }
        Ok(Some(ListCursor::Public(from)))
    }
}

/// Channel ids read per step of the public listing.
const PUBLIC_PAGE: usize = 256;

/// Where a `ListChannels` page starts: `""` (the first page), `<activity_ms>:<id>` (in the
/// user's channels, after that one), `p:` or `p:<id>` (in the public channels, from the first
/// or after that one).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ListCursor {
    Start,
    Mine(ActivityCursor),
    Public(Option<ChannelId>),
}

impl ListCursor {
    fn parse(s: &str) -> Option<Self> {
        if s.is_empty() {
            return Some(ListCursor::Start);
        }
        match s.strip_prefix("p:") {
            Some("") => Some(ListCursor::Public(None)),
            Some(id) => ChannelId::new(id)
                .ok()
                .map(|id| ListCursor::Public(Some(id))),
            None => ActivityCursor::parse(s).map(ListCursor::Mine),
        }
    }
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListCursor::Start => Ok(()),
            ListCursor::Mine(c) => c.fmt(f),
            ListCursor::Public(None) => f.write_str("p:"),
            ListCursor::Public(Some(id)) => write!(f, "p:{id}"),
        }
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
