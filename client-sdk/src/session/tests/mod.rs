//! The session driven directly: envelopes in, frames and events out, time passed explicitly.
//! No sockets, no runtime, no sleeping: every timer fires exactly when the test says.
//!
//! [`delivery`]: request correlation, duplicates, gaps, lagging, the outbox and resume;
//! [`lifecycle`]: token refresh, first attempts, heartbeats, idle connections and closing.

mod delivery;
mod lifecycle;

use std::time::{Duration, Instant};

use chorus_protocol::codec::decode_frames;
use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::limits::default_limits;
use chorus_protocol::v1::{
    self, ClientEnvelope, CloseCode, ErrorCode, RecoveryFailure, ServerEnvelope,
    client_envelope::Request, push, reply,
};

use super::{Action, CallId, CallResult, ClientSession, RequestKind, SessionConfig};
use crate::error::Error;
use crate::event::Event;
use crate::types::EntryBody;

const SERVER_TIME_MS: u64 = 1_700_000_000_000;

fn config() -> SessionConfig {
    SessionConfig {
        token: "token-1".into(),
        has_refresher: true,
        client: v1::ClientInfo::default(),
        connect_timeout: Duration::from_secs(10),
        outbox_capacity: 4,
        event_capacity: 16,
        request_queue: 8,
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(16),
        reconnect: true,
        seed: 7,
    }
}

fn room() -> ChannelId {
    ChannelId::new("room").unwrap_or_else(|e| panic!("{e}"))
}

fn welcome() -> v1::Welcome {
    v1::Welcome {
        session_id: "s1".into(),
        node_id: "n".into(),
        user_id: "alice".into(),
        heartbeat_interval_ms: 25_000,
        idle_timeout_ms: 60_000,
        limits: Some(default_limits()),
        server_time_ms: SERVER_TIME_MS,
        ..Default::default()
    }
}

fn entry(seq: u64, epoch: u64) -> ServerEnvelope {
    ServerEnvelope::push(push::Push::Event(v1::ChannelEvent {
        channel_id: "room".into(),
        seq,
        epoch,
        author_id: "bob".into(),
        body: Some(v1::channel_event::Body::Message(v1::Message {
            text: format!("m{seq}"),
            ..Default::default()
        })),
        ..Default::default()
    }))
}

fn subscribed(epoch: u64, head: u64, recovered: bool, failure: RecoveryFailure) -> reply::Result {
    reply::Result::Subscribed(v1::Subscribed {
        channel_id: "room".into(),
        epoch,
        head_seq: head,
        recovered,
        failure: failure as i32,
        ..Default::default()
    })
}

/// A session and its clock.
struct Harness {
    s: ClientSession,
    now: Instant,
}

impl Harness {
    fn new(config: SessionConfig) -> Self {
        // The one clock reading: everything after is this instant plus explicit durations.
        let now = Instant::now();
        Self {
            s: ClientSession::new(config, now),
            now,
        }
    }

    /// A session whose first connection is up.
    fn up() -> Self {
        let mut h = Self::new(config());
        h.connect(welcome());
        assert!(h.actions().iter().any(|a| matches!(a, Action::Ready)));
        h.events();
        h
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.s.handle_timeout(self.now);
    }

    /// Advances to the session's next timeout.
    fn until_timeout(&mut self) -> Duration {
        let at = self
            .s
            .poll_timeout()
            .unwrap_or_else(|| panic!("no timeout"));
        let by = at.saturating_duration_since(self.now);
        self.advance(by);
        by
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    fn sent(&mut self) -> Vec<ClientEnvelope> {
        let mut out = Vec::new();
        while let Some(frames) = self.s.poll_transmit(self.now) {
            for env in decode_frames::<ClientEnvelope>(frames, 1 << 20) {
                out.push(env.unwrap_or_else(|e| panic!("{e}")));
            }
        }
        out
    }

    fn requests(&mut self) -> Vec<(u64, Request)> {
        self.sent()
            .into_iter()
            .filter_map(|e| Some((e.request_id, e.request?)))
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }

    fn replies(&mut self) -> Vec<(CallId, CallResult)> {
        std::iter::from_fn(|| self.s.poll_reply()).collect()
    }

    fn server(&mut self, env: ServerEnvelope) {
        self.s.handle_envelope(self.now, env);
    }

    fn reply(&mut self, id: u64, result: reply::Result) {
        self.server(ServerEnvelope::reply(id, result));
    }

    /// Expects a connection attempt, answers its Hello with `welcome`; returns the Hello.
    fn connect(&mut self, welcome: v1::Welcome) -> v1::Hello {
        assert!(
            self.actions().iter().any(|a| matches!(a, Action::Connect)),
            "a connection attempt"
        );
        self.s.connected(self.now);
        let (id, hello) = match self.requests().as_slice() {
            [(id, Request::Hello(hello))] => (*id, hello.clone()),
            other => panic!("expected one Hello, got {other:?}"),
        };
        self.reply(id, reply::Result::Welcome(welcome));
        hello
    }

    fn subscribe(&mut self) -> CallId {
        let deadline = self.now + Duration::from_secs(15);
        let call = self.s.request(
            self.now,
            Request::Subscribe(v1::Subscribe::default()),
            RequestKind::Subscribe(room()),
            deadline,
        );
        let (id, request) = self
            .requests()
            .pop()
            .unwrap_or_else(|| panic!("nothing sent"));
        assert!(matches!(request, Request::Subscribe(s) if s.since.is_none()));
        self.reply(id, subscribed(3, 5, false, RecoveryFailure::NoCursor));
        assert!(matches!(self.replies().as_slice(), [(c, Ok(_))] if *c == call));
        call
    }

    fn entries(&mut self) -> Vec<u64> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Entry(e) => Some(e.seq.get()),
                _ => None,
            })
            .collect()
    }
}
