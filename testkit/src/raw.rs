//! A raw-protocol test client: speaks chorus.v1 frame by frame over a real WebSocket, keeps
//! pushes apart from replies, and helpers to read replies.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::{decode_frames, encode_frame};
use chorus_protocol::limits::MAX_SERVER_FRAME_BYTES;
use chorus_protocol::v1::{
    self, ClientEnvelope, ServerEnvelope, client_envelope::Request, push, reply, server_envelope,
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The WebSocket under a [`Client`].
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Speaks chorus.v1 frame by frame.
pub struct Client {
    pub ws: Ws,
    next_id: u64,
    /// Decoded from the socket, not yet looked at.
    inbox: VecDeque<ServerEnvelope>,
    /// Pushes that arrived while waiting for a reply.
    pushes: VecDeque<ServerEnvelope>,
    /// `MembershipUpdate` pushes, kept apart: the node sends them beside whatever a test
    /// waits for, unordered with it (see [`Client::next_membership`]).
    memberships: VecDeque<v1::MembershipUpdate>,
    pub welcome: Option<v1::Welcome>,
    /// The close code of the WebSocket close frame, once closed.
    pub closed_with: Option<u16>,
}

impl Client {
    pub async fn raw(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .unwrap();
        Client {
            ws,
            next_id: 1,
            inbox: VecDeque::new(),
            pushes: VecDeque::new(),
            memberships: VecDeque::new(),
            welcome: None,
            closed_with: None,
        }
    }

    /// Says Hello over an already open WebSocket.
    pub async fn from_ws(ws: Ws, token: &str) -> Client {
        let mut c = Client {
            ws,
            next_id: 1,
            inbox: VecDeque::new(),
            pushes: VecDeque::new(),
            memberships: VecDeque::new(),
            welcome: None,
            closed_with: None,
        };
        match c.hello(token, None).await {
            reply::Result::Welcome(w) => c.welcome = Some(w),
            other => panic!("expected Welcome, got {other:?}"),
        }
        c
    }

    pub async fn connect(addr: SocketAddr, token: &str) -> Client {
        let mut c = Self::raw(addr).await;
        let r = c.hello(token, None).await;
        match r {
            reply::Result::Welcome(w) => c.welcome = Some(w),
            other => panic!("expected Welcome, got {other:?}"),
        }
        c
    }

    pub async fn hello(&mut self, token: &str, resume: Option<v1::ResumeData>) -> reply::Result {
        self.request(Request::Hello(v1::Hello {
            protocol_version: 1,
            token: token.to_owned(),
            client: Some(v1::ClientInfo {
                name: "test".into(),
                ..Default::default()
            }),
            resume,
        }))
        .await
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(WsMessage::Binary(bytes.into())).await.unwrap();
    }

    pub async fn send(&mut self, request: Request) -> u64 {
        let (id, message) = self.frame(request);
        self.ws.send(message).await.unwrap();
        id
    }

    /// Sends a request; false once the connection is gone (for peers the node may close).
    pub async fn try_send(&mut self, request: Request) -> bool {
        let (_, message) = self.frame(request);
        self.ws.send(message).await.is_ok()
    }

    /// The next request id and `request` framed in a WebSocket message.
    fn frame(&mut self, request: Request) -> (u64, WsMessage) {
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = BytesMut::new();
        encode_frame(&ClientEnvelope::new(id, request), &mut buf);
        (id, WsMessage::Binary(buf.freeze()))
    }

    /// Reads until the server closes; returns how many channel events came and the
    /// Disconnect push seen, if any.
    pub async fn events_until_closed(&mut self) -> (usize, Option<v1::Disconnect>) {
        let mut events = 0;
        let mut disconnect = None;
        while let Some(env) = match self.pushes.pop_front() {
            Some(env) => Some(env),
            None => self.next_from_socket().await,
        } {
            match env.kind {
                Some(server_envelope::Kind::Push(v1::Push {
                    push: Some(push::Push::Disconnect(d)),
                })) => disconnect = Some(d),
                Some(server_envelope::Kind::Push(v1::Push {
                    push: Some(push::Push::Event(_)),
                })) => events += 1,
                _ => {}
            }
        }
        (events, disconnect)
    }

    /// Sends a request and waits for its reply; pushes that arrive meanwhile are kept.
    pub async fn request(&mut self, request: Request) -> reply::Result {
        let id = self.send(request).await;
        loop {
            let env = self
                .next_from_socket()
                .await
                .expect("connection closed before the reply");
            match env.kind {
                Some(server_envelope::Kind::Reply(r)) if r.request_id == id => {
                    return r.result.expect("reply has a result");
                }
                Some(server_envelope::Kind::Push(_)) => self.pushes.push_back(env),
                other => panic!("unexpected envelope while waiting for reply {id}: {other:?}"),
            }
        }
    }

    /// The next reply, whatever its request.
    pub async fn next_reply(&mut self) -> (u64, reply::Result) {
        loop {
            let env = self.next_from_socket().await.expect("connection closed");
            match env.kind {
                Some(server_envelope::Kind::Reply(r)) => {
                    return (r.request_id, r.result.expect("result"));
                }
                Some(server_envelope::Kind::Push(_)) => self.pushes.push_back(env),
                None => {}
            }
        }
    }

    async fn next_from_socket(&mut self) -> Option<ServerEnvelope> {
        loop {
            if let Some(env) = self.inbox.pop_front() {
                return Some(env);
            }
            let msg = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("no message within 10 s");
            match msg {
                Some(Ok(WsMessage::Binary(b))) => self.decode(b),
                Some(Ok(WsMessage::Close(frame))) => {
                    self.closed_with = frame.map(|f| u16::from(f.code));
                    return None;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    }

    fn decode(&mut self, b: Bytes) {
        for env in decode_frames::<ServerEnvelope>(b, MAX_SERVER_FRAME_BYTES as usize) {
            self.inbox.push_back(env.expect("server frames decode"));
        }
    }

    /// The next push other than a `MembershipUpdate` (replies are not expected here).
    pub async fn next_push(&mut self) -> Option<push::Push> {
        loop {
            let env = match self.pushes.pop_front() {
                Some(env) => env,
                None => self.next_from_socket().await?,
            };
            match env.kind {
                Some(server_envelope::Kind::Push(v1::Push {
                    push: Some(push::Push::Membership(m)),
                })) => self.memberships.push_back(m),
                Some(server_envelope::Kind::Push(p)) => return p.push,
                other => panic!("expected a push, got {other:?}"),
            }
        }
    }

    /// The next `MembershipUpdate` push; other pushes that arrive first stay queued.
    pub async fn next_membership(&mut self) -> v1::MembershipUpdate {
        loop {
            if let Some(m) = self.memberships.pop_front() {
                return m;
            }
            // Pushes already queued first, then the socket.
            let env = match self
                .pushes
                .iter()
                .position(|e| {
                    matches!(
                        &e.kind,
                        Some(server_envelope::Kind::Push(v1::Push {
                            push: Some(push::Push::Membership(_))
                        }))
                    )
                })
                .and_then(|i| self.pushes.remove(i))
            {
                Some(env) => env,
                None => {
                    let env = self
                        .next_from_socket()
                        .await
                        .expect("connection closed before a membership push");
                    if !matches!(
                        &env.kind,
                        Some(server_envelope::Kind::Push(v1::Push {
                            push: Some(push::Push::Membership(_))
                        }))
                    ) {
                        self.pushes.push_back(env);
                        continue;
                    }
                    env
                }
            };
            if let Some(server_envelope::Kind::Push(v1::Push {
                push: Some(push::Push::Membership(m)),
            })) = env.kind
            {
                return m;
            }
        }
    }

    /// The next channel event push.
    pub async fn next_event(&mut self) -> v1::ChannelEvent {
        match self.next_push().await {
            Some(push::Push::Event(e)) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Reads until the server closes; returns the Disconnect push seen, if any.
    pub async fn until_closed(&mut self) -> Option<v1::Disconnect> {
        let mut disconnect = None;
        while let Some(env) = match self.pushes.pop_front() {
            Some(env) => Some(env),
            None => self.next_from_socket().await,
        } {
            if let Some(server_envelope::Kind::Push(v1::Push {
                push: Some(push::Push::Disconnect(d)),
            })) = env.kind
            {
                disconnect = Some(d);
            }
        }
        disconnect
    }

    /// `CreateChannel` named after its id; the reply as it comes.
    pub async fn create_channel(
        &mut self,
        id: &str,
        kind: v1::ChannelKind,
        members: &[&str],
    ) -> reply::Result {
        self.request(Request::CreateChannel(v1::CreateChannel {
            kind: kind as i32,
            channel_id: id.to_owned(),
            name: id.to_owned(),
            member_ids: members.iter().map(|m| (*m).to_owned()).collect(),
            ..Default::default()
        }))
        .await
    }

    /// [`Client::create_channel`], which must succeed.
    pub async fn create_group(
        &mut self,
        id: &str,
        kind: v1::ChannelKind,
        members: &[&str],
    ) -> v1::ChannelSummary {
        match self.create_channel(id, kind, members).await {
            reply::Result::Channel(c) => c,
            other => panic!("create failed: {other:?}"),
        }
    }

    pub async fn publish(&mut self, channel: &str, key: &str, text: &str) -> reply::Result {
        self.request(Request::Publish(v1::Publish {
            channel_id: channel.to_owned(),
            message: Some(v1::Message {
                client_msg_id: key.to_owned(),
                text: text.to_owned(),
                ..Default::default()
            }),
        }))
        .await
    }

    pub async fn subscribe(&mut self, channel: &str, since: Option<(u64, u64)>) -> v1::Subscribed {
        match self
            .request(Request::Subscribe(v1::Subscribe {
                channel_id: channel.to_owned(),
                since: since.map(|(epoch, seq)| v1::Cursor { epoch, seq }),
            }))
            .await
        {
            reply::Result::Subscribed(s) => s,
            other => panic!("subscribe failed: {other:?}"),
        }
    }
}

pub fn appended(r: reply::Result) -> v1::Appended {
    match r {
        reply::Result::Appended(a) => a,
        other => panic!("expected Appended, got {other:?}"),
    }
}

pub fn error_code(r: &reply::Result) -> v1::ErrorCode {
    match r {
        reply::Result::Error(e) => e.error_code(),
        other => panic!("expected an error, got {other:?}"),
    }
}

pub fn text(e: &v1::ChannelEvent) -> &str {
    match &e.body {
        Some(v1::channel_event::Body::Message(m)) => &m.text,
        _ => "",
    }
}

/// A plain HTTP/1.1 GET against the node's metrics and health listener: status and raw response.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut tcp, &mut response)
        .await
        .unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}
