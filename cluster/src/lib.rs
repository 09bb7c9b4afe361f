//! `chorus-cluster`: what nodes of a Chorus cluster stand on.
//!
//! - [`endpoint`]: the cluster endpoint, QUIC on its own port with mutual TLS against the
//!   cluster CA (ALPN `chorus-cluster/1`), one connection per node pair, a versioned Hello
//!   handshake, request/response streams with ids and deadlines, bounded streams, windows and
//!   frames.
//! - [`membership`]: SWIM (foca) over the endpoint's datagrams: join through seeds, failure
//!   detection with suspicion, clean leave, rejoin after restart without ghosts, ephemeral
//!   broadcasts. A liveness hint, never a safety decision.
//! - [`tls`]: the cluster CA and node certificates (`chorusctl cluster init`).
//! - [`Cluster`]: both, started from a [`ClusterConfig`], with the status `chorusctl cluster
//!   status` shows.
//!
//! Imports go one way: `id`, `error` <- `config`, `tls`, `stats`, `wire` <- `peers` (the
//! endpoint's state) <- `serve` <- `handshake` <- `rpc` <- `endpoint` <- `member`,
//! `ephemeral` <- `membership` <- `lib`. `fault` (a packet-mangling socket for tests) stands
//! apart.

pub mod config;
pub mod consensus;
pub mod endpoint;
pub mod ephemeral;
pub mod error;
pub mod fault;
mod handshake;
pub mod id;
pub mod member;
pub mod membership;
mod peers;
mod rpc;
mod serve;
mod stats;
pub mod tls;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_protocol::peer::NodeInfo;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::{ClusterConfig, MembershipTiming, PeerLimits};
pub use endpoint::{Endpoint, LocalNode};
pub use ephemeral::Ephemeral;
pub use error::ClusterError;
pub use id::NodeId;
pub use member::Member;
pub use membership::{MemberView, Membership};
pub use stats::StatsSnapshot;
pub use tls::{CertPaths, ClusterCa, TlsConfigs};

/// Membership datagrams waiting for the membership task; more are dropped.
const PACKET_QUEUE: usize = 1024;

/// A running cluster node: its endpoint and its membership.
pub struct Cluster {
    endpoint: Endpoint,
    membership: Membership,
    /// The seeds that are other nodes (this node's bound and advertised addresses left out).
    seeds: Vec<SocketAddr>,
    stop: CancellationToken,
}

/// One row of `chorusctl cluster status`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// The node.
    pub node_id: String,
    /// alive, suspect, down; "self" for this node.
    pub state: String,
    /// Its cluster endpoint.
    pub cluster_addr: String,
    /// Where its clients connect.
    pub client_addr: String,
    /// When it started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// Whether this node has a connection to it.
    pub connected: bool,
    /// The connection's round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Since this node last heard from it, ms.
    pub last_heard_ms: Option<u64>,
    /// The chorusd version it runs (from the handshake).
    pub version: Option<String>,
}

/// What `chorusctl cluster status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// The cluster.
    pub cluster_id: String,
    /// This node.
    pub node_id: String,
    /// Whether this node is ready: it has joined (another member is alive), or it was given
    /// no seed but itself.
    pub joined: bool,
    /// Every member, this node first.
    pub members: Vec<MemberStatus>,
    /// The endpoint's counters.
    pub stats: StatsSnapshot,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Cluster {
    /// Starts the node's endpoint and membership, reading its certificates from the config's
    /// paths.
    pub async fn start(config: &ClusterConfig) -> Result<Self, ClusterError> {
        let tls = TlsConfigs::load(&config.certs)?;
        Self::start_with(config, &tls, None).await
    }

    /// Starts with certificates already loaded, and optionally on a socket the caller made
    /// (the fault harness's packet-mangling socket).
    pub async fn start_with(
        config: &ClusterConfig,
        tls: &TlsConfigs,
        socket: Option<Arc<dyn quinn::AsyncUdpSocket>>,
    ) -> Result<Self, ClusterError> {
        let (packets_tx, packets) = mpsc::channel(PACKET_QUEUE);
        let started_at_ms = now_ms();
        let socket = match socket {
            Some(s) => s,
            None => endpoint::udp_socket(config.listen)?,
        };
        // The advertised address: a zero port is replaced by the one bound.
        let bound = socket.local_addr().map_err(|source| ClusterError::Bind {
            addr: config.listen,
            source,
        })?;
        let mut advertise = config.advertise;
        if advertise.port() == 0 {
            advertise.set_port(bound.port());
        }
        if advertise.ip().is_unspecified() {
            return Err(ClusterError::Config(
                "[cluster] advertise must be an address other nodes can dial, not 0.0.0.0".into(),
            ));
        }
        let local = LocalNode {
            id: config.node_id.clone(),
            cluster_id: config.cluster_id.clone(),
            info: NodeInfo {
                node_id: config.node_id.to_string(),
                cluster_addr: advertise.to_string(),
                client_addr: config.client_addr.clone(),
                started_at_ms,
                software_version: config.software_version.clone(),
            },
        };
        let endpoint =
            Endpoint::bind_with_socket(socket, local, config.limits.clone(), tls, packets_tx)?;
        let me = Member {
            node: config.node_id.clone(),
            cluster_addr: advertise,
            client_addr: config.client_addr.clone(),
            started_at_ms,
            renewed: 0,
        };
        let membership = Membership::start(me, &config.timing, endpoint.clone(), packets);
        let seeds: Vec<SocketAddr> = config
            .seeds
            .iter()
            .filter(|s| **s != bound && **s != advertise)
            .copied()
            .collect();
        let stop = CancellationToken::new();
        tokio::spawn(membership::join_through_seeds(
            endpoint.clone(),
            membership.clone(),
            seeds.clone(),
            config.timing.announce_interval,
            stop.clone(),
        ));
        Ok(Self {
            endpoint,
            membership,
            seeds,
            stop,
        })
    }

    /// The endpoint (requests to other nodes).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The membership (who is alive; broadcasts).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Whether this node has joined: another member is alive, or no seed other than itself was
    /// configured (the first node of a cluster).
    pub fn joined(&self) -> bool {
        self.seeds.is_empty() || self.membership.active_members() > 0
    }

    /// Every member as this node sees it, with its connection.
    pub async fn status(&self) -> ClusterStatus {
        let me = self.endpoint.local();
        let links = self.endpoint.links();
        let mut members = vec![MemberStatus {
            node_id: me.id.to_string(),
            state: "self".into(),
            cluster_addr: me.info.cluster_addr.clone(),
            client_addr: me.info.client_addr.clone(),
            started_at_ms: me.info.started_at_ms,
            connected: true,
            rtt_ms: None,
            last_heard_ms: None,
            version: Some(me.info.software_version.clone()),
        }];
        for view in self.membership.view().await {
            let link = links.iter().find(|l| l.node == view.member.node);
            members.push(MemberStatus {
                node_id: view.member.node.to_string(),
                state: view.state.into(),
                cluster_addr: view.member.cluster_addr.to_string(),
                client_addr: view.member.client_addr.clone(),
                started_at_ms: view.member.started_at_ms,
                connected: link.is_some(),
                rtt_ms: link.map(|l| (l.rtt.as_secs_f64() * 100_000.0).round() / 100.0),
                last_heard_ms: link
                    .map(|l| u64::try_from(l.last_heard.as_millis()).unwrap_or(u64::MAX)),
                version: link.map(|l| l.info.software_version.clone()),
            });
        }
        ClusterStatus {
            cluster_id: me.cluster_id.clone(),
            node_id: me.id.to_string(),
            joined: self.joined(),
            members,
            stats: self.endpoint.inner.stats.snapshot(),
        }
    }

    /// Leaves the cluster cleanly (members see this node down at once) and closes the endpoint.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.membership.leave().await;
        // Let the leave datagrams go out before the connections close.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.endpoint.close().await;
    }
}
