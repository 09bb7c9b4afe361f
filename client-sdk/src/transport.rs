//! The two transports behind one reader/writer pair. WebSocket carries one or more frames per
//! binary message; QUIC carries a byte stream of frames on one bidirectional stream. Above this
//! module the SDK sees only decoded envelopes and batches of encoded frames.
//!
//! The WebSocket client is our own: an upgrade request, then frames from
//! `chorus_protocol::websocket`. A general library zero-filled its read buffer before every
//! read and kept both halves behind one `BiLock`; receiving a message now reads into spare
//! capacity and decodes the envelopes straight from the read buffer (the halves still share
//! `tokio::io::split`'s mutex, taken per read and per write).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::{FrameDecoder, decode_frames};
use chorus_protocol::limits::{MAX_SERVER_FRAME_BYTES, QUIC_ALPN, WEBSOCKET_SUBPROTOCOL};
use chorus_protocol::v1::{CloseCode, ServerEnvelope};
use chorus_protocol::websocket::{WsDecoder, WsIncoming, WsOpcode, client_frame, close_payload};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use crate::config::{ClientConfig, Scheme};
use crate::error::Error;
use crate::tls;

/// A byte stream the WebSocket runs over: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The upgrade response's head may be at most this long.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Spare room a WebSocket read asks for: a read takes what has arrived, up to this.
const WS_READ_ROOM: usize = 4 * 1024;

/// Opens an in-memory stream instead of a TCP connection (unit tests only).
#[cfg(test)]
pub(crate) type TestConnector = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = std::io::Result<Box<dyn Io>>> + Send>,
        > + Send
        + Sync,
>;

/// The largest frame a server may send (the protocol's cap): the decoder refuses more before
/// buffering it.
const MAX_FRAME: usize = MAX_SERVER_FRAME_BYTES as usize;

/// Bytes asked of QUIC per read.
const READ_CHUNK: usize = 64 * 1024;

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

/// What one read produced: frames decoded as `M` (the full `ServerEnvelope` for the SDK).
pub(crate) enum Incoming<M = ServerEnvelope> {
    Frames(Vec<M>),
    Ended(Ended),
}

/// A pong the reader owes the server, sent by the writer ahead of its next message (the
/// server's own liveness check is the protocol's `Ping`; a WebSocket ping can only come from
/// a proxy, and the SDK's heartbeat writes at least every ping interval). Holds only the
/// latest, as RFC 6455 allows.
type OwedPong = Arc<Mutex<Option<Bytes>>>;

/// The receiving half.
pub(crate) enum Reader {
    Ws {
        read: ReadHalf<Box<dyn Io>>,
        buf: BytesMut,
        decoder: WsDecoder,
        pong: OwedPong,
    },
    Quic {
        recv: quinn::RecvStream,
        connection: quinn::Connection,
        buf: BytesMut,
        decoder: FrameDecoder,
    },
}

/// The sending half.
pub(crate) enum Writer {
    Ws {
        write: WriteHalf<Box<dyn Io>>,
        pong: OwedPong,
    },
    Quic {
        send: quinn::SendStream,
        connection: quinn::Connection,
    },
}

/// Opens a transport to the configured endpoint (no chorus handshake yet). `quic` holds the
/// client's QUIC endpoint across reconnects.
pub(crate) async fn connect(
    config: &ClientConfig,
    quic: &mut Option<quinn::Endpoint>,
) -> Result<(Reader, Writer), Error> {
    let endpoint = &config.endpoint;
    let name = config.server_name.as_deref().unwrap_or(&endpoint.host);
    match endpoint.scheme {
        Scheme::Ws | Scheme::Wss => {
            #[cfg(test)]
            if let Some(connector) = &config.connector {
                let io = connector()
                    .await
                    .map_err(|e| Error::Transport(format!("connect {}: {e}", config.url)))?;
                return upgrade(config, io).await;
            }
            let tcp = tcp_connect(config)
                .await
                .map_err(|e| Error::Transport(format!("connect {}: {e}", config.url)))?;
            tcp.set_nodelay(true)
                .map_err(|e| Error::Transport(e.to_string()))?;
            let io: Box<dyn Io> = if endpoint.scheme == Scheme::Wss {
                let tls = tls::client_config(&config.trust, None)?;
                let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
                let stream = connector
                    .connect(tls::server_name(name)?, tcp)
                    .await
                    .map_err(|e| Error::Transport(format!("TLS handshake: {e}")))?;
                Box::new(stream)
            } else {
                Box::new(tcp)
            };
            upgrade(config, io).await
        }
        Scheme::Quic => quic_connect(config, quic, name).await,
    }
}

/// TCP to the endpoint, from the configured local address when one is set.
async fn tcp_connect(config: &ClientConfig) -> std::io::Result<TcpStream> {
    let endpoint = &config.endpoint;
    let Some(local) = config.local_addr else {
        return TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await;
    };
    let mut last = None;
    for addr in tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await? {
        // A local address of one family cannot reach the other (`localhost` often resolves
        // to ::1 first): try the addresses it can.
        if addr.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(local, 0))?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

/// The WebSocket upgrade (RFC 6455 section 4.1), offering the chorus subprotocol.
async fn upgrade(config: &ClientConfig, mut io: Box<dyn Io>) -> Result<(Reader, Writer), Error> {
    let endpoint = &config.endpoint;
    let failed = |e: String| Error::Transport(format!("WebSocket upgrade: {e}"));
    let key = generate_key();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Protocol: {WEBSOCKET_SUBPROTOCOL}\r\n\r\n",
        endpoint.path,
        endpoint.authority()
    );
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| failed(e.to_string()))?;
    io.flush().await.map_err(|e| failed(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(1024);
    let head_len = loop {
        if let Some(n) = check_upgrade_response(&buf, &key).map_err(failed)? {
            break n;
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(failed(format!(
                "response head over {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        buf.reserve(1024);
        match io.read_buf(&mut buf).await {
            Ok(0) => return Err(failed("connection closed".into())),
            Ok(_) => {}
            Err(e) => return Err(failed(e.to_string())),
        }
    };
    // Frames the server sent right behind its response stay for the reader.
    let _head = buf.split_to(head_len);
    let (read, write) = tokio::io::split(io);
    let pong = OwedPong::default();
    Ok((
        Reader::Ws {
            read,
            buf,
            decoder: WsDecoder::new(MAX_FRAME * 4),
            pong: pong.clone(),
        },
        Writer::Ws { write, pong },
    ))
}

/// Checks the server's answer to the upgrade request: `Ok(None)` while its head is
/// incomplete, then the head's length once it accepted the upgrade.
fn check_upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid HTTP response: {e}")),
    };
    if response.code != Some(101) {
        return Err(format!(
            "HTTP {} {}",
            response.code.unwrap_or_default(),
            response.reason.unwrap_or_default()
        ));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err("the response does not upgrade to websocket".into());
    }
    if !header("connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    }) {
        return Err("the response's Connection header lacks upgrade".into());
    }
    if header("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes())) {
        return Err("wrong Sec-WebSocket-Accept".into());
    }
    // A server that does not echo the subprotocol still speaks it (older nodes); one that
    // picks another does not.
    if let Some(p) = header("sec-websocket-protocol")
        && p != WEBSOCKET_SUBPROTOCOL
    {
        return Err(format!("the server chose subprotocol {p:?}"));
    }
    Ok(Some(len))
}

async fn quic_connect(
    config: &ClientConfig,
    quic: &mut Option<quinn::Endpoint>,
    name: &str,
) -> Result<(Reader, Writer), Error> {
    let endpoint = &config.endpoint;
    // The family the client's socket can use: its configured local address's, or the shared
    // endpoint's.
    let family = config
        .local_addr
        .map(|l| l.is_ipv4())
        .or_else(|| quic.as_ref()?.local_addr().ok().map(|l| l.is_ipv4()));
    let addr = resolve(&endpoint.host, endpoint.port, family).await?;
    let client = match quic {
        Some(e) if e.local_addr().is_ok_and(|l| l.is_ipv4() == addr.is_ipv4()) => e.clone(),
        _ => {
            let bind: SocketAddr = if let Some(local) = config.local_addr {
                SocketAddr::new(local, 0)
            } else if addr.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            };
            let e = quinn::Endpoint::client(bind)
                .map_err(|e| Error::Transport(format!("QUIC endpoint: {e}")))?;
            *quic = Some(e.clone());
            e
        }
    };
    let tls = tls::client_config(&config.trust, Some(QUIC_ALPN))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Our Ping/Pong drives liveness; QUIC keep-alives keep NAT bindings open between.
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    client_config.transport_config(Arc::new(transport));
    let connection = client
        .connect_with(client_config, addr, name)
        .map_err(|e| Error::Transport(format!("QUIC connect: {e}")))?
        .await
        .map_err(|e| Error::Transport(format!("QUIC connect: {e}")))?;
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| Error::Transport(format!("QUIC stream: {e}")))?;
    Ok((
        Reader::Quic {
            recv,
            connection: connection.clone(),
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(MAX_FRAME),
        },
        Writer::Quic { send, connection },
    ))
}

/// The host's first address, of the IPv4 (`Some(true)`) or IPv6 family when one is asked
/// for and the host has one.
async fn resolve(host: &str, port: u16, ipv4: Option<bool>) -> Result<SocketAddr, Error> {
    let all: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::Transport(format!("resolve {host}: {e}")))?
        .collect();
    all.iter()
        .find(|a| ipv4.is_none_or(|v4| a.is_ipv4() == v4))
        .or(all.first())
        .copied()
        .ok_or_else(|| Error::Transport(format!("resolve {host}: no address")))
}

fn quic_ended(e: &quinn::ConnectionError) -> Ended {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => Ended {
            code: CloseCode::from_quic_code(c.error_code.into_inner()),
            reason: String::from_utf8_lossy(&c.reason).into_owned(),
        },
        other => Ended::lost(other.to_string()),
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
            Reader::Ws {
                read,
                buf,
                decoder,
                pong,
            } => loop {
                match decoder.decode(buf) {
                    Ok(Some(WsIncoming::Message(message))) => {
                        return match decode_frames(message, MAX_FRAME).collect() {
                            Ok(frames) => Incoming::Frames(frames),
                            Err(e) => Incoming::Ended(protocol_error(e)),
                        };
                    }
                    Ok(Some(WsIncoming::Ping(payload))) => {
                        *pong.lock().unwrap_or_else(|p| p.into_inner()) = Some(payload);
                    }
                    Ok(Some(WsIncoming::Close { code, reason })) => {
                        return Incoming::Ended(match code {
                            Some(code) => Ended {
                                code: CloseCode::from_websocket_code(code),
                                reason,
                            },
                            None => Ended::lost("closed without a code"),
                        });
                    }
                    Ok(None) => {
                        buf.reserve(WS_READ_ROOM);
                        // Cancel-safe: bytes land in `buf` only when the read completes.
                        match read.read_buf(buf).await {
                            Ok(0) => return Incoming::Ended(Ended::lost("connection closed")),
                            Ok(_) => {}
                            Err(e) => return Incoming::Ended(Ended::lost(e.to_string())),
                        }
                    }
                    Err(e) => return Incoming::Ended(protocol_error(e)),
                }
            },
            Reader::Quic {
                recv,
                connection,
                buf,
                decoder,
            } => loop {
                let mut frames = Vec::new();
                loop {
                    match decoder.decode::<M>(buf) {
                        Ok(Some(env)) => frames.push(env),
                        Ok(None) => break,
                        Err(e) => return Incoming::Ended(protocol_error(e)),
                    }
                }
                if !frames.is_empty() {
                    return Incoming::Frames(frames);
                }
                match recv.read_chunk(READ_CHUNK, true).await {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                    Ok(None) => {
                        // The server finished the stream; its close code follows on the
                        // connection.
                        let closed =
                            tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
                        return Incoming::Ended(match closed {
                            Ok(e) => quic_ended(&e),
                            Err(_) => Ended::lost("stream finished"),
                        });
                    }
                    Err(quinn::ReadError::ConnectionLost(e)) => {
                        return Incoming::Ended(quic_ended(&e));
                    }
                    Err(e) => return Incoming::Ended(Ended::lost(e.to_string())),
                }
            },
        }
    }
}

fn protocol_error(e: impl std::fmt::Display) -> Ended {
    Ended {
        code: Some(CloseCode::ProtocolError),
        reason: format!("the server sent {e}"),
    }
}

impl Writer {
    /// Sends encoded frames: one WebSocket message, or bytes on the QUIC stream.
    pub(crate) async fn send(&mut self, frames: Bytes) -> Result<(), String> {
        match self {
            Writer::Ws { write, pong } => {
                let mut out = BytesMut::new();
                if let Some(payload) = pong.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    client_frame(&mut out, WsOpcode::Pong, &payload, rand::random());
                }
                client_frame(&mut out, WsOpcode::Binary, &frames, rand::random());
                write_ws(write, &out).await
            }
            Writer::Quic { send, .. } => send.write_chunk(frames).await.map_err(|e| e.to_string()),
        }
    }

    /// Closes the connection as a client that is done (close code NORMAL).
    pub(crate) async fn close(&mut self) {
        match self {
            Writer::Ws { write, .. } => {
                let mut out = BytesMut::new();
                let payload = close_payload(CloseCode::Normal.websocket_code(), "client closed");
                client_frame(&mut out, WsOpcode::Close, &payload, rand::random());
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    write_ws(write, &out).await?;
                    write.shutdown().await.map_err(|e| e.to_string())
                })
                .await;
            }
            Writer::Quic { send, connection } => {
                let _ = send.finish();
                connection.close(
                    quinn::VarInt::from_u32(CloseCode::Normal.quic_code()),
                    b"client closed",
                );
            }
        }
    }
}

async fn write_ws(write: &mut WriteHalf<Box<dyn Io>>, bytes: &[u8]) -> Result<(), String> {
    write.write_all(bytes).await.map_err(|e| e.to_string())?;
    write.flush().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::codec::encode_frame_to_bytes;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[tokio::test]
    async fn resolve_prefers_the_family_asked_for_and_falls_back() {
        let v4 = |a: Result<SocketAddr, Error>| a.map(|a| a.is_ipv4()).ok();
        assert_eq!(v4(resolve("127.0.0.1", 1, Some(true)).await), Some(true));
        assert_eq!(v4(resolve("::1", 1, Some(false)).await), Some(false));
        // A host of one family only: that one, whatever was asked.
        assert_eq!(v4(resolve("127.0.0.1", 1, Some(false)).await), Some(true));
        assert_eq!(v4(resolve("::1", 1, None).await), Some(false));
    }

    fn response(status: &str, accept: &str, extra: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn upgrade_responses_are_checked() {
        let accept = derive_accept_key(KEY.as_bytes());
        let ok = response("101 Switching Protocols", &accept, "");
        assert_eq!(
            check_upgrade_response(ok.as_bytes(), KEY),
            Ok(Some(ok.len()))
        );
        assert_eq!(check_upgrade_response(&ok.as_bytes()[..20], KEY), Ok(None));
        let echoed = response(
            "101 Switching Protocols",
            &accept,
            "Sec-WebSocket-Protocol: chorus.v1\r\n",
        );
        assert!(matches!(
            check_upgrade_response(echoed.as_bytes(), KEY),
            Ok(Some(_))
        ));
        for (bad, why) in [
            (response("403 Forbidden", &accept, ""), "HTTP 403 Forbidden"),
            (
                response("101 Switching Protocols", "d3Jvbmc=", ""),
                "wrong Sec-WebSocket-Accept",
            ),
            (
                response(
                    "101 Switching Protocols",
                    &accept,
                    "Sec-WebSocket-Protocol: other\r\n",
                ),
                "the server chose subprotocol \"other\"",
            ),
            (
                "HTTP/1.1 101 OK\r\nConnection: Upgrade\r\n\r\n".into(),
                "the response does not upgrade to websocket",
            ),
            (
                "garbage\r\n\r\n".into(),
                "invalid HTTP response: invalid HTTP version",
            ),
        ] {
            assert_eq!(
                check_upgrade_response(bad.as_bytes(), KEY),
                Err(why.to_owned())
            );
        }
    }

    /// A server frame, unmasked.
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut out = vec![first, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    /// Reads one client frame: (first byte, unmasked payload).
    async fn client_frame_from(io: &mut tokio::io::DuplexStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await.expect("frame header");
        assert!(head[1] & 0x80 != 0, "client frames are masked");
        let len = usize::from(head[1] & 0x7F);
        assert!(len < 126);
        let mut mask = [0u8; 4];
        io.read_exact(&mut mask).await.expect("mask");
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await.expect("payload");
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        (head[0], payload)
    }

    /// Frames sent right behind the upgrade response are read, a ping is answered ahead of the
    /// client's next message, and the server's close code is reported.
    #[tokio::test]
    async fn frames_behind_the_response_pings_and_close() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let config = ClientConfig::new("ws://chat.example:7000/ws", "t").expect("config");
        let serve = tokio::spawn(async move {
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                server.read_exact(&mut byte).await.expect("request");
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).expect("text");
            assert!(request.starts_with("GET /ws HTTP/1.1\r\nHost: chat.example:7000\r\n"));
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .expect("key")
                .to_owned();
            let mut reply = response(
                "101 Switching Protocols",
                &derive_accept_key(key.as_bytes()),
                "",
            )
            .into_bytes();
            let hello = ServerEnvelope::disconnect(CloseCode::Normal.disconnect("bye"));
            reply.extend(server_frame(0x82, &encode_frame_to_bytes(&hello)));
            reply.extend(server_frame(0x89, b"hi"));
            server.write_all(&reply).await.expect("reply");
            server
        });
        let (mut reader, mut writer) = upgrade(&config, Box::new(client)).await.expect("upgrade");
        let mut server = serve.await.expect("server");
        let Incoming::Frames(frames) = reader.next().await else {
            panic!("frames expected");
        };
        assert_eq!(
            frames,
            vec![ServerEnvelope::disconnect(
                CloseCode::Normal.disconnect("bye")
            )]
        );
        // The ping is read on the way to the next message; the pong goes out before it.
        let read = tokio::spawn(async move { (reader.next().await, reader) });
        tokio::task::yield_now().await;
        server
            .write_all(&server_frame(0x82, b""))
            .await
            .expect("empty message");
        let (next, mut reader) = read.await.expect("reader");
        assert!(matches!(
            next,
            Incoming::Ended(Ended {
                code: Some(CloseCode::ProtocolError),
                ..
            })
        ));
        writer.send(Bytes::from_static(b"x")).await.expect("send");
        assert_eq!(client_frame_from(&mut server).await, (0x8A, b"hi".to_vec()));
        assert_eq!(client_frame_from(&mut server).await, (0x82, b"x".to_vec()));
        let payload = close_payload(CloseCode::SlowConsumer.websocket_code(), "slow");
        server
            .write_all(&server_frame(0x88, &payload))
            .await
            .expect("close");
        let Incoming::Ended(ended) = reader.next().await else {
            panic!("end expected");
        };
        assert_eq!(ended.code, Some(CloseCode::SlowConsumer));
        assert_eq!(ended.reason, "slow");
    }
}
