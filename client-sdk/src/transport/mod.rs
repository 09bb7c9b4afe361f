//! The two transports behind one reader/writer pair. WebSocket carries one or more frames per
//! binary message; QUIC carries a byte stream of frames on one bidirectional stream. Above this
//! module the SDK sees only decoded envelopes and batches of encoded frames.
//!
//! - [`ws`]: TCP (plain or TLS), the upgrade request and WebSocket frames.
//! - [`quic`]: a quinn connection with one bidirectional stream, and the shareable endpoint.
//! - [`tls`]: the trust modes and their rustls configurations.
//!
//! This module knows what to connect to ([`Dial`]) but not the client's configuration, so that
//! the configuration can name transport types without an import circle.

pub(crate) mod quic;
pub(crate) mod tls;
pub(crate) mod ws;

use std::net::IpAddr;

use bytes::Bytes;
use chorus_protocol::limits::MAX_SERVER_FRAME_BYTES;
use chorus_protocol::v1::{CloseCode, ServerEnvelope};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Error;
use quic::{QuicReader, QuicWriter};
use tls::TlsTrust;
use ws::{WsReader, WsWriter};

/// The largest frame a server may send (the protocol's cap): the decoders refuse more before
/// buffering it.
const MAX_FRAME: usize = MAX_SERVER_FRAME_BYTES as usize;

/// The transports a URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`: WebSocket without TLS (development and tests only).
    Ws,
    /// `wss://`: WebSocket over TLS.
    Wss,
    /// `quic://`: QUIC (always TLS 1.3), one bidirectional stream.
    Quic,
}

/// A parsed server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The transport.
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (defaults: 80 for `ws`, 443 for `wss` and `quic`).
    pub port: u16,
    /// The WebSocket request path (and query), `/` when absent.
    pub path: String,
}

impl Endpoint {
    /// Parses `ws://host[:port][/path]`, `wss://...` or `quic://host[:port]`.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = url.split_once("://").ok_or(bad("missing scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            "quic" => Scheme::Quic,
            _ => return Err(bad("the scheme must be ws, wss or quic")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad(
                "credentials in the URL are not supported: use the token",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(bad("unclosed IPv6 bracket"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
            None if scheme == Scheme::Ws => 80,
            None => 443,
        };
        // The path goes into the upgrade request line as it is.
        if path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
        {
            return Err(bad(
                "the path may not hold spaces, control characters or a fragment",
            ));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// `host:port` as the upgrade request's `Host` header carries it (IPv6 in brackets).
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A byte stream the WebSocket runs over: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens an in-memory stream instead of a TCP connection (unit tests only).
#[cfg(test)]
pub(crate) type TestConnector = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<Box<dyn Io>>> + Send>,
        > + Send
        + Sync,
>;

/// What a connection attempt needs to know: the part of the client's configuration that concerns
/// the transport.
#[derive(Clone)]
pub(crate) struct Dial {
    /// The URL as given, for error messages.
    pub(crate) url: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) trust: TlsTrust,
    /// The TLS name to verify when it is not the URL's host.
    pub(crate) server_name: Option<String>,
    pub(crate) local_addr: Option<IpAddr>,
    /// Replaces TCP for `ws://` URLs in unit tests.
    #[cfg(test)]
    pub(crate) connector: Option<TestConnector>,
}

impl Dial {
    /// The TLS server name to verify.
    fn name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.endpoint.host)
    }
}

/// How a connection ended, as far as the transport knows.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    /// The chorus close code, when the server sent one.
    pub(crate) code: Option<CloseCode>,
    pub(crate) reason: String,
}

impl Ended {
    fn lost(reason: impl Into<String>) -> Self {
        Self {
            code: None,
            reason: reason.into(),
        }
    }
}

/// The server sent bytes that are not chorus.v1 frames.
fn protocol_error(e: impl std::fmt::Display) -> Ended {
    Ended {
        code: Some(CloseCode::ProtocolError),
        reason: format!("the server sent {e}"),
    }
}

/// What one read produced: frames decoded as `M` (the full `ServerEnvelope` for the SDK).
pub(crate) enum Incoming<M = ServerEnvelope> {
    Frames(Vec<M>),
    Ended(Ended),
}

/// The receiving half.
pub(crate) enum Reader {
    Ws(WsReader),
    Quic(QuicReader),
}

/// The sending half.
pub(crate) enum Writer {
    Ws(WsWriter),
    Quic(QuicWriter),
}

/// Opens a transport to `dial`'s endpoint (no chorus handshake yet). `quic` holds the client's
/// QUIC endpoint across reconnects.
pub(crate) async fn connect(
    dial: &Dial,
    quic: &mut Option<quinn::Endpoint>,
) -> Result<(Reader, Writer), Error> {
    match dial.endpoint.scheme {
        Scheme::Ws | Scheme::Wss => {
            let (r, w) = ws::connect(dial).await?;
            Ok((Reader::Ws(r), Writer::Ws(w)))
        }
        Scheme::Quic => {
            let (r, w) = quic::connect(dial, quic).await?;
            Ok((Reader::Quic(r), Writer::Quic(w)))
        }
    }
}

impl Reader {
    /// The next batch of envelopes, or how the connection ended. Cancel-safe: a read
    /// interrupted by `select!` loses nothing.
    pub(crate) async fn next(&mut self) -> Incoming {
        self.next_as().await
    }

    /// [`Reader::next`], each frame decoded as `M`: any message whose fields are a subset of
    /// `ServerEnvelope`'s (the fields it leaves out are skipped, not decoded).
    pub(crate) async fn next_as<M: prost::Message + Default>(&mut self) -> Incoming<M> {
        match self {
            Reader::Ws(r) => r.next_as().await,
            Reader::Quic(r) => r.next_as().await,
        }
    }
}

impl Writer {
    /// Sends encoded frames: one WebSocket message, or bytes on the QUIC stream.
    pub(crate) async fn send(&mut self, frames: Bytes) -> Result<(), String> {
        match self {
            Writer::Ws(w) => w.send(frames).await,
            Writer::Quic(w) => w.send(frames).await,
        }
    }

    /// Closes the connection as a client that is done (close code NORMAL).
    pub(crate) async fn close(&mut self) {
        match self {
            Writer::Ws(w) => w.close().await,
            Writer::Quic(w) => w.close(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_endpoints() {
        let e = Endpoint::parse("wss://chat.example.com/ws?x=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port, e.path.as_str()),
            (Scheme::Wss, "chat.example.com", 443, "/ws?x=1")
        );
        let e = Endpoint::parse("ws://127.0.0.1:7000").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.port, e.path.as_str()), (7000, "/"));
        assert_eq!(
            (e.authority().as_str(), e.path.as_str()),
            ("127.0.0.1:7000", "/")
        );
        let e = Endpoint::parse("quic://[::1]:4433").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Quic, "::1", 4433)
        );
        assert_eq!(e.authority(), "[::1]:4433");
        assert_eq!(
            Endpoint::parse("WS://h").map(|e| e.port).ok(),
            Some(80),
            "schemes are case-insensitive"
        );
        for bad in [
            "http://h",
            "h:1",
            "ws://",
            "ws://:1",
            "ws://h:99999",
            "ws://u:p@h",
            "quic://[::1",
            "ws://h/a b",
            "ws://h/a\r\nX: y",
            "ws://h/#frag",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }
}
