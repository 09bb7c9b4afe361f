//! The endpoint's state: this node, its connected peers (one connection per node pair), the
//! addresses it knows, and its dials.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_protocol::peer::{self, NodeInfo};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::PeerLimits;
use crate::id::NodeId;
use crate::stats::Stats;
use crate::tls::parse_addr;

/// Close codes of the cluster endpoint's connections.
pub(crate) mod close {
    use quinn::VarInt;
    pub(crate) const SHUTDOWN: VarInt = VarInt::from_u32(1);
    pub(crate) const DUPLICATE: VarInt = VarInt::from_u32(2);
    pub(crate) const REFUSED: VarInt = VarInt::from_u32(3);
}

/// Addresses this node remembers (known nodes, dial state); a bound on what gossip can add.
pub(crate) const MAX_KNOWN: usize = 4096;
/// After a failed dial, the address is not dialled in the background again for this long.
pub(crate) const REDIAL_AFTER: Duration = Duration::from_millis(500);

/// Who this node is on the endpoint.
#[derive(Debug, Clone)]
pub struct LocalNode {
    /// Its id.
    pub id: NodeId,
    /// Its cluster.
    pub cluster_id: String,
    /// What it tells peers.
    pub info: NodeInfo,
}

/// A connected peer.
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    pub(crate) info: NodeInfo,
    pub(crate) version: u32,
    pub(crate) conn: quinn::Connection,
    /// Whether this node dialled the connection.
    pub(crate) dialled: bool,
    pub(crate) last_heard_ms: AtomicU64,
}

/// What status shows of a connection.
#[derive(Debug, Clone)]
pub struct PeerLink {
    /// The peer.
    pub node: NodeId,
    /// What it said of itself in the handshake.
    pub info: NodeInfo,
    /// The peer protocol version in use.
    pub version: u32,
    /// QUIC's smoothed round-trip time.
    pub rtt: Duration,
    /// Since anything last arrived from it.
    pub last_heard: Duration,
}

#[derive(Default)]
pub(crate) struct DialState {
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
    pub(crate) retry_after: Option<Instant>,
}

pub(crate) struct Inner {
    pub(crate) quinn: quinn::Endpoint,
    pub(crate) client: quinn::ClientConfig,
    pub(crate) me: LocalNode,
    pub(crate) limits: PeerLimits,
    pub(crate) peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    pub(crate) known: Mutex<HashMap<NodeId, SocketAddr>>,
    pub(crate) dials: Mutex<HashMap<SocketAddr, DialState>>,
    pub(crate) handshakes: Semaphore,
    pub(crate) membership: mpsc::Sender<Bytes>,
    pub(crate) next_request: AtomicU64,
    pub(crate) epoch: Instant,
    pub(crate) stop: CancellationToken,
    pub(crate) stats: Stats,
    /// Who answers Raft requests, once consensus runs on this node.
    pub(crate) raft: std::sync::OnceLock<Arc<dyn RaftService>>,
}

/// The future a [`RaftService`] answers with.
pub type RaftFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<peer::RaftReply, peer::PeerError>> + Send>,
>;

/// Answers the Raft requests peers send (the consensus module implements it).
pub trait RaftService: Send + Sync + 'static {
    /// Answers one request from `from`.
    fn call(&self, from: NodeId, request: peer::Raft) -> RaftFuture;
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn heard(&self, peer: &Peer) {
        peer.last_heard_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn connected(&self, node: &NodeId) -> Option<Arc<Peer>> {
        lock(&self.peers)
            .get(node)
            .filter(|p| p.conn.close_reason().is_none())
            .cloned()
    }

    pub(crate) fn connected_at(&self, addr: SocketAddr) -> Option<Arc<Peer>> {
        let text = addr.to_string();
        lock(&self.peers)
            .values()
            .find(|p| p.info.cluster_addr == text && p.conn.close_reason().is_none())
            .cloned()
    }

    /// Keeps one connection per peer. A newer incarnation of the peer replaces the old one; two
    /// connections of one incarnation are simultaneous dials or a redial: between dials from
    /// opposite sides both nodes keep the one the smaller node id dialled, and a redial from
    /// the same side replaces the connection it gave up on. Returns the connection kept.
    pub(crate) fn register(&self, new: Arc<Peer>) -> Arc<Peer> {
        let mut peers = lock(&self.peers);
        let keep_new = match peers.get(&new.id) {
            Some(old) if old.conn.close_reason().is_none() => {
                if old.info.started_at_ms != new.info.started_at_ms {
                    new.info.started_at_ms > old.info.started_at_ms
                } else if old.dialled == new.dialled {
                    true
                } else {
                    new.dialled == (self.me.id < new.id)
                }
            }
            _ => true,
        };
        if keep_new {
            if let Some(old) = peers.insert(new.id.clone(), new.clone())
                && old.conn.stable_id() != new.conn.stable_id()
            {
                old.conn.close(close::DUPLICATE, b"replaced");
            }
            drop(peers);
            if let Some(addr) = parse_addr(&new.info.cluster_addr) {
                let mut known = lock(&self.known);
                if known.len() < MAX_KNOWN || known.contains_key(&new.id) {
                    known.insert(new.id.clone(), addr);
                }
            }
            self.stats.set_connections(self.count_connected());
            new
        } else {
            new.conn.close(close::DUPLICATE, b"duplicate");
            peers.get(&new.id).cloned().unwrap_or(new)
        }
    }

    pub(crate) fn count_connected(&self) -> usize {
        lock(&self.peers)
            .values()
            .filter(|p| p.conn.close_reason().is_none())
            .count()
    }

    pub(crate) fn unregister(&self, peer: &Peer) {
        let mut peers = lock(&self.peers);
        if peers
            .get(&peer.id)
            .is_some_and(|p| p.conn.stable_id() == peer.conn.stable_id())
        {
            peers.remove(&peer.id);
        }
        drop(peers);
        self.stats.set_connections(self.count_connected());
    }

    pub(crate) fn dial_lock(&self, addr: SocketAddr) -> Arc<tokio::sync::Mutex<()>> {
        let mut dials = lock(&self.dials);
        if dials.len() >= MAX_KNOWN && !dials.contains_key(&addr) {
            dials.retain(|_, d| Arc::strong_count(&d.lock) > 1);
        }
        dials.entry(addr).or_default().lock.clone()
    }

    pub(crate) fn refuse(&self, conn: &quinn::Connection, why: &str, reason: &'static str) {
        self.stats.refused(reason);
        tracing::warn!(remote = %conn.remote_address(), %why, "refused a cluster peer");
        conn.close(close::REFUSED, why.as_bytes());
    }
}
