//! A bare connection: the SDK's transports and TLS without the connection task. For tools that
//! speak the protocol themselves (the load tester, protocol tests): no reconnect, no resume, no
//! queues; the caller sends frames and reads envelopes.

use bytes::Bytes;
use chorus_protocol::v1::{CloseCode, ServerEnvelope};

use crate::config::ClientConfig;
use crate::error::Error;
pub use crate::transport::quic::{DEFAULT_MAX_UDP_PAYLOAD, QuicEndpoint};
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
    let mut quic = endpoint.map(|e| e.inner().clone());
    let (reader, writer) = tokio::time::timeout(
        config.connect_timeout,
        transport::connect(&config.dial(), &mut quic),
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
        self.0
            .send(frames)
            .await
            .map_err(|e| Error::Transport(crate::error::TransportError::Write(e)))
    }

    /// Closes with close code NORMAL.
    pub async fn close(&mut self) {
        self.0.close().await;
    }
}
