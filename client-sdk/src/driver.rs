//! The connection task: one per client. It owns the socket, the resume cursors, the outbox and
//! every queue, and is the only place that reacts to the network. The `Client` handles talk to
//! it through one bounded command channel; it talks back through one-shot replies and the
//! bounded event channel.
//!
//! Delivery with bounded memory: entries go to the app only when the event queue has room. When
//! it has none, the channel is marked lagging, its further live entries are dropped unseen, and
//! once the app has caught up the task resubscribes from the channel's cursor, so the server
//! replays exactly what was dropped. The same path repairs an out-of-order entry or a changed
//! epoch (which ends in [`Event::Reload`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chorus_protocol::backoff::{Backoff, ReconnectPlan, plan_after_close};
use chorus_protocol::codec::encode_frame_to_bytes;
use chorus_protocol::ids::ChannelId;
use chorus_protocol::limits::PROTOCOL_VERSION;
use chorus_protocol::resume::{Accept, ResumeTracker, SubscribeOutcome};
use chorus_protocol::v1::{
    self, ClientEnvelope, CloseCode, ErrorCode, ServerEnvelope, client_envelope::Request, push,
    reply, server_envelope,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use crate::config::ClientConfig;
use crate::error::{Error, ServerError};
use crate::event::Event;
use crate::outbox::{Outbox, PublishReply};
use crate::status::Status;
use crate::transport::{self, Ended, Incoming, Reader, Writer};

/// Frames per WebSocket message the server accepts.
const MAX_BATCH_FRAMES: usize = 256;
/// Bytes per outgoing WebSocket message, so one message never delays a reply for long.
const MAX_BATCH_BYTES: usize = 64 * 1024;
/// Control events kept while the app's event queue is full.
const MAX_BACKLOG: usize = 4_096;
/// How often lagging channels check whether the app made room.
const LAG_POLL: Duration = Duration::from_millis(20);
/// How long to wait for the server's close after it refused `Hello`.
const REFUSAL_WAIT: Duration = Duration::from_secs(2);
/// Heartbeat and idle timeout used until the server announces its own.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(25);
const DEFAULT_IDLE: Duration = Duration::from_secs(60);
/// How long a stopping client waits for the app to take its last events.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// A failed in-band token refresh is retried this much later.
const REFRESH_RETRY: Duration = Duration::from_secs(10);

/// What the app's request is, where the task must act on its reply.
#[derive(Debug, Clone)]
pub(crate) enum RequestKind {
    Plain,
    /// Built when sent, from the channel's cursor.
    Subscribe(ChannelId),
    Unsubscribe(ChannelId),
    /// The new token becomes the one used for reconnecting.
    RefreshToken(String),
}

pub(crate) type RequestReply = oneshot::Sender<Result<reply::Result, Error>>;

/// From a `Client` handle to the task.
pub(crate) enum Command {
    Request {
        request: Request,
        kind: RequestKind,
        reply: RequestReply,
    },
    Publish {
        publish: v1::Publish,
        reply: PublishReply,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// A request sent on the current connection, by request id.
enum InFlight {
    App {
        kind: RequestKind,
        reply: RequestReply,
    },
    Publish,
    Ping {
        sent: Instant,
    },
    Refresh {
        token: String,
    },
    ResyncUnsubscribe,
    Resubscribe(ChannelId),
}

struct Waiting {
    request: Request,
    kind: RequestKind,
    reply: RequestReply,
}

/// Whether a lagging channel waits for room or is being resubscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lag {
    Waiting,
    Resubscribing,
}

/// A connection that said `Hello` and got `Welcome`.
struct Conn {
    reader: Reader,
    writer: Writer,
    welcome: v1::Welcome,
    /// Envelopes that came in the same read as the `Welcome` (replays of resumed channels).
    rest: Vec<ServerEnvelope>,
}

/// Why a connection attempt failed.
enum Attempt {
    Failed(Error),
    /// The server answered `Hello` with an error and closed.
    Refused {
        error: Option<v1::Error>,
        ended: Ended,
        disconnect: Option<v1::Disconnect>,
    },
}

/// Why serving a connection stopped.
enum Served {
    Ended {
        ended: Ended,
        disconnect: Option<v1::Disconnect>,
    },
    Shutdown(Option<oneshot::Sender<()>>),
}

/// A token bucket mirroring the server's publish limit, so that an outbox flushed after a
/// reconnect is paced instead of rejected.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token is available.
    fn next_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.at + Duration::from_secs_f64(missing / self.rate)
    }
}

pub(crate) struct Driver {
    config: ClientConfig,
    token: String,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// Control events (connection state, reloads, ended subscriptions) waiting for room; channel
    /// entries are held back while any wait, so a reload is always seen before later entries.
    backlog: VecDeque<Event>,
    tracker: ResumeTracker,
    lagging: HashMap<ChannelId, Lag>,
    outbox: Outbox,
    waiting: VecDeque<Waiting>,
    in_flight: HashMap<u64, InFlight>,
    /// Encoded frames to send, in order.
    out: VecDeque<Bytes>,
    next_id: u64,
    session_id: String,
    limits: v1::Limits,
    backoff: Backoff,
    bucket: Bucket,
    /// Publishes wait until then after the server said RATE_LIMITED or UNAVAILABLE.
    publish_pause: Option<Instant>,
    refresh_at: Option<Instant>,
    refresh: Option<JoinHandle<Result<String, String>>>,
    /// Server clock minus local clock, in ms, from the last `Welcome`.
    clock_offset_ms: i64,
    quic: Option<quinn::Endpoint>,
    status: watch::Sender<Status>,
    connections: u64,
}

fn too_large(size: usize, max: u32) -> Error {
    Error::InvalidArgument(format!(
        "the request encodes to {size} bytes, over the server's frame limit of {max}"
    ))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        status: watch::Sender<Status>,
    ) -> Self {
        let limits = chorus_protocol::limits::default_limits();
        let quic = config.quic_endpoint.clone();
        Self {
            token: config.token.clone(),
            outbox: Outbox::new(config.outbox_capacity),
            backoff: Backoff::new(config.backoff_base, config.backoff_cap),
            bucket: Bucket::new(limits.publish_rate_per_sec, limits.publish_burst),
            config,
            commands,
            events,
            backlog: VecDeque::new(),
            tracker: ResumeTracker::new(),
            lagging: HashMap::new(),
            waiting: VecDeque::new(),
            in_flight: HashMap::new(),
            out: VecDeque::new(),
            next_id: 1,
            session_id: String::new(),
            limits,
            publish_pause: None,
            refresh_at: None,
            refresh: None,
            clock_offset_ms: 0,
            quic,
            status,
            connections: 0,
        }
    }

    /// Runs until the client is closed or the server forbids reconnecting. `first` learns how
    /// the first connection attempt went; if it failed, the task ends there.
    pub(crate) async fn run(mut self, first: oneshot::Sender<Result<(), Error>>) {
        let mut first = Some(first);
        let (code, reason, done) = loop {
            let attempt = match timeout(self.config.connect_timeout, self.open()).await {
                Ok(a) => a,
                Err(_) => Err(Attempt::Failed(Error::Timeout)),
            };
            let (ended, disconnect) = match attempt {
                Ok(conn) => match self.serve(conn, &mut first).await {
                    Served::Ended { ended, disconnect } => (ended, disconnect),
                    Served::Shutdown(done) => break (None, "closed by the app".into(), done),
                },
                Err(failure) => {
                    let (error, ended, disconnect) = match failure {
                        Attempt::Failed(e) => {
                            let ended = Ended {
                                code: None,
                                reason: e.to_string(),
                            };
                            (e, ended, None)
                        }
                        Attempt::Refused {
                            error,
                            ended,
                            disconnect,
                        } => {
                            let code = disconnect
                                .as_ref()
                                .and_then(|d| CloseCode::try_from(d.code).ok())
                                .or(ended.code);
                            let e = match (code, error) {
                                (Some(code), error) => Error::Closed {
                                    code,
                                    reason: error
                                        .map_or_else(|| ended.reason.clone(), |e| e.message),
                                },
                                (None, Some(error)) => Error::from(error),
                                (None, None) => Error::Transport(ended.reason.clone()),
                            };
                            (e, ended, disconnect)
                        }
                    };
                    if let Some(f) = first.take() {
                        self.shutdown(&error);
                        let _ = f.send(Err(error));
                        return;
                    }
                    tracing::debug!(error = %error, "connection attempt failed");
                    (ended, disconnect)
                }
            };
            self.connection_lost();
            let code = disconnect
                .as_ref()
                .and_then(|d| CloseCode::try_from(d.code).ok())
                .or(ended.code);
            if !self.config.reconnect {
                break (code, ended.reason, None);
            }
            let disconnect =
                disconnect.or_else(|| ended.code.map(|c| c.disconnect(ended.reason.clone())));
            match plan_after_close(disconnect.as_ref(), &mut self.backoff, rand::random()) {
                ReconnectPlan::Stop => break (code, ended.reason, None),
                ReconnectPlan::After(delay) => {
                    self.emit(Event::Disconnected {
                        code,
                        reason: ended.reason,
                        retry_in: delay,
                    });
                    if let Some(done) = self.offline(delay).await {
                        break (None, "closed by the app".into(), done);
                    }
                }
                ReconnectPlan::RefreshTokenFirst => {
                    let Some(refresher) = self.config.refresher.clone() else {
                        break (
                            code,
                            "the token expired and no refresher is configured".into(),
                            None,
                        );
                    };
                    self.emit(Event::Disconnected {
                        code,
                        reason: ended.reason,
                        retry_in: Duration::ZERO,
                    });
                    // Refresh (retrying with backoff) while commands keep being taken.
                    loop {
                        let mut task = tokio::spawn(refresher());
                        match self.offline_until(&mut task).await {
                            Err(done) => {
                                task.abort();
                                return self.finish(None, "closed by the app".into(), done).await;
                            }
                            Ok(Ok(token)) => {
                                self.token = token;
                                // Backoff still applies: a server that keeps refusing the
                                // fresh token must not be hammered.
                                let delay = self.backoff.next_delay(rand::random());
                                if let Some(done) = self.offline(delay).await {
                                    return self
                                        .finish(None, "closed by the app".into(), done)
                                        .await;
                                }
                                break;
                            }
                            Ok(Err(e)) => {
                                let delay = self.backoff.next_delay(rand::random());
                                tracing::warn!(error = %e, ?delay, "token refresh failed");
                                if let Some(done) = self.offline(delay).await {
                                    return self
                                        .finish(None, "closed by the app".into(), done)
                                        .await;
                                }
                            }
                        }
                    }
                }
            }
        };
        self.finish(code, reason, done).await;
    }

    async fn finish(
        mut self,
        code: Option<CloseCode>,
        reason: String,
        done: Option<oneshot::Sender<()>>,
    ) {
        let error = match code {
            Some(code) if code != CloseCode::Normal => Error::Closed {
                code,
                reason: reason.clone(),
            },
            _ => Error::Shutdown,
        };
        self.shutdown(&error);
        self.backlog.push_back(Event::Closed { code, reason });
        // Whatever the app has not taken yet stays readable, `Closed` last; an app that reads
        // nothing for a while gets the rest dropped rather than a task that never ends.
        while let Some(event) = self.backlog.pop_front() {
            match timeout(CLOSE_FLUSH, self.events.send(event)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// Fails everything that waits.
    fn shutdown(&mut self, error: &Error) {
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Command::Publish { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Command::Close { done } => {
                    let _ = done.send(());
                }
            }
        }
        for w in self.waiting.drain(..) {
            let _ = w.reply.send(Err(error.clone()));
        }
        for (_, f) in self.in_flight.drain() {
            if let InFlight::App { reply, .. } = f {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.outbox.fail_all(error);
        if let Some(task) = self.refresh.take() {
            task.abort();
        }
        self.status.send_modify(|s| {
            s.connected = false;
            s.outbox_len = 0;
        });
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Connects and says `Hello` (with the resume data of every tracked channel).
    async fn open(&mut self) -> Result<Conn, Attempt> {
        let (mut reader, mut writer) = transport::connect(&self.config, &mut self.quic)
            .await
            .map_err(Attempt::Failed)?;
        let id = self.alloc_id();
        let mut resume = self
            .tracker
            .channels()
            .next()
            .is_some()
            .then(|| self.tracker.resume_data(&self.session_id));
        // Resume only what fits in one frame; the channels left out are not answered in the
        // Welcome and get resubscribed one by one afterwards.
        if let Some(r) = &mut resume {
            let max = self.limits.max_frame_bytes as usize;
            let mut size = 1024;
            let mut keep = 0;
            for sub in &r.subscriptions {
                size += prost::Message::encoded_len(sub) + 4;
                if size > max {
                    break;
                }
                keep += 1;
            }
            r.subscriptions.truncate(keep);
        }
        let app = &self.config.app;
        let hello = v1::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: self.token.clone(),
            client: Some(v1::ClientInfo {
                name: app.name.clone(),
                version: app.version.clone(),
                device_id: app.device_id.clone(),
                platform: app.platform.clone(),
            }),
            resume,
        };
        writer
            .send(encode_frame_to_bytes(&ClientEnvelope::new(
                id,
                Request::Hello(hello),
            )))
            .await
            .map_err(|e| Attempt::Failed(Error::Transport(e)))?;
        let mut refusal: Option<v1::Error> = None;
        let mut disconnect = None;
        let deadline = Instant::now() + REFUSAL_WAIT;
        loop {
            let incoming = if refusal.is_some() {
                match timeout(
                    deadline.saturating_duration_since(Instant::now()),
                    reader.next(),
                )
                .await
                {
                    Ok(i) => i,
                    Err(_) => Incoming::Ended(Ended {
                        code: None,
                        reason: "refused".into(),
                    }),
                }
            } else {
                reader.next().await
            };
            let frames = match incoming {
                Incoming::Frames(frames) => frames,
                Incoming::Ended(ended) => {
                    return Err(match (refusal, disconnect) {
                        (None, None) if ended.code.is_none() => Attempt::Failed(Error::Transport(
                            format!("closed during the handshake: {}", ended.reason),
                        )),
                        (error, disconnect) => Attempt::Refused {
                            error,
                            ended,
                            disconnect,
                        },
                    });
                }
            };
            let mut frames = frames.into_iter();
            while let Some(env) = frames.next() {
                match env.kind {
                    Some(server_envelope::Kind::Reply(r)) if r.request_id == id => match r.result {
                        Some(reply::Result::Welcome(welcome)) => {
                            return Ok(Conn {
                                reader,
                                writer,
                                welcome,
                                rest: frames.collect(),
                            });
                        }
                        Some(reply::Result::Error(e)) => refusal = Some(e),
                        other => {
                            return Err(Attempt::Failed(Error::Protocol(format!(
                                "Hello answered with {}",
                                other.map_or("nothing", |r| r.name())
                            ))));
                        }
                    },
                    Some(server_envelope::Kind::Push(v1::Push {
                        push: Some(push::Push::Disconnect(d)),
                    })) => disconnect = Some(d),
                    _ => {}
                }
            }
        }
    }

    /// The connection is gone: in-flight requests fail (their outcome is unknown), publishes go
    /// back to the outbox for resending.
    fn connection_lost(&mut self) {
        for (_, f) in self.in_flight.drain() {
            if let InFlight::App { reply, .. } = f {
                let _ = reply.send(Err(Error::ConnectionLost));
            }
        }
        self.outbox.connection_lost();
        self.out.clear();
        // Resubscribing after the reconnect replays from each cursor anyway.
        self.lagging.clear();
        if let Some(task) = self.refresh.take() {
            task.abort();
        }
        self.refresh_at = None;
        self.status.send_modify(|s| s.connected = false);
    }

    /// Waits `delay` while taking commands. Returns the close acknowledgement if the app closed.
    async fn offline(&mut self, delay: Duration) -> Option<Option<oneshot::Sender<()>>> {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = sleep_until(until) => return None,
                command = self.commands.recv(), if self.waiting.len() < self.config.request_queue => {
                    if let Some(done) = self.take(command) {
                        return Some(done);
                    }
                }
            }
        }
    }

    /// Waits for a token refresh while taking commands.
    async fn offline_until(
        &mut self,
        task: &mut JoinHandle<Result<String, String>>,
    ) -> Result<Result<String, String>, Option<oneshot::Sender<()>>> {
        loop {
            tokio::select! {
                result = &mut *task => {
                    return Ok(result.unwrap_or_else(|e| Err(e.to_string())));
                }
                command = self.commands.recv(), if self.waiting.len() < self.config.request_queue => {
                    if let Some(done) = self.take(command) {
                        return Err(done);
                    }
                }
            }
        }
    }

    /// Takes one command. Returns `Some` when the app closed the client (or dropped every
    /// handle).
    fn take(&mut self, command: Option<Command>) -> Option<Option<oneshot::Sender<()>>> {
        match command {
            None => Some(None),
            Some(Command::Close { done }) => Some(Some(done)),
            Some(Command::Request {
                request,
                kind,
                reply,
            }) => {
                self.waiting.push_back(Waiting {
                    request,
                    kind,
                    reply,
                });
                None
            }
            Some(Command::Publish { publish, reply }) => {
                if let Err(reply) = self.outbox.push(publish, reply) {
                    let _ = reply.send(Err(Error::OutboxFull {
                        capacity: self.outbox.capacity(),
                    }));
                }
                let len = self.outbox.len();
                self.status.send_modify(|s| s.outbox_len = len);
                None
            }
        }
    }

    fn on_welcome(&mut self, welcome: v1::Welcome) {
        let reconnect = self.connections > 0;
        self.connections += 1;
        self.backoff.reset();
        if let Some(limits) = welcome.limits {
            self.bucket = Bucket::new(limits.publish_rate_per_sec, limits.publish_burst);
            self.limits = limits;
        }
        self.session_id = welcome.session_id.clone();
        self.clock_offset_ms = i64::try_from(welcome.server_time_ms).unwrap_or(i64::MAX)
            - i64::try_from(unix_ms()).unwrap_or(i64::MAX);
        self.schedule_refresh(welcome.token_expires_at_ms);
        let mut resumed = HashSet::new();
        for s in &welcome.resumed {
            if let Ok(channel) = ChannelId::new(s.channel_id.as_str()) {
                resumed.insert(channel.clone());
                self.apply_resubscribed(channel, s);
            }
        }
        // Channels the server did not answer for are resubscribed explicitly.
        let missing: Vec<ChannelId> = self
            .tracker
            .channels()
            .filter(|c| !resumed.contains(*c))
            .cloned()
            .collect();
        for channel in missing {
            self.lagging.insert(channel, Lag::Waiting);
        }
        self.status.send_modify(|s| {
            s.connected = true;
            s.session_id = welcome.session_id.clone();
            s.node_id = welcome.node_id.clone();
            s.user_id = welcome.user_id.clone();
            s.limits = welcome.limits;
        });
        self.emit(Event::Connected {
            session_id: welcome.session_id,
            node_id: welcome.node_id,
            reconnect,
        });
    }

    /// A resumed or resynced subscription's answer.
    fn apply_resubscribed(&mut self, channel: ChannelId, s: &v1::Subscribed) {
        self.lagging.remove(&channel);
        if let Some(error) = &s.error {
            self.tracker.unsubscribed(&channel);
            self.emit(Event::SubscriptionEnded {
                channel,
                reason: Some(ServerError::from(error.clone())),
            });
            return;
        }
        match self.tracker.subscribed(&channel, s) {
            SubscribeOutcome::Recovered | SubscribeOutcome::Fresh { .. } => {}
            SubscribeOutcome::Reload { reason, head } => self.emit(Event::Reload {
                channel,
                reason,
                head,
            }),
        }
    }

    fn schedule_refresh(&mut self, expires_at_ms: u64) {
        if expires_at_ms == 0 || self.config.refresher.is_none() {
            self.refresh_at = None;
            return;
        }
        let server_now = i64::try_from(unix_ms()).unwrap_or(i64::MAX) + self.clock_offset_ms;
        let left_ms = i64::try_from(expires_at_ms).unwrap_or(i64::MAX) - server_now;
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        // Refresh when a fifth of the lifetime (at most a minute) is left.
        let margin = (left / 5).min(Duration::from_secs(60));
        self.refresh_at = Some(Instant::now() + left.saturating_sub(margin));
    }

    /// Serves one connection until it ends or the app closes the client.
    /// `first` learns that the first connection is up once its `Welcome` is applied.
    async fn serve(
        &mut self,
        conn: Conn,
        first: &mut Option<oneshot::Sender<Result<(), Error>>>,
    ) -> Served {
        let Conn {
            mut reader,
            mut writer,
            welcome,
            rest,
        } = conn;
        let heartbeat = match welcome.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let idle = match welcome.idle_timeout_ms {
            0 => DEFAULT_IDLE,
            ms => Duration::from_millis(u64::from(ms)),
        };
        self.on_welcome(welcome);
        if let Some(f) = first.take() {
            let _ = f.send(Ok(()));
        }
        let mut disconnect = None;
        for env in rest {
            self.on_envelope(env, &mut disconnect);
        }
        let mut last_rx = Instant::now();
        let mut last_ping = Instant::now();
        loop {
            self.flush_backlog();
            self.start_resyncs();
            self.fill_out();
            if let Err(e) = self.write_out(&mut writer).await {
                return Served::Ended {
                    ended: Ended {
                        code: None,
                        reason: e,
                    },
                    disconnect,
                };
            }
            let now = Instant::now();
            let mut wake = (last_ping + heartbeat).min(last_rx + idle);
            if let Some(at) = self.refresh_at {
                wake = wake.min(at);
            }
            if !self.lagging.is_empty() || !self.backlog.is_empty() {
                wake = wake.min(now + LAG_POLL);
            }
            let room = self.in_flight.len() < self.limits.max_in_flight_requests.max(1) as usize;
            if self.outbox.has_unsent() && room {
                if let Some(pause) = self.publish_pause {
                    wake = wake.min(pause);
                } else {
                    wake = wake.min(self.bucket.next_at());
                }
            }
            let take_commands = self.waiting.len() < self.config.request_queue;
            let refreshing = self.refresh.is_some();
            enum Step {
                Incoming(Incoming),
                Command(Option<Command>),
                Refreshed(Result<String, String>),
                Tick,
            }
            let step = tokio::select! {
                incoming = reader.next() => Step::Incoming(incoming),
                command = self.commands.recv(), if take_commands => Step::Command(command),
                result = async {
                    match self.refresh.as_mut() {
                        Some(task) => task.await.unwrap_or_else(|e| Err(e.to_string())),
                        None => std::future::pending().await,
                    }
                }, if refreshing => Step::Refreshed(result),
                () = sleep_until(wake) => Step::Tick,
            };
            match step {
                Step::Incoming(Incoming::Frames(frames)) => {
                    last_rx = Instant::now();
                    for env in frames {
                        self.on_envelope(env, &mut disconnect);
                    }
                }
                Step::Incoming(Incoming::Ended(ended)) => {
                    // The server closed with a code: answer its close (RFC 6455 expects a
                    // close frame back; proxies log a connection dropped without one).
                    if ended.code.is_some() {
                        writer.close().await;
                    }
                    return Served::Ended { ended, disconnect };
                }
                Step::Command(command) => {
                    if let Some(done) = self.take(command) {
                        writer.close().await;
                        self.connection_lost();
                        return Served::Shutdown(done);
                    }
                }
                Step::Refreshed(result) => {
                    self.refresh = None;
                    match result {
                        Ok(token) => {
                            let id = self.alloc_id();
                            self.queue(
                                id,
                                Request::RefreshToken(v1::RefreshToken {
                                    token: token.clone(),
                                }),
                            );
                            self.in_flight.insert(id, InFlight::Refresh { token });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "token refresh failed; retrying");
                            self.refresh_at = Some(Instant::now() + REFRESH_RETRY);
                        }
                    }
                }
                Step::Tick => {}
            }
            let now = Instant::now();
            if now.saturating_duration_since(last_rx) >= idle {
                return Served::Ended {
                    ended: Ended {
                        code: None,
                        reason: "nothing from the server within the idle timeout".into(),
                    },
                    disconnect,
                };
            }
            if now.saturating_duration_since(last_ping) >= heartbeat {
                last_ping = now;
                let id = self.alloc_id();
                self.queue(
                    id,
                    Request::Ping(v1::Ping {
                        client_time_ms: unix_ms(),
                    }),
                );
                self.in_flight.insert(id, InFlight::Ping { sent: now });
            }
            if self.refresh_at.is_some_and(|at| now >= at)
                && self.refresh.is_none()
                && let Some(refresher) = self.config.refresher.clone()
            {
                self.refresh_at = None;
                self.refresh = Some(tokio::spawn(refresher()));
            }
            if self.publish_pause.is_some_and(|p| now >= p) {
                self.publish_pause = None;
            }
        }
    }

    fn queue(&mut self, id: u64, request: Request) {
        self.out
            .push_back(encode_frame_to_bytes(&ClientEnvelope::new(id, request)));
    }

    /// Moves waiting requests and outbox publishes onto the wire, within the server's in-flight
    /// limit and publish rate.
    fn fill_out(&mut self) {
        let max = self.limits.max_in_flight_requests.max(1) as usize;
        while self.in_flight.len() < max {
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            if w.reply.is_closed() {
                continue;
            }
            let request = match &w.kind {
                RequestKind::Subscribe(channel) => {
                    Request::Subscribe(self.tracker.subscribe_request(channel))
                }
                RequestKind::Unsubscribe(channel) => {
                    // A resync in progress must not bring the channel back.
                    self.lagging.remove(channel);
                    w.request
                }
                _ => w.request,
            };
            let size = chorus_protocol::codec::frame_len(&ClientEnvelope::new(0, request.clone()));
            if size > self.limits.max_frame_bytes as usize {
                let _ = w
                    .reply
                    .send(Err(too_large(size, self.limits.max_frame_bytes)));
                continue;
            }
            let id = self.alloc_id();
            self.queue(id, request);
            self.in_flight.insert(
                id,
                InFlight::App {
                    kind: w.kind,
                    reply: w.reply,
                },
            );
        }
        if self.publish_pause.is_some() {
            return;
        }
        let now = Instant::now();
        while self.in_flight.len() < max && self.outbox.has_unsent() && self.bucket.take(now) {
            // A publish the server would refuse by closing the connection must fail here, or it
            // would be resent after every reconnect.
            if let Some(size) = self
                .outbox
                .next_unsent_len()
                .filter(|n| *n > self.limits.max_frame_bytes as usize)
            {
                self.outbox
                    .fail_next_unsent(too_large(size, self.limits.max_frame_bytes));
                continue;
            }
            let id = self.alloc_id();
            let Some(publish) = self.outbox.send_next(id).cloned() else {
                break;
            };
            self.queue(id, Request::Publish(publish));
            self.in_flight.insert(id, InFlight::Publish);
        }
    }

    /// Sends the queued frames, batched into messages.
    async fn write_out(&mut self, writer: &mut Writer) -> Result<(), String> {
        while !self.out.is_empty() {
            let mut batch = BytesMut::new();
            let mut frames = 0;
            while let Some(frame) = self.out.front() {
                if frames > 0
                    && (frames >= MAX_BATCH_FRAMES || batch.len() + frame.len() > MAX_BATCH_BYTES)
                {
                    break;
                }
                batch.extend_from_slice(frame);
                frames += 1;
                self.out.pop_front();
            }
            writer.send(batch.freeze()).await?;
        }
        Ok(())
    }

    /// Resubscribes lagging channels once the app has made room for their replay.
    fn start_resyncs(&mut self) {
        if !self.backlog.is_empty()
            || self.events.capacity() < self.config.event_capacity / 2
            || !self.lagging.values().any(|l| *l == Lag::Waiting)
        {
            return;
        }
        let channels: Vec<ChannelId> = self
            .lagging
            .iter()
            .filter(|(_, l)| **l == Lag::Waiting)
            .map(|(c, _)| c.clone())
            .collect();
        let max = self.limits.max_in_flight_requests.max(1) as usize;
        for channel in channels {
            if self.tracker.cursor(&channel).is_none() {
                self.lagging.remove(&channel);
                continue;
            }
            // Two requests per channel; the rest wait for the next round.
            if self.in_flight.len() + 2 > max {
                break;
            }
            self.lagging.insert(channel.clone(), Lag::Resubscribing);
            let id = self.alloc_id();
            self.queue(
                id,
                Request::Unsubscribe(v1::Unsubscribe {
                    channel_id: channel.to_string(),
                }),
            );
            self.in_flight.insert(id, InFlight::ResyncUnsubscribe);
            let id = self.alloc_id();
            self.queue(
                id,
                Request::Subscribe(self.tracker.subscribe_request(&channel)),
            );
            self.in_flight.insert(id, InFlight::Resubscribe(channel));
        }
    }

    /// Queues a control event; it waits in the backlog while the app's queue is full.
    fn emit(&mut self, event: Event) {
        if self.backlog.is_empty() {
            match self.events.try_send(event) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(event)) => self.backlog.push_back(event),
            }
        } else {
            self.backlog.push_back(event);
        }
        if self.backlog.len() > MAX_BACKLOG {
            // Reloads and ended subscriptions are never dropped (at most one pending per
            // tracked channel); connection-state and informational events go first.
            let droppable = self.backlog.iter().position(|e| {
                !matches!(
                    e,
                    Event::Reload { .. } | Event::SubscriptionEnded { .. } | Event::Closed { .. }
                )
            });
            if let Some(i) = droppable {
                tracing::warn!("the app is not reading events; dropping an old control event");
                self.backlog.remove(i);
            }
        }
    }

    fn flush_backlog(&mut self) {
        while let Some(event) = self.backlog.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => self.backlog.clear(),
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.backlog.push_front(event);
                    return;
                }
            }
        }
    }

    /// Hands an ephemeral push to the app if there is room; drops it otherwise.
    fn ephemeral(&mut self, event: Event) {
        if self.events.try_send(event).is_err() {
            self.status.send_modify(|s| s.dropped_ephemeral += 1);
        }
    }

    fn on_envelope(&mut self, env: ServerEnvelope, disconnect: &mut Option<v1::Disconnect>) {
        match env.kind {
            Some(server_envelope::Kind::Reply(r)) => self.on_reply(r),
            Some(server_envelope::Kind::Push(v1::Push { push: Some(p) })) => match p {
                push::Push::Event(e) => self.on_entry(e),
                push::Push::Typing(t) => self.ephemeral(Event::Typing(t)),
                push::Push::Presence(p) => self.ephemeral(Event::Presence(p)),
                push::Push::ReadMarker(m) => self.ephemeral(Event::ReadMarker(m)),
                push::Push::Notice(n) => self.emit(Event::Notice(n)),
                push::Push::Membership(m) => self.emit(Event::Membership(m)),
                push::Push::Disconnect(d) => *disconnect = Some(d),
                push::Push::SubscriptionEnded(s) => {
                    if let Ok(channel) = ChannelId::new(s.channel_id) {
                        self.tracker.unsubscribed(&channel);
                        self.lagging.remove(&channel);
                        self.emit(Event::SubscriptionEnded {
                            channel,
                            reason: s.reason.map(ServerError::from),
                        });
                    }
                }
            },
            _ => tracing::debug!("ignoring an empty envelope"),
        }
    }

    fn on_entry(&mut self, event: v1::ChannelEvent) {
        let Ok(channel) = ChannelId::new(event.channel_id.as_str()) else {
            return;
        };
        if self.lagging.contains_key(&channel) {
            return;
        }
        if !self.backlog.is_empty() {
            self.lagging.insert(channel, Lag::Waiting);
            return;
        }
        let permit = match self.events.try_reserve() {
            Ok(permit) => Some(permit),
            Err(mpsc::error::TrySendError::Full(())) => {
                self.lagging.insert(channel, Lag::Waiting);
                return;
            }
            // Nobody reads events: keep the cursors right anyway.
            Err(mpsc::error::TrySendError::Closed(())) => None,
        };
        match self.tracker.on_event(&event) {
            Accept::Deliver => {
                if let Some(permit) = permit {
                    permit.send(Event::Entry(event));
                }
            }
            Accept::Duplicate | Accept::Untracked => {}
            Accept::Gap { expected, got } => {
                tracing::warn!(%channel, %expected, %got, "entries missing; resubscribing");
                self.lagging.insert(channel, Lag::Waiting);
            }
            Accept::EpochChanged => {
                self.lagging.insert(channel, Lag::Waiting);
            }
        }
    }

    fn on_reply(&mut self, r: v1::Reply) {
        let Some(flight) = self.in_flight.remove(&r.request_id) else {
            tracing::debug!(request_id = r.request_id, "reply to an unknown request");
            return;
        };
        let result = r.result;
        match flight {
            InFlight::App { kind, reply } => {
                let result = match result {
                    Some(reply::Result::Error(e)) => Err(Error::from(e)),
                    Some(ok) => {
                        self.applied(&kind, &ok);
                        Ok(ok)
                    }
                    None => Err(Error::Protocol("an empty reply".into())),
                };
                let _ = reply.send(result);
            }
            InFlight::Publish => {
                let outcome = match result {
                    Some(reply::Result::Appended(a)) => Ok(a),
                    Some(reply::Result::Error(e)) => {
                        let e = ServerError::from(e);
                        // Retryable, or INTERNAL (outcome unknown): resend with the same
                        // client_msg_id after a pause; idempotency makes it land once.
                        if matches!(
                            e.code,
                            ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal
                        ) {
                            let wait = e.retry_after.unwrap_or(Duration::from_secs(1));
                            self.publish_pause = Some(Instant::now() + wait);
                            self.outbox.requeue(r.request_id);
                            return;
                        }
                        Err(Error::Server(e))
                    }
                    Some(other) => Err(Error::unexpected("Publish", other.name())),
                    None => Err(Error::Protocol("an empty reply".into())),
                };
                self.outbox.resolve(r.request_id, outcome);
                let len = self.outbox.len();
                self.status.send_modify(|s| s.outbox_len = len);
            }
            InFlight::Ping { sent } => {
                let rtt = sent.elapsed();
                self.status.send_modify(|s| s.rtt = Some(rtt));
            }
            InFlight::Refresh { token } => match result {
                Some(reply::Result::TokenRefreshed(t)) => {
                    self.token = token;
                    self.schedule_refresh(t.token_expires_at_ms);
                }
                other => {
                    tracing::warn!(reply = ?other.map(|r| r.name()), "RefreshToken refused; retrying");
                    self.refresh_at = Some(Instant::now() + REFRESH_RETRY);
                }
            },
            InFlight::ResyncUnsubscribe => {}
            // The app may have unsubscribed meanwhile: then the answer is stale.
            InFlight::Resubscribe(channel)
                if self.lagging.get(&channel) != Some(&Lag::Resubscribing) => {}
            InFlight::Resubscribe(channel) => match result {
                Some(reply::Result::Subscribed(s)) => self.apply_resubscribed(channel, &s),
                Some(reply::Result::Error(e)) if e.error_code().is_retryable() => {
                    // Keep the cursor; try again once there is room.
                    self.lagging.insert(channel, Lag::Waiting);
                }
                Some(reply::Result::Error(e)) => {
                    self.lagging.remove(&channel);
                    self.tracker.unsubscribed(&channel);
                    self.emit(Event::SubscriptionEnded {
                        channel,
                        reason: Some(e.into()),
                    });
                }
                _ => {
                    self.lagging.remove(&channel);
                }
            },
        }
    }

    /// Bookkeeping for an app request that succeeded.
    fn applied(&mut self, kind: &RequestKind, ok: &reply::Result) {
        match (kind, ok) {
            (RequestKind::Subscribe(channel), reply::Result::Subscribed(s))
                if s.error.is_none() =>
            {
                self.lagging.remove(channel);
                self.tracker.subscribed(channel, s);
            }
            (RequestKind::Unsubscribe(channel), _) => {
                self.lagging.remove(channel);
                self.tracker.unsubscribed(channel);
            }
            (RequestKind::RefreshToken(token), reply::Result::TokenRefreshed(t)) => {
                self.token = token.clone();
                self.schedule_refresh(t.token_expires_at_ms);
            }
            _ => {}
        }
    }
}
