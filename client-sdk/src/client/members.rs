//! A channel's members and their roles.

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{self, client_envelope::Request};

use super::Client;
use crate::error::Error;
use crate::types::{MemberPage, Role};

impl Client {
    /// Adds members to a group or public channel (moderators and owners).
    pub async fn add_members(&self, id: &ChannelId, users: &[UserId]) -> Result<(), Error> {
        let r = self
            .plain(Request::AddMembers(v1::AddMembers {
                channel_id: id.to_string(),
                user_ids: users.iter().map(ToString::to_string).collect(),
            }))
            .await?;
        expect_reply!(r, Done, "AddMembers").map(drop)
    }

    /// Removes a member (moderators and owners, over lower roles).
    pub async fn remove_member(&self, id: &ChannelId, user: &UserId) -> Result<(), Error> {
        let r = self
            .plain(Request::RemoveMember(v1::RemoveMember {
                channel_id: id.to_string(),
                user_id: user.to_string(),
            }))
            .await?;
        expect_reply!(r, Done, "RemoveMember").map(drop)
    }

    /// Changes a member's role (owners).
    pub async fn set_member_role(
        &self,
        id: &ChannelId,
        user: &UserId,
        role: Role,
    ) -> Result<(), Error> {
        let r = self
            .plain(Request::SetMemberRole(v1::SetMemberRole {
                channel_id: id.to_string(),
                user_id: user.to_string(),
                role: role.to_proto(),
            }))
            .await?;
        expect_reply!(r, Done, "SetMemberRole").map(drop)
    }

    /// A page of a channel's members; pass the previous page's `next_cursor` for the next.
    pub async fn list_members(
        &self,
        id: &ChannelId,
        limit: u32,
        cursor: &str,
    ) -> Result<MemberPage, Error> {
        let r = self
            .plain(Request::ListMembers(v1::ListMembers {
                channel_id: id.to_string(),
                limit,
                cursor: cursor.to_owned(),
            }))
            .await?;
        expect_reply!(r, MemberList, "ListMembers")?.try_into()
    }
}
