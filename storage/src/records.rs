//! The stored form of metadata and log entries. Records are protobuf messages, so that later
//! versions can add fields and still read what older versions wrote.

use bytes::Bytes;
use chorus_protocol::ids::{Epoch, Seq};
use chorus_protocol::v1::{ChannelEvent, ChannelKind, Role};
use prost::Message;

use crate::error::ReadError;

/// A channel's metadata.
#[derive(Clone, PartialEq, Message)]
pub struct ChannelRecord {
    /// Direct, group or public.
    #[prost(enumeration = "ChannelKind", tag = "1")]
    pub kind: i32,
    /// Display name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Topic line.
    #[prost(string, tag = "3")]
    pub topic: String,
    /// Creator's user id.
    #[prost(string, tag = "4")]
    pub created_by: String,
    /// Creation time, unix ms.
    #[prost(uint64, tag = "5")]
    pub created_at_ms: u64,
    /// Archived channels are read-only.
    #[prost(bool, tag = "6")]
    pub archived: bool,
    /// The log's history generation; see `Epoch`.
    #[prost(uint64, tag = "7")]
    pub epoch: u64,
    /// Entries below this seq were removed (retention, truncation). 1 when nothing was removed.
    #[prost(uint64, tag = "8")]
    pub first_available_seq: u64,
    /// Number of members.
    #[prost(uint32, tag = "9")]
    pub member_count: u32,
    /// Opaque application data.
    #[prost(bytes = "bytes", tag = "10")]
    pub custom: Bytes,
    /// Retention: entries older than this are removed. 0 = the store's default.
    #[prost(uint64, tag = "11")]
    pub retention_max_age_ms: u64,
    /// Retention: only this many newest entries are kept. 0 = the store's default.
    #[prost(uint64, tag = "12")]
    pub retention_max_entries: u64,
    /// The message ordinal of entry `first_available_seq - 1` (the last removed one), so that
    /// ordinals keep counting when retention empties the log.
    #[prost(uint64, tag = "13")]
    pub removed_ordinal: u64,
    /// The channel's number in its log keys (`l number seq`, see `keys::LogKeys`), given at
    /// creation; 0 for channels created before numbers existed, whose log keeps `L id seq`.
    #[prost(uint64, tag = "14")]
    pub log_number: u64,
    /// Members with the owner role, kept when `owners_counted` (channels created before the
    /// count existed are counted once, at their first need, then kept).
    #[prost(uint32, tag = "15")]
    pub owner_count: u32,
    /// Whether `owner_count` is kept.
    #[prost(bool, tag = "16")]
    pub owners_counted: bool,
    /// Slow mode: a member waits this long between two posts (moderators do not). 0 = off.
    #[prost(uint32, tag = "17")]
    pub slow_mode_ms: u32,
    /// Words and phrases the channel refuses or flags, lowercased.
    #[prost(string, repeated, tag = "18")]
    pub blocked_words: Vec<String>,
    /// What a blocked word does (`BlockAction`).
    #[prost(int32, tag = "19")]
    pub block_action: i32,
    /// A direct channel whose users have blocked each other (one or both): nobody posts.
    #[prost(bool, tag = "20")]
    pub blocked: bool,
    /// What members see of moderation (`ModerationLog`).
    #[prost(int32, tag = "21")]
    pub moderation_log: i32,
}

/// A user blocking another.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct BlockRecord {
    /// When, unix ms.
    #[prost(uint64, tag = "1")]
    pub created_at_ms: u64,
}

/// A member of a channel.
#[derive(Clone, PartialEq, Message)]
pub struct MemberRecord {
    /// Owner, moderator or member.
    #[prost(enumeration = "Role", tag = "1")]
    pub role: i32,
    /// When the user joined, unix ms.
    #[prost(uint64, tag = "2")]
    pub joined_at_ms: u64,
    /// The member may not post until then (unix ms); 0 = not muted.
    #[prost(uint64, tag = "3")]
    pub muted_until_ms: u64,
    /// Shadow-banned until then (unix ms): the member's posts are withheld from everyone else.
    /// 0 = not shadow-banned.
    #[prost(uint64, tag = "4")]
    pub shadowed_until_ms: u64,
}

/// A message's reactions, by emoji in the order of each emoji's first reaction.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ReactionsRecord {
    /// One per emoji with at least one reaction.
    #[prost(message, repeated, tag = "1")]
    pub emojis: Vec<EmojiRecord>,
    /// The seq of the last reaction entry this record reflects.
    #[prost(uint64, tag = "2")]
    pub last_seq: u64,
}

/// One emoji's reactions to a message.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct EmojiRecord {
    /// The emoji or short name.
    #[prost(string, tag = "1")]
    pub emoji: String,
    /// Users who reacted with it.
    #[prost(uint32, tag = "2")]
    pub count: u32,
    /// Some of them (at most [`SHOWN_REACTORS`]), the earliest first while they remain.
    #[prost(string, repeated, tag = "3")]
    pub users: Vec<String>,
}

/// Users named per emoji in a message's reactions.
pub(crate) const SHOWN_REACTORS: usize = 3;

/// The emoji one user put on one message.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct UserReactionsRecord {
    /// In the order added.
    #[prost(message, repeated, tag = "1")]
    pub reactions: Vec<UserReaction>,
}

/// One reaction of a user.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct UserReaction {
    /// The emoji.
    #[prost(string, tag = "1")]
    pub emoji: String,
    /// The seq of its `ReactionAdded` entry (what a repeated reaction returns).
    #[prost(uint64, tag = "2")]
    pub seq: u64,
}

/// The thread a message roots.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ThreadRecord {
    /// Replies posted (deleted ones still count: they read as tombstones in the thread).
    #[prost(uint32, tag = "1")]
    pub reply_count: u32,
    /// The newest reply.
    #[prost(uint64, tag = "2")]
    pub last_reply_seq: u64,
    /// Its time, unix ms.
    #[prost(uint64, tag = "3")]
    pub last_reply_ms: u64,
    /// The root's author, then repliers in the order of their first reply; at most
    /// [`MAX_THREAD_PARTICIPANTS`].
    #[prost(string, repeated, tag = "4")]
    pub participants: Vec<String>,
}

/// Participants a thread names.
pub(crate) const MAX_THREAD_PARTICIPANTS: usize = 10;

/// A channel's pinned messages, the most recently pinned first.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PinsRecord {
    /// At most the node's pin limit.
    #[prost(message, repeated, tag = "1")]
    pub pins: Vec<PinRecord>,
    /// The seq of the last pin or unpin entry this record reflects.
    #[prost(uint64, tag = "2")]
    pub last_seq: u64,
}

/// One pinned message.
#[derive(Clone, PartialEq, Message)]
pub struct PinRecord {
    /// The pinned message.
    #[prost(uint64, tag = "1")]
    pub target_seq: u64,
    /// Who pinned it.
    #[prost(string, tag = "2")]
    pub pinned_by: String,
    /// When, unix ms.
    #[prost(uint64, tag = "3")]
    pub pinned_at_ms: u64,
    /// The seq of the `MessagePinned` entry.
    #[prost(uint64, tag = "4")]
    pub pin_seq: u64,
}

/// A report in a channel's moderation queue.
#[derive(Clone, PartialEq, Message)]
pub struct FlagRecord {
    /// The flagged message; 0 for a flagged user.
    #[prost(uint64, tag = "1")]
    pub target_seq: u64,
    /// The flagged user (for a message: its author).
    #[prost(string, tag = "2")]
    pub user_id: String,
    /// Who reported it; empty for a blocklist.
    #[prost(string, tag = "3")]
    pub reporter_id: String,
    /// Why.
    #[prost(string, tag = "4")]
    pub reason: String,
    /// When, unix ms.
    #[prost(uint64, tag = "5")]
    pub created_at_ms: u64,
    /// 0 while open; else a `FlagResolution`.
    #[prost(int32, tag = "6")]
    pub resolution: i32,
    /// Who closed it (empty: an admin).
    #[prost(string, tag = "7")]
    pub resolved_by: String,
    /// When, unix ms.
    #[prost(uint64, tag = "8")]
    pub resolved_at_ms: u64,
    /// The moderator's note.
    #[prost(string, tag = "9")]
    pub note: String,
}

/// A user's read position in one channel.
#[derive(Clone, PartialEq, Message)]
pub struct MarkerRecord {
    /// The newest seq read.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The number of messages up to and including `seq`, so that unread counts need no scan.
    #[prost(uint64, tag = "2")]
    pub ordinal: u64,
    /// When the marker last moved, unix ms.
    #[prost(uint64, tag = "3")]
    pub updated_at_ms: u64,
}

/// A user the node has seen.
#[derive(Clone, PartialEq, Message)]
pub struct UserRecord {
    /// Display name, if the app set one.
    #[prost(string, tag = "1")]
    pub display_name: String,
    /// First seen, unix ms.
    #[prost(uint64, tag = "2")]
    pub created_at_ms: u64,
    /// Last connected, unix ms.
    #[prost(uint64, tag = "3")]
    pub last_seen_ms: u64,
    /// Tokens issued before this time (unix ms) are refused (an admin revoked them).
    #[prost(uint64, tag = "4")]
    pub tokens_valid_after_ms: u64,
    /// The user's data was erased; the id remains only so history stays consistent.
    #[prost(bool, tag = "5")]
    pub erased: bool,
    /// The id the user's entries are rewritten to by an erasure; kept, so that a resumed
    /// erasure goes on under the same id. Empty: never erased.
    #[prost(string, tag = "6")]
    pub erasure_anonymous_id: String,
    /// When the erasure (last) started, unix ms.
    #[prost(uint64, tag = "7")]
    pub erasure_started_ms: u64,
    /// When it finished, unix ms; 0 while it runs (or waits to resume after a restart).
    #[prost(uint64, tag = "8")]
    pub erasure_finished_ms: u64,
    /// Channels the user belongs to (entries of the user's channel index), kept when
    /// `channels_counted` (users whose memberships predate the count are counted once, when
    /// a limit check first finds them under the limit, then kept).
    #[prost(uint32, tag = "9")]
    pub channel_count: u32,
    /// Whether `channel_count` is kept.
    #[prost(bool, tag = "10")]
    pub channels_counted: bool,
}

/// A ban of a user from one channel or from the server.
#[derive(Clone, PartialEq, Message)]
pub struct BanRecord {
    /// Until when, unix ms; 0 = until lifted.
    #[prost(uint64, tag = "1")]
    pub until_ms: u64,
    /// Why, for moderators and the audit.
    #[prost(string, tag = "2")]
    pub reason: String,
    /// Who banned.
    #[prost(string, tag = "3")]
    pub banned_by: String,
    /// When, unix ms.
    #[prost(uint64, tag = "4")]
    pub created_at_ms: u64,
    /// A shadow ban: the user stays a member, and their posts reach only themself.
    #[prost(bool, tag = "5")]
    pub shadow: bool,
}

/// The version byte in front of every stored log entry.
const ENTRY_FORMAT: u8 = 1;
/// The format of an entry with flags (a byte after the ordinal); written only for entries
/// with a flag set, so that every other entry keeps the first format.
const ENTRY_FORMAT_FLAGS: u8 = 2;
/// Flag: the entry is withheld from everyone but its author (a shadow-banned author's post).
const FLAG_WITHHELD: u8 = 1;

/// What a cached entry holds besides the bytes of its strings (which its stored length stands
/// for): the entry itself inside its `Arc` (two counters). Counted in full so that the tail
/// caches' byte budgets bound the memory they really hold; the 96 bytes counted before were
/// less than half of the struct.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<LogEntry>() + 2 * std::mem::size_of::<usize>();

/// A log entry as read back: the event (with channel, seq and epoch filled in) and its
/// message ordinal.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// The entry's position.
    pub seq: Seq,
    /// How many `Message` entries the log holds up to and including this one.
    pub ordinal: u64,
    /// The event, ready to send.
    pub event: ChannelEvent,
    /// Only its author may see it: everyone else is shown a `Tombstone` with reason
    /// `REASON_WITHHELD` in its place (the author was shadow-banned when posting).
    pub withheld: bool,
    /// Approximate memory held, for cache budgets; computed once.
    pub(crate) size: usize,
}

impl LogEntry {
    pub(crate) fn new(seq: Seq, ordinal: u64, event: ChannelEvent, stored_len: usize) -> Self {
        Self {
            seq,
            ordinal,
            event,
            withheld: false,
            size: ENTRY_OVERHEAD + stored_len,
        }
    }

    pub(crate) fn with_withheld(mut self, withheld: bool) -> Self {
        self.withheld = withheld;
        self
    }

    /// Whether the user `reader` (`None`: an operator) reads the entry as written.
    pub fn visible_to(&self, reader: Option<&str>) -> bool {
        !self.withheld || reader.is_none_or(|r| r == self.event.author_id)
    }

    /// The event as the user `reader` may see it (`None`: an operator, who sees everything): a
    /// withheld entry reads as a tombstone for anyone but its author, keeping its seq (the log
    /// stays gapless for every reader) and its thread.
    pub fn event_for(&self, reader: Option<&str>) -> std::borrow::Cow<'_, ChannelEvent> {
        if self.visible_to(reader) {
            std::borrow::Cow::Borrowed(&self.event)
        } else {
            std::borrow::Cow::Owned(self.withheld_view())
        }
    }

    /// What everyone but the author reads of a withheld entry: a `REASON_WITHHELD` tombstone
    /// with the entry's seq, time and thread, and no author.
    pub fn withheld_view(&self) -> ChannelEvent {
        use chorus_protocol::v1::{Tombstone, channel_event::Body, tombstone::Reason};
        let thread_parent_seq = match &self.event.body {
            Some(Body::Message(m)) => m.thread_parent_seq,
            _ => 0,
        };
        let mut event = self.event.clone();
        event.body = Some(Body::Tombstone(Tombstone {
            reason: Reason::Withheld as i32,
            thread_parent_seq,
        }));
        event.author_id.clear();
        event
    }

    /// The epoch the entry was read in.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.event.epoch)
    }

    /// Approximate memory held, for cache budgets.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.size
    }
}

/// An entry as stored: its ordinal, its idempotency key, and the event.
#[derive(Debug)]
pub(crate) struct StoredEntry {
    pub(crate) ordinal: u64,
    pub(crate) client_msg_id: String,
    pub(crate) event: ChannelEvent,
    pub(crate) withheld: bool,
}

/// Encodes an entry for the log: format byte, ordinal, idempotency key (so that retention can
/// remove its index entry), then the event. The caller leaves out of `stored` what the key and
/// the channel record already hold (channel id, seq, epoch).
pub(crate) fn encode_entry(
    ordinal: u64,
    client_msg_id: &str,
    stored: &ChannelEvent,
    withheld: bool,
) -> Vec<u8> {
    debug_assert!(stored.channel_id.is_empty() && stored.seq == 0 && stored.epoch == 0);
    let idem = &client_msg_id.as_bytes()[..client_msg_id.len().min(255)];
    let mut out = Vec::with_capacity(11 + idem.len() + stored.encoded_len());
    if withheld {
        out.push(ENTRY_FORMAT_FLAGS);
        out.extend_from_slice(&ordinal.to_be_bytes());
        out.push(FLAG_WITHHELD);
    } else {
        out.push(ENTRY_FORMAT);
        out.extend_from_slice(&ordinal.to_be_bytes());
    }
    out.push(idem.len() as u8);
    out.extend_from_slice(idem);
    stored.encode(&mut out).ok();
    out
}

/// Decodes a stored entry; `key` is only for the error message.
pub(crate) fn decode_entry(key: &[u8], value: &[u8]) -> Result<StoredEntry, ReadError> {
    let corrupt = |message: &str| ReadError::Corrupt {
        key: hex(key),
        message: message.to_owned(),
    };
    let Some((&format, rest)) = value.split_first() else {
        return Err(corrupt("empty entry"));
    };
    let flags_len = match format {
        ENTRY_FORMAT => 0,
        ENTRY_FORMAT_FLAGS => 1,
        _ => return Err(corrupt(&format!("unknown entry format {format}"))),
    };
    let ordinal = rest
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("truncated ordinal"))?;
    let flags = match flags_len {
        0 => 0,
        _ => *rest.get(8).ok_or_else(|| corrupt("truncated flags"))?,
    };
    let rest = &rest[flags_len..];
    let idem_len = usize::from(*rest.get(8).ok_or_else(|| corrupt("truncated key length"))?);
    let idem = rest
        .get(9..9 + idem_len)
        .ok_or_else(|| corrupt("truncated key"))?;
    let client_msg_id = std::str::from_utf8(idem)
        .map_err(|_| corrupt("key is not UTF-8"))?
        .to_owned();
    let body = rest.get(9 + idem_len..).unwrap_or_default();
    let event = ChannelEvent::decode(body).map_err(|e| corrupt(&e.to_string()))?;
    Ok(StoredEntry {
        ordinal,
        client_msg_id,
        event,
        withheld: flags & FLAG_WITHHELD != 0,
    })
}

/// Decodes a metadata record; `key` is only for the error message.
pub(crate) fn decode_record<M: Message + Default>(
    key: &[u8],
    value: &[u8],
) -> Result<M, ReadError> {
    M::decode(value).map_err(|e| ReadError::Corrupt {
        key: hex(key),
        message: e.to_string(),
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod entry_size_tests {
    use super::*;

    #[test]
    fn a_withheld_entry_round_trips_in_the_second_format_and_others_keep_the_first() {
        let event = ChannelEvent {
            author_id: "troll".into(),
            server_time_ms: 7,
            ..Default::default()
        };
        for withheld in [false, true] {
            let value = encode_entry(42, "key-1", &event, withheld);
            assert_eq!(
                value[0],
                if withheld {
                    ENTRY_FORMAT_FLAGS
                } else {
                    ENTRY_FORMAT
                }
            );
            let back = decode_entry(b"k", &value).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back.ordinal, 42);
            assert_eq!(back.client_msg_id, "key-1");
            assert_eq!(back.event, event);
            assert_eq!(back.withheld, withheld);
        }
        // Every prefix of a stored entry is refused, never a panic.
        let value = encode_entry(42, "key-1", &event, true);
        for len in 0..10 {
            assert!(
                decode_entry(b"k", &value[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn a_cached_entry_counts_its_whole_struct_and_its_stored_bytes() {
        let entry = LogEntry::new(Seq::from(1), 1, ChannelEvent::default(), 150);
        // The `Arc` a cache holds it in adds two counters to the struct.
        let floor = std::mem::size_of::<LogEntry>() + 2 * std::mem::size_of::<usize>() + 150;
        assert!(
            entry.approx_bytes() >= floor,
            "{} < {floor}",
            entry.approx_bytes()
        );
    }
}
