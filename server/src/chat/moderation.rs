//! Moderation inside a channel: mute, ban (removing, or shadow), their lifting. Each visible
//! action is a `MemberChanged` entry of the channel's log; every action is written to the audit
//! log (`chorus::audit` target). Expiry needs no job: the records say until when, and every
//! check compares with the clock.

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{
    self, ChannelKind, MemberAction, ModerationLog, Role, channel_event::Body,
};
use chorus_storage::{BanRecord, BanScope, MemberRecord};

use super::access::role_rank;
use super::{Actor, Chat, Error, user_id};
use crate::clock::unix_ms;

/// "Until lifted" in a member record's `muted_until_ms` / `shadowed_until_ms`.
const FOREVER: u64 = u64::MAX;

impl Chat<'_> {
    /// Mutes a member (moderators, owners, admins): they may read but not post or react.
    pub async fn mute(
        &self,
        id: &ChannelId,
        user: &str,
        duration_ms: u64,
        reason: &str,
    ) -> Result<(), Error> {
        check_reason(reason)?;
        let (user, member) = self.moderated(id, user)?;
        let member = member.ok_or_else(|| not_member(&user, id))?;
        let until = until(duration_ms);
        self.can_log()?;
        self.node.store().set_mute(id, &user, until).await?;
        audit(self.actor, id, &user, "mute", duration_ms, reason);
        self.moderation_event(id, &user, MemberAction::Muted, member.role(), duration_ms)
            .await
    }

    /// Lifts a mute; a member who is not muted is left as is (nothing is logged).
    pub async fn unmute(&self, id: &ChannelId, user: &str) -> Result<(), Error> {
        let (user, member) = self.moderated(id, user)?;
        let member = member.ok_or_else(|| not_member(&user, id))?;
        if member.muted_until_ms <= unix_ms() {
            return Ok(());
        }
        self.can_log()?;
        self.node.store().set_mute(id, &user, 0).await?;
        audit(self.actor, id, &user, "unmute", 0, "");
        self.moderation_event(id, &user, MemberAction::Unmuted, member.role(), 0)
            .await
    }

    /// Bans a user (moderators, owners, admins). A ban removes the member, ends their
    /// subscriptions and keeps them from joining again; a user who is not a member may be
    /// banned ahead. A shadow ban keeps the member, logs nothing they could read, and withholds
    /// their posts from everyone else.
    pub async fn ban(&self, b: &v1::BanMember, id: &ChannelId) -> Result<(), Error> {
        check_reason(&b.reason)?;
        let (user, member) = self.moderated(id, &b.user_id)?;
        let now = unix_ms();
        let record = BanRecord {
            until_ms: if b.duration_ms == 0 {
                0
            } else {
                now.saturating_add(b.duration_ms)
            },
            reason: b.reason.clone(),
            banned_by: self.actor.user().map(UserId::to_string).unwrap_or_default(),
            created_at_ms: now,
            shadow: b.shadow,
        };
        let store = self.node.store();
        if b.shadow {
            if member.is_none() {
                return Err(not_member(&user, id));
            }
            store.ban(BanScope::Channel(id), &user, record).await?;
            store.set_shadow(id, &user, until(b.duration_ms)).await?;
            audit(
                self.actor,
                id,
                &user,
                "shadow_ban",
                b.duration_ms,
                &b.reason,
            );
            return Ok(());
        }
        self.can_log()?;
        store.ban(BanScope::Channel(id), &user, record).await?;
        if member.is_some() {
            store.remove_member(id, &user).await?;
        }
        audit(self.actor, id, &user, "ban", b.duration_ms, &b.reason);
        // The fan-out ends the user's subscriptions when it delivers this entry.
        self.moderation_event(
            id,
            &user,
            MemberAction::Banned,
            Role::Unspecified,
            b.duration_ms,
        )
        .await?;
        if member.is_some() {
            self.tell_membership(&user, id, MemberAction::Removed);
        }
        Ok(())
    }

    /// Lifts a ban (either kind); `NOT_FOUND` when the user is not banned.
    pub async fn unban(&self, id: &ChannelId, user: &str) -> Result<(), Error> {
        let (user, member) = self.moderated(id, user)?;
        let store = self.node.store();
        let ban = store
            .ban_of(BanScope::Channel(id), &user, unix_ms())?
            .ok_or_else(|| Error::NotFound(format!("{user} is not banned from {id}")))?;
        if ban.shadow {
            store.unban(BanScope::Channel(id), &user).await?;
            if member.is_some() {
                store.set_shadow(id, &user, 0).await?;
            }
            audit(self.actor, id, &user, "shadow_unban", 0, "");
            return Ok(());
        }
        self.can_log()?;
        store.unban(BanScope::Channel(id), &user).await?;
        audit(self.actor, id, &user, "unban", 0, "");
        self.moderation_event(id, &user, MemberAction::Unbanned, Role::Unspecified, 0)
            .await
    }

    /// The user named by a moderation request and their membership, after the actor's right:
    /// a moderator acts on members of a lower role only, never on themself, never in a direct
    /// channel.
    fn moderated(
        &self,
        id: &ChannelId,
        user: &str,
    ) -> Result<(UserId, Option<MemberRecord>), Error> {
        let (info, my_role) = self.require_role(id, Role::Moderator)?;
        if info.record.kind() == ChannelKind::Direct {
            return Err(Error::Forbidden(
                "direct channels have no moderators (block the user instead)".into(),
            ));
        }
        let user = user_id("user_id", user)?;
        if self.actor.user() == Some(&user) {
            return Err(Error::invalid(
                "user_id",
                "a moderator cannot moderate themself",
            ));
        }
        let member = self.node.store().member(id, &user)?;
        if let (Actor::User(_), Some(m)) = (self.actor, &member)
            && role_rank(m.role()) >= role_rank(my_role)
        {
            return Err(Error::Forbidden(
                "cannot moderate a member of equal or higher role".into(),
            ));
        }
        Ok((user, member))
    }

    /// Logs a moderation action for the members, unless the channel's policy is not to; a
    /// ban then still ends the user's subscriptions (the fan-out of its entry would have).
    async fn moderation_event(
        &self,
        id: &ChannelId,
        user: &UserId,
        action: MemberAction,
        role: Role,
        duration_ms: u64,
    ) -> Result<(), Error> {
        let info = self.existing_channel(id)?;
        if ModerationLog::try_from(info.record.moderation_log) == Ok(ModerationLog::None) {
            if action == MemberAction::Banned {
                self.node.hub().end_subscriptions(id, user);
            }
            return Ok(());
        }
        let until_ms = if duration_ms == 0 {
            0
        } else {
            unix_ms().saturating_add(duration_ms)
        };
        self.append_event(
            id,
            Body::MemberChanged(v1::MemberChanged {
                user_id: user.to_string(),
                action: action as i32,
                role: role as i32,
                until_ms,
            }),
        )
        .await
        .map(drop)
    }
}

fn until(duration_ms: u64) -> u64 {
    if duration_ms == 0 {
        FOREVER
    } else {
        unix_ms().saturating_add(duration_ms)
    }
}

/// Longest moderation reason, bytes (it is kept in the ban record and the audit log).
const MAX_REASON_BYTES: usize = 1024;

fn check_reason(reason: &str) -> Result<(), Error> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::too_large("reason", "a reason is at most 1024 bytes"));
    }
    Ok(())
}

fn not_member(user: &UserId, id: &ChannelId) -> Error {
    Error::NotFound(format!("{user} is not a member of {id}"))
}

/// One line per moderator action in the audit log.
fn audit(
    actor: Actor<'_>,
    id: &ChannelId,
    user: &UserId,
    action: &str,
    duration_ms: u64,
    reason: &str,
) {
    let by = actor.user().map_or("admin", |u| u.as_str());
    tracing::info!(target: "chorus::audit", channel = %id, user = %user, by, action, duration_ms, reason, "moderation");
}
