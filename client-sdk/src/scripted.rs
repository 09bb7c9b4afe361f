//! The connection task against a scripted server over in-memory streams, under paused time:
//! backoff timing, what each close code does, token refresh, heartbeats and resume bookkeeping,
//! measured to the millisecond without waiting for real time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_protocol::codec::{decode_frames, encode_frame_to_bytes};
use chorus_protocol::v1::{
    self, ClientEnvelope, CloseCode, RecoveryFailure, ServerEnvelope, client_envelope::Request,
    push, reply,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request as HttpRequest, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::transport::{Io, TestConnector};
use crate::{ChannelId, Client, ClientConfig, Error, Event, Events};

/// The server side of the in-memory connections, and when each attempt was made.
struct Fake {
    accepted: mpsc::UnboundedReceiver<DuplexStream>,
    attempts: Arc<Mutex<Vec<Instant>>>,
    /// Attempts still to refuse (connection refused).
    refuse: Arc<Mutex<usize>>,
}

fn fake() -> (Fake, TestConnector) {
    let (tx, accepted) = mpsc::unbounded_channel();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let refuse = Arc::new(Mutex::new(0usize));
    let (a, r) = (attempts.clone(), refuse.clone());
    let connector: TestConnector = Arc::new(move || {
        a.lock().unwrap().push(Instant::now());
        let refused = {
            let mut r = r.lock().unwrap();
            let refused = *r > 0;
            *r = (*r).saturating_sub(1);
            refused
        };
        let tx = tx.clone();
        Box::pin(async move {
            if refused {
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
            }
            let (client, server) = tokio::io::duplex(1 << 16);
            let _ = tx.send(server);
            Ok(Box::new(client) as Box<dyn Io>)
        })
    });
    (
        Fake {
            accepted,
            attempts,
            refuse,
        },
        connector,
    )
}

impl Fake {
    async fn accept(&mut self) -> Conn {
        let stream = self.accepted.recv().await.unwrap();
        let echo = |_: &HttpRequest, mut response: Response| {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", "chorus.v1".parse().unwrap());
            Ok(response)
        };
        let ws = tokio_tungstenite::accept_hdr_async(stream, echo)
            .await
            .unwrap();
        Conn {
            ws,
            inbox: VecDeque::new(),
        }
    }

    fn attempts(&self) -> Vec<Instant> {
        self.attempts.lock().unwrap().clone()
    }
}

struct Conn {
    ws: WebSocketStream<DuplexStream>,
    inbox: VecDeque<ClientEnvelope>,
}

impl Conn {
    async fn recv(&mut self) -> Option<ClientEnvelope> {
        loop {
            if let Some(env) = self.inbox.pop_front() {
                return Some(env);
            }
            match self.ws.next().await? {
                Ok(Message::Binary(b)) => {
                    for env in decode_frames::<ClientEnvelope>(b, 1 << 20) {
                        self.inbox.push_back(env.unwrap());
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next request other than Ping (Pings are answered).
    async fn request(&mut self) -> (u64, Request) {
        loop {
            let env = self.recv().await.expect("connection ended");
            match env.request.unwrap() {
                Request::Ping(p) => {
                    self.reply(
                        env.request_id,
                        reply::Result::Pong(v1::Pong {
                            client_time_ms: p.client_time_ms,
                            server_time_ms: 0,
                        }),
                    )
                    .await;
                }
                r => return (env.request_id, r),
            }
        }
    }

    async fn send(&mut self, env: ServerEnvelope) {
        self.ws
            .send(Message::Binary(encode_frame_to_bytes(&env)))
            .await
            .unwrap();
    }

    async fn reply(&mut self, id: u64, result: reply::Result) {
        self.send(ServerEnvelope::reply(id, result)).await;
    }

    async fn hello(&mut self) -> (u64, v1::Hello) {
        match self.request().await {
            (id, Request::Hello(h)) => (id, h),
            (_, other) => panic!("expected Hello, got {}", other.name()),
        }
    }

    /// Answers Hello with a Welcome; returns the Hello.
    async fn welcome(&mut self, tweak: impl FnOnce(&mut v1::Welcome)) -> v1::Hello {
        let (id, hello) = self.hello().await;
        let mut welcome = v1::Welcome {
            session_id: "s".into(),
            node_id: "fake".into(),
            protocol_version: 1,
            user_id: "alice".into(),
            heartbeat_interval_ms: 25_000,
            idle_timeout_ms: 60_000,
            limits: Some(chorus_protocol::limits::default_limits()),
            server_time_ms: unix_ms(),
            ..Default::default()
        };
        tweak(&mut welcome);
        self.reply(id, reply::Result::Welcome(welcome)).await;
        hello
    }

    /// A chorus close: the Disconnect push, then the WebSocket close with 4000 + code.
    async fn close(&mut self, code: CloseCode, reconnect_after_ms: u32) {
        let disconnect = v1::Disconnect {
            reconnect_after_ms,
            ..code.disconnect("scripted")
        };
        self.send(ServerEnvelope::disconnect(disconnect)).await;
        let _ = self
            .ws
            .send(Message::Close(Some(CloseFrame {
                code: code.websocket_code().into(),
                reason: "scripted".into(),
            })))
            .await;
    }

    async fn event(&mut self, seq: u64, epoch: u64) {
        self.send(ServerEnvelope::push(push::Push::Event(v1::ChannelEvent {
            channel_id: "room".into(),
            seq,
            epoch,
            author_id: "bob".into(),
            ..Default::default()
        })))
        .await;
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Tokio timers have millisecond resolution: a wait ends within a millisecond after its time.
fn same_ms(waited: Duration, announced: Duration) -> bool {
    waited >= announced && waited - announced <= Duration::from_millis(1)
}

fn config(connector: TestConnector) -> ClientConfig {
    let mut c = ClientConfig::new("ws://fake.invalid/", "token-1")
        .unwrap()
        .backoff(Duration::from_secs(1), Duration::from_secs(16));
    c.connector = Some(connector);
    c
}

/// Connects while the scripted server answers the first Hello.
async fn start(config: ClientConfig, fake: &mut Fake) -> (Client, Events, Conn) {
    let connecting = tokio::spawn(Client::connect(config));
    let mut conn = fake.accept().await;
    conn.welcome(|_| {}).await;
    let (client, events) = connecting.await.unwrap().unwrap();
    (client, events, conn)
}

async fn next(events: &mut Events) -> Event {
    events.recv().await.expect("event stream ended")
}

async fn disconnected(events: &mut Events) -> (Option<CloseCode>, Duration) {
    loop {
        if let Event::Disconnected { code, retry_in, .. } = next(events).await {
            return (code, retry_in);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_with_full_jitter_and_resets_after_a_welcome() {
    let (mut fake, connector) = fake();
    let (_client, mut events, conn) = start(config(connector), &mut fake).await;
    *fake.refuse.lock().unwrap() = 5;
    drop(conn); // a dropped connection: no close code, back off
    let mut gaps = Vec::new();
    let mut retries = Vec::new();
    for _ in 0..6 {
        let (code, retry_in) = disconnected(&mut events).await;
        assert_eq!(code, None);
        retries.push(retry_in);
    }
    let mut conn = fake.accept().await;
    conn.welcome(|_| {}).await;
    let attempts = fake.attempts();
    assert_eq!(
        attempts.len(),
        7,
        "first connect, five refused, one accepted"
    );
    for w in attempts[1..].windows(2) {
        gaps.push(w[1] - w[0]);
    }
    // Each wait is exactly the announced one (time is paused) and below base * 2^n.
    for (n, (gap, retry)) in gaps.iter().zip(&retries[1..]).enumerate() {
        let ceiling = Duration::from_secs(1 << (n + 1)).min(Duration::from_secs(16));
        assert!(same_ms(*gap, *retry), "attempt {n}: {gap:?} vs {retry:?}");
        assert!(
            *gap < ceiling,
            "attempt {} waited {gap:?}, ceiling {ceiling:?}",
            n + 1
        );
    }
    assert!(retries[0] < Duration::from_secs(1));
    assert!(matches!(
        next(&mut events).await,
        Event::Connected {
            reconnect: true,
            ..
        }
    ));

    // After a Welcome the backoff starts over.
    drop(conn);
    let (_, retry) = disconnected(&mut events).await;
    assert!(retry < Duration::from_secs(1), "{retry:?}");
}

#[tokio::test(start_paused = true)]
async fn close_codes_decide_whether_and_when_to_reconnect() {
    let (mut fake, connector) = fake();
    let (client, mut events, mut conn) = start(config(connector), &mut fake).await;

    // Draining node: wait the advised delay (plus at most half of it as spread).
    conn.close(CloseCode::GoingAway, 5_000).await;
    let (code, retry) = disconnected(&mut events).await;
    assert_eq!(code, Some(CloseCode::GoingAway));
    assert!(
        retry >= Duration::from_secs(5) && retry <= Duration::from_millis(7_500),
        "{retry:?}"
    );
    let before = Instant::now();
    let mut conn = fake.accept().await;
    assert!(same_ms(Instant::now() - before, retry));
    conn.welcome(|_| {}).await;

    // Slow consumer: reconnect at once.
    conn.close(CloseCode::SlowConsumer, 0).await;
    assert_eq!(
        disconnected(&mut events).await,
        (Some(CloseCode::SlowConsumer), Duration::ZERO)
    );
    let mut conn = fake.accept().await;
    conn.welcome(|_| {}).await;

    // Kicked: back off.
    conn.close(CloseCode::Kicked, 0).await;
    let (code, retry) = disconnected(&mut events).await;
    assert_eq!(code, Some(CloseCode::Kicked));
    assert!(retry < Duration::from_secs(1));
    let mut conn = fake.accept().await;
    conn.welcome(|_| {}).await;

    // Banned: never again. The client ends and says so.
    conn.close(CloseCode::Banned, 0).await;
    loop {
        match next(&mut events).await {
            Event::Closed { code, .. } => {
                assert_eq!(code, Some(CloseCode::Banned));
                break;
            }
            Event::Disconnected { .. } => panic!("a ban must not be retried"),
            _ => {}
        }
    }
    let attempts = fake.attempts().len();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(fake.attempts().len(), attempts, "no attempt after a ban");
    assert!(matches!(
        client.ping().await,
        Err(Error::Closed {
            code: CloseCode::Banned,
            ..
        }) | Err(Error::Shutdown)
    ));
    assert!(events.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_invalid_token_at_reconnect_stops_the_client() {
    let (mut fake, connector) = fake();
    let (_client, mut events, conn) = start(config(connector), &mut fake).await;
    drop(conn);
    let mut conn = fake.accept().await;
    let (id, _) = conn.hello().await;
    conn.send(ServerEnvelope::error(
        id,
        v1::Error::new(v1::ErrorCode::Unauthenticated, "invalid token"),
    ))
    .await;
    conn.close(CloseCode::AuthInvalid, 0).await;
    loop {
        match next(&mut events).await {
            Event::Closed { code, .. } => {
                assert_eq!(code, Some(CloseCode::AuthInvalid));
                break;
            }
            Event::Disconnected { code: Some(c), .. } => panic!("retried after {c:?}"),
            _ => {}
        }
    }
    assert_eq!(fake.attempts().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn tokens_are_refreshed_before_expiry_and_after_an_auth_expired_close() {
    let (mut fake, connector) = fake();
    let calls = Arc::new(Mutex::new(0u32));
    let counter = calls.clone();
    let config = config(connector).token_refresher(move || {
        let n = {
            let mut c = counter.lock().unwrap();
            *c += 1;
            *c
        };
        async move { Ok::<_, String>(format!("token-{}", n + 1)) }
    });
    let connecting = tokio::spawn(Client::connect(config));
    let mut conn = fake.accept().await;
    let hello = conn
        .welcome(|w| w.token_expires_at_ms = w.server_time_ms + 100_000)
        .await;
    assert_eq!(hello.token, "token-1");
    let (_client, mut events) = connecting.await.unwrap().unwrap();
    let start = Instant::now();

    // 100 s of validity: refreshed in band when a fifth (20 s) is left.
    let (id, request) = conn.request().await;
    let waited = Instant::now() - start;
    assert!(
        waited >= Duration::from_secs(79) && waited <= Duration::from_secs(81),
        "refreshed after {waited:?}"
    );
    let Request::RefreshToken(r) = request else {
        panic!("expected RefreshToken, got {}", request.name())
    };
    assert_eq!(r.token, "token-2");
    conn.reply(
        id,
        reply::Result::TokenRefreshed(v1::TokenRefreshed {
            token_expires_at_ms: 0,
        }),
    )
    .await;

    // The server says the token expired: refresh first, then reconnect with the new token.
    conn.close(CloseCode::AuthExpired, 0).await;
    assert_eq!(
        disconnected(&mut events).await.0,
        Some(CloseCode::AuthExpired)
    );
    let mut conn = fake.accept().await;
    let hello = conn.welcome(|_| {}).await;
    assert_eq!(hello.token, "token-3");
    assert_eq!(*calls.lock().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_sent_and_a_silent_server_is_left() {
    let (mut fake, connector) = fake();
    let connecting = tokio::spawn(Client::connect(config(connector)));
    let mut conn = fake.accept().await;
    conn.welcome(|w| {
        w.heartbeat_interval_ms = 10_000;
        w.idle_timeout_ms = 30_000;
    })
    .await;
    let (_client, mut events) = connecting.await.unwrap().unwrap();
    let start = Instant::now();
    let ping = conn.recv().await.unwrap();
    assert!(matches!(ping.request, Some(Request::Ping(_))));
    assert_eq!(Instant::now() - start, Duration::from_secs(10));
    // Never answer: after 30 s of silence the client gives up on this connection.
    let (code, _) = disconnected(&mut events).await;
    assert_eq!(code, None);
    assert_eq!(Instant::now() - start, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn resume_sends_cursors_drops_duplicates_and_asks_for_reloads() {
    let (mut fake, connector) = fake();
    let (client, mut events, mut conn) = start(config(connector), &mut fake).await;
    let room = ChannelId::new("room").unwrap();
    let subscribing = {
        let client = client.clone();
        let room = room.clone();
        tokio::spawn(async move { client.subscribe(&room).await })
    };
    let (id, request) = conn.request().await;
    assert!(matches!(request, Request::Subscribe(ref s) if s.since.is_none()));
    conn.reply(
        id,
        reply::Result::Subscribed(v1::Subscribed {
            channel_id: "room".into(),
            epoch: 3,
            head_seq: 5,
            failure: RecoveryFailure::NoCursor as i32,
            ..Default::default()
        }),
    )
    .await;
    subscribing.await.unwrap().unwrap();
    conn.event(5, 3).await; // at the head: not new
    conn.event(6, 3).await;
    conn.event(6, 3).await; // duplicate
    drop(conn);

    let mut conn = fake.accept().await;
    let (id, hello) = conn.hello().await;
    let resume = hello.resume.expect("resume data");
    assert_eq!(resume.previous_session_id, "s");
    assert_eq!(
        resume.subscriptions[0].since,
        Some(v1::Cursor { epoch: 3, seq: 6 })
    );
    conn.reply(
        id,
        reply::Result::Welcome(v1::Welcome {
            session_id: "s2".into(),
            resumed: vec![v1::Subscribed {
                channel_id: "room".into(),
                epoch: 3,
                head_seq: 8,
                recovered: true,
                ..Default::default()
            }],
            ..Default::default()
        }),
    )
    .await;
    for seq in [6, 7, 8, 8] {
        conn.event(seq, 3).await;
    }
    // History was cut while away: the next reconnect cannot recover and asks for a reload.
    drop(conn);
    let mut conn = fake.accept().await;
    let (id, _) = conn.hello().await;
    conn.reply(
        id,
        reply::Result::Welcome(v1::Welcome {
            session_id: "s3".into(),
            resumed: vec![v1::Subscribed {
                channel_id: "room".into(),
                epoch: 4,
                head_seq: 20,
                recovered: false,
                failure: RecoveryFailure::EpochChanged as i32,
                ..Default::default()
            }],
            ..Default::default()
        }),
    )
    .await;
    conn.event(21, 4).await;

    let mut seen = Vec::new();
    while seen.len() < 5 {
        match next(&mut events).await {
            Event::Entry(e) => seen.push(format!("entry {}", e.seq)),
            Event::Reload {
                channel,
                reason,
                head,
            } => {
                assert_eq!(
                    (channel, reason),
                    (room.clone(), RecoveryFailure::EpochChanged)
                );
                seen.push(format!("reload {head}"));
            }
            _ => {}
        }
    }
    assert_eq!(
        seen,
        ["entry 6", "entry 7", "entry 8", "reload 20", "entry 21"]
    );
}
