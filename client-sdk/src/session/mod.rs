//! The client's protocol state machine, without I/O (in the style of quinn-proto's
//! `Connection`). It owns everything that changes in a client: the connection's lifecycle
//! (connect, `Hello`, `Welcome`, heartbeats, reconnect backoff, close codes), request
//! correlation, the resume cursors, the outbox and the token refresh. It never touches a socket,
//! a timer or a clock: the shell (`driver.rs`) hands it inputs with the current time and carries
//! out what it asks.
//!
//! Inputs: [`ClientSession::connected`], [`ClientSession::connect_failed`],
//! [`ClientSession::disconnected`], [`ClientSession::handle_envelope`],
//! [`ClientSession::handle_timeout`], the app's commands ([`ClientSession::request`],
//! [`ClientSession::publish`], [`ClientSession::close`]), the refresher's answer
//! ([`ClientSession::token_fetched`]) and the room in the app's event queue
//! ([`ClientSession::set_event_room`]).
//!
//! Outputs: [`ClientSession::poll_action`] (open or drop a transport, fetch a token, the first
//! connection is up, stopped), [`ClientSession::poll_transmit`] (encoded frames),
//! [`ClientSession::poll_event`], [`ClientSession::poll_reply`] (answers to app calls),
//! [`ClientSession::poll_timeout`] (when to call `handle_timeout`) and the [`Status`].
//!
//! - [`link`]: the connection's lifecycle: attempts, handshake, backoff, close codes.
//! - [`traffic`]: requests and publishes onto the wire, envelopes into replies and events.
//! - [`requests`]: request/reply correlation and deadlines.
//! - [`lag`]: per-channel cursors, duplicates, gaps, lagging channels and reload decisions.
//! - [`outbox`]: publishes until acknowledged, and their pacing.
//! - [`refresh`]: the one token-refresh state machine.
//!
//! The rules follow `docs/protocol.md` sections 5 (session), 8.5 and 8.6 (client algorithms)
//! and 10 (closing and backoff).

mod lag;
mod link;
mod outbox;
mod refresh;
mod requests;
#[cfg(test)]
mod tests;
mod traffic;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_protocol::backoff::Backoff;
use chorus_protocol::limits::{PROTOCOL_VERSION, default_limits};
use chorus_protocol::v1::{self, CloseCode, ServerEnvelope, client_envelope::Request, reply};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, TransportError};
use crate::event::Event;
use crate::status::Status;
use lag::Channels;
use link::{Attempt, Link, ServerClock};
use outbox::{Outbox, Pacer};
use refresh::{Fetched, Refresh};
pub(crate) use requests::RequestKind;
use requests::{InFlight, Requests, Waiting};

/// Frames per outgoing message (the server accepts at most 256 per WebSocket message).
const MAX_BATCH_FRAMES: usize = 256;
/// Bytes per outgoing message, so one message never delays a reply for long.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// One app call, until it is answered through [`ClientSession::poll_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CallId(u64);

/// An app call's answer: the reply (a publish's is `Appended`), or why there is none.
pub(crate) type CallResult = Result<reply::Result, Error>;

/// What the session needs from the client's configuration.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub(crate) token: String,
    /// Whether the app gave a token refresher (the shell runs it).
    pub(crate) has_refresher: bool,
    pub(crate) client: v1::ClientInfo,
    pub(crate) connect_timeout: Duration,
    pub(crate) outbox_capacity: usize,
    /// The app's event queue's capacity.
    pub(crate) event_capacity: usize,
    pub(crate) request_queue: usize,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) reconnect: bool,
    /// Seeds the backoff jitter (fixed in tests).
    pub(crate) seed: u64,
}

/// What the session asks the shell to do.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Open a transport, then report [`ClientSession::connected`] or
    /// [`ClientSession::connect_failed`].
    Connect,
    /// Drop the transport (or the attempt to open one) without reporting its end; `normal`:
    /// close it as a client that is done first.
    Close { normal: bool },
    /// Run the app's token refresher and report [`ClientSession::token_fetched`].
    FetchToken,
    /// The first connection is up: the app's `connect` may return.
    Ready,
    /// The session is over; later calls fail with this error.
    Stopped(Error),
}

/// One client's protocol state.
pub(crate) struct ClientSession {
    config: SessionConfig,
    /// The token for the next `Hello`.
    token: String,
    link: Link,
    requests: Requests,
    channels: Channels,
    outbox: Outbox,
    pacer: Pacer,
    refresh: Refresh,
    backoff: Backoff,
    rng: StdRng,
    limits: v1::Limits,
    session_id: String,
    clock: Option<ServerClock>,
    /// Welcomes so far: the first one resolves the app's `connect`.
    connections: u64,
    next_call: u64,
    out: VecDeque<Bytes>,
    /// Events for the app, in order; entries only while the app has room, control events always.
    events: VecDeque<Event>,
    /// Free slots in the app's event queue, as last reported, less the events polled since.
    event_room: usize,
    replies: VecDeque<(CallId, CallResult)>,
    actions: VecDeque<Action>,
    status: Status,
    status_version: u64,
    stopped: Option<Error>,
}

impl ClientSession {
    /// A session that starts by asking for a connection.
    pub(crate) fn new(config: SessionConfig, now: Instant) -> Self {
        let limits = default_limits();
        Self {
            token: config.token.clone(),
            link: Link::Connecting {
                deadline: now + config.connect_timeout,
            },
            requests: Requests::new(config.request_queue),
            channels: Channels::default(),
            outbox: Outbox::new(config.outbox_capacity),
            pacer: Pacer::new(limits.publish_rate_per_sec, limits.publish_burst, now),
            refresh: Refresh::new(config.has_refresher),
            backoff: Backoff::new(config.backoff_base, config.backoff_cap),
            rng: StdRng::seed_from_u64(config.seed),
            limits,
            session_id: String::new(),
            clock: None,
            connections: 0,
            next_call: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            event_room: config.event_capacity,
            replies: VecDeque::new(),
            actions: VecDeque::from([Action::Connect]),
            status: Status::default(),
            status_version: 0,
            stopped: None,
            config,
        }
    }

    // ---- inputs --------------------------------------------------------------------------

    /// The transport asked for by [`Action::Connect`] is up: `Hello` goes out.
    pub(crate) fn connected(&mut self, _now: Instant) {
        let Link::Connecting { deadline } = self.link else {
            return;
        };
        let hello = v1::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: self.token.clone(),
            client: Some(self.config.client.clone()),
            resume: self
                .channels
                .resume_data(&self.session_id, self.limits.max_frame_bytes as usize),
        };
        let id = self.requests.send(InFlight::Hello);
        self.queue(id, Request::Hello(hello));
        self.link = Link::Handshaking {
            deadline,
            hello: id,
            refusal: None,
            refusal_deadline: None,
            disconnect: None,
        };
    }

    /// The transport could not be opened.
    pub(crate) fn connect_failed(&mut self, now: Instant, error: Error) {
        if matches!(self.link, Link::Connecting { .. }) {
            self.attempt_failed(now, Attempt::Failed(error));
        }
    }

    /// The transport ended: `code` is the chorus close code it carried, if any.
    pub(crate) fn disconnected(&mut self, now: Instant, code: Option<CloseCode>, reason: String) {
        match std::mem::replace(&mut self.link, Link::Offline { until: None }) {
            Link::Handshaking {
                refusal,
                disconnect,
                ..
            } => {
                let attempt = if refusal.is_none() && disconnect.is_none() && code.is_none() {
                    Attempt::Failed(Error::from(TransportError::Closed(format!(
                        "closed during the handshake: {reason}"
                    ))))
                } else {
                    Attempt::Refused {
                        error: refusal,
                        code,
                        reason,
                        disconnect,
                    }
                };
                self.attempt_failed(now, attempt);
            }
            Link::Up(up) => self.lost(now, code, reason, up.disconnect),
            other => self.link = other,
        }
    }

    /// One envelope from the server.
    pub(crate) fn handle_envelope(&mut self, now: Instant, env: ServerEnvelope) {
        match &mut self.link {
            Link::Handshaking { .. } => self.handshake_envelope(now, env),
            Link::Up(up) => {
                up.last_rx = now;
                self.on_envelope(now, env);
            }
            _ => {}
        }
    }

    /// Time passed: call at (or after) [`ClientSession::poll_timeout`].
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for call in self.requests.expire(now) {
            self.reply(call, Err(Error::Timeout));
        }
        if self.refresh.handle_timeout(now) {
            self.actions.push_back(Action::FetchToken);
        }
        match &mut self.link {
            Link::Offline { until: Some(at) } if now >= *at => self.start_attempt(now),
            Link::Connecting { deadline } | Link::Handshaking { deadline, .. }
                if now >= *deadline =>
            {
                self.actions.push_back(Action::Close { normal: false });
                self.attempt_failed(now, Attempt::Failed(Error::Timeout));
            }
            Link::Handshaking {
                refusal_deadline: Some(at),
                refusal,
                disconnect,
                ..
            } if now >= *at => {
                let attempt = Attempt::Refused {
                    error: refusal.take(),
                    code: None,
                    reason: "refused".into(),
                    disconnect: disconnect.take(),
                };
                self.actions.push_back(Action::Close { normal: false });
                self.attempt_failed(now, attempt);
            }
            Link::Up(up) => {
                if now.saturating_duration_since(up.last_rx) >= up.idle {
                    let disconnect = up.disconnect.take();
                    self.actions.push_back(Action::Close { normal: false });
                    self.link = Link::Offline { until: None };
                    self.lost(
                        now,
                        None,
                        "nothing from the server within the idle timeout".into(),
                        disconnect,
                    );
                } else if now.saturating_duration_since(up.last_ping) >= up.heartbeat {
                    up.last_ping = now;
                    // The field is only echoed back; the server's clock is the one at hand.
                    let client_time_ms = self.clock.map_or(0, |c| c.now_ms(now));
                    let id = self.requests.send(InFlight::Ping { sent: now });
                    self.queue(id, Request::Ping(v1::Ping { client_time_ms }));
                }
            }
            _ => {}
        }
    }

    /// An app request; it waits until a connection has room, and is answered by `deadline`.
    pub(crate) fn request(
        &mut self,
        now: Instant,
        request: Request,
        kind: RequestKind,
        deadline: Instant,
    ) -> CallId {
        let call = self.call_id();
        if let Some(error) = &self.stopped {
            let error = error.clone();
            self.reply(call, Err(error));
        } else if deadline <= now {
            self.reply(call, Err(Error::Timeout));
        } else {
            self.requests.wait(Waiting {
                call,
                request,
                kind,
                deadline,
            });
        }
        call
    }

    /// A publish: into the outbox, sent and resent until the server acknowledges or refuses it.
    pub(crate) fn publish(&mut self, _now: Instant, publish: v1::Publish) -> CallId {
        let call = self.call_id();
        if let Some(error) = &self.stopped {
            let error = error.clone();
            self.reply(call, Err(error));
        } else if !self.outbox.push(publish, call) {
            let capacity = self.outbox.capacity();
            self.reply(call, Err(Error::OutboxFull { capacity }));
        }
        self.set_outbox_len();
        call
    }

    /// The app closes the client.
    pub(crate) fn close(&mut self, now: Instant) {
        match self.link {
            Link::Stopped => return,
            Link::Connecting { .. } | Link::Handshaking { .. } | Link::Up(_) => {
                self.actions.push_back(Action::Close { normal: true });
                self.connection_lost(now);
            }
            Link::Offline { .. } => {}
        }
        self.finish(None, "closed by the app".into());
    }

    /// The app's token refresher answered [`Action::FetchToken`].
    pub(crate) fn token_fetched(&mut self, now: Instant, result: Result<String, String>) {
        match self.refresh.fetched(now, result) {
            Fetched::Ignored => {}
            Fetched::SendInBand(token) => {
                if matches!(self.link, Link::Up(_)) {
                    let request = Request::RefreshToken(v1::RefreshToken {
                        token: token.clone(),
                    });
                    let id = self.requests.send(InFlight::Refresh { token });
                    self.queue(id, request);
                } else {
                    self.refresh.connection_lost();
                }
            }
            Fetched::InBandFailed(e) => {
                tracing::warn!(error = %e, "token refresh failed; retrying");
            }
            Fetched::Reconnect(token) => {
                self.token = token;
                if matches!(self.link, Link::Offline { until: None }) {
                    // Backoff still applies: a server that keeps refusing the fresh token must
                    // not be hammered.
                    let delay = self.backoff.next_delay(self.rng.random());
                    self.link = Link::Offline {
                        until: Some(now + delay),
                    };
                }
            }
            Fetched::ReconnectFailed(e) => {
                let delay = self.backoff.next_delay(self.rng.random());
                tracing::warn!(error = %e, ?delay, "token refresh failed");
                self.refresh.retry_reconnect_at(now + delay);
            }
        }
    }

    /// Free slots in the app's event queue now, after the shell moved what it could.
    pub(crate) fn set_event_room(&mut self, room: usize) {
        self.event_room = room;
    }

    // ---- outputs -------------------------------------------------------------------------

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next batch of encoded frames to send, after moving what may go now onto the wire.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        if matches!(self.link, Link::Up(_)) {
            self.start_resyncs();
            self.fill_out(now);
        }
        let first = self.out.pop_front()?;
        if self.out.is_empty() {
            return Some(first);
        }
        let mut batch = BytesMut::from(&first[..]);
        let mut frames = 1;
        while let Some(frame) = self.out.front() {
            if frames >= MAX_BATCH_FRAMES || batch.len() + frame.len() > MAX_BATCH_BYTES {
                break;
            }
            batch.extend_from_slice(frame);
            frames += 1;
            self.out.pop_front();
        }
        Some(batch.freeze())
    }

    /// The next event for the app; it takes one slot of the app's queue.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        self.event_room = self.event_room.saturating_sub(1);
        Some(event)
    }

    pub(crate) fn poll_reply(&mut self) -> Option<(CallId, CallResult)> {
        self.replies.pop_front()
    }

    /// When to call [`ClientSession::handle_timeout`] next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Offline { until } => *until,
            Link::Connecting { deadline } => Some(*deadline),
            Link::Handshaking {
                deadline,
                refusal_deadline,
                ..
            } => Some(refusal_deadline.map_or(*deadline, |r| r.min(*deadline))),
            Link::Up(up) => {
                let mut at = (up.last_ping + up.heartbeat).min(up.last_rx + up.idle);
                if self.outbox.has_unsent() && self.requests.in_flight() < self.max_in_flight() {
                    at = at.min(self.pacer.next_at());
                }
                Some(at)
            }
            Link::Stopped => None,
        };
        [
            link,
            self.refresh.poll_timeout(),
            self.requests.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Room the shell should wait for in the app's queue before reporting it again: one slot
    /// while events wait, half the queue while a lagging channel waits to be resubscribed.
    pub(crate) fn wants_event_room(&self) -> Option<usize> {
        let half = (self.config.event_capacity / 2).max(1);
        if !self.events.is_empty() {
            Some(1)
        } else if self.channels.has_waiting() && self.event_room < half {
            Some(half)
        } else {
            None
        }
    }

    /// Whether the app may hand in another request now.
    pub(crate) fn accepts_commands(&self) -> bool {
        self.stopped.is_some() || self.requests.has_room()
    }

    pub(crate) fn status(&self) -> &Status {
        &self.status
    }

    /// Changes whenever the status does.
    pub(crate) fn status_version(&self) -> u64 {
        self.status_version
    }

    // ---- bookkeeping ---------------------------------------------------------------------

    fn call_id(&mut self) -> CallId {
        self.next_call += 1;
        CallId(self.next_call)
    }

    fn reply(&mut self, call: CallId, result: CallResult) {
        self.replies.push_back((call, result));
    }

    fn set_status(&mut self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status);
        self.status_version += 1;
    }

    fn set_outbox_len(&mut self) {
        let len = self.outbox.len();
        if self.status.outbox_len != len {
            self.set_status(|s| s.outbox_len = len);
        }
    }
}
