//! Who may do what: reading a channel, holding a role in it, holding a session at all; and the
//! budgets and limits on memberships and publishes.

use std::sync::Mutex;
use std::time::Instant;

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{ChannelKind, CloseCode, ErrorCode, Role};
use chorus_storage::{BanScope, ChannelInfo, MemberRecord};

use super::{Actor, Chat, Error};
use crate::auth::Identity;
use crate::clock::unix_ms;
use crate::config::LimitsConfig;
use crate::node::{Node, UserBuckets};
use crate::ratelimit::TokenBucket;

/// How much a role may do: owner > moderator > member > none.
pub fn role_rank(role: Role) -> u8 {
    match role {
        Role::Owner => 3,
        Role::Moderator => 2,
        Role::Member => 1,
        Role::Unspecified => 0,
    }
}

impl Chat<'_> {
    /// The channel, which must exist.
    pub fn existing_channel(&self, id: &ChannelId) -> Result<ChannelInfo, Error> {
        self.node
            .store()
            .channel(id)?
            .ok_or_else(|| Error::channel_not_found(id))
    }

    /// The channel, if the actor may read it: public channels, channels the user belongs to,
    /// every channel for an admin. A private channel is not revealed to a non-member.
    pub fn readable(&self, id: &ChannelId) -> Result<ChannelInfo, Error> {
        self.readable_with_member(id).map(|(info, _)| info)
    }

    /// [`Self::readable`] and the user's membership, read once: a publish needs both, and
    /// reading the member record twice (once for visibility, once for the mute) was a third of
    /// the record reads of every publish to a private channel.
    pub fn readable_with_member(
        &self,
        id: &ChannelId,
    ) -> Result<(ChannelInfo, Option<MemberRecord>), Error> {
        let info = self.existing_channel(id)?;
        let Actor::User(user) = self.actor else {
            return Ok((info, None));
        };
        let member = self.node.store().member(id, user)?;
        if member.is_some() {
            return Ok((info, member));
        }
        if info.record.kind() == ChannelKind::Public {
            // A banned user no longer reads the channel either.
            if self.ban_of(id)?.is_some_and(|b| !b.shadow) {
                return Err(Error::Forbidden("banned from this channel".into()));
            }
            return Ok((info, member));
        }
        Err(Error::channel_not_found(id))
    }

    /// The acting user's role in a channel (`None`: not a member, or an admin acts).
    pub fn role(&self, id: &ChannelId) -> Result<Option<Role>, Error> {
        let Actor::User(user) = self.actor else {
            return Ok(None);
        };
        Ok(self.node.store().member(id, user)?.map(|m| m.role()))
    }

    /// Whether the acting user is shadow-banned in the channel now: what they append is then
    /// withheld from everyone else.
    pub fn shadowed(&self, id: &ChannelId) -> Result<bool, Error> {
        let Actor::User(user) = self.actor else {
            return Ok(false);
        };
        Ok(self
            .node
            .store()
            .member(id, user)?
            .is_some_and(|m| m.shadowed_until_ms > unix_ms()))
    }

    /// The rules every post by a member follows (messages, reactions, app events): not muted,
    /// the channel not archived, no block between the two users of a direct channel. Checked
    /// on the records the caller read already; an admin is never refused.
    pub fn may_post(&self, info: &ChannelInfo, member: &MemberRecord) -> Result<(), Error> {
        if !matches!(self.actor, Actor::User(_)) {
            return Ok(());
        }
        if member.muted_until_ms > unix_ms() {
            return Err(Error::Forbidden("muted in this channel".into()));
        }
        if info.record.archived {
            return Err(Error::Forbidden("the channel is archived".into()));
        }
        self.require_not_blocked(info)
    }

    /// The channel and the acting user's membership, which must exist (a reader of a public
    /// channel who is no member is refused), for a post: [`Self::may_post`] applied.
    pub fn poster(&self, id: &ChannelId) -> Result<(ChannelInfo, MemberRecord), Error> {
        let (info, member) = self.readable_with_member(id)?;
        let member = member.ok_or_else(|| Error::Forbidden("join the channel to post".into()))?;
        self.may_post(&info, &member)?;
        Ok((info, member))
    }

    /// The actor's role, which must be at least `min`, on a readable channel. An admin acts
    /// as an owner.
    pub fn require_role(&self, id: &ChannelId, min: Role) -> Result<(ChannelInfo, Role), Error> {
        let info = self.readable(id)?;
        if matches!(self.actor, Actor::Admin) {
            return Ok((info, Role::Owner));
        }
        let role = self.role(id)?.unwrap_or(Role::Unspecified);
        if role_rank(role) < role_rank(min) {
            return Err(Error::Forbidden(format!(
                "needs role {}",
                min.as_str_name()
            )));
        }
        Ok((info, role))
    }

    /// The acting user's ban from the channel in force now, if any.
    pub fn ban_of(&self, id: &ChannelId) -> Result<Option<chorus_storage::BanRecord>, Error> {
        let Actor::User(user) = self.actor else {
            return Ok(None);
        };
        Ok(self
            .node
            .store()
            .ban_of(BanScope::Channel(id), user, unix_ms())?)
    }

    /// Refuses a change that writes a record and then logs it (membership changes) while the
    /// store takes no new entries (free-space watermark): refused before the record is
    /// written, so that `UNAVAILABLE` stays true and the log never misses the change.
    pub fn can_log(&self) -> Result<(), Error> {
        Ok(self.node.store().check_growth()?)
    }

    /// `LIMIT_EXCEEDED` when one of `users` already belongs to `max_memberships_per_user`
    /// channels. Each check reads the user's kept count (one record); a user whose count is
    /// not kept yet is counted once, at most `max_memberships_per_user` key reads.
    pub async fn membership_room(&self, users: &[&UserId]) -> Result<(), Error> {
        let max = self.node.limits().max_memberships_per_user as usize;
        for user in users {
            if self.node.store().user_channel_count(user, max).await? >= max {
                metrics::counter!("chorus_limit_exceeded_total", "kind" => "memberships")
                    .increment(1);
                return Err(Error::LimitExceeded {
                    field: None,
                    message: format!(
                        "{user} already belongs to {max} channels (max_memberships_per_user)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Takes one membership the acting user acquires itself (creating or joining a channel)
    /// from that user's budget. Admins have none.
    pub fn take_membership_budget(&self) -> Result<(), Error> {
        let Actor::User(user) = self.actor else {
            return Ok(());
        };
        let limits = self.node.limits();
        take_budget(
            self.node.membership_buckets(),
            user,
            limits.membership_rate_per_sec,
            limits.membership_burst,
        )
        .map_err(|retry_after_ms| {
            metrics::counter!("chorus_rate_limited_total", "kind" => "membership").increment(1);
            Error::RateLimited {
                message: "channel creation and join rate exceeded",
                retry_after_ms,
            }
        })
    }

    /// Takes one publish from the acting user's budget under `limits` (the caller's copy: a
    /// publish reads the limits once).
    pub fn take_publish_budget(&self, limits: &LimitsConfig) -> Result<(), Error> {
        let Actor::User(user) = self.actor else {
            return Ok(());
        };
        take_budget(
            self.node.publish_buckets(),
            user,
            limits.publish_rate_per_sec,
            limits.publish_burst,
        )
        .map_err(|retry_after_ms| {
            metrics::counter!("chorus_rate_limited_total", "kind" => "publish").increment(1);
            Error::RateLimited {
                message: "publish rate exceeded",
                retry_after_ms,
            }
        })
    }
}

impl Chat<'_> {
    /// Takes one search from the acting user's budget (bursts of twice the rate).
    pub fn take_search_budget(&self, limits: &LimitsConfig) -> Result<(), Error> {
        let Actor::User(user) = self.actor else {
            return Ok(());
        };
        let rate = limits.search_rate_per_sec;
        take_budget(
            self.node.search_buckets(),
            user,
            rate,
            rate.saturating_mul(2),
        )
        .map_err(|retry_after_ms| {
            metrics::counter!("chorus_rate_limited_total", "kind" => "search").increment(1);
            Error::RateLimited {
                message: "search rate exceeded",
                retry_after_ms,
            }
        })
    }
}

/// Takes one token from `user`'s bucket in `buckets`, made with `rate` and `burst` on first
/// use; `Err` holds the milliseconds until a token is available.
fn take_budget(buckets: &UserBuckets, user: &UserId, rate: u32, burst: u32) -> Result<(), u32> {
    let take = |bucket: &Mutex<TokenBucket>| {
        bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now())
    };
    // Looked up before inserting: an insert needs the user id by value, a copy per call where
    // the bucket nearly always exists (this is on every publish).
    match buckets.get(user) {
        Some(bucket) => take(&bucket),
        None => take(
            &buckets
                .entry(user.clone())
                .or_insert_with(|| Mutex::new(TokenBucket::new(rate, burst, Instant::now()))),
        ),
    }
}

/// Why a verified identity may not hold a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Banned from the server.
    #[error("banned")]
    Banned,
    /// The account was erased.
    #[error("account erased")]
    Erased,
    /// The token was issued before the user's tokens were revoked.
    #[error("token revoked")]
    Revoked,
    /// The store could not tell (fails closed).
    #[error("storage unavailable")]
    Unavailable,
}

impl Refused {
    /// The error code a client is told.
    pub fn code(self) -> ErrorCode {
        match self {
            Refused::Banned => ErrorCode::Forbidden,
            Refused::Erased | Refused::Revoked => ErrorCode::Unauthenticated,
            Refused::Unavailable => ErrorCode::Unavailable,
        }
    }

    /// The close code a connection is closed with.
    pub fn close_code(self) -> CloseCode {
        match self {
            Refused::Banned => CloseCode::Banned,
            Refused::Erased | Refused::Revoked => CloseCode::AuthInvalid,
            Refused::Unavailable => CloseCode::InternalError,
        }
    }
}

/// Whether a verified identity may hold a session: not banned from the server, account not
/// erased, token not revoked. Fails closed when the store cannot tell. Checked at the
/// handshake and on every token refresh.
pub fn admissible(node: &Node, identity: &Identity) -> Result<(), Refused> {
    let store = node.store();
    let refused = |why: Refused, reason: &'static str| {
        metrics::counter!("chorus_auth_failures_total", "reason" => reason).increment(1);
        Err(why)
    };
    match store.ban_of(BanScope::Server, &identity.user, unix_ms()) {
        Ok(Some(_)) => return refused(Refused::Banned, "banned"),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "ban lookup failed");
            return Err(Refused::Unavailable);
        }
    }
    match store.user(&identity.user) {
        Ok(Some(user)) if user.erased => refused(Refused::Erased, "erased"),
        Ok(Some(user)) if identity.issued_at_ms < user.tokens_valid_after_ms => {
            refused(Refused::Revoked, "revoked")
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "user lookup failed");
            Err(Refused::Unavailable)
        }
    }
}
