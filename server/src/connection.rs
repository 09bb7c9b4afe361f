//! One client connection, WebSocket (`ws`) or QUIC (`quic`), from `Hello` to close: the
//! handshake with its deadline and token check, the read loop with idle and expiry timers, and
//! the writer that drains the outbound queue in batches. Bad input closes this connection only,
//! with a typed close code.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_protocol::DecodeError;
use chorus_protocol::codec::encode_frame_to_bytes;
use chorus_protocol::limits::PROTOCOL_VERSION;
use chorus_protocol::v1::{
    self, ClientEnvelope, CloseCode, ErrorCode, ServerEnvelope, client_envelope::Request, reply,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use prost::Message as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::TokenError;
use crate::clock::unix_ms;
use crate::hub::SessionInfo;
use crate::outbound::{Batch, Close, Outbound};
use crate::session::{PendingReply, Session, Shared};

/// Bytes per WebSocket message the writer sends at most (many frames each).
pub(crate) const MAX_BATCH_BYTES: usize = 64 * 1024;

pub(crate) fn close(code: CloseCode, reason: impl Into<String>) -> Close {
    Close {
        code,
        reason: reason.into(),
        reconnect_after_ms: 0,
    }
}

/// Where a connection's frames come from: WebSocket messages or a QUIC stream.
pub trait FrameSource: Send {
    /// The next frame bodies the peer sent (at least one); `Ok(None)` when the peer closed.
    fn next_frames(&mut self) -> impl Future<Output = Result<Option<Vec<Bytes>>, Close>> + Send;
}

/// Where a connection's frames go.
pub trait FrameSink: Send {
    /// Sends encoded frames (one or many, back to back).
    fn send(&mut self, bytes: Bytes) -> impl Future<Output = Result<(), ()>> + Send;
    /// Writes bytes the transport queued itself ([`Outbound::push_raw`]), unchanged.
    fn send_raw(&mut self, bytes: Bytes) -> impl Future<Output = Result<(), ()>> + Send {
        self.send(bytes)
    }
    /// Sends the `Disconnect` frame and closes with the transport's close code.
    fn close(&mut self, close: &Close, disconnect: Bytes) -> impl Future<Output = ()> + Send;
}

/// The outcome of one transport handshake step (TLS, WebSocket upgrade, QUIC) run under the
/// handshake deadline. A failure is the peer's business, not the node's: logged at debug level,
/// and the caller drops the connection.
pub(crate) fn handshake_step<T, E: std::fmt::Display>(
    outcome: Result<Result<T, E>, tokio::time::error::Elapsed>,
    peer: SocketAddr,
    step: &str,
) -> Option<T> {
    match outcome {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "{step} failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "{step} timed out");
            None
        }
    }
}

/// The transport-independent life of a connection: handshake, read loop, writer, cleanup.
pub async fn run_connection<Src, Snk>(
    shared: Arc<Shared>,
    source: Src,
    sink: Snk,
    outbound: Arc<Outbound>,
    shutdown: CancellationToken,
    transport: &'static str,
    mut admission: crate::admission::Admission,
) where
    Src: FrameSource,
    Snk: FrameSink + 'static,
{
    let peer = admission.peer();
    let _connected = Gauge::inc(metrics::gauge!("chorus_connections", "transport" => transport));
    let _counted = crate::stats::ConnectionGauge::new(shared.clone(), transport);
    let mut source = Counted {
        inner: source,
        bytes_in: metrics::counter!("chorus_bytes_in_total", "transport" => transport),
    };
    let limits = shared.limits().clone();
    let handshake_deadline = Duration::from_millis(u64::from(limits.handshake_timeout_ms));
    let write_timeout = Duration::from_millis(u64::from(limits.idle_timeout_ms));
    let writer = tokio::spawn(write_loop(sink, outbound.clone(), transport, write_timeout));
    let (mut session, leftover) = match Box::pin(handshake(
        &shared,
        &mut source,
        &outbound,
        handshake_deadline,
        peer,
        transport,
    ))
    .await
    {
        Ok(started) => started,
        Err(c) => {
            outbound.close(c);
            let _ = writer.await;
            return;
        }
    };
    admission.established();
    tracing::debug!(%peer, session = %session.session_id, user = %session.identity.user, "session started");
    let _session_gauge = Gauge::inc(metrics::gauge!("chorus_sessions"));
    let idle = Duration::from_millis(u64::from(limits.idle_timeout_ms));
    let mut in_flight = InFlight {
        replies: FuturesUnordered::new(),
        max: limits.max_in_flight_requests.max(1) as usize,
    };
    let reason = match Box::pin(handle_frames(&mut session, leftover, &mut in_flight)).await {
        Some(c) => Some(c),
        None => read_loop(&mut session, &mut source, idle, &shutdown, &mut in_flight).await,
    };
    if let Some(c) = reason {
        session.outbound.close(c);
    }
    let subscribed = session.subscribed();
    metrics::gauge!("chorus_subscriptions").decrement(subscribed.len() as f64);
    shared.hub.remove_session(session.key, subscribed);
    let _ = writer.await;
    tracing::debug!(%peer, session = %session.session_id, "session ended");
}

/// A gauge raised for as long as this value lives.
struct Gauge(metrics::Gauge);

impl Gauge {
    fn inc(g: metrics::Gauge) -> Self {
        g.increment(1.0);
        Self(g)
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Counts the bytes of frames read.
struct Counted<Src> {
    inner: Src,
    /// Registered once per connection, not looked up per read.
    bytes_in: metrics::Counter,
}

impl<Src: FrameSource> FrameSource for Counted<Src> {
    async fn next_frames(&mut self) -> Result<Option<Vec<Bytes>>, Close> {
        let frames = self.inner.next_frames().await?;
        if let Some(f) = &frames {
            let n: usize = f.iter().map(Bytes::len).sum();
            self.bytes_in.increment(n as u64);
        }
        Ok(frames)
    }
}

/// Reads the first frames: the first must be a `Hello`. Returns the session and the frames
/// that came after the `Hello` in the same read.
async fn handshake<Src: FrameSource>(
    shared: &Arc<Shared>,
    source: &mut Src,
    outbound: &Arc<Outbound>,
    deadline: Duration,
    peer: SocketAddr,
    transport: &'static str,
) -> Result<(Session, Vec<Bytes>), Close> {
    let mut frames = match tokio::time::timeout(deadline, source.next_frames()).await {
        Err(_) => {
            return Err(close(
                CloseCode::HandshakeTimeout,
                "no Hello within the deadline",
            ));
        }
        Ok(Err(c)) => return Err(c),
        Ok(Ok(None)) => return Err(close(CloseCode::Normal, "closed before Hello")),
        Ok(Ok(Some(frames))) => frames.into_iter(),
    };
    let Some(first) = frames.next() else {
        return Err(close(CloseCode::ProtocolError, "empty message"));
    };
    let envelope =
        ClientEnvelope::decode(first).map_err(|e| protocol_error(&DecodeError::Malformed(e)))?;
    let (request_id, hello) = match (envelope.request_id, envelope.request) {
        (0, _) => return Err(close(CloseCode::ProtocolError, "request_id 0")),
        (id, Some(Request::Hello(hello))) => (id, hello),
        _ => {
            return Err(close(
                CloseCode::ProtocolError,
                "the first request must be Hello",
            ));
        }
    };
    let refuse = |code: ErrorCode, message: &str, close_code: CloseCode| {
        outbound.push(encode_frame_to_bytes(&ServerEnvelope::error(
            request_id,
            v1::Error::new(code, message),
        )));
        close(close_code, message)
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(refuse(
            ErrorCode::Invalid,
            "unsupported protocol version",
            CloseCode::UnsupportedVersion,
        ));
    }
    let identity = match shared.verifier.verify(&hello.token) {
        Ok(identity) => identity,
        Err(TokenError::Expired) => {
            metrics::counter!("chorus_auth_failures_total", "reason" => "expired").increment(1);
            return Err(refuse(
                ErrorCode::Unauthenticated,
                "token expired",
                CloseCode::AuthExpired,
            ));
        }
        Err(e) => {
            metrics::counter!("chorus_auth_failures_total", "reason" => "invalid").increment(1);
            tracing::debug!(error = %e, "token refused");
            return Err(refuse(
                ErrorCode::Unauthenticated,
                "invalid token",
                CloseCode::AuthInvalid,
            ));
        }
    };
    let store = &shared.store;
    let now = unix_ms();
    if let Err((code, message, close_code)) = admissible(shared, &identity) {
        return Err(refuse(code, message, close_code));
    }
    let key = shared.next_key();
    let max_per_user = shared.limits().max_connections_per_user as usize;
    let info = SessionInfo {
        session_id: crate::session::random_id("s-"),
        user: identity.user.to_string(),
        transport,
        peer: peer.to_string(),
        connected_at_ms: now,
    };
    let session_id = info.session_id.clone();
    if !shared
        .hub
        .add_session(key, &identity.user, outbound.clone(), max_per_user, info)
    {
        return Err(refuse(
            ErrorCode::LimitExceeded,
            "too many connections for this user",
            CloseCode::TooManyConnections,
        ));
    }
    if shared.draining.load(std::sync::atomic::Ordering::Acquire) {
        // Shutdown began after this connection was accepted: it missed the broadcast close.
        shared.hub.remove_session(key, Vec::new());
        return Err(Close {
            code: CloseCode::GoingAway,
            reason: "node shutting down".into(),
            reconnect_after_ms: 1_000,
        });
    }
    // Best effort and in the background: recording last-seen must neither refuse nor hold up
    // the session (awaiting its durable write put a commit, and the wait for its stripe, into
    // every connect: connect p50 23 -> 17 ms in a 19,000-connection burst).
    let (store, user) = (store.clone(), identity.user.clone());
    shared.background.spawn(async move {
        let recorded = store
            .update_user(&user, |u| {
                if u.created_at_ms == 0 {
                    u.created_at_ms = now;
                }
                u.last_seen_ms = now;
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, %user, "recording last-seen failed");
        }
    });
    let mut session = Session::new(shared.clone(), key, session_id, identity, outbound.clone());
    let resume = hello.resume.map(|r| r.subscriptions).unwrap_or_default();
    let welcome = v1::Welcome {
        session_id: session.session_id.clone(),
        node_id: shared.config.node_id.clone(),
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
        user_id: session.identity.user.to_string(),
        heartbeat_interval_ms: shared.limits().heartbeat_interval_ms,
        idle_timeout_ms: shared.limits().idle_timeout_ms,
        limits: Some(shared.limits().announced()),
        token_expires_at_ms: session.identity.expires_at_ms,
        resumed: Vec::new(),
        server_time_ms: now,
    };
    session.resume(request_id, welcome, resume).await;
    Ok((session, frames.collect()))
}

impl Session {
    /// Sends `Welcome` with the outcome of each resumed subscription, then their replays.
    async fn resume(
        &mut self,
        request_id: u64,
        mut welcome: v1::Welcome,
        subs: Vec<v1::Subscribe>,
    ) {
        let mut plans = Vec::new();
        for s in subs {
            match self.subscribe_for_resume(s).await {
                Ok((subscribed, plan)) => {
                    welcome.resumed.push(subscribed);
                    plans.push(plan);
                }
                Err((channel_id, e)) => welcome.resumed.push(v1::Subscribed {
                    channel_id,
                    error: Some(e),
                    ..v1::Subscribed::default()
                }),
            }
        }
        self.reply(request_id, reply::Result::Welcome(welcome));
        for plan in plans {
            self.replay(plan).await;
        }
    }
}

/// Whether a verified identity may hold a session: not banned from the server, token not
/// revoked. Fails closed when the store cannot tell. Used at the handshake and on refresh.
pub(crate) fn admissible(
    shared: &Shared,
    identity: &crate::auth::Identity,
) -> Result<(), (ErrorCode, &'static str, CloseCode)> {
    let store = &shared.store;
    let unavailable = (
        ErrorCode::Unavailable,
        "storage unavailable",
        CloseCode::InternalError,
    );
    match store.ban_of(chorus_storage::BanScope::Server, &identity.user, unix_ms()) {
        Ok(Some(_)) => {
            metrics::counter!("chorus_auth_failures_total", "reason" => "banned").increment(1);
            return Err((ErrorCode::Forbidden, "banned", CloseCode::Banned));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "ban lookup failed");
            return Err(unavailable);
        }
    }
    match store.user(&identity.user) {
        Ok(Some(user)) if user.erased => {
            metrics::counter!("chorus_auth_failures_total", "reason" => "erased").increment(1);
            Err((
                ErrorCode::Unauthenticated,
                "account erased",
                CloseCode::AuthInvalid,
            ))
        }
        Ok(Some(user)) if identity.issued_at_ms < user.tokens_valid_after_ms => {
            metrics::counter!("chorus_auth_failures_total", "reason" => "revoked").increment(1);
            Err((
                ErrorCode::Unauthenticated,
                "token revoked",
                CloseCode::AuthInvalid,
            ))
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "user lookup failed");
            Err(unavailable)
        }
    }
}

pub(crate) fn protocol_error(e: &DecodeError) -> Close {
    close(CloseCode::ProtocolError, e.to_string())
}

/// Requests whose replies wait for durability, at most `max_in_flight` at once.
struct InFlight {
    replies: FuturesUnordered<PendingReply>,
    max: usize,
}

impl InFlight {
    /// Sends the replies that are ready; waits for one when the window is full.
    async fn make_room(&mut self, session: &Session) {
        while self.replies.len() >= self.max {
            if let Some((id, result)) = self.replies.next().await {
                session.reply(id, result);
            }
        }
    }
}

/// Handles decoded frames in order; returns a close if one breaks the protocol.
async fn handle_frames(
    session: &mut Session,
    frames: Vec<Bytes>,
    in_flight: &mut InFlight,
) -> Option<Close> {
    for frame in frames {
        in_flight.make_room(session).await;
        let envelope = match ClientEnvelope::decode(frame) {
            Ok(env) => env,
            Err(e) => return Some(protocol_error(&DecodeError::Malformed(e))),
        };
        match (envelope.request_id, envelope.request) {
            (0, _) => return Some(close(CloseCode::ProtocolError, "request_id 0")),
            (_, Some(Request::Hello(_))) => {
                return Some(close(CloseCode::ProtocolError, "a second Hello"));
            }
            (id, Some(request)) => {
                if let Some(pending) = session.handle(id, request).await {
                    in_flight.replies.push(pending);
                }
            }
            (id, None) => session.reply(
                id,
                reply::Result::Error(v1::Error::new(
                    ErrorCode::Invalid,
                    "unknown or missing request",
                )),
            ),
        }
    }
    None
}

/// Runs until the peer leaves, breaks the protocol, idles, lets its token expire, or the node
/// shuts down. Returns the close to send, if any.
async fn read_loop<Src: FrameSource>(
    session: &mut Session,
    source: &mut Src,
    idle: Duration,
    shutdown: &CancellationToken,
    in_flight: &mut InFlight,
) -> Option<Close> {
    // One timer for the connection's life, for whichever comes first of the idle timeout and
    // the token's expiry: every idle connection holds it. Traffic only notes the time; the
    // timer is moved when it fires before the connection is due (or when the token changes),
    // not on every frame: a new timer per frame (registered in the runtime's timer wheel,
    // then cancelled) was ~1 % of the node under `pairs` load.
    let mut last_traffic = Instant::now();
    let mut token_expiry = session.identity.expires_at_ms;
    let timer = tokio::time::sleep_until(due(session, last_traffic, idle).0);
    tokio::pin!(timer);
    loop {
        if session.outbound.is_closing() {
            return None;
        }
        if session.identity.expires_at_ms != token_expiry {
            token_expiry = session.identity.expires_at_ms;
            timer.as_mut().reset(due(session, last_traffic, idle).0);
        }
        let frames = tokio::select! {
            Some((id, result)) = in_flight.replies.next(), if !in_flight.replies.is_empty() => {
                session.reply(id, result);
                last_traffic = Instant::now();
                continue;
            }
            m = source.next_frames() => m,
            () = &mut timer => {
                let (at, expiry) = due(session, last_traffic, idle);
                if at > Instant::now() {
                    timer.as_mut().reset(at);
                    continue;
                }
                return Some(if expiry {
                    close(CloseCode::AuthExpired, "token expired")
                } else {
                    close(CloseCode::IdleTimeout, "no traffic within the idle timeout")
                });
            }
            _ = shutdown.cancelled() => return Some(Close {
                code: CloseCode::GoingAway,
                reason: "node shutting down".into(),
                reconnect_after_ms: 1_000,
            }),
            _ = session.outbound.wait_closed() => return None,
        };
        last_traffic = Instant::now();
        match frames {
            Ok(Some(frames)) => {
                if let Some(c) = Box::pin(handle_frames(session, frames, in_flight)).await {
                    return Some(c);
                }
            }
            Ok(None) => return Some(close(CloseCode::Normal, "peer closed")),
            Err(c) => return Some(c),
        }
    }
}

/// When the connection is next due to close, and whether for its token (`true`) or for
/// idling: the token's expiry plus the clock-skew leeway of verification (so that a token
/// accepted within it is not closed at once), or `idle` after the last traffic.
fn due(session: &Session, last_traffic: Instant, idle: Duration) -> (Instant, bool) {
    let deadline_ms = session
        .identity
        .expires_at_ms
        .saturating_add(crate::auth::LEEWAY_SECS * 1000);
    let token_at =
        Instant::now().checked_add(Duration::from_millis(deadline_ms.saturating_sub(unix_ms())));
    let idle_at = last_traffic + idle;
    match token_at {
        Some(at) if at < idle_at => (at, true),
        _ => (idle_at, false),
    }
}

/// Drains the outbound queue into the transport, many frames per write, then closes with the
/// queued close: a `Disconnect` push, then the transport's close (WebSocket 4000 + code, QUIC
/// application code).
async fn write_loop<Snk: FrameSink>(
    mut sink: Snk,
    outbound: Arc<Outbound>,
    transport: &'static str,
    write_timeout: Duration,
) {
    let bytes_out = metrics::counter!("chorus_bytes_out_total", "transport" => transport);
    loop {
        let (bytes, raw) = match outbound.next(MAX_BATCH_BYTES).await {
            Batch::Frames(bytes) => (bytes, false),
            Batch::Raw(bytes) => (bytes, true),
            Batch::Close(c) => {
                if c.code == CloseCode::SlowConsumer {
                    metrics::counter!("chorus_slow_consumer_closes_total").increment(1);
                }
                let mut disconnect = c.code.disconnect(c.reason.clone());
                disconnect.reconnect_after_ms = c.reconnect_after_ms;
                let frame = encode_frame_to_bytes(&ServerEnvelope::disconnect(disconnect));
                let _ = tokio::time::timeout(write_timeout, sink.close(&c, frame)).await;
                return;
            }
        };
        bytes_out.increment(bytes.len() as u64);
        // A peer that stops reading but keeps its socket open must not hold the
        // connection forever: a write that cannot finish in the idle timeout ends it.
        // The deadline is armed only when the write has to wait: most writes finish at
        // once, and a timer per write cost 8 % of this loop.
        let mut send = std::pin::pin!(async {
            if raw {
                sink.send_raw(bytes).await
            } else {
                sink.send(bytes).await
            }
        });
        let sent = match futures_util::poll!(send.as_mut()) {
            std::task::Poll::Ready(done) => Ok(done),
            std::task::Poll::Pending => tokio::time::timeout(write_timeout, send).await,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(())) => {
                outbound.close(close(CloseCode::Normal, "write failed"));
                return;
            }
            Err(_) => {
                metrics::counter!("chorus_slow_consumer_closes_total").increment(1);
                outbound.close(close(CloseCode::SlowConsumer, "write timed out"));
                return;
            }
        }
    }
}
