//! Users blocking users. The store marks the pair's direct channel as blocked, so that posts
//! to it are refused from the record a post reads anyway; no new direct channel is made
//! between them; presence hides the blocker from the blocked. Messages in shared channels are
//! delivered as to anyone, and clients hide or mark them (`ListBlocks`): filtering every
//! delivery of a room per recipient would cost every message, not just the blocked ones.

use chorus_protocol::ids::UserId;
use chorus_protocol::v1;
use chorus_storage::ChannelInfo;

use super::{Chat, Error, clamp_limit, user_id};
use crate::clock::unix_ms;

/// Blocked users per page when the request asks for 0.
const DEFAULT_BLOCK_PAGE: usize = 100;

impl Chat<'_> {
    /// The acting user blocks `user`.
    pub async fn block(&self, user: &str) -> Result<(), Error> {
        let (me, them) = self.pair(user)?;
        let max = self.node.limits().max_blocks_per_user as usize;
        self.node
            .store()
            .block_user(me, &them, unix_ms(), max)
            .await?;
        // The blocked user, if watching, now sees the blocker offline.
        self.node.hub().presence().changed(me);
        Ok(())
    }

    /// The acting user unblocks `user`.
    pub async fn unblock(&self, user: &str) -> Result<(), Error> {
        let (me, them) = self.pair(user)?;
        self.node.store().unblock_user(me, &them).await?;
        self.node.hub().presence().changed(me);
        Ok(())
    }

    /// The users the acting user blocks, by id.
    pub fn list_blocks(&self, l: &v1::ListBlocks) -> Result<v1::BlockList, Error> {
        let Some(me) = self.actor.user() else {
            return Err(Error::Forbidden("a user blocks".into()));
        };
        let after = match l.cursor.as_str() {
            "" => None,
            c => Some(user_id("cursor", c)?),
        };
        let max = self.node.limits().announced().max_list_limit;
        let limit = clamp_limit(l.limit, DEFAULT_BLOCK_PAGE, max);
        let mut users = self
            .node
            .store()
            .blocked_users(me, after.as_ref(), limit + 1)?;
        let more = users.len() > limit;
        users.truncate(limit);
        Ok(v1::BlockList {
            next_cursor: match (more, users.last()) {
                (true, Some(last)) => last.to_string(),
                _ => String::new(),
            },
            user_ids: users.into_iter().map(|u| u.to_string()).collect(),
        })
    }

    /// Refuses a post to a direct channel whose users block each other.
    pub fn require_not_blocked(&self, info: &ChannelInfo) -> Result<(), Error> {
        if info.record.blocked && self.actor.user().is_some() {
            return Err(Error::Forbidden("one of you blocks the other".into()));
        }
        Ok(())
    }

    fn pair(&self, user: &str) -> Result<(&UserId, UserId), Error> {
        let Some(me) = self.actor.user() else {
            return Err(Error::Forbidden("a user blocks".into()));
        };
        let them = user_id("user_id", user)?;
        if *me == them {
            return Err(Error::invalid("user_id", "a user cannot block themself"));
        }
        Ok((me, them))
    }
}
