//! Typing indicators: ephemeral pushes to the channel's other subscribers, never stored.

use std::time::Instant;

use chorus_protocol::v1::{self, Role, push::Push};

use super::{Actor, Chat, Error, channel_id};
use crate::ids::SessionKey;
use crate::ratelimit::TokenBucket;

/// How long a typing indicator lasts unless renewed.
const TYPING_EXPIRES_MS: u32 = 6_000;

impl Chat<'_> {
    /// Tells the channel's other subscribers that the acting user is (or stopped) typing,
    /// within the session's `budget` of ephemeral events.
    pub fn typing(
        &self,
        t: v1::Typing,
        session: SessionKey,
        budget: &mut TokenBucket,
    ) -> Result<(), Error> {
        let Actor::User(user) = self.actor else {
            return Err(Error::Forbidden("a user types".into()));
        };
        let id = channel_id("channel_id", &t.channel_id)?;
        self.require_role(&id, Role::Member)?;
        if let Err(retry_after_ms) = budget.take(Instant::now()) {
            metrics::counter!("chorus_rate_limited_total", "kind" => "typing").increment(1);
            return Err(Error::RateLimited {
                message: "typing rate exceeded",
                retry_after_ms,
            });
        }
        let event = v1::TypingEvent {
            channel_id: id.to_string(),
            user_id: user.to_string(),
            typing: t.typing,
            thread_parent_seq: t.thread_parent_seq,
            expires_in_ms: TYPING_EXPIRES_MS,
        };
        self.node.hub().broadcast(&id, Push::Typing(event), session);
        Ok(())
    }
}
