//! The Raft type configuration: commands and replies are opaque bytes (the state machine above
//! gives them meaning), members are cluster node ids, log entries are openraft's own.

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// A consensus group: a shard, or the meta group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(pub u32);

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// A command to replicate, as the state machine encodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Command(pub Vec<u8>);

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "command of {} bytes", self.0.len())
    }
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct Reply(pub Vec<u8>);

openraft::declare_raft_types!(
    /// Chorus's Raft types.
    pub(crate) TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = openraft::EmptyNode,
);

/// A log id (term, leader, index).
pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote.
pub(crate) type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A log entry.
pub(crate) type Entry = openraft::alias::EntryOf<TypeConfig>;
/// Stored membership.
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its bytes.
pub(crate) type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;
