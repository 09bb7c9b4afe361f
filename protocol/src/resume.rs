//! Client-side delivery bookkeeping, without I/O: what a client must track to see every entry of
//! its channels exactly once, in order, across reconnects. The SDK and the load tester drive it
//! with what they receive; tests drive it with no sockets at all.
//!
//! For each subscribed channel the tracker keeps `(epoch, last seq delivered)`. Events at or
//! below the last seq are duplicates (a replay overlapping a live delivery, a retry); an event
//! further ahead than the next seq is a gap, which the delivery contract forbids, so it is
//! reported rather than silently accepted; an event of another epoch means history was cut.

use std::collections::HashMap;

use crate::ids::{ChannelId, Epoch, Seq};
use crate::v1::{ChannelEvent, Cursor, RecoveryFailure, ResumeData, Subscribe, Subscribed};

/// Where one channel's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelCursor {
    /// The channel's history generation.
    pub epoch: Epoch,
    /// The last seq handed to the app.
    pub last: Seq,
}

/// What to do with a received event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// New and next in order: hand it to the app.
    Deliver,
    /// Already delivered: drop it.
    Duplicate,
    /// Seqs are missing before it: the app must reload the channel (never happens with a
    /// correct server; reported instead of hidden).
    Gap {
        /// The seq that should have come.
        expected: Seq,
        /// The seq that came.
        got: Seq,
    },
    /// The channel's history was cut: reload.
    EpochChanged,
    /// The channel is not tracked (not subscribed): drop it.
    Untracked,
}

/// What a `Subscribed` reply means for the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// Every entry after the cursor will arrive: nothing to do.
    Recovered,
    /// No cursor was given: live entries from `head` on; load older ones with history if wanted.
    Fresh {
        /// The channel's head when the subscription started.
        head: Seq,
    },
    /// Completeness could not be proven: the app must reload the channel up to `head`.
    Reload {
        /// Why.
        reason: RecoveryFailure,
        /// The channel's head when the subscription started.
        head: Seq,
    },
}

/// The per-channel cursors of one client.
#[derive(Debug, Clone, Default)]
pub struct ResumeTracker {
    cursors: HashMap<ChannelId, ChannelCursor>,
}

impl ResumeTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cursor of a channel.
    pub fn cursor(&self, channel: &ChannelId) -> Option<ChannelCursor> {
        self.cursors.get(channel).copied()
    }

    /// The tracked (subscribed) channels.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelId> {
        self.cursors.keys()
    }

    /// The `Subscribe` request for a channel: with its cursor when one is known.
    pub fn subscribe_request(&self, channel: &ChannelId) -> Subscribe {
        Subscribe {
            channel_id: channel.to_string(),
            since: self.cursor(channel).map(|c| Cursor {
                epoch: c.epoch.get(),
                seq: c.last.get(),
            }),
        }
    }

    /// `Hello.resume` restoring every tracked subscription.
    pub fn resume_data(&self, previous_session_id: &str) -> ResumeData {
        let mut subscriptions: Vec<Subscribe> = self
            .cursors
            .keys()
            .map(|c| self.subscribe_request(c))
            .collect();
        // A stable order keeps the request deterministic (and `Welcome.resumed` in this order).
        subscriptions.sort_by(|a, b| a.channel_id.cmp(&b.channel_id));
        ResumeData {
            previous_session_id: previous_session_id.to_owned(),
            subscriptions,
        }
    }

    /// Applies a `Subscribed` reply (or an entry of `Welcome.resumed`).
    pub fn subscribed(&mut self, channel: &ChannelId, reply: &Subscribed) -> SubscribeOutcome {
        let head = Seq(reply.head_seq);
        let epoch = Epoch(reply.epoch);
        if reply.recovered
            && let Some(cursor) = self.cursors.get_mut(channel)
        {
            cursor.epoch = epoch;
            return SubscribeOutcome::Recovered;
        }
        // Not recovered (or nothing tracked): the app reloads up to `head`; live entries follow.
        let had_cursor = self
            .cursors
            .insert(channel.clone(), ChannelCursor { epoch, last: head })
            .is_some();
        let reason =
            RecoveryFailure::try_from(reply.failure).unwrap_or(RecoveryFailure::Unspecified);
        match reason {
            RecoveryFailure::NoCursor => SubscribeOutcome::Fresh { head },
            // A cursor was sent and not honoured for a reason this client does not know (a
            // newer server): entries may be missing, so the app must reload.
            RecoveryFailure::Unspecified if !had_cursor => SubscribeOutcome::Fresh { head },
            reason => SubscribeOutcome::Reload { reason, head },
        }
    }

    /// Stops tracking a channel.
    pub fn unsubscribed(&mut self, channel: &ChannelId) {
        self.cursors.remove(channel);
    }

    /// Classifies a received event and, when it is to be delivered, advances the cursor.
    pub fn on_event(&mut self, event: &ChannelEvent) -> Accept {
        let Ok(channel) = ChannelId::new(event.channel_id.as_str()) else {
            return Accept::Untracked;
        };
        let Some(cursor) = self.cursors.get_mut(&channel) else {
            return Accept::Untracked;
        };
        if event.epoch != cursor.epoch.get() {
            return Accept::EpochChanged;
        }
        let seq = Seq(event.seq);
        if seq <= cursor.last {
            return Accept::Duplicate;
        }
        let expected = cursor.last.next();
        if seq != expected {
            return Accept::Gap { expected, got: seq };
        }
        cursor.last = seq;
        Accept::Deliver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch() -> ChannelId {
        ChannelId::new("room").unwrap()
    }

    fn event(seq: u64, epoch: u64) -> ChannelEvent {
        ChannelEvent {
            channel_id: "room".into(),
            seq,
            epoch,
            ..ChannelEvent::default()
        }
    }

    fn subscribed(head: u64, recovered: bool, failure: RecoveryFailure) -> Subscribed {
        Subscribed {
            channel_id: "room".into(),
            epoch: 7,
            head_seq: head,
            recovered,
            failure: failure as i32,
            first_available_seq: 1,
            error: None,
        }
    }

    #[test]
    fn a_fresh_subscription_delivers_from_the_head() {
        let mut t = ResumeTracker::new();
        assert_eq!(t.subscribe_request(&ch()).since, None);
        let out = t.subscribed(&ch(), &subscribed(10, false, RecoveryFailure::NoCursor));
        assert_eq!(out, SubscribeOutcome::Fresh { head: Seq(10) });
        assert_eq!(t.on_event(&event(10, 7)), Accept::Duplicate);
        assert_eq!(t.on_event(&event(11, 7)), Accept::Deliver);
        assert_eq!(t.on_event(&event(11, 7)), Accept::Duplicate);
        assert_eq!(
            t.on_event(&event(13, 7)),
            Accept::Gap {
                expected: Seq(12),
                got: Seq(13)
            }
        );
        assert_eq!(t.on_event(&event(12, 8)), Accept::EpochChanged);
        assert_eq!(
            t.subscribe_request(&ch()).since,
            Some(Cursor { epoch: 7, seq: 11 })
        );
    }

    #[test]
    fn recovery_keeps_the_cursor_and_failure_asks_for_a_reload() {
        let mut t = ResumeTracker::new();
        t.subscribed(&ch(), &subscribed(5, false, RecoveryFailure::NoCursor));
        assert_eq!(t.on_event(&event(6, 7)), Accept::Deliver);
        let resume = t.resume_data("s-1");
        assert_eq!(
            resume.subscriptions[0].since,
            Some(Cursor { epoch: 7, seq: 6 })
        );
        assert_eq!(
            t.subscribed(&ch(), &subscribed(9, true, RecoveryFailure::Unspecified)),
            SubscribeOutcome::Recovered
        );
        assert_eq!(t.on_event(&event(7, 7)), Accept::Deliver);
        let out = t.subscribed(
            &ch(),
            &subscribed(50, false, RecoveryFailure::EntriesExpired),
        );
        assert_eq!(
            out,
            SubscribeOutcome::Reload {
                reason: RecoveryFailure::EntriesExpired,
                head: Seq(50)
            }
        );
        assert_eq!(t.on_event(&event(51, 7)), Accept::Deliver);
        let unknown = Subscribed {
            failure: 99,
            ..subscribed(60, false, RecoveryFailure::Unspecified)
        };
        assert!(
            matches!(
                t.subscribed(&ch(), &unknown),
                SubscribeOutcome::Reload { .. }
            ),
            "an unknown failure after a cursor means reload"
        );
        t.unsubscribed(&ch());
        assert_eq!(t.on_event(&event(52, 7)), Accept::Untracked);
    }
}
