//! The app's handle: one typed async method per request the server implements.
//!
//! - this module: connecting, closing, the status, and the plumbing every call goes through;
//! - [`channels`]: creating, finding, changing, joining and leaving channels;
//! - [`members`]: a channel's members and their roles;
//! - [`messages`]: publishing (through the outbox), editing and deleting;
//! - [`search`]: message search and its paginator;
//! - [`sync`]: subscriptions, history, read markers, unread counts and typing.

/// Matches a reply against the one kind a request expects.
macro_rules! expect_reply {
    ($result:expr, $variant:ident, $request:literal) => {
        match $result {
            ::chorus_protocol::v1::reply::Result::$variant(v) => Ok(v),
            other => Err($crate::error::Error::unexpected($request, other.name())),
        }
    };
}

mod blocks;
mod channels;
mod derived;
mod members;
mod messages;
mod moderation;
mod presence;
mod search;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::v1::{self, client_envelope::Request, reply};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::driver::{Command, Driver};
use crate::error::Error;
use crate::event::Events;
use crate::session::RequestKind;
use crate::status::Status;

pub use search::SearchPages;

pub use messages::new_client_msg_id;

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

    /// Sends a request and waits for its reply, within the request timeout (queueing
    /// included).
    async fn call(&self, request: Request, kind: RequestKind) -> Result<reply::Result, Error> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let (reply, wait) = oneshot::channel();
        let send = self.inner.commands.send(Command::Request {
            request,
            kind,
            deadline,
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
}
