//! What the SDK tells the app, in order, through the event stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::{CloseCode, RecoveryFailure};
use futures_util::Stream;
use tokio::sync::mpsc;

use crate::error::ServerError;
use crate::types::{CustomEvent, Entry, Membership, Notice, Presence, ReadMarker, Typing};

/// One thing that happened. Channel entries arrive exactly once and in seq order per channel,
/// across reconnects; when that cannot be proven the app gets [`Event::Reload`] instead of a
/// silent gap.
// Entries, the large variant, are nearly all events: boxing them would add an allocation per
// entry and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A connection is up and `Hello` was answered. `reconnect` is false for the first one.
    Connected {
        /// The server's session id.
        session_id: String,
        /// The node that serves the session.
        node_id: String,
        /// Whether this follows a lost connection.
        reconnect: bool,
    },
    /// The connection dropped; the SDK reconnects after `retry_in` (resubscribing and resending
    /// the outbox by itself).
    Disconnected {
        /// The server's close code, when it sent one.
        code: Option<CloseCode>,
        /// Why, for logs.
        reason: String,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// A durable entry of a subscribed channel (a message, an edit, a deletion, a membership
    /// change...), the next one in that channel's seq order.
    Entry(Entry),
    /// The SDK could not prove that no entry of `channel` was missed (history was cut, or the
    /// client was away longer than the server replays): the app must reload the channel with
    /// `history` up to and including `head`. Entries after `head` arrive as `Entry` events.
    Reload {
        /// The channel.
        channel: ChannelId,
        /// Why.
        reason: RecoveryFailure,
        /// Reload up to here.
        head: Seq,
    },
    /// A subscription ended without the app asking (removed from the channel, channel deleted,
    /// or a resubscription refused): no more entries of this channel will come.
    SubscriptionEnded {
        /// The channel.
        channel: ChannelId,
        /// The server's reason.
        reason: Option<ServerError>,
    },
    /// Someone started or stopped typing (ephemeral: may be dropped when the app lags).
    Typing(Typing),
    /// An app-defined event (ephemeral: may be dropped when the app lags).
    Custom(CustomEvent),
    /// A presence change (ephemeral).
    Presence(Presence),
    /// A read marker moved, for this user on another device or for a channel member
    /// (ephemeral).
    ReadMarker(ReadMarker),
    /// A notice from the server operators.
    Notice(Notice),
    /// This user joined or left a channel (or was added or removed): refresh the channel list.
    Membership(Membership),
    /// The client stopped for good: a close code that forbids reconnecting, a failed token
    /// refresh, or `close()`. No events follow.
    Closed {
        /// The close code, when the server sent one.
        code: Option<CloseCode>,
        /// Why.
        reason: String,
    },
}

/// The app's stream of [`Event`]s. It ends after [`Event::Closed`].
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event (`None` once the client has stopped).
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
