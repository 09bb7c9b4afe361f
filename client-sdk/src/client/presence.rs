//! Presence: this user's status, and watching other users'. Watches belong to the connection:
//! after a reconnect, watch again (the `Connected` event says when).

use chorus_protocol::ids::UserId;
use chorus_protocol::v1::{self, client_envelope::Request};

use super::Client;
use crate::error::Error;
use crate::types::{Presence, PresenceStatus};

impl Client {
    /// Sets this user's status (online, away, do not disturb, or invisible: appearing
    /// offline) and status text, on all their sessions.
    pub async fn set_presence(&self, status: PresenceStatus, text: &str) -> Result<(), Error> {
        let r = self
            .plain(Request::SetPresence(v1::SetPresence {
                status: status.to_proto(),
                status_text: text.to_owned(),
            }))
            .await?;
        expect_reply!(r, Done, "SetPresence").map(drop)
    }

    /// Watches users (at most 100 per call): their presence now, then `Event::Presence` on
    /// each change. Users this user may not see are left out.
    pub async fn watch_presence(&self, users: &[UserId]) -> Result<Vec<Presence>, Error> {
        let r = self
            .plain(Request::WatchPresence(v1::WatchPresence {
                user_ids: users.iter().map(ToString::to_string).collect(),
            }))
            .await?;
        list(expect_reply!(r, PresenceList, "WatchPresence")?)
    }

    /// Stops watching users.
    pub async fn unwatch_presence(&self, users: &[UserId]) -> Result<(), Error> {
        let r = self
            .plain(Request::UnwatchPresence(v1::UnwatchPresence {
                user_ids: users.iter().map(ToString::to_string).collect(),
            }))
            .await?;
        expect_reply!(r, Done, "UnwatchPresence").map(drop)
    }

    /// The presence of users now, without watching them.
    pub async fn presence(&self, users: &[UserId]) -> Result<Vec<Presence>, Error> {
        let r = self
            .plain(Request::GetPresence(v1::GetPresence {
                user_ids: users.iter().map(ToString::to_string).collect(),
            }))
            .await?;
        list(expect_reply!(r, PresenceList, "GetPresence")?)
    }
}

fn list(l: v1::PresenceList) -> Result<Vec<Presence>, Error> {
    l.users.into_iter().map(Presence::try_from).collect()
}
