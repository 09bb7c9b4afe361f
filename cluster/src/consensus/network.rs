//! Raft RPCs over the cluster endpoint: each is one request stream carrying the group, the
//! kind and openraft's message postcard-encoded; the answer is `Result<reply, reason>` in the
//! same encoding. One connection per node pair carries every group's traffic.

use std::future::Future;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chorus_protocol::peer::{self, RaftKind, request, response};
use openraft::RaftNetworkV2;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::consensus::store::{decode, encode};
use crate::consensus::types::{GroupId, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::endpoint::Endpoint;
use crate::id::NodeId;

/// Counters of the Raft traffic this node sends.
#[derive(Debug, Default)]
pub struct RaftStats {
    /// AppendEntries without entries (heartbeats).
    pub heartbeats: AtomicU64,
    /// AppendEntries with entries.
    pub appends: AtomicU64,
    /// Entries they carried.
    pub entries: AtomicU64,
    /// Votes and pre-votes.
    pub votes: AtomicU64,
    /// Snapshots sent.
    pub snapshots: AtomicU64,
    /// RPCs that failed (unreachable, timed out, refused).
    pub failed: AtomicU64,
}

/// Makes a group's clients to its peers.
#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) endpoint: Endpoint,
    pub(crate) group: GroupId,
    pub(crate) stats: Arc<RaftStats>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, _node: &openraft::EmptyNode) -> PeerClient {
        PeerClient {
            net: self.clone(),
            target,
        }
    }
}

/// One group's client to one peer.
pub(crate) struct PeerClient {
    net: Network,
    target: NodeId,
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::from_string(e.to_string())
}

impl PeerClient {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: RaftKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Unreachable<TypeConfig>> {
        let outcome = self.call_inner(kind, req, option).await;
        if outcome.is_err() {
            self.net.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    async fn call_inner<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: RaftKind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Unreachable<TypeConfig>> {
        let body = request::Body::Raft(peer::Raft {
            group: self.net.group.0,
            kind: kind.into(),
            payload: encode(req).map_err(unreachable)?.into(),
        });
        let reply = self
            .net
            .endpoint
            .request(&self.target, body, Some(option.hard_ttl()))
            .await
            .map_err(unreachable)?;
        let response::Body::Raft(r) = reply else {
            return Err(unreachable(format!("not a Raft reply: {reply:?}")));
        };
        let answer: Result<Resp, String> = decode(&r.payload).map_err(unreachable)?;
        answer.map_err(unreachable)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let stats = &self.net.stats;
        if rpc.entries.is_empty() {
            stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.appends.fetch_add(1, Ordering::Relaxed);
            stats.entries.fetch_add(
                u64::try_from(rpc.entries.len()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        Ok(self.call(RaftKind::Append, &rpc, &option).await?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net.stats.votes.fetch_add(1, Ordering::Relaxed);
        Ok(self.call(RaftKind::Vote, &rpc, &option).await?)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.net.stats.votes.fetch_add(1, Ordering::Relaxed);
        Ok(self.call(RaftKind::PreVote, &rpc, &option).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.net.stats.snapshots.fetch_add(1, Ordering::Relaxed);
        let req: (Vote, SnapshotMeta, Vec<u8>) =
            (vote, snapshot.meta, snapshot.snapshot.into_inner());
        Ok(self.call(RaftKind::Snapshot, &req, &option).await?)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.call(RaftKind::TransferLeader, &req, &option).await?)
    }

    fn backoff(&self) -> Option<Backoff> {
        // An unreachable peer is retried every 200 ms: often enough to notice it back within
        // an election timeout, rarely enough not to flood a dead address.
        Some(Backoff::new(std::iter::repeat(
            std::time::Duration::from_millis(200),
        )))
    }
}
