//! The QUIC listener (quinn, ALPN `chorus/1`): each connection opens one bidirectional stream
//! that carries the same frames as WebSocket, cut anywhere by the transport. The session logic
//! is the WebSocket one (`connection::run_connection`); only the frame source and sink differ.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::FrameDecoder;
use chorus_protocol::limits::QUIC_ALPN;
use chorus_protocol::v1::CloseCode;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{
    ConnectionId, ConnectionIdGenerator, Endpoint, IdleTimeout, ServerConfig, TransportConfig,
    VarInt,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handshake_step;
use crate::connection::{FrameSink, FrameSource, run_connection};
use crate::ids::Transport;
use crate::node::Node;
use crate::outbound::{Close, Outbound};

/// Frames taken from the stream per read at most, so one read cannot hold a connection forever.
const FRAMES_PER_READ: usize = 64;
/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Why the QUIC endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// TLS setup.
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    /// The TLS config cannot serve QUIC (needs TLS 1.3).
    #[error("QUIC TLS: {0}")]
    Crypto(String),
    /// Binding the UDP socket.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Packets a client may receive before it must acknowledge (ACK frequency extension, which
/// quinn clients support; others ignore it). The default acknowledges every other packet; a
/// fanout sends mostly one-way, and each acknowledgement costs both sides a packet.
const ACK_ELICITING_THRESHOLD: u32 = 8;

/// The largest UDP payload MTU discovery searches for. A client's endpoint advertises what it
/// accepts (quinn's and the SDK's default 1,472: an Ethernet MTU; more only when the client asks,
/// e.g. `raw::QuicEndpoint::bind_with_max_udp_payload`) and that caps the search per
/// connection, so for default clients nothing changes; where the client and
/// the path allow it, fewer and larger packets carry the same messages (each packet costs a
/// header, an AEAD seal, header protection and acknowledgements on both sides). quinn keeps a
/// send buffer of up to ten packets per connection sized from the path MTU, so this is not
/// 64 KiB.
const MTU_DISCOVERY_UPPER_BOUND: u16 = 16 * 1024;

/// A QUIC endpoint for `addr` with the node's certificate, and what its socket was granted.
pub fn endpoint(
    addr: SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
    idle_timeout: Duration,
) -> Result<(Endpoint, SocketInfo), QuicError> {
    let tls = super::tls::server_config(cert, key, &[QUIC_ALPN])?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Crypto(e.to_string()))?;
    let mut config = ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = TransportConfig::default();
    // One stream per connection, opened by the client; nothing else may be opened.
    transport.max_concurrent_bidi_streams(VarInt::from_u32(1));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport.max_idle_timeout(IdleTimeout::try_from(idle_timeout).ok());
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    transport.ack_frequency_config(Some(acks));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_DISCOVERY_UPPER_BOUND);
    transport.mtu_discovery_config(Some(mtu));
    config.transport_config(Arc::new(transport));
    let (socket, info) = udp_socket(addr).map_err(|source| QuicError::Bind { addr, source })?;
    let runtime = quinn::default_runtime().ok_or_else(|| QuicError::Bind {
        addr,
        source: std::io::Error::other("no async runtime"),
    })?;
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config.cid_generator(|| Box::new(RandomCids));
    let endpoint = Endpoint::new(endpoint_config, Some(config), socket, runtime)
        .map_err(|source| QuicError::Bind { addr, source })?;
    Ok((endpoint, info))
}

/// Connection ids of 8 random bytes.
///
/// quinn's default generator puts only 24 random bits in an id (the rest is a hash that lets it
/// drop stray packets cheaply), and the source id of a Retry is drawn without checking it
/// against the ids in use. With thousands of live connections, a Retry now and then carried a
/// live connection's id: the client's next Initials went to that connection, were dropped, and
/// the client stalled until its timeout (1 to 8 of 3,000 handshakes in a burst at 2,000/s).
/// With 64 random bits such a collision is out of reach.
struct RandomCids;

impl ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> ConnectionId {
        ConnectionId::new(&rand::random::<[u8; 8]>())
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Socket buffers asked for the QUIC socket (the kernel caps them at `net.core.rmem_max` /
/// `wmem_max`). Every QUIC connection shares this one socket: with the default 208 KiB a burst
/// of new connections overflowed it, and the dropped Initial packets were only resent after 1,
/// 3 and 7 seconds.
const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

fn udp_socket(addr: SocketAddr) -> std::io::Result<(std::net::UdpSocket, SocketInfo)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer works, only bursts suffer.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    let info = SocketInfo {
        receive_buffer_bytes: socket.recv_buffer_size().unwrap_or(0),
        inode: socket_inode(&socket),
    };
    // Linux reports twice what it grants (the other half is its bookkeeping): the log says
    // what was granted, comparable with what was asked.
    let granted = if cfg!(target_os = "linux") {
        info.receive_buffer_bytes / 2
    } else {
        info.receive_buffer_bytes
    };
    if granted < UDP_BUFFER_BYTES {
        tracing::warn!(
            granted,
            asked = UDP_BUFFER_BYTES,
            "the QUIC socket's receive buffer is smaller than asked (net.core.rmem_max caps it): \
             bursts to many connections may be dropped and retransmitted; raise net.core.rmem_max \
             to {UDP_BUFFER_BYTES} and watch chorus_quic_receive_drops_total"
        );
    }
    Ok((socket.into(), info))
}

/// The node's QUIC socket as the kernel set it up.
#[derive(Debug, Clone, Copy)]
pub struct SocketInfo {
    /// The receive buffer granted (as the kernel reports it: on Linux twice the usable size).
    pub receive_buffer_bytes: usize,
    /// The socket's inode, which finds its row in `/proc/net/udp` (Linux; `None` elsewhere).
    pub inode: Option<u64>,
}

impl SocketInfo {
    /// Datagrams the kernel dropped on this socket because its receive buffer was full (Linux:
    /// the `drops` column of `/proc/net/udp` or `udp6`; `None` where not available).
    pub fn receive_drops(&self) -> Option<u64> {
        let inode = self.inode?;
        ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|path| {
            let table = std::fs::read_to_string(path).ok()?;
            drops_of_inode(&table, inode)
        })
    }
}

/// The `drops` column (the last) of the row whose `inode` column (the tenth) is `inode`.
fn drops_of_inode(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|row| {
        let mut fields = row.split_whitespace();
        if fields.nth(9)?.parse::<u64>().ok()? != inode {
            return None;
        }
        fields.last()?.parse().ok()
    })
}

#[cfg(target_os = "linux")]
fn socket_inode(socket: &socket2::Socket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn socket_inode(_socket: &socket2::Socket) -> Option<u64> {
    None
}

/// Accepts connections until `stop`.
pub async fn accept_loop(
    endpoint: Endpoint,
    node: Arc<Node>,
    stop: CancellationToken,
    connections_stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = stop.cancelled() => return,
        };
        let Some(incoming) = incoming else { return };
        let peer = incoming.remote_address();
        if !incoming.remote_address_validated() {
            // A retry token proves the address before it costs the address's budget (spoofed
            // Initial packets would otherwise use up another host's admission).
            let outcome = match incoming.retry() {
                Ok(()) => "retry",
                // A token was given but did not validate; the client takes no second Retry.
                Err(refused) => {
                    refused.into_incoming().refuse();
                    "retry_impossible"
                }
            };
            metrics::counter!("chorus_quic_incoming_total", "outcome" => outcome).increment(1);
            continue;
        }
        let Ok(admission) = node.door().admit(peer, &node.limits()) else {
            metrics::counter!("chorus_quic_incoming_total", "outcome" => "refused").increment(1);
            incoming.refuse();
            continue;
        };
        metrics::counter!("chorus_quic_incoming_total", "outcome" => "accepted").increment(1);
        let node = node.clone();
        let stop = connections_stop.clone();
        tracker.spawn(async move {
            let limits = node.limits();
            let deadline = Duration::from_millis(u64::from(limits.handshake_timeout_ms));
            let handshake = tokio::time::timeout(deadline, incoming).await;
            let Some(connection) = handshake_step(handshake, peer, "QUIC handshake") else {
                return;
            };
            let (send, recv) = match tokio::time::timeout(deadline, connection.accept_bi()).await {
                Ok(Ok(streams)) => streams,
                _ => {
                    connection.close(
                        VarInt::from_u32(CloseCode::HandshakeTimeout.quic_code()),
                        b"no stream",
                    );
                    return;
                }
            };
            let max_frame = limits.max_frame_bytes as usize;
            let source = QuicSource {
                recv,
                buf: BytesMut::new(),
                decoder: FrameDecoder::new(max_frame),
            };
            let sink = QuicSink { send, connection };
            let outbound = Arc::new(Outbound::new(limits.max_outbound_queue_bytes as usize));
            run_connection(
                node,
                source,
                sink,
                outbound,
                stop,
                Transport::Quic,
                admission,
            )
            .await;
        });
    }
}

struct QuicSource {
    recv: quinn::RecvStream,
    /// Partial input survives between reads (and cancelled reads).
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl FrameSource for QuicSource {
    async fn next_frames(&mut self) -> Result<Option<Vec<Bytes>>, Close> {
        loop {
            let mut frames = Vec::new();
            while frames.len() < FRAMES_PER_READ {
                match self.decoder.next_frame(&mut self.buf) {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(e) => {
                        return Err(Close {
                            code: CloseCode::ProtocolError,
                            reason: e.to_string(),
                            reconnect_after_ms: 0,
                        });
                    }
                }
            }
            if !frames.is_empty() {
                return Ok(Some(frames));
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => return Ok(None),
                Err(e) => {
                    tracing::debug!(error = %e, "QUIC stream read failed");
                    return Ok(None);
                }
            }
        }
    }
}

struct QuicSink {
    send: quinn::SendStream,
    connection: quinn::Connection,
}

impl FrameSink for QuicSink {
    async fn send(&mut self, bytes: Bytes) -> Result<(), ()> {
        self.send.write_chunk(bytes).await.map_err(|_| ())
    }

    async fn close(&mut self, close: &Close, disconnect: Bytes) {
        let _ = self.send.write_chunk(disconnect).await;
        let _ = self.send.finish();
        // Give the peer a moment to receive the Disconnect before the connection closes.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.send.stopped()).await;
        let reason: String = close.reason.chars().take(100).collect();
        self.connection
            .close(VarInt::from_u32(close.code.quic_code()), reason.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as Linux prints them (header, then one socket a row, `drops` last).
    #[test]
    fn drops_are_read_from_the_row_of_the_sockets_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            \x20 1: 0100007F:24E4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
            \x20 2: 0700007F:E778 00000000:0000 07 00000000:003DB517 00:00000000 00000000     0        0 999 2 0000000000000000 298\n";
        assert_eq!(drops_of_inode(table, 4242), Some(17));
        assert_eq!(drops_of_inode(table, 999), Some(298));
        assert_eq!(drops_of_inode(table, 1), None);
    }

    /// The node finds its own socket's row: a fresh socket has dropped nothing.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_bound_socket_reports_its_buffer_and_no_drops() {
        let (_socket, info) = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(info.receive_buffer_bytes > 0);
        assert!(info.inode.is_some());
        assert_eq!(info.receive_drops(), Some(0));
    }

    /// 200,000 ids: with quinn's default 24 random bits about 1,200 pairs would collide
    /// (n^2 / 2^25); with 64 bits none should.
    #[test]
    fn connection_ids_do_not_collide_in_a_large_burst() {
        let mut generator = RandomCids;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200_000 {
            let id = generator.generate_cid();
            assert_eq!(id.len(), generator.cid_len());
            assert!(seen.insert(id), "a connection id came twice");
        }
    }
}
