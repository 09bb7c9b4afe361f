//! Moderation in a channel: mute, ban (removing or shadow), and lifting them.

use std::time::Duration;

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1::{self, client_envelope::Request};

use super::Client;
use crate::error::Error;
use crate::types::{FlagPage, FlagResolution};

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

    /// Reports a message to the channel's moderators.
    pub async fn flag_message(&self, id: &ChannelId, seq: Seq, reason: &str) -> Result<(), Error> {
        self.flag(id, seq.get(), "", reason).await
    }

    /// Reports a user to the channel's moderators.
    pub async fn flag_user(
        &self,
        id: &ChannelId,
        user: &UserId,
        reason: &str,
    ) -> Result<(), Error> {
        self.flag(id, 0, user.as_str(), reason).await
    }

    async fn flag(&self, id: &ChannelId, seq: u64, user: &str, reason: &str) -> Result<(), Error> {
        let r = self
            .plain(Request::FlagMessage(v1::FlagMessage {
                channel_id: id.to_string(),
                seq,
                reason: reason.to_owned(),
                user_id: user.to_owned(),
            }))
            .await?;
        expect_reply!(r, Done, "FlagMessage").map(drop)
    }

    /// The channel's flags, newest first (moderators and owners); `include_resolved` adds the
    /// closed ones.
    pub async fn list_flags(
        &self,
        id: &ChannelId,
        include_resolved: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<FlagPage, Error> {
        let r = self
            .plain(Request::ListFlags(v1::ListFlags {
                channel_id: id.to_string(),
                include_resolved,
                limit,
                cursor: cursor.unwrap_or_default().to_owned(),
            }))
            .await?;
        Ok(FlagPage::from_proto(
            expect_reply!(r, FlagList, "ListFlags")?,
            id,
        ))
    }

    /// Closes a flag (moderators and owners).
    pub async fn resolve_flag(
        &self,
        id: &ChannelId,
        flag_id: &str,
        resolution: FlagResolution,
        note: &str,
    ) -> Result<(), Error> {
        let r = self
            .plain(Request::ResolveFlag(v1::ResolveFlag {
                channel_id: id.to_string(),
                flag_id: flag_id.to_owned(),
                resolution: resolution.to_proto(),
                note: note.to_owned(),
            }))
            .await?;
        expect_reply!(r, Done, "ResolveFlag").map(drop)
    }
}
