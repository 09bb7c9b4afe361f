//! QUIC: one quinn connection and one bidirectional stream per session, ALPN `chorus/1`, TLS 1.3.
//! The stream is a byte stream of frames. An endpoint (one UDP socket) is kept across reconnects,
//! and may be shared by many clients ([`QuicEndpoint`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::FrameDecoder;
use chorus_protocol::limits::QUIC_ALPN;
use chorus_protocol::v1::CloseCode;

use super::tls;
use super::{Dial, Ended, Incoming, MAX_FRAME, protocol_error};
use crate::error::{Error, TransportError};

/// Bytes asked of QUIC per read.
const READ_CHUNK: usize = 64 * 1024;

/// Socket buffers asked for a shared endpoint: thousands of handshakes answered at once
/// overflow the kernel's default, and every dropped handshake packet costs a probe timeout that
/// doubles with each loss.
const SHARED_UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// The largest UDP payload [`QuicEndpoint::bind`] accepts: quinn's default, a 1,500-byte
/// Ethernet MTU less the IP and UDP headers.
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1472;

/// One QUIC endpoint (one UDP socket) that many connections share. Without it each QUIC
/// connection binds an endpoint of its own, with its own socket and buffers: fine for an app,
/// about 2 MiB a connection for a tool that opens thousands.
#[derive(Debug, Clone)]
pub struct QuicEndpoint(quinn::Endpoint);

impl QuicEndpoint {
    pub(crate) fn inner(&self) -> &quinn::Endpoint {
        &self.0
    }

    /// The address of the endpoint's socket.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.0
            .local_addr()
            .map_err(|e| TransportError::quic("endpoint", e).into())
    }

    /// Binds a client endpoint to `local` (port 0 for any), with socket buffers sized for many
    /// connections (best effort: the kernel caps them at `net.core.rmem_max`/`wmem_max`), that
    /// accepts UDP payloads up to quinn's default (1,472 bytes: an Ethernet MTU). Needs a Tokio
    /// runtime.
    pub fn bind(local: SocketAddr) -> Result<Self, Error> {
        Self::bind_with_max_udp_payload(local, DEFAULT_MAX_UDP_PAYLOAD)
    }

    /// [`QuicEndpoint::bind`], accepting UDP payloads up to `max_udp_payload` bytes (1,200 ..=
    /// 65,527). The server's packets to this endpoint grow up to it where the path allows (MTU
    /// discovery): on loopback, whose MTU is 64 KiB, fewer and larger packets carry the same
    /// messages. quinn sizes the endpoint's receive buffer from it (payload x 64 GRO segments x
    /// 32 datagrams, zero-filled): 3 MiB at the default, 32 MiB at 16 KiB.
    pub fn bind_with_max_udp_payload(
        local: SocketAddr,
        max_udp_payload: u16,
    ) -> Result<Self, Error> {
        let failed = |e: std::io::Error| Error::from(TransportError::quic("endpoint", e));
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(max_udp_payload)
            .map_err(|_| {
                TransportError::quic(
                    "endpoint",
                    std::io::Error::other(format!(
                        "a UDP payload of {max_udp_payload} bytes is outside 1200 ..= 65527"
                    )),
                )
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

/// The receiving half: the stream and its frame decoder.
pub(crate) struct QuicReader {
    recv: quinn::RecvStream,
    connection: quinn::Connection,
    buf: BytesMut,
    decoder: FrameDecoder,
}

/// The sending half.
pub(crate) struct QuicWriter {
    send: quinn::SendStream,
    connection: quinn::Connection,
}

/// A connection and its stream, through `quic` when its address family fits (it is bound, and
/// kept there for the next attempt, otherwise).
pub(super) async fn connect(
    dial: &Dial,
    quic: &mut Option<quinn::Endpoint>,
) -> Result<(QuicReader, QuicWriter), Error> {
    let endpoint = &dial.endpoint;
    // The family the client's socket can use: its configured local address's, or the shared
    // endpoint's.
    let family = dial
        .local_addr
        .map(|l| l.is_ipv4())
        .or_else(|| quic.as_ref()?.local_addr().ok().map(|l| l.is_ipv4()));
    let addr = resolve(&endpoint.host, endpoint.port, family).await?;
    let client = match quic {
        Some(e) if e.local_addr().is_ok_and(|l| l.is_ipv4() == addr.is_ipv4()) => e.clone(),
        _ => {
            let bind: SocketAddr = if let Some(local) = dial.local_addr {
                SocketAddr::new(local, 0)
            } else if addr.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            };
            let e =
                quinn::Endpoint::client(bind).map_err(|e| TransportError::quic("endpoint", e))?;
            *quic = Some(e.clone());
            e
        }
    };
    let tls = tls::client_config(&dial.trust, Some(QUIC_ALPN))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Our Ping/Pong drives liveness; QUIC keep-alives keep NAT bindings open between.
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    client_config.transport_config(Arc::new(transport));
    let connection = client
        .connect_with(client_config, addr, dial.name())
        .map_err(|e| TransportError::quic("connect", e))?
        .await
        .map_err(|e| TransportError::quic("connect", e))?;
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| TransportError::quic("stream", e))?;
    Ok((
        QuicReader {
            recv,
            connection: connection.clone(),
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(MAX_FRAME),
        },
        QuicWriter { send, connection },
    ))
}

/// The host's first address, of the IPv4 (`Some(true)`) or IPv6 family when one is asked
/// for and the host has one.
async fn resolve(host: &str, port: u16, ipv4: Option<bool>) -> Result<SocketAddr, Error> {
    let all: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| TransportError::Resolve {
            host: host.to_owned(),
            source: Arc::new(e),
        })?
        .collect();
    all.iter()
        .find(|a| ipv4.is_none_or(|v4| a.is_ipv4() == v4))
        .or(all.first())
        .copied()
        .ok_or_else(|| {
            TransportError::Resolve {
                host: host.to_owned(),
                source: Arc::new(std::io::Error::other("no address")),
            }
            .into()
        })
}

fn ended(e: &quinn::ConnectionError) -> Ended {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => Ended {
            code: CloseCode::from_quic_code(c.error_code.into_inner()),
            reason: String::from_utf8_lossy(&c.reason).into_owned(),
        },
        other => Ended::lost(other.to_string()),
    }
}

impl QuicReader {
    /// The envelopes one read completed, or how the connection ended. Cancel-safe: a chunk is
    /// appended to the buffer only once read.
    pub(super) async fn next_as<M: prost::Message + Default>(&mut self) -> Incoming<M> {
        loop {
            let mut frames = Vec::new();
            loop {
                match self.decoder.decode::<M>(&mut self.buf) {
                    Ok(Some(env)) => frames.push(env),
                    Ok(None) => break,
                    Err(e) => return Incoming::Ended(protocol_error(e)),
                }
            }
            if !frames.is_empty() {
                return Incoming::Frames(frames);
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    // The server finished the stream; its close code follows on the
                    // connection.
                    let closed =
                        tokio::time::timeout(Duration::from_secs(2), self.connection.closed())
                            .await;
                    return Incoming::Ended(match closed {
                        Ok(e) => ended(&e),
                        Err(_) => Ended::lost("stream finished"),
                    });
                }
                Err(quinn::ReadError::ConnectionLost(e)) => {
                    return Incoming::Ended(ended(&e));
                }
                Err(e) => return Incoming::Ended(Ended::lost(e.to_string())),
            }
        }
    }
}

impl QuicWriter {
    /// Bytes on the stream.
    pub(super) async fn send(&mut self, frames: Bytes) -> Result<(), String> {
        self.send
            .write_chunk(frames)
            .await
            .map_err(|e| e.to_string())
    }

    /// Finishes the stream and closes the connection with close code NORMAL.
    pub(super) fn close(&mut self) {
        let _ = self.send.finish();
        self.connection.close(
            quinn::VarInt::from_u32(CloseCode::Normal.quic_code()),
            b"client closed",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolve_prefers_the_family_asked_for_and_falls_back() {
        let v4 = |a: Result<SocketAddr, Error>| a.map(|a| a.is_ipv4()).ok();
        assert_eq!(v4(resolve("127.0.0.1", 1, Some(true)).await), Some(true));
        assert_eq!(v4(resolve("::1", 1, Some(false)).await), Some(false));
        // A host of one family only: that one, whatever was asked.
        assert_eq!(v4(resolve("127.0.0.1", 1, Some(false)).await), Some(true));
        assert_eq!(v4(resolve("::1", 1, None).await), Some(false));
    }
}
