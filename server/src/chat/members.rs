//! Membership: join and leave, add and remove, roles, member lists; each change logged as a
//! `MemberChanged` event and pushed to the user's sessions as `MembershipUpdate`.

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{
    self, ChannelKind, ChannelSummary, MemberAction, Role, channel_event::Body,
};
use chorus_storage::BanScope;

use super::access::role_rank;
use super::channels::MAX_INITIAL_MEMBERS;
use super::{Actor, Chat, Error, clamp_limit, user_id};
use crate::clock::unix_ms;
use crate::ids::SessionKey;

impl Chat<'_> {
    /// Joins a public channel (members of any channel get it back unchanged).
    pub async fn join(&self, id: &ChannelId) -> Result<ChannelSummary, Error> {
        let Actor::User(me) = self.actor else {
            return Err(Error::Forbidden("a user joins a channel".into()));
        };
        let info = self.readable(id)?;
        if self.role(id)?.is_some() {
            // Already a member, of any kind of channel: nothing to write.
            return self.summary(&info);
        }
        if info.record.kind() != ChannelKind::Public {
            return Err(Error::Forbidden(
                "only public channels can be joined".into(),
            ));
        }
        // A shadow-banned user notices nothing: they join, and the store writes their new
        // membership shadowed.
        if self.ban_of(id)?.is_some_and(|b| !b.shadow) {
            return Err(Error::Forbidden("banned from this channel".into()));
        }
        self.membership_room(&[me])
            .await
            .map_err(|e| e.with_field("channel_id"))?;
        self.can_log()?;
        self.take_membership_budget()?;
        if self
            .node
            .store()
            .add_member(id, me, Role::Member, unix_ms())
            .await?
        {
            self.member_event(id, me, MemberAction::Joined, Role::Member)
                .await?;
        }
        let info = self.readable(id)?;
        self.summary(&info)
    }

    /// Leaves a channel. The last owner of a group with other members hands over first.
    pub async fn leave(&self, id: &ChannelId) -> Result<(), Error> {
        let Actor::User(me) = self.actor else {
            return Err(Error::Forbidden("a user leaves a channel".into()));
        };
        let role = self
            .role(id)?
            .ok_or_else(|| Error::NotFound("not a member".into()))?;
        if role == Role::Owner && self.node.store().owner_count(id).await? <= 1 {
            let info = self.readable(id)?;
            if info.record.kind() != ChannelKind::Direct && info.record.member_count > 1 {
                return Err(Error::Conflict(
                    "the last owner must hand over ownership first".into(),
                ));
            }
        }
        self.can_log()?;
        self.node.store().remove_member(id, me).await?;
        self.member_event(id, me, MemberAction::Left, Role::Unspecified)
            .await
    }

    /// Adds the users named in `users` with `role` (moderators, admins); all or none pass the
    /// checks, and the ids are parsed after the caller's right to add is. Returns the users
    /// who were not members before.
    pub async fn add_members(
        &self,
        id: &ChannelId,
        users: &[String],
        role: Role,
    ) -> Result<Vec<UserId>, Error> {
        let (info, _) = self.require_role(id, Role::Moderator)?;
        if info.record.kind() == ChannelKind::Direct {
            return Err(Error::Forbidden(
                "direct channels have exactly two members".into(),
            ));
        }
        if users.len() > MAX_INITIAL_MEMBERS {
            return Err(Error::TooLarge {
                field: None,
                message: format!("at most {MAX_INITIAL_MEMBERS} users at once"),
            });
        }
        let users = users
            .iter()
            .map(|u| user_id("user_ids", u))
            .collect::<Result<Vec<_>, _>>()?;
        let store = self.node.store();
        // Checked for all before adding any: the request adds everyone or no one.
        let mut new_users = Vec::with_capacity(users.len());
        for user in &users {
            if store.member(id, user)?.is_none() && !new_users.contains(&user) {
                match store.ban_of(BanScope::Channel(id), user, unix_ms())? {
                    Some(b) if !b.shadow => {
                        return Err(Error::Conflict(format!(
                            "{user} is banned from {id}: unban them first"
                        )));
                    }
                    // Added back, a shadow-banned user stays shadow-banned: the store writes
                    // the new membership shadowed.
                    Some(_) | None => {}
                }
                new_users.push(user);
            }
        }
        self.membership_room(&new_users)
            .await
            .map_err(|e| e.with_field("user_ids"))?;
        self.can_log()?;
        let mut added = Vec::with_capacity(new_users.len());
        for user in new_users {
            if store.add_member(id, user, role, unix_ms()).await? {
                self.member_event(id, user, MemberAction::Added, role)
                    .await?;
                added.push(user.clone());
            }
        }
        Ok(added)
    }

    /// Removes the member named `user` if of lower role (moderators, admins).
    pub async fn remove_member(&self, id: &ChannelId, user: &str) -> Result<(), Error> {
        let (info, my_role) = self.require_role(id, Role::Moderator)?;
        if info.record.kind() == ChannelKind::Direct {
            return Err(Error::Forbidden(
                "direct channels have exactly two members".into(),
            ));
        }
        let user = &user_id("user_id", user)?;
        if self.actor.user() == Some(user) {
            // Leaving has its own rules (the last owner stays).
            return Err(Error::invalid(
                "user_id",
                "use LeaveChannel to leave a channel",
            ));
        }
        let theirs = self
            .node
            .store()
            .member(id, user)?
            .ok_or_else(|| Error::NotFound(format!("{user} is not a member of {id}")))?
            .role();
        if matches!(self.actor, Actor::User(_)) && role_rank(theirs) >= role_rank(my_role) {
            return Err(Error::Forbidden(
                "cannot remove a member of equal or higher role".into(),
            ));
        }
        self.can_log()?;
        self.node.store().remove_member(id, user).await?;
        self.member_event(id, user, MemberAction::Removed, Role::Unspecified)
            .await
    }

    /// Gives the member named `user` another role (owners, admins). The last owner cannot
    /// step down.
    pub async fn set_role(&self, id: &ChannelId, user: &str, role: Role) -> Result<(), Error> {
        let (info, _) = self.require_role(id, Role::Owner)?;
        if info.record.kind() == ChannelKind::Direct {
            return Err(Error::Forbidden(
                "both users of a direct channel are owners".into(),
            ));
        }
        let user = &user_id("user_id", user)?;
        if role == Role::Unspecified {
            return Err(Error::invalid(
                "role",
                "role must be member, moderator or owner",
            ));
        }
        let store = self.node.store();
        if store.member(id, user)?.is_none() {
            return Err(Error::NotFound(format!("{user} is not a member of {id}")));
        }
        if self.actor.user() == Some(user)
            && role != Role::Owner
            && self.node.store().owner_count(id).await? <= 1
        {
            return Err(Error::Conflict("the last owner cannot step down".into()));
        }
        self.can_log()?;
        store.put_member(id, user, role, unix_ms()).await?;
        self.member_event(id, user, MemberAction::RoleChanged, role)
            .await
    }

    /// A page of a readable channel's members, by user id.
    pub fn list_members(&self, l: v1::ListMembers) -> Result<v1::MemberList, Error> {
        let id = super::channel_id("channel_id", &l.channel_id)?;
        self.readable(&id)?;
        let limit = clamp_limit(l.limit, 100, self.node.limits().announced().max_list_limit);
        let after = if l.cursor.is_empty() {
            None
        } else {
            Some(super::user_id("cursor", &l.cursor)?)
        };
        let page = self.node.store().members(&id, after.as_ref(), limit)?;
        let next_cursor = if page.len() >= limit {
            page.last().map(|(u, _)| u.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(v1::MemberList {
            members: page
                .into_iter()
                .map(|(u, m)| v1::Member {
                    user_id: u.to_string(),
                    role: m.role,
                    joined_at_ms: m.joined_at_ms,
                    muted_until_ms: m.muted_until_ms,
                })
                .collect(),
            next_cursor,
        })
    }

    /// Logs a membership change of `user` and tells the user's sessions.
    pub(crate) async fn member_event(
        &self,
        id: &ChannelId,
        user: &UserId,
        action: MemberAction,
        role: Role,
    ) -> Result<(), Error> {
        self.append_event(
            id,
            Body::MemberChanged(v1::MemberChanged {
                user_id: user.to_string(),
                action: action as i32,
                role: role as i32,
                until_ms: 0,
            }),
        )
        .await?;
        self.tell_membership(user, id, action);
        Ok(())
    }

    /// After a membership change of `user` in `id` (joined, added, removed, left, role
    /// changed), pushes `MembershipUpdate` to every session of that user, so that channel
    /// lists stay current. Best effort: the change itself is durable already, and a session
    /// that misses the push finds it in `ListChannels` or the channel's log.
    pub(crate) fn tell_membership(&self, user: &UserId, id: &ChannelId, action: MemberAction) {
        if !matches!(
            action,
            MemberAction::Joined
                | MemberAction::Added
                | MemberAction::Removed
                | MemberAction::Left
                | MemberAction::RoleChanged
        ) {
            return;
        }
        let summary = match self.node.store().channel(id) {
            Ok(Some(info)) => self.summary_for(user, &info),
            Ok(None) => return,
            Err(e) => Err(e.into()),
        };
        let summary = match summary {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%user, channel = %id, error = %e, "membership push skipped");
                return;
            }
        };
        let member = summary.my_role != Role::Unspecified as i32;
        let update = v1::MembershipUpdate {
            channel: Some(summary),
            member,
        };
        self.node
            .hub()
            .push_to_user(user, v1::push::Push::Membership(update), SessionKey::NONE);
    }
}
