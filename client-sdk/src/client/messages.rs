//! Publishing (through the outbox), editing and deleting messages.

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::{self, client_envelope::Request};
use tokio::sync::oneshot;

use super::Client;
use crate::driver::Command;
use crate::error::Error;
use crate::types::Published;

/// A fresh idempotency key: 128 random bits in hex.
pub fn new_client_msg_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Client {
    /// Publishes a message and waits until it is durable. It goes through the outbox: if the
    /// connection is down it waits there, and it is resent after reconnects with the same
    /// `client_msg_id` (generated when empty) until acknowledged, so it is stored exactly once.
    /// The request timeout does not apply; wrap the call in a timeout to stop waiting (the
    /// message is still sent). Fails at once with [`Error::OutboxFull`] when the outbox is full.
    pub async fn publish(
        &self,
        id: &ChannelId,
        mut message: v1::Message,
    ) -> Result<Published, Error> {
        if message.client_msg_id.is_empty() {
            message.client_msg_id = new_client_msg_id();
        }
        let client_msg_id = message.client_msg_id.clone();
        let (reply, wait) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Publish {
                publish: v1::Publish {
                    channel_id: id.to_string(),
                    message: Some(message),
                },
                reply,
            })
            .await
            .map_err(|_| Error::Shutdown)?;
        let r = wait.await.map_err(|_| Error::Shutdown)??;
        Ok(Published::new(
            expect_reply!(r, Appended, "Publish")?,
            client_msg_id,
        ))
    }

    /// Publishes a plain text message.
    pub async fn send_text(
        &self,
        id: &ChannelId,
        text: impl Into<String>,
    ) -> Result<Published, Error> {
        self.publish(
            id,
            v1::Message {
                text: text.into(),
                ..Default::default()
            },
        )
        .await
    }

    /// Replaces a message's content (its author, or a moderator for removals). The edit is an
    /// entry of its own (`MessageEdited`) that clients fold into the target.
    pub async fn edit_message(&self, mut edit: v1::EditMessage) -> Result<Published, Error> {
        if edit.client_msg_id.is_empty() {
            edit.client_msg_id = new_client_msg_id();
        }
        let client_msg_id = edit.client_msg_id.clone();
        let r = self.plain(Request::EditMessage(edit)).await?;
        Ok(Published::new(
            expect_reply!(r, Appended, "EditMessage")?,
            client_msg_id,
        ))
    }

    /// Deletes a message: its content becomes a tombstone; its seq stays, so the log stays
    /// gapless.
    pub async fn delete_message(&self, id: &ChannelId, seq: Seq) -> Result<Published, Error> {
        self.append(|client_msg_id| {
            Request::DeleteMessage(v1::DeleteMessage {
                channel_id: id.to_string(),
                target_seq: seq.get(),
                client_msg_id,
            })
        })
        .await
    }

    /// Sends a request that appends one entry, made by `request` with a fresh idempotency
    /// key, and waits for its `Appended` reply.
    pub(super) async fn append(
        &self,
        request: impl FnOnce(String) -> Request,
    ) -> Result<Published, Error> {
        let key = new_client_msg_id();
        let request = request(key.clone());
        let name = request.name();
        match self.plain(request).await? {
            v1::reply::Result::Appended(a) => Ok(Published::new(a, key)),
            other => Err(Error::unexpected(name, other.name())),
        }
    }
}
