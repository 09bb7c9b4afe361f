//! The WebSocket transport: tungstenite upgrades the connection and reads the client's frames;
//! the writer frames and writes the node's messages itself.
//!
//! Server frames are unmasked, so framing one is a header of 2 to 10 bytes in front of the
//! payload, sent with the payload in one vectored write (TLS: one buffer, one record). Writing
//! through tungstenite instead meant a `Sink` over a `BiLock` shared with the reader, a copy of
//! every message into its write buffer and a waker registration per send, a large share of the
//! node's CPU in `fanout`. The socket's halves still share `tokio::io::split`'s mutex, taken
//! per read and per write. What tungstenite still writes on its own — the upgrade
//! response, and later pongs and close replies — goes to the socket during the upgrade and
//! through the connection's outbound queue after it, so it stays in order with the messages.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use chorus_protocol::codec::split_frames;
use chorus_protocol::v1::CloseCode;
use chorus_protocol::websocket::{FrameHeader, WsOpcode, close_payload};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::handshake_step;
use crate::admission::Admission;
use crate::connection::{
    FrameSink, FrameSource, MAX_BATCH_BYTES, close, protocol_error, run_connection,
};
use crate::ids::Transport;
use crate::node::Node;
use crate::outbound::{Close, Outbound};

/// Frames one client WebSocket message may carry: batching is for a few requests at a time,
/// and a message of tiny frames must not cost unbounded bookkeeping.
const MAX_FRAMES_PER_MESSAGE: usize = 256;

/// WebSocket buffers sized for many idle connections: tungstenite's defaults (128 KiB read,
/// 128 KiB write) would cost a quarter of a megabyte per connection. Each connection keeps its
/// read buffer for life; 1 KiB (a read still holds several chat requests, larger messages grow
/// it) measured less RSS per idle connection than 4 KiB at the same fanout throughput
/// (docs/benchmarks.md, "Decisions"). Tungstenite writes only control frames now.
fn ws_config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_BATCH_BYTES * 4)
        .max_message_size(Some(max_frame * 16))
        .max_frame_size(Some(max_frame * 16))
}

/// Echoes the `chorus.v1` subprotocol when the client offers it (browsers refuse a connection
/// whose offered subprotocol is not echoed); clients that offer none are served as well.
#[allow(clippy::result_large_err)] // The signature is tungstenite's callback type.
fn offer_subprotocol(
    request: &tokio_tungstenite::tungstenite::handshake::server::Request,
    mut response: tokio_tungstenite::tungstenite::handshake::server::Response,
) -> Result<
    tokio_tungstenite::tungstenite::handshake::server::Response,
    tokio_tungstenite::tungstenite::handshake::server::ErrorResponse,
> {
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == chorus_protocol::limits::WEBSOCKET_SUBPROTOCOL);
    if offered {
        response.headers_mut().insert(
            "sec-websocket-protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static(
                chorus_protocol::limits::WEBSOCKET_SUBPROTOCOL,
            ),
        );
    }
    Ok(response)
}

/// Serves one accepted byte stream (TCP, or TLS over TCP) as a WebSocket connection.
///
/// Not an `async fn`: one keeps room for its arguments for as long as it runs, and a TLS stream
/// (over a KiB) would stay reserved in every idle connection after it has moved into the
/// WebSocket. The upgrade owns the stream instead, boxed, and its box is freed once it is done.
pub fn serve<S>(
    node: Arc<Node>,
    stream: S,
    peer: SocketAddr,
    shutdown: CancellationToken,
    admission: Admission,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = node.limits();
    let handshake_deadline = Duration::from_millis(u64::from(limits.handshake_timeout_ms));
    let max_frame = limits.max_frame_bytes as usize;
    let (read, write) = tokio::io::split(stream);
    let io = ReadSide {
        read,
        writes: Writes::Socket(write),
    };
    let upgrade = Box::pin(tokio::time::timeout(
        handshake_deadline,
        tokio_tungstenite::accept_hdr_async_with_config(
            io,
            offer_subprotocol,
            Some(ws_config(max_frame)),
        ),
    ));
    async move {
        // Awaited by value: the box is dropped as soon as the upgrade completes.
        let Some(mut ws) = handshake_step(upgrade.await, peer, "websocket upgrade") else {
            return;
        };
        let outbound = Arc::new(Outbound::new(limits.max_outbound_queue_bytes as usize));
        let Some(write) = ws.get_mut().hand_over(outbound.clone()) else {
            return;
        };
        run_connection(
            node,
            WsSource {
                ws: Box::new(ws),
                max_frame,
            },
            WsSink { write },
            outbound,
            shutdown,
            Transport::Ws,
            admission,
        )
        .await;
    }
}

/// Where tungstenite's own writes go.
enum Writes<S> {
    /// During the upgrade: the socket (the `101 Switching Protocols` response).
    Socket(WriteHalf<S>),
    /// After it: the outbound queue, behind the messages already queued.
    Queue(Arc<Outbound>),
}

/// The stream tungstenite runs on: the socket's read half, and writes per [`Writes`].
struct ReadSide<S> {
    read: ReadHalf<S>,
    writes: Writes<S>,
}

impl<S> ReadSide<S> {
    /// Ends the upgrade: tungstenite's writes go to `outbound` from now on, and the socket's
    /// write half goes to the writer. `None` if it was already handed over.
    fn hand_over(&mut self, outbound: Arc<Outbound>) -> Option<WriteHalf<S>> {
        match std::mem::replace(&mut self.writes, Writes::Queue(outbound)) {
            Writes::Socket(write) => Some(write),
            Writes::Queue(_) => None,
        }
    }
}

impl<S: AsyncRead> AsyncRead for ReadSide<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for ReadSide<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.writes {
            Writes::Socket(write) => Pin::new(write).poll_write(cx, buf),
            Writes::Queue(outbound) => {
                if outbound.push_raw(Bytes::copy_from_slice(buf)) {
                    Poll::Ready(Ok(buf.len()))
                } else {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the connection is closing",
                    )))
                }
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.writes {
            Writes::Socket(write) => Pin::new(write).poll_flush(cx),
            Writes::Queue(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.writes {
            Writes::Socket(write) => Pin::new(write).poll_shutdown(cx),
            // The writer shuts the socket down once the queue is sent.
            Writes::Queue(_) => Poll::Ready(Ok(())),
        }
    }
}

type WsStream<S> = tokio_tungstenite::WebSocketStream<ReadSide<S>>;

/// WebSocket messages as frame batches.
struct WsSource<S> {
    /// Boxed: the connection's future keeps its arguments and the locals made from them
    /// apart, so a WebSocket held by value (over half a KiB) was stored there twice — 0.7 KiB
    /// more per idle connection, measured.
    ws: Box<WsStream<S>>,
    max_frame: usize,
}

impl<S> FrameSource for WsSource<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn next_frames(&mut self) -> Result<Option<Vec<Bytes>>, Close> {
        let Some(message) = next_binary(&mut self.ws).await? else {
            return Ok(None);
        };
        let frames = split_frames(message, self.max_frame)
            .take(MAX_FRAMES_PER_MESSAGE + 1)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| protocol_error(&e))?;
        if frames.len() > MAX_FRAMES_PER_MESSAGE {
            return Err(close(
                CloseCode::ProtocolError,
                "too many frames in one message",
            ));
        }
        Ok(Some(frames))
    }
}

/// The next binary message, skipping pings and pongs. `Ok(None)` when the peer closed.
async fn next_binary<S>(ws: &mut WsStream<S>) -> Result<Option<Bytes>, Close>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(close(CloseCode::ProtocolError, format!("websocket: {e}")));
            }
            Some(Ok(WsMessage::Binary(b))) => return Ok(Some(b)),
            Some(Ok(WsMessage::Close(_))) => return Ok(None),
            Some(Ok(WsMessage::Text(_))) => {
                return Err(close(
                    CloseCode::ProtocolError,
                    "text messages are not part of the protocol",
                ));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// The writer's end of the socket.
struct WsSink<S> {
    write: WriteHalf<S>,
}

impl<S: AsyncWrite> WsSink<S> {
    /// Writes one frame: header and payload in one vectored write where the stream takes
    /// them (TCP); copied into one buffer otherwise (TLS, where two writes would be two
    /// records and two TCP segments).
    async fn frame(&mut self, opcode: WsOpcode, payload: &[u8]) -> io::Result<()> {
        // Server frames are unmasked.
        let header = FrameHeader::new(opcode, payload.len(), false);
        if self.write.is_write_vectored() {
            self.write
                .write_all_buf(&mut header.as_slice().chain(payload))
                .await?;
        } else {
            let mut whole = Vec::with_capacity(header.as_slice().len() + payload.len());
            whole.extend_from_slice(header.as_slice());
            whole.extend_from_slice(payload);
            self.write.write_all(&whole).await?;
        }
        self.write.flush().await
    }
}

impl<S> FrameSink for WsSink<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn send(&mut self, bytes: Bytes) -> Result<(), ()> {
        self.frame(WsOpcode::Binary, &bytes).await.map_err(|_| ())
    }

    async fn send_raw(&mut self, mut bytes: Bytes) -> Result<(), ()> {
        self.write.write_all_buf(&mut bytes).await.map_err(|_| ())?;
        self.write.flush().await.map_err(|_| ())
    }

    async fn close(&mut self, close: &Close, disconnect: Bytes) {
        if self.frame(WsOpcode::Binary, &disconnect).await.is_err() {
            return;
        }
        let payload = close_payload(close.code.websocket_code(), &close.reason);
        if self.frame(WsOpcode::Close, &payload).await.is_ok() {
            let _ = self.write.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// Frames the writer sends, read back by tungstenite as a client would.
    #[tokio::test]
    async fn a_client_reads_what_the_writer_frames() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (_read, write) = tokio::io::split(server);
        let mut sink = WsSink { write };
        let mut client = tokio_tungstenite::WebSocketStream::from_raw_socket(
            client,
            Role::Client,
            Some(WebSocketConfig::default()),
        )
        .await;
        let sizes = [0usize, 1, 125, 126, 65_535, 65_536, 200_000];
        for (i, size) in sizes.iter().enumerate() {
            let body = Bytes::from(vec![i as u8; *size]);
            assert!(sink.send(body).await.is_ok());
        }
        let close = crate::outbound::Close {
            code: CloseCode::SlowConsumer,
            reason: "ß".repeat(80),
            reconnect_after_ms: 0,
        };
        sink.close(&close, Bytes::from_static(b"bye")).await;
        for (i, size) in sizes.iter().enumerate() {
            match client.next().await {
                Some(Ok(WsMessage::Binary(b))) => {
                    assert_eq!(b.len(), *size);
                    assert!(b.iter().all(|x| *x == i as u8));
                }
                other => panic!("message {i}: {other:?}"),
            }
        }
        assert!(matches!(client.next().await, Some(Ok(WsMessage::Binary(b))) if b == "bye"));
        match client.next().await {
            Some(Ok(WsMessage::Close(Some(frame)))) => {
                assert_eq!(
                    u16::from(frame.code),
                    CloseCode::SlowConsumer.websocket_code()
                );
                assert!(frame.reason.starts_with("ßß"));
            }
            other => panic!("close: {other:?}"),
        }
    }

    /// A stream that cannot write vectored (TLS) gets each frame in one write.
    #[tokio::test]
    async fn a_stream_without_vectored_writes_gets_one_write_per_frame() {
        #[derive(Default)]
        struct Writes(Vec<Vec<u8>>);
        impl AsyncWrite for Writes {
            fn poll_write(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.0.push(buf.to_vec());
                Poll::Ready(Ok(buf.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        impl AsyncRead for Writes {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let (read, write) = tokio::io::split(Writes::default());
        let mut sink = WsSink { write };
        assert!(sink.send(Bytes::from_static(b"abc")).await.is_ok());
        assert!(sink.send(Bytes::from(vec![7u8; 300])).await.is_ok());
        let writes = read.unsplit(sink.write).0;
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0], [0x82, 3, b'a', b'b', b'c']);
        assert_eq!(writes[1].len(), 4 + 300);
    }

    /// After the upgrade, a pong tungstenite owes the client is queued behind the messages
    /// already queued, and goes out in that order.
    #[tokio::test]
    async fn control_replies_queue_behind_the_messages() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(server);
        let mut io = ReadSide {
            read,
            writes: Writes::Socket(write),
        };
        let outbound = Arc::new(Outbound::new(1 << 16));
        assert!(io.hand_over(outbound.clone()).is_some());
        assert!(io.hand_over(outbound.clone()).is_none());
        let mut server =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let mut client =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        outbound.push(Bytes::from_static(b"first"));
        futures_util::SinkExt::send(&mut client, WsMessage::Ping(Bytes::from_static(b"p")))
            .await
            .expect("ping");
        futures_util::SinkExt::send(&mut client, WsMessage::Binary(Bytes::from_static(b"x")))
            .await
            .expect("binary");
        // Reading the ping makes tungstenite answer it, into the queue.
        assert!(matches!(server.next().await, Some(Ok(WsMessage::Ping(_)))));
        assert!(matches!(
            server.next().await,
            Some(Ok(WsMessage::Binary(_)))
        ));
        let mut got = Vec::new();
        while let Some(batch) = futures_util::FutureExt::now_or_never(outbound.next(1 << 16)) {
            got.push(match batch {
                crate::outbound::Batch::Frames(b) => format!("frames {}", b.len()),
                crate::outbound::Batch::Raw(b) => format!("raw {:02x?}", &b[..]),
                crate::outbound::Batch::Close(_) => "close".into(),
            });
        }
        assert_eq!(got, ["frames 5", "raw [8a, 01, 70]"]);
    }
}
