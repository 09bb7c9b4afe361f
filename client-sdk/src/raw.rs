//! A bare connection: the SDK's transports and TLS without the connection task. For tools that
//! speak the protocol themselves (the load tester, protocol tests): no reconnect, no resume, no
//! queues; the caller sends frames and reads envelopes.

use bytes::Bytes;
use chorus_protocol::v1::{CloseCode, ServerEnvelope};

use crate::config::ClientConfig;
use crate::error::Error;
use crate::transport::{self, Incoming, Reader, Writer};

/// The receiving half of a bare connection.
pub struct RawReader(Reader);

/// The sending half of a bare connection.
pub struct RawWriter(Writer);

/// What one read produced.
#[derive(Debug)]
pub enum RawIncoming<M = ServerEnvelope> {
    /// Envelopes, in order.
    Frames(Vec<M>),
    /// The connection ended.
    Closed {
        /// The chorus close code, when the server sent one.
        code: Option<CloseCode>,
        /// Why.
        reason: String,
    },
}

/// One QUIC endpoint (one UDP socket) that many bare connections share. Without it each QUIC
/// connection binds an endpoint of its own, with its own socket and buffers: fine for an app,
/// about 2 MiB a connection for a tool that opens thousands.
#[derive(Debug, Clone)]
pub struct QuicEndpoint(quinn::Endpoint);

/// Socket buffers asked for a shared endpoint: thousands of handshakes answered at once
/// overflow the default (~208 KiB), and every dropped handshake packet costs a probe timeout
/// (1, 2, 4, 8 s: a few unlucky connections stalled 15 s in connect bursts).
const SHARED_UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// The largest UDP payload [`QuicEndpoint::bind`] accepts: quinn's default, a 1,500-byte
/// Ethernet MTU less the IP and UDP headers.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1472;

impl QuicEndpoint {
    pub(crate) fn inner(&self) -> &quinn::Endpoint {
        &self.0
    }

    /// The address of the endpoint's socket.
    pub fn local_addr(&self) -> Result<std::net::SocketAddr, Error> {
        self.0
            .local_addr()
            .map_err(|e| Error::Transport(format!("QUIC endpoint: {e}")))
    }

    /// Binds a client endpoint to `local` (port 0 for any), with socket buffers sized for many
    /// connections (best effort: the kernel caps them at `net.core.rmem_max`/`wmem_max`), that
    /// accepts UDP payloads up to quinn's default (1,472 bytes: an Ethernet MTU). Needs a Tokio
    /// runtime.
    pub fn bind(local: std::net::SocketAddr) -> Result<Self, Error> {
        Self::bind_with_max_udp_payload(local, DEFAULT_MAX_UDP_PAYLOAD)
    }

    /// [`QuicEndpoint::bind`], accepting UDP payloads up to `max_udp_payload` bytes (1,200 ..=
    /// 65,527). The server's packets to this endpoint grow up to it where the path allows (MTU
    /// discovery): on loopback, whose MTU is 64 KiB, fewer and larger packets carry the same
    /// messages. quinn sizes the endpoint's receive buffer from it (payload x 64 GRO segments x
    /// 32 datagrams, zero-filled): 3 MiB at the default, 32 MiB at 16 KiB.
    pub fn bind_with_max_udp_payload(
        local: std::net::SocketAddr,
        max_udp_payload: u16,
    ) -> Result<Self, Error> {
        let failed = |e: std::io::Error| Error::Transport(format!("QUIC endpoint: {e}"));
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(max_udp_payload)
            .map_err(|_| {
                Error::Transport(format!(
                    "QUIC endpoint: a UDP payload of {max_udp_payload} bytes is outside 1200 ..= 65527"
                ))
            })?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(local),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(failed)?;
        let _ = socket.set_recv_buffer_size(SHARED_UDP_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(SHARED_UDP_BUFFER_BYTES);
        socket.bind(&local.into()).map_err(failed)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| failed(std::io::Error::other("no async runtime")))?;
        quinn::Endpoint::new(endpoint_config, None, socket.into(), runtime)
            .map(Self)
            .map_err(failed)
    }
}

/// Opens the transport of `config` (TCP/TLS/WebSocket or QUIC); no `Hello` is sent.
pub async fn connect(config: &ClientConfig) -> Result<(RawReader, RawWriter), Error> {
    connect_via(config, None).await
}

/// [`connect`], with QUIC connections made through `endpoint` when one is given (its address
/// family must match the server's; otherwise a new endpoint is bound).
pub async fn connect_via(
    config: &ClientConfig,
    endpoint: Option<&QuicEndpoint>,
) -> Result<(RawReader, RawWriter), Error> {
    let mut quic = endpoint.map(|e| e.0.clone());
    let (reader, writer) = tokio::time::timeout(
        config.connect_timeout,
        transport::connect(config, &mut quic),
    )
    .await
    .map_err(|_| Error::Timeout)??;
    Ok((RawReader(reader), RawWriter(writer)))
}

impl RawReader {
    /// The next envelopes (one WebSocket message, or what one QUIC read completed).
    /// Cancel-safe.
    pub async fn next(&mut self) -> RawIncoming {
        self.next_as().await
    }

    /// [`RawReader::next`], each frame decoded as `M` instead of `ServerEnvelope`: a message
    /// that mirrors only the fields a tool reads (same tags; the rest are skipped unparsed),
    /// for receivers where decoding is a large part of the cost, such as the load tester.
    pub async fn next_as<M: prost::Message + Default>(&mut self) -> RawIncoming<M> {
        match self.0.next_as().await {
            Incoming::Frames(frames) => RawIncoming::Frames(frames),
            Incoming::Ended(e) => RawIncoming::Closed {
                code: e.code,
                reason: e.reason,
            },
        }
    }
}

impl RawWriter {
    /// Sends encoded frames (one WebSocket message; at most 256 frames per message).
    pub async fn send(&mut self, frames: Bytes) -> Result<(), Error> {
        self.0.send(frames).await.map_err(Error::Transport)
    }

    /// Closes with close code NORMAL.
    pub async fn close(&mut self) {
        self.0.close().await;
    }
}
