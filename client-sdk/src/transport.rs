//! The two transports behind one reader/writer pair. WebSocket carries one or more frames per
//! binary message; QUIC carries a byte stream of frames on one bidirectional stream. Above this
//! module the SDK sees only decoded envelopes and batches of encoded frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::{FrameDecoder, decode_frames};
use chorus_protocol::limits::{MAX_SERVER_FRAME_BYTES, QUIC_ALPN, WEBSOCKET_SUBPROTOCOL};
use chorus_protocol::v1::{CloseCode, ServerEnvelope};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::config::{ClientConfig, Scheme};
use crate::error::Error;
use crate::tls;

/// A byte stream the WebSocket runs over: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

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

/// The receiving half.
pub(crate) enum Reader {
    Ws(SplitStream<Ws>),
    Quic {
        recv: quinn::RecvStream,
        connection: quinn::Connection,
        buf: BytesMut,
        decoder: FrameDecoder,
    },
}

/// The sending half.
pub(crate) enum Writer {
    Ws(SplitSink<Ws, Message>),
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

/// The WebSocket upgrade, offering the chorus subprotocol.
async fn upgrade(config: &ClientConfig, io: Box<dyn Io>) -> Result<(Reader, Writer), Error> {
    let endpoint = &config.endpoint;
    let mut request = endpoint
        .ws_url()
        .into_client_request()
        .map_err(|e| Error::Transport(format!("WebSocket request: {e}")))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(WEBSOCKET_SUBPROTOCOL),
    );
    // tungstenite zero-fills up to the read buffer size before every read: 16 KiB cost a
    // 16 KiB memset per message received (8 % of the load tester's CPU at one message per
    // read). 4 KiB still takes dozens of pushes per read; larger messages grow the buffer.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME * 4))
        .max_frame_size(Some(MAX_FRAME * 4));
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, io, Some(ws_config))
        .await
        .map_err(|e| Error::Transport(format!("WebSocket upgrade: {e}")))?;
    let (sink, stream) = ws.split();
    Ok((Reader::Ws(stream), Writer::Ws(sink)))
}

async fn quic_connect(
    config: &ClientConfig,
    quic: &mut Option<quinn::Endpoint>,
    name: &str,
) -> Result<(Reader, Writer), Error> {
    let endpoint = &config.endpoint;
    let addr = resolve(&endpoint.host, endpoint.port).await?;
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

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, Error> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::Transport(format!("resolve {host}: {e}")))?
        .next()
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
            Reader::Ws(stream) => loop {
                match stream.next().await {
                    None => return Incoming::Ended(Ended::lost("connection closed")),
                    Some(Err(e)) => return Incoming::Ended(Ended::lost(e.to_string())),
                    Some(Ok(Message::Binary(message))) => {
                        return match decode_frames(message, MAX_FRAME).collect() {
                            Ok(frames) => Incoming::Frames(frames),
                            Err(e) => Incoming::Ended(protocol_error(e)),
                        };
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Incoming::Ended(match frame {
                            Some(f) => Ended {
                                code: CloseCode::from_websocket_code(u16::from(f.code)),
                                reason: f.reason.to_string(),
                            },
                            None => Ended::lost("closed without a code"),
                        });
                    }
                    Some(Ok(Message::Text(_))) => {
                        return Incoming::Ended(protocol_error("a text message"));
                    }
                    Some(Ok(_)) => {}
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
            Writer::Ws(sink) => sink
                .send(Message::Binary(frames))
                .await
                .map_err(|e| e.to_string()),
            Writer::Quic { send, .. } => send.write_chunk(frames).await.map_err(|e| e.to_string()),
        }
    }

    /// Closes the connection as a client that is done (close code NORMAL).
    pub(crate) async fn close(&mut self) {
        match self {
            Writer::Ws(sink) => {
                let frame = CloseFrame {
                    code: WsCloseCode::from(CloseCode::Normal.websocket_code()),
                    reason: "client closed".into(),
                };
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    sink.send(Message::Close(Some(frame))),
                )
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
