//! The chat domain: channels, members, messages, read state, typing. No sockets and no
//! envelopes: a session's router and the control socket both call it, so that a rule (who may
//! add a member, how many memberships a user may hold) is written once.
//!
//! Every operation is a method of [`Chat`], the node seen by one [`Actor`]; each feature's
//! methods live in their own file:
//! - [`access`]: who may read, post, or hold a session; budgets and limits on memberships.
//! - [`channels`]: create, get, list, update and archive channels.
//! - [`members`]: join, leave, add, remove, roles, member lists.
//! - [`messages`]: publish (with threads and quotes), edit, delete, history with summaries.
//! - [`reactions`]: react and unreact.
//! - [`threads`]: a channel's threads.
//! - [`pins`]: pin, unpin, a channel's pins.
//! - [`moderation`]: mute, ban (removing or shadow), and lifting them.
//! - [`policy`]: slow mode and blocklists, checked on every post.
//! - [`flags`]: the moderation queue.
//! - [`blocks`]: users blocking users.
//! - [`presence`]: statuses, watching, who sees whom.
//! - [`search`]: message search over the node's index, filtered by what the user may read.
//! - [`reads`]: read markers, unread counts, read receipts.
//! - [`typing`]: typing indicators.
//! - [`view`]: how store records look on the wire.
//!
//! Errors are [`Error`], which converts to the wire's `v1::Error` (and, in `control`, to the
//! control socket's error).

pub mod access;
pub mod blocks;
pub mod channels;
pub mod flags;
pub mod members;
pub mod messages;
pub mod moderation;
pub mod pins;
pub mod policy;
pub mod presence;
pub mod reactions;
pub mod reads;
#[cfg(feature = "search")]
pub mod search;
pub mod threads;
pub mod typing;
pub mod view;

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{self, ErrorCode};
use chorus_storage::{ReadError, StoreError};

use crate::node::Node;

/// Who acts.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// A user, through a session: every permission rule applies.
    User(&'a UserId),
    /// An operator, through the control socket: roles do not apply (an admin may act in any
    /// channel), but the rules that keep data consistent (limits, direct channels' two
    /// members) do. Events an admin causes carry no author.
    Admin,
}

impl<'a> Actor<'a> {
    /// The acting user, if a user acts.
    pub fn user(self) -> Option<&'a UserId> {
        match self {
            Actor::User(u) => Some(u),
            Actor::Admin => None,
        }
    }
}

/// The node as one actor sees it: every chat operation is a method of this.
#[derive(Clone, Copy)]
pub struct Chat<'a> {
    node: &'a Node,
    actor: Actor<'a>,
}

impl<'a> Chat<'a> {
    /// `actor`'s view of `node`.
    pub fn new(node: &'a Node, actor: Actor<'a>) -> Self {
        Self { node, actor }
    }

    /// A user's view of `node`.
    pub fn user(node: &'a Node, user: &'a UserId) -> Self {
        Self::new(node, Actor::User(user))
    }

    /// The node.
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// Who acts.
    pub fn actor(&self) -> Actor<'a> {
        self.actor
    }
}

/// Why a chat operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such channel, entry or member; also what a non-member is told of a private channel.
    #[error("{0}")]
    NotFound(String),
    /// Something a request field names does not exist (or is not the actor's).
    #[error("{field}: {message}")]
    NotFoundIn {
        /// The request field.
        field: &'static str,
        /// What is missing.
        message: String,
    },
    /// The entry a request targets exists but is no (longer a) message: a tombstone, an
    /// event.
    #[error("entry {0} is not a message")]
    NotAMessage(u64),
    /// A field of the request is malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The actor may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the state (already subscribed, the last owner, ...).
    #[error("{0}")]
    Conflict(String),
    /// A value is over its size limit.
    #[error("{message}")]
    TooLarge {
        /// The request field, when one is to blame.
        field: Option<&'static str>,
        /// What is too large.
        message: String,
    },
    /// A count limit is reached (subscriptions, memberships).
    #[error("{message}")]
    LimitExceeded {
        /// The request field, when one is to blame.
        field: Option<&'static str>,
        /// Which limit.
        message: String,
    },
    /// A rate limit: try again after `retry_after_ms`.
    #[error("{message}")]
    RateLimited {
        /// Which rate.
        message: &'static str,
        /// When a retry may pass.
        retry_after_ms: u32,
    },
    /// The content holds a word or phrase a blocklist refuses.
    #[error("{field}: {message}")]
    Blocked {
        /// The request field.
        field: &'static str,
        /// Which entry.
        message: String,
    },
    /// A part of the node is not available now (the search index is busy or stopped).
    #[error("{message}")]
    Unavailable {
        /// What is not available.
        message: String,
        /// When a retry may pass.
        retry_after_ms: u32,
    },
    /// This node does not offer the request (a build or configuration without it).
    #[error("{0}")]
    Unimplemented(String),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        Error::Store(e.into())
    }
}

impl Error {
    /// A channel that does not exist, or that the actor may not see.
    pub fn channel_not_found(id: &ChannelId) -> Self {
        Error::NotFound(format!("channel {id} not found"))
    }

    /// A malformed `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }

    /// A value over its limit, blamed on `field`.
    pub fn too_large(field: &'static str, message: impl Into<String>) -> Self {
        Error::TooLarge {
            field: Some(field),
            message: message.into(),
        }
    }

    /// The same error blamed on `field` (where the caller knows the request field).
    pub fn with_field(self, field: &'static str) -> Self {
        match self {
            Error::TooLarge { message, .. } => Error::TooLarge {
                field: Some(field),
                message,
            },
            Error::LimitExceeded { message, .. } => Error::LimitExceeded {
                field: Some(field),
                message,
            },
            other => other,
        }
    }
}

impl From<Error> for v1::Error {
    fn from(e: Error) -> Self {
        let with = |e: v1::Error, field: Option<&str>| match field {
            Some(f) => e.with_field(f),
            None => e,
        };
        match e {
            Error::NotFound(m) => v1::Error::new(ErrorCode::NotFound, m),
            Error::NotAMessage(seq) => {
                v1::Error::new(ErrorCode::NotFound, format!("entry {seq} is not a message"))
            }
            Error::NotFoundIn { field, message } => {
                v1::Error::new(ErrorCode::NotFound, message).with_field(field)
            }
            Error::Invalid { field, message } => {
                v1::Error::new(ErrorCode::Invalid, message).with_field(field)
            }
            Error::Forbidden(m) => v1::Error::new(ErrorCode::Forbidden, m),
            Error::Conflict(m) => v1::Error::new(ErrorCode::Conflict, m),
            Error::TooLarge { field, message } => {
                with(v1::Error::new(ErrorCode::TooLarge, message), field)
            }
            Error::LimitExceeded { field, message } => {
                with(v1::Error::new(ErrorCode::LimitExceeded, message), field)
            }
            Error::RateLimited {
                message,
                retry_after_ms,
            } => {
                v1::Error::new(ErrorCode::RateLimited, message).with_retry_after_ms(retry_after_ms)
            }
            Error::Blocked { field, message } => {
                v1::Error::new(ErrorCode::BlockedContent, message).with_field(field)
            }
            Error::Unavailable {
                message,
                retry_after_ms,
            } => {
                v1::Error::new(ErrorCode::Unavailable, message).with_retry_after_ms(retry_after_ms)
            }
            Error::Unimplemented(m) => v1::Error::new(ErrorCode::Unimplemented, m),
            Error::Store(e) => store_error(e),
        }
    }
}

/// Maps store failures to protocol errors.
fn store_error(e: StoreError) -> v1::Error {
    let err = |code, message: String| v1::Error::new(code, message);
    match e {
        StoreError::ChannelNotFound(c) => {
            err(ErrorCode::NotFound, format!("channel {c} not found"))
        }
        StoreError::ChannelExists(c) => err(ErrorCode::Conflict, format!("channel {c} exists")),
        StoreError::NotMember { .. } => err(ErrorCode::NotFound, "not a member".into()),
        StoreError::EntryNotFound { seq, .. } => {
            err(ErrorCode::NotFound, format!("entry {seq} not found"))
        }
        e @ (StoreError::ReactionNotFound { .. } | StoreError::NotPinned { .. }) => {
            err(ErrorCode::NotFound, e.to_string())
        }
        e @ StoreError::TooManyReactions { .. } => {
            err(ErrorCode::LimitExceeded, e.to_string()).with_field("emoji")
        }
        e @ StoreError::TooManyPins { .. } => err(ErrorCode::LimitExceeded, e.to_string()),
        e @ StoreError::TooManyBlocks { .. } => {
            err(ErrorCode::LimitExceeded, e.to_string()).with_field("user_id")
        }
        StoreError::Blocked => err(ErrorCode::Forbidden, "one of you blocks the other".into()),
        e @ (StoreError::ClientMsgIdLength { .. } | StoreError::EntryTooLarge { .. }) => {
            err(ErrorCode::Invalid, e.to_string())
        }
        // Refused before the engine saw it: nothing changed.
        StoreError::ReadOnly(_) | StoreError::Closed => {
            err(ErrorCode::Unavailable, "storage unavailable".into()).with_retry_after_ms(1000)
        }
        // Refused before anything was assigned: nothing changed, and writes resume by
        // themselves once space is freed.
        StoreError::DiskFull { .. } => {
            err(ErrorCode::Unavailable, "storage almost full".into()).with_retry_after_ms(5000)
        }
        // The engine failed while writing this request: it may be stored. INTERNAL is the
        // code whose outcome the spec leaves unknown; an idempotent retry settles it.
        StoreError::OutcomeUnknown(cause) => err(
            ErrorCode::Internal,
            format!("outcome unknown, retry with the same client_msg_id: {cause}"),
        ),
        other => err(ErrorCode::Internal, other.to_string()),
    }
}

/// A channel id from a request field.
pub fn channel_id(field: &'static str, s: &str) -> Result<ChannelId, Error> {
    ChannelId::new(s).map_err(|e| Error::invalid(field, e.to_string()))
}

/// A user id from a request field.
pub fn user_id(field: &'static str, s: &str) -> Result<UserId, Error> {
    UserId::new(s).map_err(|e| Error::invalid(field, e.to_string()))
}

/// A page size: the default when 0 was asked, else at most `max`, and at least 1.
pub(crate) fn clamp_limit(asked: u32, default: usize, max: u32) -> usize {
    if asked == 0 {
        default
    } else {
        (asked as usize).min(max as usize)
    }
    .max(1)
}

#[cfg(test)]
mod tests;
