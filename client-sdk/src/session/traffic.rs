//! What travels on an established connection: app requests and publishes put on the wire within
//! the server's limits, lagging channels resubscribed, and every envelope from the server turned
//! into replies, events and bookkeeping.

use std::time::{Duration, Instant};

use chorus_protocol::codec::{encode_frame_to_bytes, frame_len};
use chorus_protocol::ids::ChannelId;
use chorus_protocol::v1::{
    self, ClientEnvelope, ErrorCode, ServerEnvelope, client_envelope::Request, push, reply,
    server_envelope,
};

use super::ClientSession;
use super::lag::{Arrival, Resubscribed};
use super::link::Link;
use super::requests::{InFlight, RequestKind};
use crate::error::{Error, ServerError};
use crate::event::Event;
use crate::types::{CustomEvent, Entry, Membership, Notice, Presence, ReadMarker, Typing};

/// Control events kept beyond the app's queue while the app does not read.
const MAX_BACKLOG: usize = 4_096;
/// How long a publish waits after a retryable refusal that gave no `retry_after`.
const DEFAULT_PUBLISH_PAUSE: Duration = Duration::from_secs(1);

fn too_large(size: usize, max: u32) -> Error {
    Error::InvalidArgument(format!(
        "the request encodes to {size} bytes, over the server's frame limit of {max}"
    ))
}

impl ClientSession {
    pub(super) fn max_in_flight(&self) -> usize {
        self.limits.max_in_flight_requests.max(1) as usize
    }

    pub(super) fn queue(&mut self, id: u64, request: Request) {
        self.out
            .push_back(encode_frame_to_bytes(&ClientEnvelope::new(id, request)));
    }

    /// Moves waiting requests and outbox publishes onto the wire, within the server's in-flight
    /// limit and publish rate.
    pub(super) fn fill_out(&mut self, now: Instant) {
        let max = self.max_in_flight();
        let max_frame = self.limits.max_frame_bytes;
        while self.requests.in_flight() < max {
            let Some(w) = self.requests.next_waiting() else {
                break;
            };
            if w.deadline <= now {
                self.reply(w.call, Err(Error::Timeout));
                continue;
            }
            let request = match &w.kind {
                RequestKind::Subscribe(channel) => {
                    Request::Subscribe(self.channels.subscribe_request(channel))
                }
                RequestKind::Unsubscribe(channel) => {
                    // A resync in progress must not bring the channel back.
                    self.channels.forget_lag(channel);
                    w.request
                }
                _ => w.request,
            };
            let size = frame_len(&ClientEnvelope::new(0, request.clone()));
            if size > max_frame as usize {
                self.reply(w.call, Err(too_large(size, max_frame)));
                continue;
            }
            let id = self.requests.send(InFlight::App {
                call: Some(w.call),
                kind: w.kind,
                deadline: w.deadline,
            });
            self.queue(id, request);
        }
        while self.requests.in_flight() < max && self.outbox.has_unsent() && self.pacer.take(now) {
            // A publish the server would refuse by closing the connection must fail here, or it
            // would be resent after every reconnect.
            if let Some(size) = self
                .outbox
                .next_unsent_len()
                .filter(|n| *n > max_frame as usize)
            {
                if let Some(call) = self.outbox.drop_next_unsent() {
                    self.reply(call, Err(too_large(size, max_frame)));
                }
                self.set_outbox_len();
                continue;
            }
            let id = self.requests.send(InFlight::Publish);
            let Some(publish) = self.outbox.send_next(id).cloned() else {
                self.requests.answered(id);
                break;
            };
            self.queue(id, Request::Publish(publish));
        }
    }

    /// Resubscribes lagging channels once the app has made room for their replay.
    pub(super) fn start_resyncs(&mut self) {
        let half = self.config.event_capacity / 2;
        if !self.events.is_empty() || self.event_room < half || !self.channels.has_waiting() {
            return;
        }
        let max = self.max_in_flight();
        for channel in self.channels.waiting() {
            // Two requests per channel; the rest wait for the next round.
            if self.requests.in_flight() + 2 > max {
                break;
            }
            let Some(subscribe) = self.channels.start_resync(&channel) else {
                continue;
            };
            let id = self.requests.send(InFlight::ResyncUnsubscribe);
            self.queue(
                id,
                Request::Unsubscribe(v1::Unsubscribe {
                    channel_id: channel.to_string(),
                }),
            );
            let id = self.requests.send(InFlight::Resubscribe(channel));
            self.queue(id, Request::Subscribe(subscribe));
        }
    }

    pub(super) fn on_envelope(&mut self, now: Instant, env: ServerEnvelope) {
        match env.kind {
            Some(server_envelope::Kind::Reply(r)) => self.on_reply(now, r),
            Some(server_envelope::Kind::Push(v1::Push { push: Some(p) })) => match p {
                push::Push::Event(e) => self.on_entry(e),
                push::Push::Typing(t) => self.ephemeral(Typing::try_from(t).map(Event::Typing)),
                push::Push::CustomEvent(e) => {
                    self.ephemeral(CustomEvent::try_from(e).map(Event::Custom));
                }
                push::Push::Presence(p) => {
                    self.ephemeral(Presence::try_from(p).map(Event::Presence));
                }
                push::Push::ReadMarker(m) => {
                    self.ephemeral(ReadMarker::try_from(m).map(Event::ReadMarker));
                }
                push::Push::Notice(n) => self.emit(Event::Notice(Notice::from(n))),
                push::Push::Membership(m) => match Membership::try_from(m) {
                    Ok(m) => self.emit(Event::Membership(m)),
                    Err(e) => tracing::debug!(error = %e, "ignoring a membership update"),
                },
                push::Push::Disconnect(d) => {
                    if let Link::Up(up) = &mut self.link {
                        up.disconnect = Some(d);
                    }
                }
                push::Push::SubscriptionEnded(s) => {
                    if let Ok(channel) = ChannelId::new(s.channel_id) {
                        self.channels.unsubscribed(&channel);
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

    pub(super) fn room_left(&self) -> usize {
        self.event_room.saturating_sub(self.events.len())
    }

    pub(super) fn on_entry(&mut self, event: v1::ChannelEvent) {
        let room = self.room_left() > 0;
        if let Arrival::Deliver(channel) = self.channels.on_entry(&event, room) {
            self.events
                .push_back(Event::Entry(Entry::from_proto(event, &channel)));
        }
    }

    /// Queues a control event: it is never dropped for lack of room (only when the app has not
    /// read for so long that [`MAX_BACKLOG`] of them wait).
    pub(super) fn emit(&mut self, event: Event) {
        self.events.push_back(event);
        if self.events.len() > self.config.event_capacity + MAX_BACKLOG {
            // Entries, reloads and ended subscriptions are never dropped; connection-state and
            // informational events go first.
            let droppable = self.events.iter().position(|e| {
                !matches!(
                    e,
                    Event::Entry(_)
                        | Event::Reload { .. }
                        | Event::SubscriptionEnded { .. }
                        | Event::Closed { .. }
                )
            });
            if let Some(i) = droppable {
                tracing::warn!("the app is not reading events; dropping an old control event");
                self.events.remove(i);
            }
        }
    }

    /// Hands an ephemeral push to the app if there is room; counts it as dropped otherwise.
    pub(super) fn ephemeral(&mut self, event: Result<Event, Error>) {
        match event {
            Ok(event) if self.room_left() > 0 => self.events.push_back(event),
            Ok(_) => self.set_status(|s| s.dropped_ephemeral += 1),
            Err(e) => tracing::debug!(error = %e, "ignoring an ephemeral push"),
        }
    }

    pub(super) fn on_reply(&mut self, now: Instant, r: v1::Reply) {
        let Some(flight) = self.requests.answered(r.request_id) else {
            tracing::debug!(request_id = r.request_id, "reply to an unknown request");
            return;
        };
        let result = r.result;
        match flight {
            InFlight::Hello => {}
            InFlight::App { call, kind, .. } => {
                let result = match result {
                    Some(reply::Result::Error(e)) => Err(Error::from(e)),
                    Some(ok) => {
                        self.applied(now, &kind, &ok);
                        Ok(ok)
                    }
                    None => Err(Error::Protocol("an empty reply".into())),
                };
                if let Some(call) = call {
                    self.reply(call, result);
                }
            }
            InFlight::Publish => self.on_publish_reply(now, r.request_id, result),
            InFlight::Ping { sent } => {
                let rtt = now.saturating_duration_since(sent);
                self.set_status(|s| s.rtt = Some(rtt));
            }
            InFlight::Refresh { token } => match result {
                Some(reply::Result::TokenRefreshed(t)) => {
                    self.token = token;
                    self.token_refreshed(now, t.token_expires_at_ms);
                }
                other => {
                    tracing::warn!(reply = ?other.map(|r| r.name()), "RefreshToken refused; retrying");
                    self.refresh.refused(now);
                }
            },
            InFlight::ResyncUnsubscribe => {}
            // The app may have unsubscribed meanwhile: then the answer is stale.
            InFlight::Resubscribe(channel) if !self.channels.resync_pending(&channel) => {}
            InFlight::Resubscribe(channel) => match result {
                Some(reply::Result::Subscribed(s)) => self.apply_resubscribed(&channel, &s),
                Some(reply::Result::Error(e)) if e.error_code().is_retryable() => {
                    // Keep the cursor; try again once there is room.
                    self.channels.retry_resync(channel);
                }
                Some(reply::Result::Error(e)) => {
                    self.channels.unsubscribed(&channel);
                    self.emit(Event::SubscriptionEnded {
                        channel,
                        reason: Some(e.into()),
                    });
                }
                _ => self.channels.forget_lag(&channel),
            },
        }
    }

    /// A publish's answer (section 8.6).
    pub(super) fn on_publish_reply(
        &mut self,
        now: Instant,
        request_id: u64,
        result: Option<reply::Result>,
    ) {
        let outcome = match result {
            Some(reply::Result::Appended(a)) => Ok(reply::Result::Appended(a)),
            Some(reply::Result::Error(e)) => {
                let e = ServerError::from(e);
                // Retryable, or INTERNAL (outcome unknown): resend with the same client_msg_id
                // after a pause; idempotency makes it land once.
                if matches!(
                    e.code,
                    ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal
                ) && self.outbox.requeue(request_id)
                {
                    let wait = e.retry_after.unwrap_or(DEFAULT_PUBLISH_PAUSE);
                    self.pacer.pause_until(now + wait);
                    return;
                }
                Err(Error::Server(e))
            }
            Some(other) => Err(Error::unexpected("Publish", other.name())),
            None => Err(Error::Protocol("an empty reply".into())),
        };
        if let Some(call) = self.outbox.resolve(request_id) {
            self.reply(call, outcome);
        }
        self.set_outbox_len();
    }

    /// Bookkeeping for an app request that succeeded.
    pub(super) fn applied(&mut self, now: Instant, kind: &RequestKind, ok: &reply::Result) {
        match (kind, ok) {
            (RequestKind::Subscribe(channel), reply::Result::Subscribed(s))
                if s.error.is_none() =>
            {
                self.channels.subscribed(channel, s);
            }
            (RequestKind::Unsubscribe(channel), _) => self.channels.unsubscribed(channel),
            (RequestKind::RefreshToken(token), reply::Result::TokenRefreshed(t)) => {
                self.token = token.clone();
                self.token_refreshed(now, t.token_expires_at_ms);
            }
            _ => {}
        }
    }

    pub(super) fn token_refreshed(&mut self, now: Instant, expires_at_ms: u64) {
        let server_now = self.clock.map_or(0, |c| c.now_ms(now));
        self.refresh.schedule(now, server_now, expires_at_ms);
    }

    /// A resumed or resynced subscription's answer.
    pub(super) fn apply_resubscribed(&mut self, channel: &ChannelId, s: &v1::Subscribed) {
        match self.channels.resubscribed(channel, s) {
            Resubscribed::Recovered => {}
            Resubscribed::Ended(error) => self.emit(Event::SubscriptionEnded {
                channel: channel.clone(),
                reason: Some(ServerError::from(error)),
            }),
            Resubscribed::Reload { reason, head } => self.emit(Event::Reload {
                channel: channel.clone(),
                reason,
                head,
            }),
        }
    }
}
