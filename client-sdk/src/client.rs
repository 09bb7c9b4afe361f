//! The app's handle: one typed async method per request the server implements.

use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::ids::{ChannelId, Epoch, Seq, UserId};
use chorus_protocol::resume::SubscribeOutcome;
use chorus_protocol::v1::{
    self, ChannelKind, RecoveryFailure, Role, client_envelope::Request, reply,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::driver::{Command, Driver, RequestKind};
use crate::error::Error;
use crate::event::Events;
use crate::status::Status;

/// A connected chat client. Cheap to clone: every clone drives the same connection task, which
/// reconnects, resubscribes and resends by itself. The task stops when [`Client::close`] is
/// called or the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("status", &*self.inner.status.borrow())
            .finish_non_exhaustive()
    }
}

/// A publish's acknowledgement: the message is durable at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The message's position in the channel.
    pub seq: Seq,
    /// The channel's history generation.
    pub epoch: Epoch,
    /// When the server stored it.
    pub server_time_ms: u64,
    /// The server had already stored this `client_msg_id` (a resend): `seq` is the original.
    pub duplicate: bool,
    /// The idempotency key the message was sent with.
    pub client_msg_id: String,
}

/// A subscription's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The channel's history generation.
    pub epoch: Epoch,
    /// The channel's last seq when the subscription started.
    pub head: Seq,
    /// The oldest seq still stored.
    pub first_available: Seq,
    /// What the app has to do: nothing (`Recovered`), load older entries if it wants
    /// (`Fresh`), or reload the channel up to `head` (`Reload`).
    pub outcome: SubscribeOutcome,
}

impl Subscription {
    fn from_reply(s: &v1::Subscribed) -> Self {
        let head = Seq(s.head_seq);
        let outcome = if s.recovered {
            SubscribeOutcome::Recovered
        } else {
            match RecoveryFailure::try_from(s.failure).unwrap_or(RecoveryFailure::Unspecified) {
                RecoveryFailure::NoCursor | RecoveryFailure::Unspecified => {
                    SubscribeOutcome::Fresh { head }
                }
                reason => SubscribeOutcome::Reload { reason, head },
            }
        };
        Self {
            epoch: Epoch(s.epoch),
            head,
            first_available: Seq(s.first_available_seq),
            outcome,
        }
    }
}

/// Matches a reply against the one kind a request expects.
macro_rules! expect_reply {
    ($result:expr, $variant:ident, $request:literal) => {
        match $result {
            reply::Result::$variant(v) => Ok(v),
            other => Err(Error::unexpected($request, other.name())),
        }
    };
}

/// A fresh idempotency key: 128 random bits in hex.
pub fn new_client_msg_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Client {
    /// Connects (transport, TLS, `Hello`) and starts the connection task. Fails if this first
    /// attempt fails: a wrong URL, an unreachable node, a refused token. After it, connection
    /// losses are handled inside the client and reported as events.
    pub async fn connect(config: ClientConfig) -> Result<(Client, Events), Error> {
        let (commands, command_rx) = mpsc::channel(config.request_queue);
        let (events, event_rx) = mpsc::channel(config.event_capacity);
        let (status_tx, status) = watch::channel(Status::default());
        let request_timeout = config.request_timeout;
        let driver = Driver::new(config, command_rx, events, status_tx);
        let (first_tx, first_rx) = oneshot::channel();
        tokio::spawn(driver.run(first_tx));
        first_rx.await.map_err(|_| Error::Shutdown)??;
        Ok((
            Client {
                inner: Arc::new(Inner {
                    commands,
                    status,
                    request_timeout,
                }),
            },
            Events { rx: event_rx },
        ))
    }

    /// A snapshot of the connection state.
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// A receiver that wakes on every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.inner.status.clone()
    }

    /// Closes the connection (close code NORMAL) and stops the task. Unacknowledged publishes
    /// fail with [`Error::Shutdown`]; the event stream ends after [`Event::Closed`](crate::Event::Closed).
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Close { done })
            .await
            .is_ok()
        {
            let _ = wait.await;
        }
    }

    async fn call(&self, request: Request, kind: RequestKind) -> Result<reply::Result, Error> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let (reply, wait) = oneshot::channel();
        let send = self.inner.commands.send(Command::Request {
            request,
            kind,
            reply,
        });
        match tokio::time::timeout_at(deadline, send).await {
            Err(_) => return Err(Error::Timeout),
            Ok(Err(_)) => return Err(Error::Shutdown),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, wait).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(_)) => Err(Error::Shutdown),
            Ok(Ok(result)) => result,
        }
    }

    async fn plain(&self, request: Request) -> Result<reply::Result, Error> {
        self.call(request, RequestKind::Plain).await
    }

    /// Measures the round trip to the server.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        let r = self
            .plain(Request::Ping(v1::Ping { client_time_ms: 0 }))
            .await?;
        expect_reply!(r, Pong, "Ping")?;
        Ok(start.elapsed())
    }

    /// Replaces the session's token in band (the SDK also does this by itself when a token
    /// refresher is configured). The new token is used for later reconnects too. Returns the
    /// new expiry (Unix ms, 0 for none).
    pub async fn refresh_token(&self, token: impl Into<String>) -> Result<u64, Error> {
        let token = token.into();
        let r = self
            .call(
                Request::RefreshToken(v1::RefreshToken {
                    token: token.clone(),
                }),
                RequestKind::RefreshToken(token),
            )
            .await?;
        Ok(expect_reply!(r, TokenRefreshed, "RefreshToken")?.token_expires_at_ms)
    }

    /// Creates a channel (any kind; see the helpers below). The creator becomes its owner.
    pub async fn create_channel(
        &self,
        create: v1::CreateChannel,
    ) -> Result<v1::ChannelSummary, Error> {
        let r = self.plain(Request::CreateChannel(create)).await?;
        expect_reply!(r, Channel, "CreateChannel")
    }

    /// Creates a group channel (members only) with its first members.
    pub async fn create_group(
        &self,
        id: &ChannelId,
        name: &str,
        members: &[UserId],
    ) -> Result<v1::ChannelSummary, Error> {
        self.create_channel(v1::CreateChannel {
            kind: ChannelKind::Group as i32,
            channel_id: id.to_string(),
            name: name.to_owned(),
            member_ids: members.iter().map(ToString::to_string).collect(),
            ..Default::default()
        })
        .await
    }

    /// Creates a public channel, which anyone can find and join.
    pub async fn create_public(
        &self,
        id: &ChannelId,
        name: &str,
    ) -> Result<v1::ChannelSummary, Error> {
        self.create_channel(v1::CreateChannel {
            kind: ChannelKind::Public as i32,
            channel_id: id.to_string(),
            name: name.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// The direct channel with `user`: created on first use, the same channel afterwards.
    pub async fn direct_channel(&self, user: &UserId) -> Result<v1::ChannelSummary, Error> {
        self.create_channel(v1::CreateChannel {
            kind: ChannelKind::Direct as i32,
            member_ids: vec![user.to_string()],
            ..Default::default()
        })
        .await
    }

    /// A channel with this user's role, read position and unread count.
    pub async fn get_channel(&self, id: &ChannelId) -> Result<v1::ChannelSummary, Error> {
        let r = self
            .plain(Request::GetChannel(v1::GetChannel {
                channel_id: id.to_string(),
            }))
            .await?;
        expect_reply!(r, Channel, "GetChannel")
    }

    /// This user's channels (and, with `include_public`, public ones to discover).
    pub async fn list_channels(&self, list: v1::ListChannels) -> Result<v1::ChannelList, Error> {
        let r = self.plain(Request::ListChannels(list)).await?;
        expect_reply!(r, ChannelList, "ListChannels")
    }

    /// Changes a channel's name, topic or custom data (moderators and owners).
    pub async fn update_channel(
        &self,
        update: v1::UpdateChannel,
    ) -> Result<v1::ChannelSummary, Error> {
        let r = self.plain(Request::UpdateChannel(update)).await?;
        expect_reply!(r, Channel, "UpdateChannel")
    }

    /// Archives (read-only) or unarchives a channel (owners).
    pub async fn archive_channel(
        &self,
        id: &ChannelId,
        archived: bool,
    ) -> Result<v1::ChannelSummary, Error> {
        let r = self
            .plain(Request::ArchiveChannel(v1::ArchiveChannel {
                channel_id: id.to_string(),
                archived,
            }))
            .await?;
        expect_reply!(r, Channel, "ArchiveChannel")
    }

    /// Joins a public channel.
    pub async fn join_channel(&self, id: &ChannelId) -> Result<v1::ChannelSummary, Error> {
        let r = self
            .plain(Request::JoinChannel(v1::JoinChannel {
                channel_id: id.to_string(),
            }))
            .await?;
        expect_reply!(r, Channel, "JoinChannel")
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
                role: role as i32,
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
    ) -> Result<v1::MemberList, Error> {
        let r = self
            .plain(Request::ListMembers(v1::ListMembers {
                channel_id: id.to_string(),
                limit,
                cursor: cursor.to_owned(),
            }))
            .await?;
        expect_reply!(r, MemberList, "ListMembers")
    }

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
        appended(wait.await.map_err(|_| Error::Shutdown)??, client_msg_id)
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
        appended(expect_reply!(r, Appended, "EditMessage")?, client_msg_id)
    }

    /// Deletes a message: its content becomes a tombstone; its seq stays, so the log stays
    /// gapless.
    pub async fn delete_message(&self, id: &ChannelId, seq: Seq) -> Result<Published, Error> {
        let client_msg_id = new_client_msg_id();
        let r = self
            .plain(Request::DeleteMessage(v1::DeleteMessage {
                channel_id: id.to_string(),
                target_seq: seq.get(),
                client_msg_id: client_msg_id.clone(),
            }))
            .await?;
        appended(expect_reply!(r, Appended, "DeleteMessage")?, client_msg_id)
    }

    /// Subscribes to a channel's entries: they arrive as [`Event::Entry`](crate::Event::Entry),
    /// exactly once and in order, across reconnects, from the channel's head at this moment
    /// (load older ones with [`Client::history`]). After [`Client::unsubscribe`] the cursor is
    /// forgotten: subscribing again starts at the new head.
    pub async fn subscribe(&self, id: &ChannelId) -> Result<Subscription, Error> {
        let r = self
            .call(
                // Built by the connection task when sent, from the channel's cursor.
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
    pub async fn history(&self, query: v1::History) -> Result<v1::HistoryPage, Error> {
        let r = self.plain(Request::History(query)).await?;
        expect_reply!(r, HistoryPage, "History")
    }

    /// The latest `limit` entries of a channel (0: the server's default), oldest first.
    pub async fn latest(&self, id: &ChannelId, limit: u32) -> Result<v1::HistoryPage, Error> {
        self.history(v1::History {
            channel_id: id.to_string(),
            limit,
            ..Default::default()
        })
        .await
    }

    /// Marks a channel read up to `seq` (markers only move forward).
    pub async fn mark_read(&self, id: &ChannelId, seq: Seq) -> Result<v1::ReadMarker, Error> {
        let r = self
            .plain(Request::MarkRead(v1::MarkRead {
                channel_id: id.to_string(),
                seq: seq.get(),
            }))
            .await?;
        expect_reply!(r, ReadMarker, "MarkRead")
    }

    /// Unread and mention counts of the given channels (all of this user's when empty).
    pub async fn unread(&self, ids: &[ChannelId]) -> Result<v1::UnreadCounts, Error> {
        let r = self
            .plain(Request::GetUnread(v1::GetUnread {
                channel_ids: ids.iter().map(ToString::to_string).collect(),
            }))
            .await?;
        expect_reply!(r, UnreadCounts, "GetUnread")
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
}

fn appended(a: v1::Appended, client_msg_id: String) -> Result<Published, Error> {
    Ok(Published {
        seq: Seq(a.seq),
        epoch: Epoch(a.epoch),
        server_time_ms: a.server_time_ms,
        duplicate: a.duplicate,
        client_msg_id,
    })
}
