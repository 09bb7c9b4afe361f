//! The cluster endpoint's and membership's settings, as the server's `[cluster]` section gives
//! them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::id::NodeId;
use crate::tls::CertPaths;

/// Bounds on what one peer may hold on this node.
#[derive(Debug, Clone)]
pub struct PeerLimits {
    /// The largest peer frame, bytes.
    pub max_frame_bytes: usize,
    /// Requests one peer may have open on this node at once (QUIC bidirectional streams).
    pub max_streams: u32,
    /// Bytes in flight per stream (QUIC stream receive window).
    pub stream_window: u32,
    /// Bytes in flight per connection (QUIC connection receive and send windows).
    pub connection_window: u32,
    /// Datagram bytes buffered per connection before the oldest are dropped.
    pub datagram_buffer: usize,
    /// A request's deadline when the caller gives none.
    pub request_timeout: Duration,
    /// How long a handshake (QUIC, TLS and Hello) may take.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; more connection attempts are refused.
    pub max_pending_handshakes: usize,
    /// A keep-alive packet at least this often on an idle connection.
    pub keep_alive: Duration,
    /// A connection silent this long is dead.
    pub idle_timeout: Duration,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            max_streams: 256,
            stream_window: 1 << 20,
            connection_window: 8 << 20,
            datagram_buffer: 1 << 20,
            request_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(3),
            max_pending_handshakes: 64,
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
        }
    }
}

/// SWIM timing (foca's configuration).
#[derive(Debug, Clone)]
pub struct MembershipTiming {
    /// One member probed this often.
    pub probe_period: Duration,
    /// How long a probe waits for its ack before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// A suspect member that does not refute it in this time is down.
    pub suspect_to_down_after: Duration,
    /// A down member is forgotten after this long.
    pub remove_down_after: Duration,
    /// Seeds and down members are announced to this often, so that partitions heal.
    pub announce_interval: Duration,
}

impl Default for MembershipTiming {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(400),
            probe_rtt: Duration::from_millis(150),
            suspect_to_down_after: Duration::from_millis(1200),
            remove_down_after: Duration::from_secs(60),
            announce_interval: Duration::from_secs(1),
        }
    }
}

impl ClusterConfig {
    /// A node on an ephemeral port of 127.0.0.1 with default limits and timing, certificates
    /// given in memory (nodes of one process: tests, benchmarks).
    pub fn loopback(node_id: NodeId, cluster_id: &str, seeds: Vec<SocketAddr>) -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            node_id,
            cluster_id: cluster_id.into(),
            listen,
            advertise: listen,
            client_addr: "127.0.0.1:9000".into(),
            seeds,
            certs: CertPaths::in_dir(std::path::Path::new("/nonexistent")),
            limits: PeerLimits::default(),
            timing: MembershipTiming::default(),
            software_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Everything a node of a cluster needs.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id (its certificate must name it).
    pub node_id: NodeId,
    /// The cluster id (what `chorusctl cluster init` wrote beside the CA).
    pub cluster_id: String,
    /// Where the cluster endpoint listens (UDP).
    pub listen: SocketAddr,
    /// The address other nodes dial (defaults to `listen`; must not be unspecified).
    pub advertise: SocketAddr,
    /// Where clients reach this node (shown to other nodes and in status).
    pub client_addr: String,
    /// Cluster addresses of nodes to join through.
    pub seeds: Vec<SocketAddr>,
    /// The node's certificates.
    pub certs: CertPaths,
    /// Per-peer bounds.
    pub limits: PeerLimits,
    /// Membership timing.
    pub timing: MembershipTiming,
    /// The chorusd version this node runs.
    pub software_version: String,
}
