//! WebSocket over TCP or TLS, with a client of our own: an upgrade request, then frames from
//! `chorus_protocol::websocket`. Owning it lets a read go into the buffer's spare capacity
//! (nothing is zero-filled) and lets envelopes decode straight from the read buffer; the halves
//! share `tokio::io::split`'s mutex, taken once per read and per write.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::decode_frames;
use chorus_protocol::limits::WEBSOCKET_SUBPROTOCOL;
use chorus_protocol::v1::CloseCode;
use chorus_protocol::websocket::{WsDecoder, WsIncoming, WsOpcode, client_frame, close_payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::tls;
use super::{Dial, Ended, Endpoint, Incoming, Io, MAX_FRAME, Scheme, protocol_error};
use crate::error::{Error, TransportError};

/// The upgrade response's head may be at most this long.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Spare room a WebSocket read asks for: a read takes what has arrived, up to this.
const WS_READ_ROOM: usize = 4 * 1024;

/// A pong the reader owes the server, sent by the writer ahead of its next message (the
/// server's own liveness check is the protocol's `Ping`; a WebSocket ping can only come from
/// a proxy, and the SDK's heartbeat writes at least every ping interval). Holds only the
/// latest, as RFC 6455 allows.
type OwedPong = Arc<Mutex<Option<Bytes>>>;

/// The receiving half of a WebSocket.
pub(crate) struct WsReader {
    read: ReadHalf<Box<dyn Io>>,
    buf: BytesMut,
    decoder: WsDecoder,
    pong: OwedPong,
}

/// The sending half of a WebSocket.
pub(crate) struct WsWriter {
    write: WriteHalf<Box<dyn Io>>,
    pong: OwedPong,
}

/// TCP (and TLS for `wss://`), then the upgrade.
pub(super) async fn connect(dial: &Dial) -> Result<(WsReader, WsWriter), Error> {
    #[cfg(test)]
    if let Some(connector) = &dial.connector {
        let io = connector().await.map_err(|e| connect_failed(dial, e))?;
        return upgrade(&dial.endpoint, io).await;
    }
    let tcp = tcp_connect(dial)
        .await
        .map_err(|e| connect_failed(dial, e))?;
    tcp.set_nodelay(true).map_err(|e| connect_failed(dial, e))?;
    let io: Box<dyn Io> = if dial.endpoint.scheme == Scheme::Wss {
        let tls = tls::client_config(&dial.trust, None)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let stream = connector
            .connect(tls::server_name(dial.name())?, tcp)
            .await
            .map_err(|e| TransportError::TlsHandshake(Arc::new(e)))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    upgrade(&dial.endpoint, io).await
}

/// TCP to the endpoint, from the configured local address when one is set.
async fn tcp_connect(dial: &Dial) -> std::io::Result<TcpStream> {
    let endpoint = &dial.endpoint;
    let Some(local) = dial.local_addr else {
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

fn connect_failed(dial: &Dial, e: std::io::Error) -> TransportError {
    TransportError::Connect {
        url: dial.url.clone(),
        source: Arc::new(e),
    }
}

/// The WebSocket upgrade (RFC 6455 section 4.1), offering the chorus subprotocol.
async fn upgrade(endpoint: &Endpoint, mut io: Box<dyn Io>) -> Result<(WsReader, WsWriter), Error> {
    let failed = |e: String| Error::from(TransportError::Upgrade(e));
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
        WsReader {
            read,
            buf,
            decoder: WsDecoder::new(MAX_FRAME * 4),
            pong: pong.clone(),
        },
        WsWriter { write, pong },
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

impl WsReader {
    /// The next message's envelopes, or how the connection ended. Cancel-safe: bytes land in
    /// the buffer only when a read completes.
    pub(super) async fn next_as<M: prost::Message + Default>(&mut self) -> Incoming<M> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(WsIncoming::Message(message))) => {
                    return match decode_frames(message, MAX_FRAME).collect() {
                        Ok(frames) => Incoming::Frames(frames),
                        Err(e) => Incoming::Ended(protocol_error(e)),
                    };
                }
                Ok(Some(WsIncoming::Ping(payload))) => {
                    *self.pong.lock().unwrap_or_else(|p| p.into_inner()) = Some(payload);
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
                    self.buf.reserve(WS_READ_ROOM);
                    match self.read.read_buf(&mut self.buf).await {
                        Ok(0) => return Incoming::Ended(Ended::lost("connection closed")),
                        Ok(_) => {}
                        Err(e) => return Incoming::Ended(Ended::lost(e.to_string())),
                    }
                }
                Err(e) => return Incoming::Ended(protocol_error(e)),
            }
        }
    }
}

impl WsWriter {
    /// Sends encoded frames as one binary message, behind the pong owed, if any.
    pub(super) async fn send(&mut self, frames: Bytes) -> Result<(), String> {
        let mut out = BytesMut::new();
        if let Some(payload) = self.pong.lock().unwrap_or_else(|p| p.into_inner()).take() {
            client_frame(&mut out, WsOpcode::Pong, &payload, rand::random());
        }
        client_frame(&mut out, WsOpcode::Binary, &frames, rand::random());
        self.write_all(&out).await
    }

    /// A close frame with close code NORMAL, then the end of the byte stream.
    pub(super) async fn close(&mut self) {
        let mut out = BytesMut::new();
        let payload = close_payload(CloseCode::Normal.websocket_code(), "client closed");
        client_frame(&mut out, WsOpcode::Close, &payload, rand::random());
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            self.write_all(&out).await?;
            self.write.shutdown().await.map_err(|e| e.to_string())
        })
        .await;
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.write
            .write_all(bytes)
            .await
            .map_err(|e| e.to_string())?;
        self.write.flush().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::codec::encode_frame_to_bytes;
    use chorus_protocol::v1::ServerEnvelope;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

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
        let endpoint = Endpoint::parse("ws://chat.example:7000/ws").expect("endpoint");
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
        let (mut reader, mut writer) = upgrade(&endpoint, Box::new(client)).await.expect("upgrade");
        let mut server = serve.await.expect("server");
        let Incoming::Frames(frames) = reader.next_as::<ServerEnvelope>().await else {
            panic!("frames expected");
        };
        assert_eq!(
            frames,
            vec![ServerEnvelope::disconnect(
                CloseCode::Normal.disconnect("bye")
            )]
        );
        // The ping is read on the way to the next message; the pong goes out before it.
        let read = tokio::spawn(async move { (reader.next_as::<ServerEnvelope>().await, reader) });
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
        let Incoming::Ended(ended) = reader.next_as::<ServerEnvelope>().await else {
            panic!("end expected");
        };
        assert_eq!(ended.code, Some(CloseCode::SlowConsumer));
        assert_eq!(ended.reason, "slow");
    }
}
