//! The moderation queue as moderators read it.

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1;

use super::entries::Entry;
use super::{optional_seq, optional_user};

/// How a flag was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlagResolution {
    /// Still open.
    Open,
    /// Nothing to do.
    Dismissed,
    /// The moderator acted.
    Actioned,
    /// A resolution this SDK does not know.
    Unknown,
}

impl FlagResolution {
    fn from_proto(r: i32) -> Self {
        match v1::FlagResolution::try_from(r) {
            Ok(v1::FlagResolution::Unspecified) => Self::Open,
            Ok(v1::FlagResolution::Dismissed) => Self::Dismissed,
            Ok(v1::FlagResolution::Actioned) => Self::Actioned,
            Err(_) => Self::Unknown,
        }
    }

    pub(crate) fn to_proto(self) -> i32 {
        match self {
            Self::Dismissed => v1::FlagResolution::Dismissed as i32,
            Self::Actioned => v1::FlagResolution::Actioned as i32,
            Self::Open | Self::Unknown => v1::FlagResolution::Unspecified as i32,
        }
    }
}

/// A report in a channel's moderation queue.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Flag {
    /// Its id, for [`Client::resolve_flag`](crate::Client::resolve_flag).
    pub id: String,
    /// The flagged message (`None`: a user was flagged).
    pub seq: Option<Seq>,
    /// The flagged user (a message's author).
    pub user: Option<UserId>,
    /// Who reported it (`None`: a blocklist).
    pub reporter: Option<UserId>,
    /// Why.
    pub reason: String,
    /// When, Unix ms.
    pub created_at_ms: u64,
    /// The message as it reads now, if it is still stored.
    pub message: Option<Entry>,
    /// Open, or how it was closed.
    pub resolution: FlagResolution,
    /// Who closed it.
    pub resolved_by: Option<UserId>,
    /// The moderator's note.
    pub note: String,
}

/// A page of a channel's flags, newest first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FlagPage {
    /// The flags.
    pub flags: Vec<Flag>,
    /// The cursor of the next page; `None`: no more.
    pub next_cursor: Option<String>,
}

impl FlagPage {
    pub(crate) fn from_proto(p: v1::FlagList, channel: &ChannelId) -> Self {
        Self {
            flags: p
                .flags
                .into_iter()
                .map(|f| Flag {
                    id: f.flag_id,
                    seq: optional_seq(f.seq),
                    user: optional_user(f.user_id),
                    reporter: optional_user(f.reporter_id),
                    reason: f.reason,
                    created_at_ms: f.created_at_ms,
                    message: f.message.map(|e| Entry::from_proto(e, channel)),
                    resolution: FlagResolution::from_proto(f.resolution),
                    resolved_by: optional_user(f.resolved_by),
                    note: f.note,
                })
                .collect(),
            next_cursor: (!p.next_cursor.is_empty()).then_some(p.next_cursor),
        }
    }
}
