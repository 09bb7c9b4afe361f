//! Presence state: each user's chosen status, who watches whom (by session), and which users'
//! presence changed since it was last pushed. Data only: what a watcher may see and the pushes
//! themselves are the chat domain's (`chat::presence`) and the presence pump's.

use std::collections::HashMap;
use std::time::Duration;

use chorus_protocol::ids::UserId;
use chorus_protocol::v1::PresenceStatus;
use dashmap::DashMap;
use tokio::time::Instant;

use crate::ids::SessionKey;

/// What a user chose to show while connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Online, away, do not disturb, or invisible.
    pub status: PresenceStatus,
    /// Their own words.
    pub text: String,
}

/// The node's presence state.
#[derive(Debug, Default)]
pub struct Presences {
    /// Users who chose something other than plain online (kept across their sessions, until
    /// the node restarts or they choose online again).
    chosen: DashMap<UserId, Chosen>,
    /// Who watches each user: session -> the watching user.
    watchers: DashMap<UserId, HashMap<SessionKey, UserId>>,
    /// Users whose presence changed, with when they were last pushed (`None`: never).
    dirty: DashMap<UserId, Option<Instant>>,
    /// When each user's presence was last pushed, for the rate of pushes per user.
    pushed: DashMap<UserId, Instant>,
}

impl Presences {
    /// What `user` chose (plain online when nothing).
    pub fn chosen(&self, user: &UserId) -> Chosen {
        self.chosen.get(user).map_or(
            Chosen {
                status: PresenceStatus::Online,
                text: String::new(),
            },
            |c| c.clone(),
        )
    }

    /// Records what `user` chose.
    pub fn choose(&self, user: &UserId, chosen: Chosen) {
        if chosen.status == PresenceStatus::Online && chosen.text.is_empty() {
            self.chosen.remove(user);
        } else {
            self.chosen.insert(user.clone(), chosen);
        }
        self.changed(user);
    }

    /// `session` of `watcher` watches `targets`.
    pub fn watch(&self, session: SessionKey, watcher: &UserId, targets: &[UserId]) {
        for t in targets {
            self.watchers
                .entry(t.clone())
                .or_default()
                .insert(session, watcher.clone());
        }
    }

    /// `session` stops watching `targets`.
    pub fn unwatch(&self, session: SessionKey, targets: &[UserId]) {
        for t in targets {
            if let Some(mut w) = self.watchers.get_mut(t) {
                w.remove(&session);
                let empty = w.is_empty();
                drop(w);
                if empty {
                    self.watchers.remove_if(t, |_, w| w.is_empty());
                }
            }
        }
    }

    /// The sessions watching `user`, with their users.
    pub fn watchers_of(&self, user: &UserId) -> Vec<(SessionKey, UserId)> {
        self.watchers.get(user).map_or_else(Vec::new, |w| {
            w.iter().map(|(k, u)| (*k, u.clone())).collect()
        })
    }

    /// `user`'s presence changed: the pump pushes it to the watchers.
    pub fn changed(&self, user: &UserId) {
        if !self.watchers.contains_key(user) {
            return;
        }
        let last = self.pushed.get(user).map(|t| *t);
        self.dirty.entry(user.clone()).or_insert(last);
    }

    /// The changed users whose last push is at least `interval` ago, taken out of the set;
    /// the others wait for a later call, so that one user's changes reach watchers at most
    /// once per `interval`, the latest state winning.
    pub fn take_due(&self, now: Instant, interval: Duration) -> Vec<UserId> {
        let mut due = Vec::new();
        self.dirty.retain(|user, last| {
            if last.is_none_or(|t| now.duration_since(t) >= interval) {
                // Recorded before the user leaves the set (under its shard's lock): a change
                // made meanwhile reads this push's time and waits its turn.
                self.pushed.insert(user.clone(), now);
                due.push(user.clone());
                false
            } else {
                true
            }
        });
        // Users pushed long ago need no record of it.
        self.pushed
            .retain(|_, t| now.duration_since(*t) < interval * 2);
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::new(s).unwrap_or_else(|_| unreachable!())
    }

    #[tokio::test(start_paused = true)]
    async fn changes_are_coalesced_to_one_push_per_interval() {
        let p = Presences::default();
        let interval = Duration::from_secs(1);
        p.changed(&u("a"));
        assert!(
            p.take_due(Instant::now(), interval).is_empty(),
            "nobody watches a"
        );
        p.watch(SessionKey::NONE, &u("w"), &[u("a")]);
        p.changed(&u("a"));
        assert_eq!(p.take_due(Instant::now(), interval), [u("a")]);
        // Three changes within the interval: one push, when it has passed.
        for _ in 0..3 {
            p.changed(&u("a"));
        }
        assert!(p.take_due(Instant::now(), interval).is_empty());
        tokio::time::advance(interval).await;
        assert_eq!(p.take_due(Instant::now(), interval), [u("a")]);
        assert!(p.take_due(Instant::now(), interval).is_empty());
        p.unwatch(SessionKey::NONE, &[u("a")]);
        assert!(p.watchers_of(&u("a")).is_empty());
    }
}
