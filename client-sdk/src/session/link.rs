//! The connection's lifecycle (`docs/protocol.md` sections 5 and 10): an attempt, `Hello`, the
//! `Welcome` or a refusal, and what a lost connection leads to: a reconnect after a backoff or
//! an advised delay, a token refresh first, or the end of the client.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chorus_protocol::backoff::{ReconnectPlan, plan_after_close};
use chorus_protocol::ids::ChannelId;
use chorus_protocol::v1::{self, CloseCode, ServerEnvelope, push, reply, server_envelope};
use rand::Rng;

use super::outbox::Pacer;
use super::{Action, ClientSession};
use crate::error::{Error, TransportError};
use crate::event::Event;

/// How long to wait for the server's close after it refused `Hello`.
pub(super) const REFUSAL_WAIT: Duration = Duration::from_secs(2);
/// Heartbeat and idle timeout used until the server announces its own.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(25);
const DEFAULT_IDLE: Duration = Duration::from_secs(60);

/// Why a connection attempt failed.
pub(super) enum Attempt {
    Failed(Error),
    /// The server answered `Hello` with an error, or closed with a code.
    Refused {
        error: Option<v1::Error>,
        code: Option<CloseCode>,
        reason: String,
        disconnect: Option<v1::Disconnect>,
    },
}

/// A connection that got its `Welcome`.
#[derive(Debug)]
pub(super) struct Up {
    pub(super) heartbeat: Duration,
    pub(super) idle: Duration,
    pub(super) last_rx: Instant,
    pub(super) last_ping: Instant,
    /// The server's `Disconnect` push: its close code when the transport loses it.
    pub(super) disconnect: Option<v1::Disconnect>,
}

#[derive(Debug)]
pub(super) enum Link {
    /// No transport; the next attempt at `until` (`None`: when a token has been fetched).
    Offline {
        until: Option<Instant>,
    },
    /// The shell is opening a transport.
    Connecting {
        deadline: Instant,
    },
    /// `Hello` sent under request id `hello`.
    Handshaking {
        deadline: Instant,
        hello: u64,
        refusal: Option<v1::Error>,
        refusal_deadline: Option<Instant>,
        disconnect: Option<v1::Disconnect>,
    },
    Up(Up),
    Stopped,
}

/// The server's clock, from the last `Welcome`, advanced by local monotonic time.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerClock {
    pub(super) at: Instant,
    pub(super) server_ms: u64,
}

impl ServerClock {
    pub(super) fn now_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.at).as_millis();
        self.server_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }
}

fn millis(ms: u32, default: Duration) -> Duration {
    match ms {
        0 => default,
        ms => Duration::from_millis(u64::from(ms)),
    }
}

impl ClientSession {
    pub(super) fn start_attempt(&mut self, now: Instant) {
        self.link = Link::Connecting {
            deadline: now + self.config.connect_timeout,
        };
        self.actions.push_back(Action::Connect);
    }

    pub(super) fn handshake_envelope(&mut self, now: Instant, env: ServerEnvelope) {
        let Link::Handshaking {
            hello,
            refusal,
            refusal_deadline,
            disconnect,
            ..
        } = &mut self.link
        else {
            return;
        };
        match env.kind {
            Some(server_envelope::Kind::Reply(r)) if r.request_id == *hello => match r.result {
                Some(reply::Result::Welcome(welcome)) => {
                    self.requests.answered(r.request_id);
                    self.on_welcome(now, welcome);
                }
                Some(reply::Result::Error(e)) => {
                    *refusal = Some(e);
                    *refusal_deadline = Some(now + REFUSAL_WAIT);
                }
                other => {
                    let error = Error::Protocol(format!(
                        "Hello answered with {}",
                        other.map_or("nothing", |r| r.name())
                    ));
                    self.actions.push_back(Action::Close { normal: false });
                    self.attempt_failed(now, Attempt::Failed(error));
                }
            },
            Some(server_envelope::Kind::Push(v1::Push {
                push: Some(push::Push::Disconnect(d)),
            })) => *disconnect = Some(d),
            // Nothing else may come before the Welcome.
            _ => {}
        }
    }

    pub(super) fn on_welcome(&mut self, now: Instant, welcome: v1::Welcome) {
        let reconnect = self.connections > 0;
        self.connections += 1;
        self.backoff.reset();
        if let Some(limits) = welcome.limits {
            self.pacer = Pacer::new(limits.publish_rate_per_sec, limits.publish_burst, now);
            self.limits = limits;
        }
        self.session_id = welcome.session_id.clone();
        let clock = ServerClock {
            at: now,
            server_ms: welcome.server_time_ms,
        };
        self.clock = Some(clock);
        self.refresh
            .schedule(now, clock.now_ms(now), welcome.token_expires_at_ms);
        self.link = Link::Up(Up {
            heartbeat: millis(welcome.heartbeat_interval_ms, DEFAULT_HEARTBEAT),
            idle: millis(welcome.idle_timeout_ms, DEFAULT_IDLE),
            last_rx: now,
            last_ping: now,
            disconnect: None,
        });
        let mut resumed = HashSet::new();
        for s in &welcome.resumed {
            if let Ok(channel) = ChannelId::new(s.channel_id.as_str()) {
                self.apply_resubscribed(&channel, s);
                resumed.insert(channel);
            }
        }
        self.channels.not_resumed(&resumed);
        self.set_status(|s| {
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
        if !reconnect {
            self.actions.push_back(Action::Ready);
        }
    }

    pub(super) fn attempt_failed(&mut self, now: Instant, attempt: Attempt) {
        self.link = Link::Offline { until: None };
        let (error, code, reason, disconnect) = match attempt {
            Attempt::Failed(e) => {
                let reason = e.to_string();
                (e, None, reason, None)
            }
            Attempt::Refused {
                error,
                code,
                reason,
                disconnect,
            } => {
                let closed = disconnect
                    .as_ref()
                    .and_then(|d| CloseCode::try_from(d.code).ok())
                    .or(code);
                let e = match (closed, error) {
                    (Some(code), error) => Error::Closed {
                        code,
                        reason: error.map_or_else(|| reason.clone(), |e| e.message),
                    },
                    (None, Some(error)) => Error::from(error),
                    (None, None) => Error::from(TransportError::Closed(reason.clone())),
                };
                (e, code, reason, disconnect)
            }
        };
        if self.connections == 0 {
            // The first attempt decides whether the app gets a client at all.
            self.connection_lost(now);
            self.stop(error, None);
            return;
        }
        tracing::debug!(error = %error, "connection attempt failed");
        self.lost(now, code, reason, disconnect);
    }

    /// The connection (or an attempt) is gone: what now, by the close code (section 10).
    pub(super) fn lost(
        &mut self,
        now: Instant,
        code: Option<CloseCode>,
        reason: String,
        disconnect: Option<v1::Disconnect>,
    ) {
        self.connection_lost(now);
        let closed = disconnect
            .as_ref()
            .and_then(|d| CloseCode::try_from(d.code).ok())
            .or(code);
        if !self.config.reconnect {
            return self.finish(closed, reason);
        }
        let disconnect = disconnect.or_else(|| code.map(|c| c.disconnect(reason.clone())));
        match plan_after_close(disconnect.as_ref(), &mut self.backoff, self.rng.random()) {
            ReconnectPlan::Stop => self.finish(closed, reason),
            ReconnectPlan::After(delay) => {
                self.emit(Event::Disconnected {
                    code: closed,
                    reason,
                    retry_in: delay,
                });
                self.link = Link::Offline {
                    until: Some(now + delay),
                };
            }
            ReconnectPlan::RefreshTokenFirst => {
                if !self.refresh.auth_expired() {
                    return self.finish(
                        closed,
                        "the token expired and no refresher is configured".into(),
                    );
                }
                self.emit(Event::Disconnected {
                    code: closed,
                    reason,
                    retry_in: Duration::ZERO,
                });
                self.link = Link::Offline { until: None };
                self.actions.push_back(Action::FetchToken);
            }
        }
    }

    /// In-flight requests fail (their outcome is unknown), publishes go back to the outbox
    /// for resending, waiting requests stay for the next connection.
    pub(super) fn connection_lost(&mut self, _now: Instant) {
        for call in self.requests.connection_lost() {
            self.reply(call, Err(Error::ConnectionLost));
        }
        self.outbox.connection_lost();
        self.out.clear();
        self.channels.connection_lost();
        self.refresh.connection_lost();
        if self.status.connected {
            self.set_status(|s| s.connected = false);
        }
    }

    /// Stops for good after the client ran: every call fails, [`Event::Closed`] is the last
    /// event.
    pub(super) fn finish(&mut self, code: Option<CloseCode>, reason: String) {
        let error = match code {
            Some(code) if code != CloseCode::Normal => Error::Closed {
                code,
                reason: reason.clone(),
            },
            _ => Error::Shutdown,
        };
        self.stop(error, Some(Event::Closed { code, reason }));
    }

    pub(super) fn stop(&mut self, error: Error, closed: Option<Event>) {
        for call in self.requests.drain() {
            self.reply(call, Err(error.clone()));
        }
        for call in self.outbox.drain() {
            self.reply(call, Err(error.clone()));
        }
        self.refresh.stop();
        self.out.clear();
        self.set_status(|s| {
            s.connected = false;
            s.outbox_len = 0;
        });
        if let Some(event) = closed {
            self.events.push_back(event);
        }
        self.link = Link::Stopped;
        self.stopped = Some(error.clone());
        self.actions.push_back(Action::Stopped(error));
    }
}
