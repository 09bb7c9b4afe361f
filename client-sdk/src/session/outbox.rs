//! Publishes waiting for their acknowledgement, and the pace they are sent at. Each publish keeps
//! its `client_msg_id` for its whole life, so that resending after a reconnect can never store it
//! twice: the server answers a retry with the original seq.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chorus_protocol::v1;

use super::CallId;

/// One publish in the outbox.
#[derive(Debug)]
struct Entry {
    /// Its place in call order, kept when it is put back.
    order: u64,
    publish: v1::Publish,
    call: CallId,
    /// The request id it was sent under on the current connection.
    sent_as: Option<u64>,
}

/// A bounded FIFO of publishes. Sending follows the queue order, which is the order the app
/// called `publish`, so seqs follow it too.
#[derive(Debug)]
pub(super) struct Outbox {
    entries: VecDeque<Entry>,
    capacity: usize,
    /// Entries at the front that were sent on the current connection.
    sent: usize,
    next_order: u64,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            sent: 0,
            next_order: 0,
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Queues a publish; `false` when the outbox is full.
    pub(super) fn push(&mut self, publish: v1::Publish, call: CallId) -> bool {
        if self.entries.len() >= self.capacity {
            return false;
        }
        self.next_order += 1;
        self.entries.push_back(Entry {
            order: self.next_order,
            publish,
            call,
            sent_as: None,
        });
        true
    }

    /// Whether a publish waits to be sent on the current connection.
    pub(super) fn has_unsent(&self) -> bool {
        self.sent < self.entries.len()
    }

    /// The encoded frame size of the next unsent publish.
    pub(super) fn next_unsent_len(&self) -> Option<usize> {
        let entry = self.entries.get(self.sent)?;
        Some(chorus_protocol::codec::frame_len(&v1::ClientEnvelope::new(
            u64::MAX,
            v1::client_envelope::Request::Publish(entry.publish.clone()),
        )))
    }

    /// Removes the next unsent publish (it cannot be sent); returns its call.
    pub(super) fn drop_next_unsent(&mut self) -> Option<CallId> {
        self.entries.remove(self.sent).map(|e| e.call)
    }

    /// The next unsent publish, marked as sent under `request_id`.
    pub(super) fn send_next(&mut self, request_id: u64) -> Option<&v1::Publish> {
        let entry = self.entries.get_mut(self.sent)?;
        entry.sent_as = Some(request_id);
        self.sent += 1;
        Some(&entry.publish)
    }

    fn take(&mut self, request_id: u64) -> Option<Entry> {
        let index = self
            .entries
            .iter()
            .position(|e| e.sent_as == Some(request_id))?;
        if index < self.sent {
            self.sent -= 1;
        }
        self.entries.remove(index)
    }

    /// The publish sent under `request_id` is done (acknowledged or refused for good): removes
    /// it and returns its call, or `None` if no publish was sent under that id.
    pub(super) fn resolve(&mut self, request_id: u64) -> Option<CallId> {
        self.take(request_id).map(|e| e.call)
    }

    /// Puts the publish sent under `request_id` back among the unsent ones, in call order, so
    /// that several refused publishes go out again in the order the app made them. Returns
    /// false if unknown.
    pub(super) fn requeue(&mut self, request_id: u64) -> bool {
        let Some(mut entry) = self.take(request_id) else {
            return false;
        };
        entry.sent_as = None;
        let at = self
            .entries
            .iter()
            .skip(self.sent)
            .position(|e| e.order > entry.order)
            .map_or(self.entries.len(), |p| p + self.sent);
        self.entries.insert(at, entry);
        true
    }

    /// The connection dropped: everything becomes unsent, in the original order.
    pub(super) fn connection_lost(&mut self) {
        for entry in &mut self.entries {
            entry.sent_as = None;
        }
        self.sent = 0;
    }

    /// Empties the outbox (the session is stopping); returns every call.
    pub(super) fn drain(&mut self) -> Vec<CallId> {
        self.sent = 0;
        self.entries.drain(..).map(|e| e.call).collect()
    }
}

/// A token bucket mirroring the server's publish limit, so that an outbox flushed after a
/// reconnect is paced instead of rejected, and a pause after the server said `RATE_LIMITED` or
/// `UNAVAILABLE`.
#[derive(Debug)]
pub(super) struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    pause: Option<Instant>,
}

impl Pacer {
    pub(super) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            at: now,
            pause: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes a token if a publish may go now.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        match self.pause {
            Some(until) if now < until => return false,
            Some(_) => self.pause = None,
            None => {}
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// No publish before `until`.
    pub(super) fn pause_until(&mut self, until: Instant) {
        self.pause = Some(self.pause.map_or(until, |p| p.max(until)));
    }

    /// When the next publish may go.
    pub(super) fn next_at(&self) -> Instant {
        if let Some(until) = self.pause {
            return until;
        }
        let missing = (1.0 - self.tokens).max(0.0);
        self.at + Duration::from_secs_f64(missing / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(id: &str) -> v1::Publish {
        v1::Publish {
            channel_id: "c".into(),
            message: Some(v1::Message {
                client_msg_id: id.into(),
                ..Default::default()
            }),
        }
    }

    fn msg_id(p: Option<&v1::Publish>) -> Option<String> {
        p.and_then(|p| p.message.as_ref())
            .map(|m| m.client_msg_id.clone())
    }

    #[test]
    fn order_survives_resends_and_requeues() {
        let mut outbox = Outbox::new(3);
        for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
            assert!(outbox.push(publish(id), CallId(n as u64)));
        }
        assert!(!outbox.push(publish("d"), CallId(3)), "bounded");

        assert_eq!(msg_id(outbox.send_next(1)).as_deref(), Some("a"));
        assert_eq!(msg_id(outbox.send_next(2)).as_deref(), Some("b"));
        outbox.connection_lost();
        assert_eq!(
            msg_id(outbox.send_next(3)).as_deref(),
            Some("a"),
            "resent first"
        );
        assert_eq!(msg_id(outbox.send_next(4)).as_deref(), Some("b"));
        assert_eq!(outbox.resolve(1), None, "old ids are gone");
        assert!(outbox.requeue(3), "a rate-limited publish goes back");
        assert_eq!(msg_id(outbox.send_next(5)).as_deref(), Some("a"));
        assert_eq!(msg_id(outbox.send_next(6)).as_deref(), Some("c"));
        assert!(!outbox.has_unsent());
        // b (sent as 4) and c (6) refused in turn: they go out again in call order.
        assert!(outbox.requeue(6));
        assert!(outbox.requeue(4));
        assert_eq!(msg_id(outbox.send_next(7)).as_deref(), Some("b"));
        assert_eq!(msg_id(outbox.send_next(8)).as_deref(), Some("c"));
        assert_eq!(outbox.resolve(7), Some(CallId(1)));
        assert_eq!(outbox.resolve(5), Some(CallId(0)));
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox.drain(), vec![CallId(2)]);
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn the_pacer_follows_the_rate_and_honours_pauses() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(10, 2, t0);
        assert!(pacer.take(t0) && pacer.take(t0), "the burst");
        assert!(!pacer.take(t0));
        assert_eq!(pacer.next_at(), t0 + Duration::from_millis(100));
        assert!(pacer.take(t0 + Duration::from_millis(100)));
        let t1 = t0 + Duration::from_secs(5);
        pacer.pause_until(t1 + Duration::from_secs(1));
        assert!(!pacer.take(t1), "paused, though the bucket is full");
        assert_eq!(pacer.next_at(), t1 + Duration::from_secs(1));
        assert!(pacer.take(t1 + Duration::from_secs(1)));
    }
}
