//! The key space. Every key starts with a one-byte table tag; strings are length-prefixed (ids
//! are at most 128 bytes) and numbers big-endian, so that byte order is (table, id, number)
//! order: a channel's log entries lie together in seq order, which is order in time.

use chorus_protocol::ids::{ChannelId, Seq, UserId};

/// `C channel` -> `ChannelRecord`.
pub(crate) const CHANNEL: u8 = b'C';
/// `L channel seq` -> entry (ordinal + encoded `ChannelEvent`), for channels without a log
/// number (created before numbers existed).
pub(crate) const LOG: u8 = b'L';
/// `l number seq` -> entry, for channels with a log number (see [`LogKeys`]).
pub(crate) const NUMBERED_LOG: u8 = b'l';
/// `K name` -> big-endian u64: a counter (`K log-number`: the next channel log number).
pub(crate) const COUNTER: u8 = b'K';
/// `I channel author client_msg_id` -> seq (idempotency index).
pub(crate) const IDEM: u8 = b'I';
/// `T channel parent seq` -> empty (thread index).
pub(crate) const THREAD: u8 = b'T';
/// `N channel user seq` -> empty (mention index, for mention counts).
pub(crate) const MENTION: u8 = b'N';
/// `M channel user` -> `MemberRecord`.
pub(crate) const MEMBER: u8 = b'M';
/// `U user channel` -> empty (the user's channels).
pub(crate) const USER_CHANNEL: u8 = b'U';
/// `R user channel` -> `MarkerRecord`.
pub(crate) const MARKER: u8 = b'R';
/// `P user` -> `UserRecord`.
pub(crate) const USER: u8 = b'P';
/// `B scope user` -> `BanRecord`; the scope is a channel id, or empty for the whole server.
pub(crate) const BAN: u8 = b'B';
/// `D user user` -> channel id of the direct channel of that (sorted) pair.
pub(crate) const DIRECT: u8 = b'D';
/// `E user` -> empty: an erasure of the user that has not finished (it resumes at start).
pub(crate) const ERASURE: u8 = b'E';

/// `A channel target kind ...` -> what the log derived for one message (see [`Derived`]);
/// target 0 holds the channel's own derived records (its pins).
pub(crate) const DERIVED: u8 = b'A';
/// `H channel last_reply_seq root` -> empty: the channel's threads by latest reply.
pub(crate) const THREAD_ACTIVITY: u8 = b'H';

/// The records of [`DERIVED`], by their kind byte.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Derived {
    /// `r` -> `ReactionsRecord`: the message's reactions by emoji.
    Reactions,
    /// `u user` -> `UserReactionsRecord`: the emoji one user put on the message.
    UserReactions,
    /// `e emoji user` -> empty: who reacted with an emoji, to refill a shown list.
    EmojiUser,
    /// `t` -> `ThreadRecord`: the thread the message roots.
    Thread,
    /// `p` (target 0) -> `PinsRecord`: the channel's pins.
    Pins,
}

impl Derived {
    fn byte(self) -> u8 {
        match self {
            Derived::Reactions => b'r',
            Derived::UserReactions => b'u',
            Derived::EmojiUser => b'e',
            Derived::Thread => b't',
            Derived::Pins => b'p',
        }
    }
}

/// `F channel flag_id` -> `FlagRecord`: the channel's moderation queue, oldest first.
pub(crate) const FLAG: u8 = b'F';
/// `G channel target_seq user reporter` -> flag id: an open flag, so that the same report is
/// raised once.
pub(crate) const OPEN_FLAG: u8 = b'G';

/// `X blocker blocked` -> `BlockRecord`: the users a user blocks.
pub(crate) const BLOCK: u8 = b'X';

/// Builds keys without intermediate allocations.
#[derive(Debug)]
pub(crate) struct Key(Vec<u8>);

impl Key {
    pub(crate) fn new(table: u8) -> Self {
        let mut v = Vec::with_capacity(48);
        v.push(table);
        Self(v)
    }

    pub(crate) fn str(mut self, s: &str) -> Self {
        // Ids are validated to at most 128 bytes; client_msg_ids to 64.
        let len = u8::try_from(s.len()).unwrap_or(u8::MAX);
        self.0.push(len);
        self.0.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
        self
    }

    pub(crate) fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    pub(crate) fn byte(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

pub(crate) fn channel(c: &ChannelId) -> Vec<u8> {
    Key::new(CHANNEL).str(c.as_str()).into_vec()
}

pub(crate) fn log_prefix(c: &ChannelId) -> Key {
    Key::new(LOG).str(c.as_str())
}

/// Where a channel's log entries are keyed. A numbered log's keys are 17 bytes (`l`, number,
/// seq), which the LSM memtable compares inline: keys longer than 20 bytes are compared through
/// a pointer to the heap, and with every channel id's key starting with the same four bytes
/// (`L`, its length, `dm`) each compare of a skiplist search did that, a large share of the
/// store writer's time under load (docs/benchmarks.md, "Decisions"). Channels created before numbers existed
/// keep their `L channel seq` keys, so no data is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogKeys {
    /// `L len channel` or `l number`: every key of the log is this and the seq.
    prefix: Vec<u8>,
}

impl LogKeys {
    /// The layout a channel record names.
    pub(crate) fn of(c: &ChannelId, log_number: u64) -> Self {
        let prefix = if log_number == 0 {
            log_prefix(c)
        } else {
            Key::new(NUMBERED_LOG).u64(log_number)
        };
        Self {
            prefix: prefix.into_vec(),
        }
    }

    /// What every key of the log starts with.
    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The key of entry `seq`.
    pub(crate) fn key(&self, seq: Seq) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + 8);
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(&seq.get().to_be_bytes());
        key
    }
}

/// The counter of channel log numbers: the next number to give.
pub(crate) fn next_log_number() -> Vec<u8> {
    Key::new(COUNTER).str("log-number").into_vec()
}

pub(crate) fn idem_prefix(c: &ChannelId) -> Key {
    Key::new(IDEM).str(c.as_str())
}

pub(crate) fn idem(c: &ChannelId, author: &str, client_msg_id: &str) -> Vec<u8> {
    idem_prefix(c).str(author).str(client_msg_id).into_vec()
}

pub(crate) fn thread_prefix(c: &ChannelId, parent: Seq) -> Key {
    Key::new(THREAD).str(c.as_str()).u64(parent.get())
}

/// Every derived record of the channel's messages from `target` on (`derived_prefix(c)` and
/// a seq bound the range retention removes).
pub(crate) fn derived_prefix(c: &ChannelId) -> Key {
    Key::new(DERIVED).str(c.as_str())
}

/// A derived record of one message.
pub(crate) fn derived(c: &ChannelId, target: Seq, kind: Derived) -> Key {
    derived_prefix(c).u64(target.get()).byte(kind.byte())
}

/// The channel's pins (target 0: no message has seq 0).
pub(crate) fn pins(c: &ChannelId) -> Vec<u8> {
    derived(c, Seq(0), Derived::Pins).into_vec()
}

pub(crate) fn thread_activity_prefix(c: &ChannelId) -> Key {
    Key::new(THREAD_ACTIVITY).str(c.as_str())
}

pub(crate) fn thread_activity(c: &ChannelId, last_reply: Seq, root: Seq) -> Vec<u8> {
    thread_activity_prefix(c)
        .u64(last_reply.get())
        .u64(root.get())
        .into_vec()
}

pub(crate) fn block_prefix(u: &UserId) -> Key {
    Key::new(BLOCK).str(u.as_str())
}

pub(crate) fn block(blocker: &UserId, blocked: &UserId) -> Vec<u8> {
    block_prefix(blocker).str(blocked.as_str()).into_vec()
}

pub(crate) fn flag_prefix(c: &ChannelId) -> Key {
    Key::new(FLAG).str(c.as_str())
}

pub(crate) fn flag(c: &ChannelId, id: u64) -> Vec<u8> {
    flag_prefix(c).u64(id).into_vec()
}

pub(crate) fn open_flag(c: &ChannelId, target: u64, user: &str, reporter: &str) -> Vec<u8> {
    Key::new(OPEN_FLAG)
        .str(c.as_str())
        .u64(target)
        .str(user)
        .str(reporter)
        .into_vec()
}

pub(crate) fn mention_prefix(c: &ChannelId, user: &str) -> Key {
    Key::new(MENTION).str(c.as_str()).str(user)
}

pub(crate) fn member_prefix(c: &ChannelId) -> Key {
    Key::new(MEMBER).str(c.as_str())
}

pub(crate) fn member(c: &ChannelId, u: &UserId) -> Vec<u8> {
    member_prefix(c).str(u.as_str()).into_vec()
}

pub(crate) fn user_channel_prefix(u: &UserId) -> Key {
    Key::new(USER_CHANNEL).str(u.as_str())
}

pub(crate) fn user_channel(u: &UserId, c: &ChannelId) -> Vec<u8> {
    user_channel_prefix(u).str(c.as_str()).into_vec()
}

pub(crate) fn marker(u: &UserId, c: &ChannelId) -> Vec<u8> {
    Key::new(MARKER).str(u.as_str()).str(c.as_str()).into_vec()
}

pub(crate) fn user(u: &UserId) -> Vec<u8> {
    Key::new(USER).str(u.as_str()).into_vec()
}

pub(crate) fn erasure(u: &UserId) -> Vec<u8> {
    Key::new(ERASURE).str(u.as_str()).into_vec()
}

pub(crate) fn ban(scope: Option<&ChannelId>, u: &UserId) -> Vec<u8> {
    Key::new(BAN)
        .str(scope.map_or("", ChannelId::as_str))
        .str(u.as_str())
        .into_vec()
}

pub(crate) fn direct(a: &UserId, b: &UserId) -> Vec<u8> {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    Key::new(DIRECT)
        .str(lo.as_str())
        .str(hi.as_str())
        .into_vec()
}

/// The index keys an entry's body needs: its thread (replies and tombstones of replies) and its
/// mentions (live messages only: a deleted message mentions nobody).
pub(crate) fn index_keys(
    c: &ChannelId,
    seq: Seq,
    body: Option<&chorus_protocol::v1::channel_event::Body>,
) -> Vec<Vec<u8>> {
    use chorus_protocol::v1::channel_event::Body;
    let mut out = Vec::new();
    match body {
        Some(Body::Message(m)) => {
            if m.thread_parent_seq != 0 {
                out.push(
                    thread_prefix(c, Seq(m.thread_parent_seq))
                        .u64(seq.get())
                        .into_vec(),
                );
            }
            for user in &m.mentions {
                out.push(mention_prefix(c, user).u64(seq.get()).into_vec());
            }
        }
        Some(Body::Tombstone(t)) if t.thread_parent_seq != 0 => {
            out.push(
                thread_prefix(c, Seq(t.thread_parent_seq))
                    .u64(seq.get())
                    .into_vec(),
            );
        }
        _ => {}
    }
    out
}

/// The trailing big-endian u64 of a key (a seq), if the key is long enough.
pub(crate) fn trailing_u64(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    let bytes: [u8; 8] = key.get(start..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The length-prefixed string at the end of `key` after `prefix_len` bytes.
pub(crate) fn trailing_str(key: &[u8], prefix_len: usize) -> Option<&str> {
    let len = usize::from(*key.get(prefix_len)?);
    let bytes = key.get(prefix_len + 1..prefix_len + 1 + len)?;
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both layouts: the keys of a channel's entries sort in seq order, lie together (no key
    /// of another channel between them), and end in their seq.
    #[test]
    fn log_keys_sort_by_channel_then_seq() {
        let a = ChannelId::new("a").unwrap();
        let b = ChannelId::new("b").unwrap();
        let layouts = [
            (LogKeys::of(&a, 0), LogKeys::of(&b, 0)),
            (LogKeys::of(&a, 1), LogKeys::of(&b, 2)),
            (LogKeys::of(&a, 255), LogKeys::of(&b, 256)),
        ];
        for (ka, kb) in layouts {
            let mut keys = vec![
                kb.key(Seq(1)),
                ka.key(Seq(256)),
                ka.key(Seq(2)),
                ka.key(Seq(1)),
            ];
            keys.sort();
            assert_eq!(
                keys,
                vec![
                    ka.key(Seq(1)),
                    ka.key(Seq(2)),
                    ka.key(Seq(256)),
                    kb.key(Seq(1))
                ]
            );
            assert!(ka.key(Seq(7)).starts_with(ka.prefix()));
            assert!(!kb.key(Seq(7)).starts_with(ka.prefix()));
            assert_eq!(trailing_u64(&ka.key(Seq(256))), Some(256));
        }
        // Numbered keys are short enough for the memtable to compare inline (20 bytes).
        assert_eq!(LogKeys::of(&a, u64::MAX).key(Seq(u64::MAX)).len(), 17);
        assert_eq!(LogKeys::of(&a, 0).key(Seq(9)), {
            let mut k = log_prefix(&a).into_vec();
            k.extend_from_slice(&9u64.to_be_bytes());
            k
        });
    }

    #[test]
    fn direct_keys_ignore_pair_order() {
        let a = UserId::new("alice").unwrap();
        let b = UserId::new("bob").unwrap();
        assert_eq!(direct(&a, &b), direct(&b, &a));
    }

    #[test]
    fn a_channel_prefix_is_not_a_prefix_of_another_channel() {
        // Length prefixes keep "ab" from matching inside "abc".
        let ab = log_prefix(&ChannelId::new("ab").unwrap()).into_vec();
        let abc = LogKeys::of(&ChannelId::new("abc").unwrap(), 0).key(Seq(1));
        assert!(!abc.starts_with(&ab));
    }
}
