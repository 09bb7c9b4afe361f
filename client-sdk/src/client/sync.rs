//! Subscriptions, history, read markers, unread counts and typing.

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::{self, client_envelope::Request};

use super::Client;
use crate::error::Error;
use crate::session::RequestKind;
use crate::types::{HistoryPage, ReadMarker, Subscription, UnreadCounts};

impl Client {
    /// Subscribes to a channel's entries: they arrive as [`Event::Entry`](crate::Event::Entry),
    /// exactly once and in order, across reconnects, from the channel's head at this moment
    /// (load older ones with [`Client::history`]). After [`Client::unsubscribe`] the cursor is
    /// forgotten: subscribing again starts at the new head.
    pub async fn subscribe(&self, id: &ChannelId) -> Result<Subscription, Error> {
        let r = self
            .call(
                // Built by the session when sent, from the channel's cursor.
                Request::Subscribe(v1::Subscribe::default()),
                RequestKind::Subscribe(id.clone()),
            )
            .await?;
        let s = expect_reply!(r, Subscribed, "Subscribe")?;
        if let Some(e) = s.error {
            return Err(e.into());
        }
        Ok(Subscription::from_reply(&s))
    }

    /// Stops a subscription.
    pub async fn unsubscribe(&self, id: &ChannelId) -> Result<(), Error> {
        let r = self
            .call(
                Request::Unsubscribe(v1::Unsubscribe {
                    channel_id: id.to_string(),
                }),
                RequestKind::Unsubscribe(id.clone()),
            )
            .await?;
        expect_reply!(r, Done, "Unsubscribe").map(drop)
    }

    /// A page of a channel's log (anchor, limit, thread filter as in `History`).
    pub async fn history(&self, query: v1::History) -> Result<HistoryPage, Error> {
        let r = self.plain(Request::History(query)).await?;
        expect_reply!(r, HistoryPage, "History")?.try_into()
    }

    /// The latest `limit` entries of a channel (0: the server's default), oldest first.
    pub async fn latest(&self, id: &ChannelId, limit: u32) -> Result<HistoryPage, Error> {
        self.history(v1::History {
            channel_id: id.to_string(),
            limit,
            ..Default::default()
        })
        .await
    }

    /// Marks a channel read up to `seq` (markers only move forward).
    pub async fn mark_read(&self, id: &ChannelId, seq: Seq) -> Result<ReadMarker, Error> {
        let r = self
            .plain(Request::MarkRead(v1::MarkRead {
                channel_id: id.to_string(),
                seq: seq.get(),
            }))
            .await?;
        expect_reply!(r, ReadMarker, "MarkRead")?.try_into()
    }

    /// Unread and mention counts of the given channels (all of this user's when empty).
    pub async fn unread(&self, ids: &[ChannelId]) -> Result<UnreadCounts, Error> {
        let r = self
            .plain(Request::GetUnread(v1::GetUnread {
                channel_ids: ids.iter().map(ToString::to_string).collect(),
            }))
            .await?;
        expect_reply!(r, UnreadCounts, "GetUnread")?.try_into()
    }

    /// Tells the channel this user is (or stopped) typing; `thread` for a thread's composer.
    pub async fn typing(
        &self,
        id: &ChannelId,
        typing: bool,
        thread: Option<Seq>,
    ) -> Result<(), Error> {
        let r = self
            .plain(Request::Typing(v1::Typing {
                channel_id: id.to_string(),
                typing,
                thread_parent_seq: thread.map_or(0, Seq::get),
            }))
            .await?;
        expect_reply!(r, Done, "Typing").map(drop)
    }

    /// Sends an app-defined ephemeral event (`kind`: 1 to 64 bytes of ASCII letters, digits,
    /// `.`, `_`, `-`, `:`) to the channel's other live subscribers; nothing is stored.
    pub async fn send_event(
        &self,
        id: &ChannelId,
        kind: &str,
        payload: impl Into<bytes::Bytes>,
        thread: Option<Seq>,
    ) -> Result<(), Error> {
        let r = self
            .plain(Request::SendEvent(v1::SendEvent {
                channel_id: id.to_string(),
                r#type: kind.to_owned(),
                payload: payload.into(),
                thread_parent_seq: thread.map_or(0, Seq::get),
            }))
            .await?;
        expect_reply!(r, Done, "SendEvent").map(drop)
    }
}
