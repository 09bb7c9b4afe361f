//! Per-channel delivery (`docs/protocol.md` section 8.5): the `(epoch, last seq)` cursor of every
//! subscribed channel, and the channels that lag. An entry is delivered only if it is the next
//! seq of its channel and the app has room for it; a duplicate is dropped. Everything else makes
//! the channel lag: a full event queue, a gap (never expected from a correct server) or another
//! epoch. A lagging channel's further entries are dropped unseen, and once the app has room
//! again the channel is resubscribed from its cursor (`Unsubscribe`, then `Subscribe` with
//! `since`), so the server replays exactly what was dropped, or answers that it cannot, which
//! becomes a reload decision for the app.

use std::collections::{HashMap, HashSet};

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::resume::{Accept, ResumeTracker, SubscribeOutcome};
use chorus_protocol::v1::{self, RecoveryFailure};

/// Bytes of a `Hello` besides its resume subscriptions (token, client info), with room to spare.
const HELLO_OVERHEAD: usize = 1024;

/// Whether a lagging channel waits for room or is being resubscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lag {
    Waiting,
    Resubscribing,
}

/// What to do with a received entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Hand it to the app: it is the next seq of this channel.
    Deliver(ChannelId),
    /// Drop it: a duplicate, an unsubscribed or lagging channel.
    Drop,
    /// Drop it and repair the channel later from its cursor.
    Lagged,
}

/// What a resubscription's (or resumed subscription's) answer means for the app.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Resubscribed {
    /// Every entry after the cursor follows: nothing to tell.
    Recovered,
    /// The server could not restore it: the subscription is over.
    Ended(v1::Error),
    /// Completeness could not be proven: the app must reload up to `head`.
    Reload { reason: RecoveryFailure, head: Seq },
}

/// The cursors and the lagging channels.
#[derive(Debug, Default)]
pub(super) struct Channels {
    tracker: ResumeTracker,
    lagging: HashMap<ChannelId, Lag>,
}

impl Channels {
    /// Classifies an entry; `room` says whether the app can take one more event.
    pub(super) fn on_entry(&mut self, event: &v1::ChannelEvent, room: bool) -> Arrival {
        let Ok(channel) = ChannelId::new(event.channel_id.as_str()) else {
            return Arrival::Drop;
        };
        if self.lagging.contains_key(&channel) {
            return Arrival::Drop;
        }
        if !room {
            self.lagging.insert(channel, Lag::Waiting);
            return Arrival::Lagged;
        }
        match self.tracker.on_event(event) {
            Accept::Deliver => Arrival::Deliver(channel),
            Accept::Duplicate | Accept::Untracked => Arrival::Drop,
            Accept::Gap { expected, got } => {
                tracing::warn!(%channel, %expected, %got, "entries missing; resubscribing");
                self.lagging.insert(channel, Lag::Waiting);
                Arrival::Lagged
            }
            Accept::EpochChanged => {
                self.lagging.insert(channel, Lag::Waiting);
                Arrival::Lagged
            }
        }
    }

    /// The `Subscribe` request for a channel, with its cursor when one is known.
    pub(super) fn subscribe_request(&self, channel: &ChannelId) -> v1::Subscribe {
        self.tracker.subscribe_request(channel)
    }

    /// `Hello.resume` for every tracked channel that fits in a frame of `max_frame` bytes; the
    /// channels left out are not answered in the `Welcome` and get resubscribed one by one.
    pub(super) fn resume_data(
        &self,
        previous_session_id: &str,
        max_frame: usize,
    ) -> Option<v1::ResumeData> {
        self.tracker.channels().next()?;
        let mut resume = self.tracker.resume_data(previous_session_id);
        let mut size = HELLO_OVERHEAD;
        let mut keep = 0;
        for sub in &resume.subscriptions {
            size += prost::Message::encoded_len(sub) + 4;
            if size > max_frame {
                break;
            }
            keep += 1;
        }
        resume.subscriptions.truncate(keep);
        Some(resume)
    }

    /// The app's `Subscribe` succeeded.
    pub(super) fn subscribed(&mut self, channel: &ChannelId, reply: &v1::Subscribed) {
        self.lagging.remove(channel);
        self.tracker.subscribed(channel, reply);
    }

    /// The channel is no longer subscribed (the app's `Unsubscribe`, or the server ended it).
    pub(super) fn unsubscribed(&mut self, channel: &ChannelId) {
        self.lagging.remove(channel);
        self.tracker.unsubscribed(channel);
    }

    /// A resumed (`Welcome.resumed`) or resynced subscription's answer.
    pub(super) fn resubscribed(
        &mut self,
        channel: &ChannelId,
        reply: &v1::Subscribed,
    ) -> Resubscribed {
        self.lagging.remove(channel);
        if let Some(error) = &reply.error {
            self.tracker.unsubscribed(channel);
            return Resubscribed::Ended(error.clone());
        }
        match self.tracker.subscribed(channel, reply) {
            SubscribeOutcome::Recovered | SubscribeOutcome::Fresh { .. } => Resubscribed::Recovered,
            SubscribeOutcome::Reload { reason, head } => Resubscribed::Reload { reason, head },
        }
    }

    /// After a `Welcome`: tracked channels the server did not answer for are resubscribed.
    pub(super) fn not_resumed(&mut self, resumed: &HashSet<ChannelId>) {
        let missing: Vec<ChannelId> = self
            .tracker
            .channels()
            .filter(|c| !resumed.contains(*c))
            .cloned()
            .collect();
        for channel in missing {
            self.lagging.insert(channel, Lag::Waiting);
        }
    }

    /// Whether a lagging channel waits for its resubscription.
    pub(super) fn has_waiting(&self) -> bool {
        self.lagging.values().any(|l| *l == Lag::Waiting)
    }

    /// The lagging channels waiting for their resubscription.
    pub(super) fn waiting(&self) -> Vec<ChannelId> {
        let mut channels: Vec<ChannelId> = self
            .lagging
            .iter()
            .filter(|(_, l)| **l == Lag::Waiting)
            .map(|(c, _)| c.clone())
            .collect();
        // A stable order keeps what is sent deterministic.
        channels.sort();
        channels
    }

    /// Starts a lagging channel's resubscription: the `Subscribe` to send after an
    /// `Unsubscribe`, or `None` if the channel is no longer tracked.
    pub(super) fn start_resync(&mut self, channel: &ChannelId) -> Option<v1::Subscribe> {
        if self.tracker.cursor(channel).is_none() {
            self.lagging.remove(channel);
            return None;
        }
        self.lagging.insert(channel.clone(), Lag::Resubscribing);
        Some(self.tracker.subscribe_request(channel))
    }

    /// Whether a resubscription's answer is still wanted (the app may have unsubscribed).
    pub(super) fn resync_pending(&self, channel: &ChannelId) -> bool {
        self.lagging.get(channel) == Some(&Lag::Resubscribing)
    }

    /// The resubscription failed for now: try again once there is room.
    pub(super) fn retry_resync(&mut self, channel: ChannelId) {
        self.lagging.insert(channel, Lag::Waiting);
    }

    /// Stops repairing a channel (the app unsubscribes, or the answer was unusable).
    pub(super) fn forget_lag(&mut self, channel: &ChannelId) {
        self.lagging.remove(channel);
    }

    /// The connection dropped: resubscribing after the reconnect replays from each cursor
    /// anyway.
    pub(super) fn connection_lost(&mut self) {
        self.lagging.clear();
    }
}
