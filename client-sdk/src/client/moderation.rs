//! Moderation in a channel: mute, ban (removing or shadow), and lifting them.

use std::time::Duration;

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{self, client_envelope::Request};

use super::Client;
use crate::error::Error;

/// How long a mute or ban lasts, as the wire's milliseconds (0: until lifted).
fn millis(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

impl Client {
    /// Mutes a member (moderators, owners): they may read but not post or react, for `duration`
    /// (`None`: until unmuted).
    pub async fn mute(
        &self,
        id: &ChannelId,
        user: &UserId,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<(), Error> {
        let r = self
            .plain(Request::MuteMember(v1::MuteMember {
                channel_id: id.to_string(),
                user_id: user.to_string(),
                duration_ms: millis(duration),
                reason: reason.to_owned(),
            }))
            .await?;
        expect_reply!(r, Done, "MuteMember").map(drop)
    }

    /// Lifts a mute.
    pub async fn unmute(&self, id: &ChannelId, user: &UserId) -> Result<(), Error> {
        let r = self
            .plain(Request::UnmuteMember(v1::UnmuteMember {
                channel_id: id.to_string(),
                user_id: user.to_string(),
            }))
            .await?;
        expect_reply!(r, Done, "UnmuteMember").map(drop)
    }

    /// Bans a user from a channel (moderators, owners) for `duration` (`None`: until
    /// unbanned). A ban removes them; a `shadow` ban keeps them, and withholds their posts
    /// from everyone else without telling them.
    pub async fn ban(
        &self,
        id: &ChannelId,
        user: &UserId,
        duration: Option<Duration>,
        reason: &str,
        shadow: bool,
    ) -> Result<(), Error> {
        let r = self
            .plain(Request::BanMember(v1::BanMember {
                channel_id: id.to_string(),
                user_id: user.to_string(),
                duration_ms: millis(duration),
                reason: reason.to_owned(),
                shadow,
            }))
            .await?;
        expect_reply!(r, Done, "BanMember").map(drop)
    }

    /// Lifts a ban of either kind.
    pub async fn unban(&self, id: &ChannelId, user: &UserId) -> Result<(), Error> {
        let r = self
            .plain(Request::UnbanMember(v1::UnbanMember {
                channel_id: id.to_string(),
                user_id: user.to_string(),
            }))
            .await?;
        expect_reply!(r, Done, "UnbanMember").map(drop)
    }
}
