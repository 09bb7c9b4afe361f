//! Request/reply correlation. App requests wait in a bounded queue until a connection has room
//! for them (the server's in-flight limit), then travel under a wire request id; the reply finds
//! its purpose by that id. Every app request has a deadline: one still waiting then is dropped,
//! one in flight is answered `Timeout` while its entry stays until the server answers, so that
//! the in-flight count stays true and a late reply's bookkeeping (a subscription that did start)
//! still happens.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use chorus_protocol::ids::ChannelId;
use chorus_protocol::v1::client_envelope::Request;

use super::CallId;

/// What the app's request is, where the session must act on its reply.
#[derive(Debug, Clone)]
pub(crate) enum RequestKind {
    Plain,
    /// Built when sent, from the channel's cursor.
    Subscribe(ChannelId),
    Unsubscribe(ChannelId),
    /// The new token becomes the one used for reconnecting.
    RefreshToken(String),
}

/// A request sent on the current connection, by wire request id.
#[derive(Debug)]
pub(super) enum InFlight {
    Hello,
    App {
        /// `None` once the caller was told `Timeout`.
        call: Option<CallId>,
        kind: RequestKind,
        deadline: Instant,
    },
    Publish,
    Ping {
        sent: Instant,
    },
    /// The session's own refresh, with the token it carries.
    Refresh {
        token: String,
    },
    /// The first half of a lagging channel's resubscription; its answer does not matter.
    ResyncUnsubscribe,
    Resubscribe(ChannelId),
}

/// An app request not sent yet.
#[derive(Debug)]
pub(super) struct Waiting {
    pub(super) call: CallId,
    pub(super) request: Request,
    pub(super) kind: RequestKind,
    pub(super) deadline: Instant,
}

/// The waiting queue and the in-flight map.
#[derive(Debug)]
pub(super) struct Requests {
    waiting: VecDeque<Waiting>,
    in_flight: HashMap<u64, InFlight>,
    next_id: u64,
    capacity: usize,
}

impl Requests {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            waiting: VecDeque::new(),
            in_flight: HashMap::new(),
            next_id: 1,
            capacity: capacity.max(1),
        }
    }

    /// Whether another app request may wait (the app's callers wait otherwise).
    pub(super) fn has_room(&self) -> bool {
        self.waiting.len() < self.capacity
    }

    pub(super) fn wait(&mut self, waiting: Waiting) {
        self.waiting.push_back(waiting);
    }

    pub(super) fn next_waiting(&mut self) -> Option<Waiting> {
        self.waiting.pop_front()
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Records `flight` under a fresh wire request id (never 0, never reused: a reply to an
    /// older connection's request cannot be mistaken for a newer one's).
    pub(super) fn send(&mut self, flight: InFlight) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.insert(id, flight);
        id
    }

    /// The request a reply answers.
    pub(super) fn answered(&mut self, request_id: u64) -> Option<InFlight> {
        self.in_flight.remove(&request_id)
    }

    /// Calls whose deadline passed: waiting ones are dropped, in-flight ones lose their caller.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<CallId> {
        let mut expired = Vec::new();
        self.waiting.retain(|w| {
            let keep = w.deadline > now;
            if !keep {
                expired.push(w.call);
            }
            keep
        });
        for flight in self.in_flight.values_mut() {
            if let InFlight::App { call, deadline, .. } = flight
                && *deadline <= now
                && let Some(c) = call.take()
            {
                expired.push(c);
            }
        }
        expired
    }

    /// The earliest deadline of a call still waiting for its answer.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let waiting = self.waiting.iter().map(|w| w.deadline);
        let sent = self.in_flight.values().filter_map(|f| match f {
            InFlight::App {
                call: Some(_),
                deadline,
                ..
            } => Some(*deadline),
            _ => None,
        });
        waiting.chain(sent).min()
    }

    /// The connection is gone: nothing in flight will be answered. Returns the app calls whose
    /// outcome is now unknown.
    pub(super) fn connection_lost(&mut self) -> Vec<CallId> {
        self.in_flight
            .drain()
            .filter_map(|(_, f)| match f {
                InFlight::App { call, .. } => call,
                _ => None,
            })
            .collect()
    }

    /// Every app call still unanswered, waiting or in flight (the session is stopping).
    pub(super) fn drain(&mut self) -> Vec<CallId> {
        let mut calls: Vec<CallId> = self.waiting.drain(..).map(|w| w.call).collect();
        calls.extend(self.connection_lost());
        calls
    }
}
