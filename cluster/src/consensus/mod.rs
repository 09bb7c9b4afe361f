//! Consensus: one openraft group per shard (and one for the cluster's metadata), every group's
//! log on this node's storage engine with one shared group commit, and every group's RPCs over
//! the cluster endpoint. Every openraft type stays inside this module: its API changes between
//! releases, and the version is pinned exactly.
//!
//! - `types`: the type configuration (opaque commands and replies, node ids as members).
//! - `store`: the log storage and the shared sync.
//! - `machine`: the [`Machine`] seam and openraft's state machine over it.
//! - `network`: RPCs out; [`Consensus`] answers them coming in.

mod machine;
mod network;
mod store;
mod types;

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::peer::{self, PeerError, PeerErrorCode, RaftKind};
use chorus_storage::engine::Engine;
use openraft::async_runtime::WatchReceiver;
use serde::Serialize;

pub use machine::Machine;
use machine::MachineStore;
pub use network::RaftStats;
pub use store::{SyncStats, Syncer};
pub use types::GroupId;

use crate::endpoint::{Endpoint, RaftFuture, RaftService};
use crate::id::NodeId;
use network::Network;
use store::{LogStore, decode, encode};
use types::{Command, Snapshot, SnapshotMeta, TypeConfig, Vote};

/// A group's Raft.
type Raft = openraft::Raft<TypeConfig, MachineStore>;

/// Raft timing.
#[derive(Debug, Clone)]
pub struct RaftTiming {
    /// How often a leader sends heartbeats.
    pub heartbeat: Duration,
    /// A follower that hears nothing this long (a random point between the two) stands.
    pub election_min: Duration,
    /// See `election_min`.
    pub election_max: Duration,
}

impl Default for RaftTiming {
    fn default() -> Self {
        // Heartbeats are the cost that grows with groups: 250 ms keeps 64 groups cheap, and an
        // election timeout of 1-2 s keeps a failover well inside the 10 s the cluster promises.
        Self {
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
        }
    }
}

/// What groups this node runs and with whom.
#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    /// The groups.
    pub groups: Vec<GroupId>,
    /// Every group's voters (this node among them).
    pub voters: BTreeSet<NodeId>,
    /// Timing.
    pub timing: RaftTiming,
    /// Entries kept in the log behind a snapshot (for followers that lag a little).
    pub keep_behind_snapshot: u64,
    /// A snapshot is taken every this many applied entries.
    pub snapshot_every: u64,
}

/// Why consensus did not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsensusError {
    /// This node does not lead the group; `leader` does, when known.
    #[error("not the leader of {group} (leader: {leader:?})")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// Its leader, when this node knows it.
        leader: Option<NodeId>,
    },
    /// This node does not hold the group.
    #[error("no such group {0}")]
    NoSuchGroup(GroupId),
    /// The configuration cannot be used.
    #[error("consensus config: {0}")]
    Config(String),
    /// Storage failed; the group stops.
    #[error("consensus storage: {0}")]
    Storage(String),
    /// openraft refused or failed (shutting down, a fatal storage error).
    #[error("raft: {0}")]
    Raft(String),
}

/// A command applied: its log index and what the machine answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The log index it was applied at.
    pub index: u64,
    /// The machine's answer.
    pub reply: Vec<u8>,
}

struct Group {
    raft: Raft,
    machine: MachineStore,
}

/// This node's consensus groups. Cheap to clone.
#[derive(Clone)]
pub struct Consensus {
    me: NodeId,
    groups: Arc<HashMap<GroupId, Group>>,
    stats: Arc<RaftStats>,
    syncer: Syncer,
}

impl Consensus {
    /// Opens (or creates) every group of `config` on `engine`, answers Raft RPCs on
    /// `endpoint`, and has the smallest voter initialise groups that have never run.
    pub async fn start(
        endpoint: &Endpoint,
        engine: Arc<dyn Engine>,
        config: ConsensusConfig,
        make_machine: impl Fn(GroupId) -> Box<dyn Machine>,
    ) -> Result<Self, ConsensusError> {
        let me = endpoint.local().id.clone();
        if !config.voters.contains(&me) {
            return Err(ConsensusError::Config(format!("{me} is not a voter")));
        }
        let raft_config = openraft::Config {
            cluster_name: "chorus".into(),
            heartbeat_interval: millis(config.timing.heartbeat),
            election_timeout_min: millis(config.timing.election_min),
            election_timeout_max: millis(config.timing.election_max),
            max_in_snapshot_log_to_keep: config.keep_behind_snapshot,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| ConsensusError::Config(e.to_string()))?,
        );
        let syncer =
            Syncer::start(engine.clone()).map_err(|e| ConsensusError::Storage(e.to_string()))?;
        let stats = Arc::new(RaftStats::default());
        let mut groups = HashMap::new();
        for &group in &config.groups {
            let machine = MachineStore::new(group, engine.clone(), make_machine(group));
            let network = Network {
                endpoint: endpoint.clone(),
                group,
                stats: stats.clone(),
            };
            let log = LogStore::new(group, engine.clone(), syncer.clone());
            let raft = Raft::new(
                me.clone(),
                raft_config.clone(),
                network,
                log,
                machine.clone(),
            )
            .await
            .map_err(|e| ConsensusError::Raft(e.to_string()))?;
            groups.insert(group, Group { raft, machine });
        }
        let consensus = Self {
            me: me.clone(),
            groups: Arc::new(groups),
            stats,
            syncer,
        };
        endpoint
            .serve_raft(Arc::new(consensus.clone()))
            .map_err(|e| ConsensusError::Config(e.to_string()))?;
        if config.voters.first() == Some(&me) {
            for g in consensus.groups.values() {
                let fresh = !g
                    .raft
                    .is_initialized()
                    .await
                    .map_err(|e| ConsensusError::Raft(e.to_string()))?;
                if fresh {
                    // Refused when another start already initialised it: nothing to do.
                    let _ = g.raft.initialize(config.voters.clone()).await;
                }
            }
        }
        Ok(consensus)
    }

    fn group(&self, group: GroupId) -> Result<&Group, ConsensusError> {
        self.groups
            .get(&group)
            .ok_or(ConsensusError::NoSuchGroup(group))
    }

    /// Replicates `command` in `group` and waits until a quorum has it durable and this node
    /// (the leader) has applied it.
    pub async fn propose(
        &self,
        group: GroupId,
        command: Vec<u8>,
    ) -> Result<Applied, ConsensusError> {
        let g = self.group(group)?;
        match g.raft.client_write(Command(command)).await {
            Ok(r) => Ok(Applied {
                index: r.log_id.index(),
                reply: r.data.0,
            }),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(ConsensusError::NotLeader {
                    group,
                    leader: f.leader_id.clone(),
                }),
                None => Err(ConsensusError::Raft(e.to_string())),
            },
        }
    }

    /// The group's leader as this node knows it.
    pub async fn leader(&self, group: GroupId) -> Result<Option<NodeId>, ConsensusError> {
        Ok(self.group(group)?.raft.current_leader().await)
    }

    /// How many groups this node leads.
    pub fn leading(&self) -> usize {
        self.groups
            .values()
            .filter(|g| g.raft.metrics().borrow_watched().current_leader.as_ref() == Some(&self.me))
            .count()
    }

    /// The highest log index this node applied in `group`.
    pub fn applied(&self, group: GroupId) -> Result<u64, ConsensusError> {
        let m = self.group(group)?.raft.metrics();
        let applied = m
            .borrow_watched()
            .last_applied
            .as_ref()
            .map_or(0, |l| l.index());
        Ok(applied)
    }

    /// Reads the group's machine on this node (its replica, as far as applied).
    pub fn read<T>(
        &self,
        group: GroupId,
        f: impl FnOnce(&dyn Machine) -> T,
    ) -> Result<T, ConsensusError> {
        Ok(self.group(group)?.machine.with(f))
    }

    /// Counters of the Raft traffic sent.
    pub fn stats(&self) -> &RaftStats {
        &self.stats
    }

    /// Counters of the shared sync.
    pub fn sync_stats(&self) -> &SyncStats {
        self.syncer.stats()
    }

    /// Stops every group.
    pub async fn shutdown(&self) {
        for g in self.groups.values() {
            let _ = g.raft.shutdown().await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn answer<T: Serialize, E: std::fmt::Display>(
    r: Result<T, E>,
) -> Result<peer::RaftReply, PeerError> {
    let r: Result<T, String> = r.map_err(|e| e.to_string());
    encode(&r)
        .map(|payload| peer::RaftReply {
            payload: payload.into(),
        })
        .map_err(|e| PeerError {
            code: PeerErrorCode::Internal.into(),
            message: e.to_string(),
        })
}

/// Decodes a Raft request payload of `kind` as [`Consensus`] does when a peer sends one, and
/// says whether it decoded. For the fuzz target: no input may panic.
#[doc(hidden)]
pub fn decode_request(kind: RaftKind, payload: &[u8]) -> bool {
    use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
    match kind {
        RaftKind::Append => decode::<AppendEntriesRequest<TypeConfig>>(payload).is_ok(),
        RaftKind::Vote | RaftKind::PreVote => decode::<VoteRequest<TypeConfig>>(payload).is_ok(),
        RaftKind::Snapshot => decode::<(Vote, SnapshotMeta, Vec<u8>)>(payload).is_ok(),
        RaftKind::TransferLeader => decode::<TransferLeaderRequest<TypeConfig>>(payload).is_ok(),
        RaftKind::Unspecified => false,
    }
}

fn bad(e: impl std::fmt::Display) -> PeerError {
    PeerError {
        code: PeerErrorCode::BadFrame.into(),
        message: e.to_string(),
    }
}

impl RaftService for Consensus {
    fn call(&self, _from: NodeId, request: peer::Raft) -> RaftFuture {
        let this = self.clone();
        Box::pin(async move {
            let group = GroupId(request.group);
            let Ok(g) = this.group(group) else {
                return Err(PeerError {
                    code: PeerErrorCode::NoSuchGroup.into(),
                    message: format!("no group {group} here"),
                });
            };
            let p = &request.payload;
            match request.kind() {
                RaftKind::Append => answer(g.raft.append_entries(decode(p).map_err(bad)?).await),
                RaftKind::Vote => answer(g.raft.vote(decode(p).map_err(bad)?).await),
                RaftKind::PreVote => answer(g.raft.pre_vote(decode(p).map_err(bad)?).await),
                RaftKind::Snapshot => {
                    let (vote, meta, data): (Vote, SnapshotMeta, Vec<u8>) =
                        decode(p).map_err(bad)?;
                    let snapshot = Snapshot {
                        meta,
                        snapshot: Cursor::new(data),
                    };
                    answer(g.raft.install_full_snapshot(vote, snapshot).await)
                }
                RaftKind::TransferLeader => {
                    answer(g.raft.handle_transfer_leader(decode(p).map_err(bad)?).await)
                }
                RaftKind::Unspecified => Err(PeerError {
                    code: PeerErrorCode::UnknownRequest.into(),
                    message: "unknown Raft request kind".into(),
                }),
            }
        })
    }
}
