//! Channels: creating, finding, changing, archiving, joining and leaving them.

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{self, client_envelope::Request};

use super::Client;
use crate::error::Error;
use crate::types::{ChannelPage, ChannelSummary, NewChannel};

impl Client {
    /// Creates a channel (any kind; see the helpers below). The creator becomes its owner.
    pub async fn create_channel(&self, channel: NewChannel) -> Result<ChannelSummary, Error> {
        let r = self
            .plain(Request::CreateChannel(channel.into_proto()))
            .await?;
        expect_reply!(r, Channel, "CreateChannel")?.try_into()
    }

    /// Creates a group channel (members only) with its first members.
    pub async fn create_group(
        &self,
        id: &ChannelId,
        name: &str,
        members: &[UserId],
    ) -> Result<ChannelSummary, Error> {
        self.create_channel(NewChannel::group(id, name).members(members))
            .await
    }

    /// Creates a public channel, which anyone can find and join.
    pub async fn create_public(&self, id: &ChannelId, name: &str) -> Result<ChannelSummary, Error> {
        self.create_channel(NewChannel::public(id, name)).await
    }

    /// The direct channel with `user`: created on first use, the same channel afterwards.
    pub async fn direct_channel(&self, user: &UserId) -> Result<ChannelSummary, Error> {
        self.create_channel(NewChannel::direct(user)).await
    }

    /// A channel with this user's role, read position and unread count.
    pub async fn get_channel(&self, id: &ChannelId) -> Result<ChannelSummary, Error> {
        let r = self
            .plain(Request::GetChannel(v1::GetChannel {
                channel_id: id.to_string(),
            }))
            .await?;
        expect_reply!(r, Channel, "GetChannel")?.try_into()
    }

    /// This user's channels (and, with `include_public`, public ones to discover).
    pub async fn list_channels(&self, list: v1::ListChannels) -> Result<ChannelPage, Error> {
        let r = self.plain(Request::ListChannels(list)).await?;
        expect_reply!(r, ChannelList, "ListChannels")?.try_into()
    }

    /// Changes a channel's name, topic or custom data (moderators and owners).
    pub async fn update_channel(&self, update: v1::UpdateChannel) -> Result<ChannelSummary, Error> {
        let r = self.plain(Request::UpdateChannel(update)).await?;
        expect_reply!(r, Channel, "UpdateChannel")?.try_into()
    }

    /// Archives (read-only) or unarchives a channel (owners).
    pub async fn archive_channel(
        &self,
        id: &ChannelId,
        archived: bool,
    ) -> Result<ChannelSummary, Error> {
        let r = self
            .plain(Request::ArchiveChannel(v1::ArchiveChannel {
                channel_id: id.to_string(),
                archived,
            }))
            .await?;
        expect_reply!(r, Channel, "ArchiveChannel")?.try_into()
    }

    /// Joins a public channel.
    pub async fn join_channel(&self, id: &ChannelId) -> Result<ChannelSummary, Error> {
        let r = self
            .plain(Request::JoinChannel(v1::JoinChannel {
                channel_id: id.to_string(),
            }))
            .await?;
        expect_reply!(r, Channel, "JoinChannel")?.try_into()
    }

    /// Leaves a channel.
    pub async fn leave_channel(&self, id: &ChannelId) -> Result<(), Error> {
        let r = self
            .plain(Request::LeaveChannel(v1::LeaveChannel {
                channel_id: id.to_string(),
            }))
            .await?;
        expect_reply!(r, Done, "LeaveChannel").map(drop)
    }
}
