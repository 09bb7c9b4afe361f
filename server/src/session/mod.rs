//! One authenticated connection's state: who it is, its subscriptions, its ephemeral budgets.
//! Transport-independent: the connection feeds it decoded requests and drains its outbound
//! queue.
//!
//! - [`router`]: the one match on `Request`, calling into [`crate::chat`].
//! - [`subscribe`]: subscribe with gapless recovery, replay, unsubscribe, resume.

pub mod router;
pub mod subscribe;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::codec::encode_frame_to_bytes;
use chorus_protocol::ids::ChannelId;
use chorus_protocol::limits::MAX_SERVER_FRAME_BYTES;
use chorus_protocol::v1::{self, ErrorCode, ServerEnvelope, reply};

use crate::auth::Identity;
use crate::chat::{Chat, access};
use crate::hub::Subscription;
use crate::ids::{SessionId, SessionKey};
use crate::node::Node;
use crate::outbound::Outbound;
use crate::ratelimit::TokenBucket;

pub use router::PendingReply;

/// Reply results are at most this many bytes: larger pages are cut.
const MAX_REPLY_BYTES: usize = MAX_SERVER_FRAME_BYTES as usize / 2;

/// One authenticated connection.
pub struct Session {
    node: Arc<Node>,
    /// The hub key.
    pub key: SessionKey,
    /// The id announced in `Welcome`.
    pub session_id: SessionId,
    /// Who.
    pub identity: Identity,
    /// The connection's queue.
    pub outbound: Arc<Outbound>,
    subscriptions: HashMap<ChannelId, Arc<Subscription>>,
    /// Typing events this session may send.
    ephemeral: TokenBucket,
    /// Read receipts this session may send to other members (its own bucket, so that typing
    /// and reading do not starve each other).
    receipts: TokenBucket,
    /// The users whose presence this session watches.
    watching: std::collections::HashSet<chorus_protocol::ids::UserId>,
}

impl Session {
    /// A session for a verified identity; the caller registers it in the hub.
    pub fn new(
        node: Arc<Node>,
        key: SessionKey,
        session_id: SessionId,
        identity: Identity,
        outbound: Arc<Outbound>,
    ) -> Self {
        let rate = node.limits().ephemeral_rate_per_sec;
        Self {
            session_id,
            ephemeral: TokenBucket::new(rate, rate.max(1) * 2, Instant::now()),
            receipts: TokenBucket::new(rate, rate.max(1) * 2, Instant::now()),
            watching: std::collections::HashSet::new(),
            node,
            key,
            identity,
            outbound,
            subscriptions: HashMap::new(),
        }
    }

    /// The chat domain as this session's user.
    fn chat(&self) -> Chat<'_> {
        Chat::user(&self.node, &self.identity.user)
    }

    /// The largest reply body sent: under both the frame limit and half the outbound budget,
    /// so that one reply can never close its own connection as a slow consumer.
    fn max_reply_bytes(&self) -> usize {
        MAX_REPLY_BYTES.min(self.node.limits().max_outbound_queue_bytes as usize / 2)
    }

    /// Channels this session is subscribed to.
    pub fn subscribed(&self) -> Vec<ChannelId> {
        self.subscriptions.keys().cloned().collect()
    }

    /// The users this session watches.
    pub fn watching(&self) -> Vec<chorus_protocol::ids::UserId> {
        self.watching.iter().cloned().collect()
    }

    /// Queues a reply.
    pub fn reply(&self, request_id: u64, result: reply::Result) {
        self.outbound
            .push(encode_frame_to_bytes(&ServerEnvelope::reply(
                request_id, result,
            )));
    }

    /// Takes a refreshed token: same user, still admissible.
    fn refresh(&mut self, token: &str) -> Result<reply::Result, v1::Error> {
        let identity = self
            .node
            .verifier()
            .verify(token)
            .map_err(|e| v1::Error::new(ErrorCode::Unauthenticated, e.to_string()))?;
        if identity.user != self.identity.user {
            return Err(v1::Error::new(
                ErrorCode::Forbidden,
                "the token names another user",
            ));
        }
        access::admissible(&self.node, &identity)
            .map_err(|r| v1::Error::new(r.code(), r.to_string()))?;
        let expires = identity.expires_at_ms;
        self.identity = identity;
        Ok(reply::Result::TokenRefreshed(v1::TokenRefreshed {
            token_expires_at_ms: expires,
        }))
    }
}
