//! The cluster endpoint: one QUIC endpoint on its own UDP port, mutual TLS with the cluster CA,
//! one connection per node pair. A connection starts with the Hello handshake; after it every
//! request is one bidirectional stream and membership packets are datagrams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_protocol::peer::{self, NodeInfo, request, response};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::PeerLimits;
use crate::error::ClusterError;
use crate::id::NodeId;
use crate::stats::{Direction, Stats};
use crate::tls::TlsConfigs;

use crate::handshake::{accept_loop, connect, dial_in_background};
use crate::peers::{Inner, MAX_KNOWN, close, lock};
use crate::rpc::request;

pub use crate::peers::{LocalNode, PeerLink, RaftFuture, RaftService};

/// The cluster endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) inner: Arc<Inner>,
}

/// A UDP socket for the endpoint, bound to `listen`.
pub fn udp_socket(listen: SocketAddr) -> Result<Arc<dyn quinn::AsyncUdpSocket>, ClusterError> {
    let socket = std::net::UdpSocket::bind(listen).map_err(|source| ClusterError::Bind {
        addr: listen,
        source,
    })?;
    let runtime = quinn::default_runtime().ok_or(ClusterError::Closed)?;
    runtime
        .wrap_udp_socket(socket)
        .map_err(|source| ClusterError::Bind {
            addr: listen,
            source,
        })
}

fn transport(limits: &PeerLimits) -> Result<Arc<TransportConfig>, ClusterError> {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(limits.max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(limits.stream_window))
        .receive_window(VarInt::from_u32(limits.connection_window))
        .send_window(u64::from(limits.connection_window))
        .datagram_receive_buffer_size(Some(limits.datagram_buffer))
        .datagram_send_buffer_size(limits.datagram_buffer)
        .keep_alive_interval(Some(limits.keep_alive))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(limits.idle_timeout)
                .map_err(|e| ClusterError::Config(format!("idle timeout: {e}")))?,
        ));
    Ok(Arc::new(t))
}

impl Endpoint {
    /// Binds the endpoint on a socket the caller made (the fault harness wraps the UDP socket
    /// to delay, duplicate and reorder packets).
    pub fn bind_with_socket(
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        me: LocalNode,
        limits: PeerLimits,
        tls: &TlsConfigs,
        membership: mpsc::Sender<Bytes>,
    ) -> Result<Self, ClusterError> {
        let transport = transport(&limits)?;
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.server.clone())
            .map_err(|e| ClusterError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.client.clone())
            .map_err(|e| ClusterError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let runtime = quinn::default_runtime().ok_or(ClusterError::Closed)?;
        let quinn = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
        .map_err(|source| ClusterError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let inner = Arc::new(Inner {
            quinn,
            client,
            handshakes: Semaphore::new(limits.max_pending_handshakes),
            me,
            limits,
            peers: Mutex::default(),
            known: Mutex::default(),
            dials: Mutex::default(),
            membership,
            next_request: AtomicU64::new(1),
            epoch: Instant::now(),
            stop: CancellationToken::new(),
            stats: Stats::default(),
            raft: std::sync::OnceLock::new(),
        });
        tokio::spawn(accept_loop(inner.clone()));
        Ok(Self { inner })
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, ClusterError> {
        self.inner
            .quinn
            .local_addr()
            .map_err(|source| ClusterError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
    }

    /// This node.
    pub fn local(&self) -> &LocalNode {
        &self.inner.me
    }

    /// Dials `addr` (unless a connection to the node there exists) and runs the handshake.
    /// Returns the node that answered.
    pub async fn connect(&self, addr: SocketAddr) -> Result<NodeId, ClusterError> {
        connect(&self.inner, addr).await.map(|p| p.id.clone())
    }

    /// Like [`Endpoint::connect`], with what the node said of itself.
    pub(crate) async fn connect_info(&self, addr: SocketAddr) -> Result<NodeInfo, ClusterError> {
        connect(&self.inner, addr).await.map(|p| p.info.clone())
    }

    /// Remembers where a node's endpoint is (from membership), for later dials.
    pub fn learn(&self, node: &NodeId, addr: SocketAddr) {
        let mut known = lock(&self.inner.known);
        if known.len() < MAX_KNOWN || known.contains_key(node) {
            known.insert(node.clone(), addr);
        }
    }

    /// Sends one request and waits for its response, at most `deadline` (the configured
    /// request timeout when `None`). A connection is dialled when there is none; a request is
    /// retried on a new connection only while it could not be sent, so a request reaches the
    /// peer at most once.
    pub async fn request(
        &self,
        node: &NodeId,
        body: request::Body,
        deadline: Option<Duration>,
    ) -> Result<response::Body, ClusterError> {
        let deadline = deadline.unwrap_or(self.inner.limits.request_timeout);
        let outcome = tokio::time::timeout(deadline, request(&self.inner, node, body, deadline))
            .await
            .unwrap_or_else(|_| {
                Err(ClusterError::Timeout {
                    peer: node.to_string(),
                    after: deadline,
                })
            });
        self.inner.stats.request(outcome.is_ok());
        outcome
    }

    /// Makes `service` answer peers' Raft requests (once; later calls are refused).
    pub fn serve_raft(&self, service: Arc<dyn RaftService>) -> Result<(), ClusterError> {
        self.inner
            .raft
            .set(service)
            .map_err(|_| ClusterError::Config("a Raft service is already set".into()))
    }

    /// Measures the round trip of a ping to `node`.
    pub async fn ping(
        &self,
        node: &NodeId,
        deadline: Option<Duration>,
    ) -> Result<Duration, ClusterError> {
        let start = Instant::now();
        match self
            .request(node, request::Body::Ping(peer::Ping::default()), deadline)
            .await?
        {
            response::Body::Pong(_) => Ok(start.elapsed()),
            other => Err(ClusterError::BadFrame(format!(
                "expected a pong, got {other:?}"
            ))),
        }
    }

    /// Sends a membership packet to `node` as a datagram. Without a connection the packet is
    /// dropped (as UDP would drop it) and a connection is dialled in the background.
    pub(crate) fn send_membership(&self, node: &NodeId, addr: SocketAddr, packet: &[u8]) {
        let inner = &self.inner;
        let peer = lock(&inner.peers).get(node).cloned();
        match peer {
            Some(p) if p.conn.close_reason().is_none() => {
                let mut datagram = Vec::with_capacity(packet.len() + 1);
                datagram.push(peer::DATAGRAM_MEMBERSHIP);
                datagram.extend_from_slice(packet);
                let len = datagram.len();
                match p.conn.send_datagram(datagram.into()) {
                    Ok(()) => inner.stats.datagram(Direction::Out, len),
                    Err(e) => {
                        tracing::trace!(peer = %node, error = %e, "membership datagram not sent");
                        inner.stats.dropped("send failed");
                    }
                }
            }
            _ => {
                inner.stats.dropped("not connected");
                self.learn(node, addr);
                dial_in_background(inner, addr);
            }
        }
    }

    /// The connections open now.
    pub fn links(&self) -> Vec<PeerLink> {
        let now = self.inner.now_ms();
        let mut links: Vec<PeerLink> = lock(&self.inner.peers)
            .values()
            .filter(|p| p.conn.close_reason().is_none())
            .map(|p| PeerLink {
                node: p.id.clone(),
                info: p.info.clone(),
                version: p.version,
                rtt: p.conn.rtt(),
                last_heard: Duration::from_millis(
                    now.saturating_sub(p.last_heard_ms.load(Ordering::Relaxed)),
                ),
            })
            .collect();
        links.sort_by(|a, b| a.node.cmp(&b.node));
        links
    }

    /// The largest membership packet every connection can carry in one datagram.
    pub(crate) fn max_packet(&self) -> usize {
        // QUIC's smallest datagram room with the 1,200-byte initial MTU, less the kind byte.
        1100
    }

    /// Closes every connection and the endpoint, waiting (briefly) for the close to be sent.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        self.inner.quinn.close(close::SHUTDOWN, b"shutdown");
        let _ =
            tokio::time::timeout(Duration::from_millis(500), self.inner.quinn.wait_idle()).await;
    }
}
