//! Channels, members, read markers, users and bans. Read-modify-write of a record happens under
//! a striped lock held until the change is durable, so that concurrent changes of one record
//! never lose each other, while changes of different records share syncs.

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1::{ChannelKind, Role};

use crate::config::RetentionPolicy;
use crate::error::ReadError;
use crate::keys;
use crate::log::LogPosition;
use crate::records::ChannelRecord;

pub use flags::{FlagPage, NewFlag};

mod blocks;
mod channels;
mod counts;
mod flags;
mod members;
mod reads;
mod users;

/// A channel to create.
#[derive(Debug, Clone)]
pub struct NewChannel {
    /// Its id.
    pub id: ChannelId,
    /// Direct, group or public.
    pub kind: ChannelKind,
    /// Display name.
    pub name: String,
    /// Topic line.
    pub topic: String,
    /// The creator, who becomes owner.
    pub created_by: UserId,
    /// Creation time, unix ms.
    pub created_at_ms: u64,
    /// Other initial members, with their roles.
    pub members: Vec<(UserId, Role)>,
    /// Opaque application data.
    pub custom: Bytes,
    /// Retention; zero fields fall back to the store default.
    pub retention: RetentionPolicy,
}

/// A change of channel metadata; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct ChannelPatch {
    /// New name.
    pub name: Option<String>,
    /// New topic.
    pub topic: Option<String>,
    /// New custom data.
    pub custom: Option<Bytes>,
    /// Archive (true) or restore (false).
    pub archived: Option<bool>,
    /// New retention policy.
    pub retention: Option<RetentionPolicy>,
    /// New slow mode, ms (0: off).
    pub slow_mode_ms: Option<u32>,
    /// New blocklist: the words (lowercased) and the action (`BlockAction`).
    pub blocklist: Option<(Vec<String>, i32)>,
    /// New moderation log policy (`ModerationLog`).
    pub moderation_log: Option<i32>,
}

/// A channel's metadata with its log position.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    /// Its id.
    pub id: ChannelId,
    /// The stored metadata.
    pub record: ChannelRecord,
    /// Where its log stands.
    pub position: LogPosition,
}

/// A user's read state in one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The newest seq read (0 = nothing).
    pub last_read: Seq,
    /// Messages after `last_read`.
    pub unread: u64,
    /// Of those, the ones mentioning the user (saturates at 1000).
    pub mentions: u64,
    /// The channel's head.
    pub head: Seq,
    /// When the marker last moved, unix ms (0 = never).
    pub updated_at_ms: u64,
}

/// Where a ban applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanScope<'a> {
    /// One channel.
    Channel(&'a ChannelId),
    /// The whole server.
    Server,
}

/// The channel ids that end the keys of `rows`, after `prefix_len` bytes.
fn channel_ids(
    rows: &[crate::engine::KeyValue],
    prefix_len: usize,
) -> Result<Vec<ChannelId>, ReadError> {
    rows.iter()
        .map(|(k, _)| {
            keys::trailing_str(k, prefix_len)
                .and_then(|s| ChannelId::new(s).ok())
                .ok_or_else(|| ReadError::Corrupt {
                    key: crate::records::hex(k),
                    message: "key does not end in a channel id".into(),
                })
        })
        .collect()
}

/// The next channel log number as stored (1 in a store that never gave one).
fn stored_log_number(inner: &crate::store::Inner) -> Result<u64, ReadError> {
    let key = keys::next_log_number();
    match inner.engine.get(&key)? {
        None => Ok(1),
        Some(v) => <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| ReadError::Corrupt {
                key: crate::records::hex(&key),
                message: "the log-number counter is not 8 bytes".into(),
            }),
    }
}

fn user_id(s: &str) -> Result<UserId, ReadError> {
    UserId::new(s).map_err(|e| ReadError::Corrupt {
        key: s.to_owned(),
        message: e.to_string(),
    })
}
