//! Publishes waiting for their acknowledgement. Each keeps its `client_msg_id` for its whole life,
//! so that resending after a reconnect can never store it twice: the server answers a retry with
//! the original seq.

use std::collections::VecDeque;

use chorus_protocol::v1;
use tokio::sync::oneshot;

use crate::error::Error;

/// What a publish resolves to.
pub(crate) type PublishReply = oneshot::Sender<Result<v1::Appended, Error>>;

/// One publish in the outbox.
#[derive(Debug)]
struct Entry {
    /// Its place in call order, kept when it is put back.
    order: u64,
    publish: v1::Publish,
    reply: Option<PublishReply>,
    /// The request id it was sent under on the current connection.
    sent_as: Option<u64>,
}

/// A bounded FIFO of publishes. Sending follows the queue order, which is the order the app
/// called `publish`, so seqs follow it too.
#[derive(Debug)]
pub(crate) struct Outbox {
    entries: VecDeque<Entry>,
    capacity: usize,
    /// Entries at the front that were sent on the current connection.
    sent: usize,
    next_order: u64,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity,
            sent: 0,
            next_order: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Queues a publish, or gives it back when the outbox is full.
    pub(crate) fn push(
        &mut self,
        publish: v1::Publish,
        reply: PublishReply,
    ) -> Result<(), PublishReply> {
        if self.entries.len() >= self.capacity {
            return Err(reply);
        }
        self.next_order += 1;
        self.entries.push_back(Entry {
            order: self.next_order,
            publish,
            reply: Some(reply),
            sent_as: None,
        });
        Ok(())
    }

    /// Whether a publish waits to be sent on the current connection.
    pub(crate) fn has_unsent(&self) -> bool {
        self.sent < self.entries.len()
    }

    /// The encoded frame size of the next unsent publish.
    pub(crate) fn next_unsent_len(&self) -> Option<usize> {
        let entry = self.entries.get(self.sent)?;
        Some(chorus_protocol::codec::frame_len(&v1::ClientEnvelope::new(
            u64::MAX,
            v1::client_envelope::Request::Publish(entry.publish.clone()),
        )))
    }

    /// Fails and removes the next unsent publish.
    pub(crate) fn fail_next_unsent(&mut self, error: Error) {
        if let Some(mut entry) = self.entries.remove(self.sent)
            && let Some(reply) = entry.reply.take()
        {
            let _ = reply.send(Err(error));
        }
    }

    /// The next unsent publish, marked as sent under `request_id`.
    pub(crate) fn send_next(&mut self, request_id: u64) -> Option<&v1::Publish> {
        let entry = self.entries.get_mut(self.sent)?;
        entry.sent_as = Some(request_id);
        self.sent += 1;
        Some(&entry.publish)
    }

    /// Removes the publish sent under `request_id` and returns its reply channel.
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

    /// The acknowledgement (or refusal) of the publish sent under `request_id`. Returns false if
    /// no publish was sent under it.
    pub(crate) fn resolve(&mut self, request_id: u64, result: Result<v1::Appended, Error>) -> bool {
        match self.take(request_id) {
            Some(mut entry) => {
                if let Some(reply) = entry.reply.take() {
                    // The app may have stopped waiting; the publish is done either way.
                    let _ = reply.send(result);
                }
                true
            }
            None => false,
        }
    }

    /// Puts the publish sent under `request_id` back among the unsent ones, in call order, so
    /// that several refused publishes go out again in the order the app made them. Returns
    /// false if unknown.
    pub(crate) fn requeue(&mut self, request_id: u64) -> bool {
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
    pub(crate) fn connection_lost(&mut self) {
        for entry in &mut self.entries {
            entry.sent_as = None;
        }
        self.sent = 0;
    }

    /// Fails every publish (the client is stopping).
    pub(crate) fn fail_all(&mut self, error: &Error) {
        for mut entry in self.entries.drain(..) {
            if let Some(reply) = entry.reply.take() {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.sent = 0;
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
        let mut waiters = Vec::new();
        for id in ["a", "b", "c"] {
            let (tx, rx) = oneshot::channel();
            assert!(outbox.push(publish(id), tx).is_ok());
            waiters.push(rx);
        }
        let (tx, _rx) = oneshot::channel();
        assert!(outbox.push(publish("d"), tx).is_err(), "bounded");

        assert_eq!(msg_id(outbox.send_next(1)).as_deref(), Some("a"));
        assert_eq!(msg_id(outbox.send_next(2)).as_deref(), Some("b"));
        outbox.connection_lost();
        assert_eq!(
            msg_id(outbox.send_next(3)).as_deref(),
            Some("a"),
            "resent first"
        );
        assert_eq!(msg_id(outbox.send_next(4)).as_deref(), Some("b"));
        assert!(!outbox.resolve(1, Err(Error::Timeout)), "old ids are gone");
        assert!(outbox.requeue(3), "a rate-limited publish goes back");
        assert_eq!(msg_id(outbox.send_next(5)).as_deref(), Some("a"));
        assert_eq!(msg_id(outbox.send_next(6)).as_deref(), Some("c"));
        assert!(!outbox.has_unsent());
        // b (sent as 4) and c (6) refused in turn: they go out again in call order.
        assert!(outbox.requeue(6));
        assert!(outbox.requeue(4));
        assert_eq!(msg_id(outbox.send_next(7)).as_deref(), Some("b"));
        assert_eq!(msg_id(outbox.send_next(8)).as_deref(), Some("c"));
        assert!(outbox.resolve(7, Ok(v1::Appended::default())));
        assert!(outbox.resolve(5, Ok(v1::Appended::default())));
        assert_eq!(outbox.len(), 1);
        outbox.fail_all(&Error::Shutdown);
        assert_eq!(outbox.len(), 0);
        let results: Vec<_> = waiters.into_iter().map(|mut rx| rx.try_recv()).collect();
        assert!(matches!(results[0], Ok(Ok(_))));
        assert!(matches!(results[1], Ok(Ok(_))));
        assert!(matches!(results[2], Ok(Err(Error::Shutdown))));
    }
}
