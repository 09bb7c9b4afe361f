//! Reactions, thread replies and lists, pins: requests whose entries the server derives
//! per-message state from (see [`MessageSummary`](crate::MessageSummary)).

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::{self, client_envelope::Request};

use super::Client;
use crate::error::Error;
use crate::types::{PinPage, Published, ThreadPage};

impl Client {
    /// Adds the user's reaction (an emoji such as `"👍"`, or a `:short_name:`). Reacting with
    /// the same emoji again stores nothing: the result names the first reaction, `duplicate`.
    pub async fn react(
        &self,
        id: &ChannelId,
        target: Seq,
        emoji: impl Into<String>,
    ) -> Result<Published, Error> {
        let emoji = emoji.into();
        self.append(|client_msg_id| {
            Request::React(v1::React {
                channel_id: id.to_string(),
                target_seq: target.get(),
                emoji,
                client_msg_id,
            })
        })
        .await
    }

    /// Takes back the user's reaction; [`Error::Server`] with `NOT_FOUND` when there is none.
    pub async fn unreact(
        &self,
        id: &ChannelId,
        target: Seq,
        emoji: impl Into<String>,
    ) -> Result<Published, Error> {
        let emoji = emoji.into();
        self.append(|client_msg_id| {
            Request::Unreact(v1::Unreact {
                channel_id: id.to_string(),
                target_seq: target.get(),
                emoji,
                client_msg_id,
            })
        })
        .await
    }

    /// Replies in the thread of the message at `root` (through the outbox, as
    /// [`Client::publish`]); `show_in_channel` also shows the reply in the channel's main view.
    pub async fn reply(
        &self,
        id: &ChannelId,
        root: Seq,
        text: impl Into<String>,
        show_in_channel: bool,
    ) -> Result<Published, Error> {
        self.publish(
            id,
            v1::Message {
                text: text.into(),
                thread_parent_seq: root.get(),
                show_in_channel,
                ..Default::default()
            },
        )
        .await
    }

    /// A page of the channel's threads, the latest reply first (`cursor`: from the previous
    /// page; `limit` 0: the server's default).
    pub async fn list_threads(
        &self,
        id: &ChannelId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ThreadPage, Error> {
        let r = self
            .plain(Request::ListThreads(v1::ListThreads {
                channel_id: id.to_string(),
                limit,
                cursor: cursor.unwrap_or_default().to_owned(),
            }))
            .await?;
        ThreadPage::from_proto(expect_reply!(r, ThreadList, "ListThreads")?, id)
    }

    /// Pins a message (moderators and owners); pinning it again names the first pin,
    /// `duplicate`.
    pub async fn pin(&self, id: &ChannelId, target: Seq) -> Result<Published, Error> {
        self.append(|client_msg_id| {
            Request::PinMessage(v1::PinMessage {
                channel_id: id.to_string(),
                target_seq: target.get(),
                client_msg_id,
            })
        })
        .await
    }

    /// Unpins a message (moderators and owners).
    pub async fn unpin(&self, id: &ChannelId, target: Seq) -> Result<Published, Error> {
        self.append(|client_msg_id| {
            Request::UnpinMessage(v1::UnpinMessage {
                channel_id: id.to_string(),
                target_seq: target.get(),
                client_msg_id,
            })
        })
        .await
    }

    /// A page of the channel's pins, the most recently pinned first.
    pub async fn list_pins(
        &self,
        id: &ChannelId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<PinPage, Error> {
        let r = self
            .plain(Request::ListPins(v1::ListPins {
                channel_id: id.to_string(),
                limit,
                cursor: cursor.unwrap_or_default().to_owned(),
            }))
            .await?;
        PinPage::from_proto(expect_reply!(r, PinList, "ListPins")?, id)
    }
}
