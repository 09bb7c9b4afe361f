//! The hub: who is connected and who listens to which channel, in sharded maps (no global lock
//! on the publish path), and the pushes that reach them: ephemeral frames here, durable entries
//! through [`fanout`].
//!
//! - [`subscription`]: one connection's subscription to one channel and its state.
//! - [`fanout`]: the [`Fanout`] seam and the store's commit listener.

pub mod fanout;
pub mod presence;
pub mod subscription;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chorus_protocol::codec::encode_frame_to_bytes;
use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::ServerEnvelope;
use chorus_protocol::v1::push::Push;
use dashmap::DashMap;

pub use fanout::{CommitFanout, Fanout};
pub use subscription::{SubState, Subscription};

use crate::ids::{SessionId, SessionKey, Transport};
use crate::outbound::{Close, Outbound};

/// A connected session, as others see it.
#[derive(Debug)]
pub struct SessionEntry {
    /// The user.
    pub user: UserId,
    /// Its queue, to push to it and to close it.
    pub outbound: Arc<Outbound>,
    /// What admins see of it.
    pub info: SessionInfo,
}

/// A session as `chorusctl connections list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    /// The session id (also in `Welcome`).
    pub session_id: SessionId,
    /// The user.
    pub user: String,
    /// The transport it came over.
    pub transport: Transport,
    /// The client's address.
    pub peer: String,
    /// When the session started, unix ms.
    pub connected_at_ms: u64,
}

/// The registries.
#[derive(Debug, Default)]
pub struct Hub {
    /// Presence: chosen statuses, watchers, pending pushes.
    presence: presence::Presences,
    sessions: DashMap<SessionKey, SessionEntry>,
    by_user: DashMap<UserId, Vec<SessionKey>>,
    subscribers: DashMap<ChannelId, HashMap<SessionKey, Arc<Subscription>>>,
    deliveries: std::sync::atomic::AtomicU64,
    commits: std::sync::atomic::AtomicU64,
}

impl Hub {
    /// Registers a session unless its user already holds `max_per_user` sessions.
    pub fn add_session(
        &self,
        key: SessionKey,
        user: &UserId,
        outbound: Arc<Outbound>,
        max_per_user: usize,
        info: SessionInfo,
    ) -> bool {
        let mut keys = self.by_user.entry(user.clone()).or_default();
        if keys.len() >= max_per_user {
            return false;
        }
        keys.push(key);
        drop(keys);
        self.sessions.insert(
            key,
            SessionEntry {
                user: user.clone(),
                outbound,
                info,
            },
        );
        true
    }

    /// Forgets a session and its subscriptions.
    pub fn remove_session(&self, key: SessionKey, channels: impl IntoIterator<Item = ChannelId>) {
        for channel in channels {
            self.unsubscribe(&channel, key);
        }
        if let Some((_, entry)) = self.sessions.remove(&key) {
            let now_empty = match self.by_user.get_mut(&entry.user) {
                Some(mut keys) => {
                    keys.retain(|k| *k != key);
                    keys.is_empty()
                }
                None => false,
            };
            if now_empty {
                self.by_user
                    .remove_if(&entry.user, |_, keys| keys.is_empty());
            }
        }
    }

    /// Adds a subscription in the replaying state.
    pub fn subscribe(&self, channel: &ChannelId, key: SessionKey, sub: Arc<Subscription>) {
        self.subscribers
            .entry(channel.clone())
            .or_default()
            .insert(key, sub);
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, channel: &ChannelId, key: SessionKey) {
        if let Some(mut subs) = self.subscribers.get_mut(channel) {
            subs.remove(&key);
        }
        self.subscribers
            .remove_if(channel, |_, subs| subs.is_empty());
    }

    /// Pushes an ephemeral event (typing) to a channel's subscribers other than `except`.
    pub fn broadcast(&self, channel: &ChannelId, push: Push, except: SessionKey) {
        if let Some(subs) = self.subscribers.get(channel) {
            let frame = push_frame(push);
            for (key, sub) in subs.iter() {
                if *key != except {
                    sub.outbound.push(frame.clone());
                }
            }
        }
    }

    /// Presence: chosen statuses, watchers, pending pushes.
    pub fn presence(&self) -> &presence::Presences {
        &self.presence
    }

    /// Pushes an ephemeral event to one session, if it is still connected.
    pub fn push_to_session(&self, key: SessionKey, push: Push) {
        if let Some(entry) = self.sessions.get(&key) {
            entry.outbound.push(push_frame(push));
        }
    }

    /// Pushes an ephemeral event to the sessions of `user` other than `except` (the user's
    /// other devices; [`SessionKey::NONE`]: all of them).
    pub fn push_to_user(&self, user: &UserId, push: Push, except: SessionKey) {
        let keys: Vec<SessionKey> = self
            .by_user
            .get(user)
            .map(|k| k.iter().copied().filter(|k| *k != except).collect())
            .unwrap_or_default();
        if keys.is_empty() {
            // Nobody to tell: not even encoded.
            return;
        }
        let frame = push_frame(push);
        for key in keys {
            if let Some(entry) = self.sessions.get(&key) {
                entry.outbound.push(frame.clone());
            }
        }
    }

    /// Pushes an ephemeral event to a channel's subscribers who are not `user` (read
    /// receipts: the user's own sessions get their own version), unless the channel has more
    /// than `max_subscribers` of them.
    pub fn broadcast_to_others(
        &self,
        channel: &ChannelId,
        push: Push,
        user: &UserId,
        max_subscribers: usize,
    ) {
        let Some(subs) = self.subscribers.get(channel) else {
            return;
        };
        if subs.len() > max_subscribers {
            metrics::counter!("chorus_read_receipts_skipped_total", "reason" => "too_many_subscribers")
                .increment(1);
            return;
        }
        let frame = push_frame(push);
        for sub in subs.values() {
            if &sub.user != user {
                sub.outbound.push(frame.clone());
            }
        }
        metrics::counter!("chorus_read_receipts_total").increment(1);
    }

    /// Closes every session (shutdown, drain).
    pub fn close_all(&self, close: &Close) {
        for entry in self.sessions.iter() {
            entry.outbound.close(close.clone());
        }
    }

    /// Connected sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions of one user.
    pub fn user_session_count(&self, user: &UserId) -> usize {
        self.by_user.get(user).map_or(0, |k| k.len())
    }

    /// Events pushed to subscribers so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Durable entries fanned out so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Subscriptions across all sessions.
    pub fn subscription_count(&self) -> usize {
        self.subscribers.iter().map(|s| s.len()).sum()
    }

    /// Sessions (of one user, or all) with their subscription counts, oldest first.
    pub fn sessions(&self, user: Option<&UserId>) -> Vec<(SessionInfo, usize)> {
        let mut subs: HashMap<SessionKey, usize> = HashMap::new();
        for channel in self.subscribers.iter() {
            for key in channel.keys() {
                *subs.entry(*key).or_default() += 1;
            }
        }
        let mut out: Vec<(SessionInfo, usize)> = self
            .sessions
            .iter()
            .filter(|e| user.is_none_or(|u| &e.user == u))
            .map(|e| (e.info.clone(), subs.get(e.key()).copied().unwrap_or(0)))
            .collect();
        out.sort_by(|a, b| {
            (a.0.connected_at_ms, &a.0.session_id).cmp(&(b.0.connected_at_ms, &b.0.session_id))
        });
        out
    }

    /// Closes the session with this id; says whether it existed.
    pub fn close_session(&self, session_id: &str, close: &Close) -> bool {
        let found = self
            .sessions
            .iter()
            .find(|e| e.info.session_id == *session_id)
            .map(|e| e.outbound.clone());
        match found {
            Some(outbound) => {
                outbound.close(close.clone());
                true
            }
            None => false,
        }
    }

    /// Closes every session of a user; returns how many.
    pub fn close_user(&self, user: &UserId, close: &Close) -> usize {
        let keys: Vec<SessionKey> = self
            .by_user
            .get(user)
            .map(|k| k.clone())
            .unwrap_or_default();
        let mut closed = 0;
        for key in keys {
            if let Some(entry) = self.sessions.get(&key) {
                entry.outbound.close(close.clone());
                closed += 1;
            }
        }
        closed
    }
}

/// A push encoded once, for every queue it goes to.
pub(crate) fn push_frame(push: Push) -> Bytes {
    encode_frame_to_bytes(&ServerEnvelope::push(push))
}
