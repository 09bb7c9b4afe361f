//! Ephemeral channel events: typing indicators and app-defined events, pushed to the channel's
//! other subscribers, never stored.

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
        let (info, _) = self.require_role(&id, Role::Member)?;
        self.require_not_blocked(&info)?;
        if let Err(retry_after_ms) = budget.take(Instant::now()) {
            metrics::counter!("chorus_rate_limited_total", "kind" => "typing").increment(1);
            return Err(Error::RateLimited {
                message: "typing rate exceeded",
                retry_after_ms,
            });
        }
        // A shadow-banned member's typing reaches nobody (and they are not told).
        if self.shadowed(&id)? {
            return Ok(());
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

/// Longest custom event type, bytes.
const MAX_EVENT_TYPE_BYTES: usize = 64;

impl Chat<'_> {
    /// Relays an app-defined event to the channel's other live subscribers, within the
    /// session's `budget` of ephemeral events (shared with typing). Members who may post
    /// send them; nothing is stored.
    pub fn send_event(
        &self,
        e: v1::SendEvent,
        session: SessionKey,
        budget: &mut TokenBucket,
    ) -> Result<(), Error> {
        let Actor::User(user) = self.actor else {
            return Err(Error::Forbidden("a user sends events".into()));
        };
        let id = channel_id("channel_id", &e.channel_id)?;
        if e.r#type.is_empty()
            || e.r#type.len() > MAX_EVENT_TYPE_BYTES
            || !e
                .r#type
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
        {
            return Err(Error::invalid(
                "type",
                "1 to 64 bytes of ASCII letters, digits, '.', '_', '-' and ':'",
            ));
        }
        let max = self.node.limits().max_event_bytes as usize;
        if e.payload.len() > max {
            return Err(Error::too_large(
                "payload",
                format!("an event payload is at most {max} bytes"),
            ));
        }
        let (_, member) = self.poster(&id)?;
        // The user's publish budget too: a user's sessions together send no more events than
        // posts.
        self.take_publish_budget(&self.node.limits())?;
        if let Err(retry_after_ms) = budget.take(Instant::now()) {
            metrics::counter!("chorus_rate_limited_total", "kind" => "event").increment(1);
            return Err(Error::RateLimited {
                message: "ephemeral event rate exceeded",
                retry_after_ms,
            });
        }
        // A shadow-banned member's events reach nobody (and they are not told).
        if member.shadowed_until_ms > crate::clock::unix_ms() {
            return Ok(());
        }
        let event = v1::CustomEvent {
            channel_id: id.to_string(),
            user_id: user.to_string(),
            r#type: e.r#type,
            payload: e.payload,
            thread_parent_seq: e.thread_parent_seq,
            sent_at_ms: crate::clock::unix_ms(),
        };
        self.node
            .hub()
            .broadcast(&id, Push::CustomEvent(event), session);
        Ok(())
    }
}
