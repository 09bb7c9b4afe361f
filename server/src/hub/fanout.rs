//! Fan-out: every durable entry, encoded once, into the queue of each live subscription of its
//! channel, in seq order, without waiting for anyone.
//!
//! [`Fanout`] is the seam between "an entry became durable" and "deliver it here": the store's
//! commit listener ([`CommitFanout`]) calls it on a single node; a cluster replica applying a
//! shard's committed entries calls the same method, so delivery is replica-local either way.

use std::sync::Arc;

use chorus_protocol::codec::encode_event_frame;
use chorus_protocol::ids::ChannelId;
use chorus_protocol::v1::push::Push;
use chorus_protocol::v1::{self, MemberAction, channel_event::Body};
use chorus_storage::{CommitListener, LogEntry};

use super::subscription::Subscription;
use super::{Hub, push_frame};
use crate::ids::SessionKey;

/// Where durable entries are delivered.
pub trait Fanout: Send + Sync {
    /// Delivers one durable entry to the local subscribers of its channel. Called in seq order
    /// per channel; must not block.
    fn deliver(&self, entry: &Arc<LogEntry>);
}

/// The store's commit listener, handing each durable entry to every [`Fanout`] in turn (the
/// hub's subscribers, the search index).
pub struct CommitFanout(pub Vec<Arc<dyn Fanout>>);

impl CommitListener for CommitFanout {
    fn on_commit(&self, entry: &Arc<LogEntry>) {
        for f in &self.0 {
            f.deliver(entry);
        }
    }
}

impl Hub {
    /// Ends every subscription of `user` to `channel` with a `SubscriptionEnded` push (the
    /// user left, was removed or banned).
    pub fn end_subscriptions(&self, channel: &ChannelId, user: &chorus_protocol::ids::UserId) {
        let Some(subs) = self.subscribers.get(channel) else {
            return;
        };
        let ended: Vec<(SessionKey, Arc<Subscription>)> = subs
            .iter()
            .filter(|(_, sub)| sub.user == *user)
            .map(|(k, sub)| (*k, sub.clone()))
            .collect();
        drop(subs);
        for (key, sub) in ended {
            self.unsubscribe(channel, key);
            sub.end();
            let reason = v1::Error::new(v1::ErrorCode::Forbidden, "no longer a member");
            sub.outbound
                .push(push_frame(Push::SubscriptionEnded(v1::SubscriptionEnded {
                    channel_id: channel.to_string(),
                    reason: Some(reason),
                })));
        }
    }
}

impl Fanout for Hub {
    fn deliver(&self, entry: &Arc<LogEntry>) {
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Ok(channel) = ChannelId::new(entry.event.channel_id.as_str()) else {
            return;
        };
        let Some(subs) = self.subscribers.get(&channel) else {
            return;
        };
        // Encoded once; every queue shares the same bytes. A withheld post has a second
        // encoding, the tombstone everyone but its author reads.
        let frame = encode_event_frame(&entry.event);
        let withheld = entry
            .withheld
            .then(|| encode_event_frame(&entry.withheld_view()));
        let author = entry.event.author_id.as_str();
        let delivered = subs
            .values()
            .filter(|sub| match &withheld {
                Some(other) if sub.user.as_str() != author => sub.deliver(entry.seq, other),
                _ => sub.deliver(entry.seq, &frame),
            })
            .count() as u64;
        self.deliveries
            .fetch_add(delivered, std::sync::atomic::Ordering::Relaxed);
        let hot = crate::metrics::HotMetrics::get();
        hot.deliveries.increment(delivered);
        let age_ms = crate::clock::unix_ms().saturating_sub(entry.event.server_time_ms);
        hot.publish_to_delivery.record(age_ms as f64 / 1000.0);
        // A member who left or was removed sees that event, then nothing more.
        let Some(Body::MemberChanged(m)) = &entry.event.body else {
            return;
        };
        let gone = matches!(
            MemberAction::try_from(m.action),
            Ok(MemberAction::Removed | MemberAction::Left | MemberAction::Banned)
        );
        if !gone {
            return;
        }
        drop(subs);
        if let Ok(user) = chorus_protocol::ids::UserId::new(m.user_id.as_str()) {
            self.end_subscriptions(&channel, &user);
        }
    }
}
