//! Presence: online, away, do not disturb, invisible or offline, per user across all their
//! sessions, with an optional status text. Ephemeral (nothing is logged); a user's last-seen
//! time is in their user record, so it survives restarts.
//!
//! Who sees whom: with `presence_shared_only` (the default), only users who share a channel;
//! a user who blocks another appears offline to them, and so does an invisible user to
//! everyone but themself. Changes reach watchers through the presence pump
//! (`background::presence`), coalesced to one push per user per second.

use std::collections::HashSet;

use chorus_protocol::ids::UserId;
use chorus_protocol::limits::DEFAULT_MAX_PRESENCE_WATCH;
use chorus_protocol::v1::{self, PresenceStatus, push::Push};

use super::{Actor, Chat, Error, user_id};
use crate::hub::presence::Chosen;
use crate::ids::SessionKey;
use crate::node::Node;
use crate::ratelimit::TokenBucket;

/// Users one `WatchPresence` or `GetPresence` names at most.
pub const MAX_PRESENCE_BATCH: usize = 100;
/// Longest status text, bytes.
pub const MAX_STATUS_TEXT_BYTES: usize = 256;
/// A target's channels examined when looking for one shared with the viewer.
const SHARED_SCAN: usize = 1_000;

impl Chat<'_> {
    /// Sets the acting user's status and text, shown on all their sessions.
    pub fn set_presence(&self, p: &v1::SetPresence, budget: &mut TokenBucket) -> Result<(), Error> {
        let Actor::User(me) = self.actor else {
            return Err(Error::Forbidden("a user has a presence".into()));
        };
        let status = PresenceStatus::try_from(p.status).unwrap_or(PresenceStatus::Unspecified);
        if !matches!(
            status,
            PresenceStatus::Online
                | PresenceStatus::Away
                | PresenceStatus::DoNotDisturb
                | PresenceStatus::Invisible
        ) {
            return Err(Error::invalid(
                "status",
                "online, away, do not disturb or invisible (invisible appears offline)",
            ));
        }
        if p.status_text.len() > MAX_STATUS_TEXT_BYTES {
            return Err(Error::too_large(
                "status_text",
                "a status text is at most 256 bytes",
            ));
        }
        take(budget)?;
        self.node.hub().presence().choose(
            me,
            Chosen {
                status,
                text: p.status_text.clone(),
            },
        );
        Ok(())
    }

    /// Watches users (those the actor may see; the others are left out of the reply and not
    /// watched), returning their presence. `watching` is the session's set, at most
    /// `max_presence_watch` users.
    pub fn watch_presence(
        &self,
        ids: &[String],
        session: SessionKey,
        watching: &mut HashSet<UserId>,
        budget: &mut TokenBucket,
    ) -> Result<v1::PresenceList, Error> {
        let me = self.me()?;
        take(budget)?;
        let users = self.visible(ids)?;
        let new: Vec<UserId> = users
            .iter()
            .filter(|u| !watching.contains(*u))
            .cloned()
            .collect();
        if watching.len() + new.len() > DEFAULT_MAX_PRESENCE_WATCH as usize {
            return Err(Error::LimitExceeded {
                field: Some("user_ids"),
                message: format!("a session watches at most {DEFAULT_MAX_PRESENCE_WATCH} users"),
            });
        }
        self.node.hub().presence().watch(session, me, &new);
        watching.extend(new);
        self.presence_list(&users)
    }

    /// Stops watching users.
    pub fn unwatch_presence(
        &self,
        ids: &[String],
        session: SessionKey,
        watching: &mut HashSet<UserId>,
    ) -> Result<(), Error> {
        let users = parse_ids(ids)?;
        self.node.hub().presence().unwatch(session, &users);
        for u in &users {
            watching.remove(u);
        }
        Ok(())
    }

    /// The presence of users the actor may see, once.
    pub fn get_presence(
        &self,
        ids: &[String],
        budget: &mut TokenBucket,
    ) -> Result<v1::PresenceList, Error> {
        self.me()?;
        take(budget)?;
        let users = self.visible(ids)?;
        self.presence_list(&users)
    }

    fn presence_list(&self, users: &[UserId]) -> Result<v1::PresenceList, Error> {
        let viewer = self.me()?;
        let users = users
            .iter()
            .map(|u| presence_of(self.node, u, viewer))
            .collect::<Result<_, _>>()?;
        Ok(v1::PresenceList { users })
    }

    fn me(&self) -> Result<&UserId, Error> {
        self.actor
            .user()
            .ok_or_else(|| Error::Forbidden("a user watches presence".into()))
    }

    /// The users of `ids` whose presence the actor may see.
    fn visible(&self, ids: &[String]) -> Result<Vec<UserId>, Error> {
        let me = self.me()?;
        let users = parse_ids(ids)?;
        if !self.node.limits().presence_shared_only {
            return Ok(users);
        }
        let store = self.node.store();
        let max = self.node.limits().max_memberships_per_user as usize;
        let mine: HashSet<_> = store.user_channels(me, None, max)?.into_iter().collect();
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            if u == *me
                || store
                    .user_channels(&u, None, SHARED_SCAN)?
                    .iter()
                    .any(|c| mine.contains(c))
            {
                out.push(u);
            }
        }
        Ok(out)
    }
}

fn parse_ids(ids: &[String]) -> Result<Vec<UserId>, Error> {
    if ids.len() > MAX_PRESENCE_BATCH {
        return Err(Error::LimitExceeded {
            field: Some("user_ids"),
            message: format!("at most {MAX_PRESENCE_BATCH} users per request"),
        });
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let u = user_id("user_ids", id)?;
        if seen.insert(u.clone()) {
            out.push(u);
        }
    }
    Ok(out)
}

fn take(budget: &mut TokenBucket) -> Result<(), Error> {
    budget
        .take(std::time::Instant::now())
        .map_err(|retry_after_ms| {
            metrics::counter!("chorus_rate_limited_total", "kind" => "presence").increment(1);
            Error::RateLimited {
                message: "presence rate exceeded",
                retry_after_ms,
            }
        })
}

/// `user`'s presence as `viewer` sees it.
pub fn presence_of(node: &Node, user: &UserId, viewer: &UserId) -> Result<v1::Presence, Error> {
    let chosen = node.hub().presence().chosen(user);
    let online = node.hub().user_session_count(user) > 0;
    let blocked = user != viewer && node.store().blocks(user, viewer)?;
    let invisible = user != viewer && chosen.status == PresenceStatus::Invisible;
    if online && !blocked && !invisible {
        return Ok(v1::Presence {
            user_id: user.to_string(),
            status: chosen.status as i32,
            status_text: chosen.text,
            last_seen_ms: crate::clock::unix_ms(),
        });
    }
    // Offline, or appearing so: the last time the user was seen connected (nothing for a
    // user who blocks the viewer).
    let last_seen_ms = if blocked {
        0
    } else {
        node.store().user(user)?.map_or(0, |r| r.last_seen_ms)
    };
    Ok(v1::Presence {
        user_id: user.to_string(),
        status: PresenceStatus::Offline as i32,
        status_text: String::new(),
        last_seen_ms,
    })
}

/// Pushes `user`'s presence to every session watching it, as each watcher may see it.
pub fn push_presence(node: &Node, user: &UserId) {
    for (session, watcher) in node.hub().presence().watchers_of(user) {
        match presence_of(node, user, &watcher) {
            Ok(p) => node.hub().push_to_session(session, Push::Presence(p)),
            Err(e) => tracing::debug!(%user, error = %e, "presence not pushed"),
        }
    }
}

/// After a session of `user` ended: when it was the last, the user is offline from now on,
/// recorded as their last-seen time (in the background: the connection is gone already).
pub fn session_ended(node: &Node, user: &UserId) {
    node.hub().presence().changed(user);
    if node.hub().user_session_count(user) > 0 {
        return;
    }
    let (store, user) = (node.store().clone(), user.clone());
    let now = crate::clock::unix_ms();
    node.background().spawn(async move {
        if let Err(e) = store.update_user(&user, |u| u.last_seen_ms = now).await {
            tracing::warn!(error = %e, %user, "recording last-seen failed");
        }
    });
}
