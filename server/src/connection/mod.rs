//! One client connection, WebSocket or QUIC, from `Hello` to close: the handshake with its
//! deadline and token check (`handshake`), the read loop with idle and expiry timers (here),
//! and the writer that drains the outbound queue in batches (`writer`). Bad input closes this
//! connection only, with a typed close code.
//!
//! The transports implement [`FrameSource`] and [`FrameSink`]; they are declared here, by their
//! user, so that this module never imports a transport.

mod handshake;
mod writer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_protocol::DecodeError;
use chorus_protocol::v1::{
    self, ClientEnvelope, CloseCode, ErrorCode, client_envelope::Request, reply,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use prost::Message as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::clock::unix_ms;
use crate::ids::Transport;
use crate::node::Node;
use crate::outbound::{Close, Outbound};
use crate::session::{PendingReply, Session};
use crate::stats::ConnectionGauge;

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

/// The transport-independent life of a connection: handshake, read loop, writer, cleanup.
pub async fn run_connection<Src, Snk>(
    node: Arc<Node>,
    source: Src,
    sink: Snk,
    outbound: Arc<Outbound>,
    shutdown: CancellationToken,
    transport: Transport,
    mut admission: Admission,
) where
    Src: FrameSource,
    Snk: FrameSink + 'static,
{
    let peer = admission.peer();
    let _connected =
        Gauge::inc(metrics::gauge!("chorus_connections", "transport" => transport.as_str()));
    let _counted = ConnectionGauge::new(node.stats().clone(), transport);
    let mut source = Counted {
        inner: source,
        bytes_in: metrics::counter!("chorus_bytes_in_total", "transport" => transport.as_str()),
    };
    let limits = node.limits();
    let handshake_deadline = Duration::from_millis(u64::from(limits.handshake_timeout_ms));
    let write_timeout = Duration::from_millis(u64::from(limits.idle_timeout_ms));
    let writer = tokio::spawn(writer::write_loop(
        sink,
        outbound.clone(),
        transport,
        write_timeout,
    ));
    let (mut session, leftover) = match Box::pin(handshake::handshake(
        &node,
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
    node.hub().remove_session(session.key, subscribed);
    node.hub()
        .presence()
        .unwatch(session.key, &session.watching());
    crate::chat::presence::session_ended(&node, &session.identity.user);
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
