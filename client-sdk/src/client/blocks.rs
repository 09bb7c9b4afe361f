//! Blocking users. The server refuses direct channels and posts between two users once either
//! blocks the other, and hides the blocker's presence from the blocked; messages in shared
//! channels still arrive, and the app hides or marks those whose author
//! [`Client::blocked_users`] names.

use chorus_protocol::ids::UserId;
use chorus_protocol::v1::{self, client_envelope::Request};

use super::Client;
use crate::error::Error;

impl Client {
    /// Blocks a user.
    pub async fn block_user(&self, user: &UserId) -> Result<(), Error> {
        let r = self
            .plain(Request::BlockUser(v1::BlockUser {
                user_id: user.to_string(),
            }))
            .await?;
        expect_reply!(r, Done, "BlockUser").map(drop)
    }

    /// Unblocks a user.
    pub async fn unblock_user(&self, user: &UserId) -> Result<(), Error> {
        let r = self
            .plain(Request::UnblockUser(v1::UnblockUser {
                user_id: user.to_string(),
            }))
            .await?;
        expect_reply!(r, Done, "UnblockUser").map(drop)
    }

    /// Every user this user blocks (all pages), by id.
    pub async fn blocked_users(&self) -> Result<Vec<UserId>, Error> {
        let mut users = Vec::new();
        let mut cursor = String::new();
        loop {
            let r = self
                .plain(Request::ListBlocks(v1::ListBlocks { limit: 0, cursor }))
                .await?;
            let page = expect_reply!(r, BlockList, "ListBlocks")?;
            for u in page.user_ids {
                users.push(UserId::new(u).map_err(|e| Error::Protocol(e.to_string()))?);
            }
            if page.next_cursor.is_empty() {
                return Ok(users);
            }
            cursor = page.next_cursor;
        }
    }
}
