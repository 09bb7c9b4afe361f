//! `chorus-client`: the async Rust SDK that native apps embed to talk to a Chorus node.
//!
//! It connects over WebSocket (`wss://`, or `ws://` for development) or QUIC (`quic://`), offers
//! a typed async call for every request the server implements, and hands the app one event
//! stream in which every entry of its subscribed channels appears **exactly once and in order**,
//! across network drops and server restarts, with no recovery code in the app:
//!
//! - **Reconnect**: exponential backoff with full jitter; close codes are obeyed (never after a
//!   ban or an invalid token, after the advised delay when a node drains, after a token refresh
//!   when the token expired).
//! - **Resume**: the SDK tracks `(epoch, last seq)` per subscribed channel, resubscribes with it
//!   after a reconnect, drops duplicates and never lets a gap through. When the server cannot
//!   prove completeness, the app gets [`Event::Reload`] for that channel instead.
//! - **Outbox**: [`Client::publish`] queues the message with its `client_msg_id` while the
//!   connection is down and resends it until acknowledged; the server's idempotency makes every
//!   publish land once, and each call resolves once with its seq.
//! - **Bounded**: requests, the outbox and the event queue all have limits. An app that reads
//!   events slowly does not make the SDK grow: the lagging channel is resubscribed from its
//!   cursor when the app catches up.
//!
//! # Example
//! ```no_run
//! use chorus_client::{ChannelId, Client, ClientConfig, Event, TlsTrust};
//!
//! # async fn run() -> Result<(), chorus_client::Error> {
//! let config = ClientConfig::new("wss://localhost:8443/", "<access token>")?
//!     // A development node's self-signed certificate (`chorusd --dev`).
//!     .trust(TlsTrust::PinnedCertFile("chorus-data/dev-cert.pem".into()))
//!     // Called before the token expires, and when the server says it has.
//!     .token_refresher(|| async { Ok::<_, std::io::Error>("<new token>".to_owned()) });
//! let (client, mut events) = Client::connect(config).await?;
//!
//! let general = ChannelId::new("general")?;
//! client.create_public(&general, "General").await.ok(); // CONFLICT if it exists
//! client.join_channel(&general).await?;
//! client.subscribe(&general).await?;
//! let sent = client.send_text(&general, "hello").await?;
//! println!("stored at seq {}", sent.seq);
//!
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Entry(entry) => println!("#{} {:?}: {:?}", entry.seq, entry.author, entry.text()),
//!         Event::Reload { channel, head, .. } => {
//!             // Reload the channel's view with `history` up to `head`.
//!             let page = client.latest(&channel, 50).await?;
//!             println!("reloaded {} entries of {channel} (head {head})", page.entries.len());
//!         }
//!         Event::Closed { reason, .. } => {
//!             println!("stopped: {reason}");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//! Every call returns [`Error`]: the server's refusal ([`Error::Server`] with the protocol's
//! error code), [`Error::Timeout`], [`Error::ConnectionLost`] (sent, outcome unknown),
//! [`Error::Closed`] (the server forbade reconnecting), [`Error::OutboxFull`], transport and TLS
//! errors.
//!
//! # Layout
//! - `client/`: [`Client`], the handle with one typed call per request (`channels.rs`,
//!   `members.rs`, `messages.rs`, `sync.rs`).
//! - `types/`: the SDK's own types in those calls and in events (ids, [`Seq`]s, enums such as
//!   [`ChannelKind`] and [`Role`]); the generated chorus.v1 types stay available as [`proto`].
//! - `event.rs`, `status.rs`, `error.rs`, `config.rs`: [`Event`] and [`Events`], [`Status`],
//!   [`Error`], [`ClientConfig`].
//! - `session/`: the sans-IO state machine, `ClientSession`: inputs and the current time go in,
//!   frames, events, replies and the next timeout come out. It owns the connection's lifecycle
//!   and backoff (`link.rs`), what travels on a connection (`traffic.rs`), request correlation
//!   (`requests.rs`), the cursors and lagging channels (`lag.rs`), the outbox and its pacing
//!   (`outbox.rs`) and the token refresh (`refresh.rs`). It has no runtime (a test in
//!   `tests/sans_io.rs` keeps it so): its tests drive it with explicit time.
//! - `driver.rs`: the connection task, the async shell that moves bytes, time and commands
//!   between the transport, the app and the session.
//! - `transport/`: WebSocket (`ws.rs`), QUIC (`quic.rs`) and TLS trust (`tls.rs`) behind one
//!   reader/writer pair.
//! - [`raw`]: bare connections for tools that speak the protocol themselves.
//!
//! Imports go one way: `client` -> `driver` -> `session` -> `types`/`event`/`status`/`error`, and
//! `driver`/`raw` -> `config` -> `transport` -> `error`.

mod client;
mod config;
mod driver;
mod error;
mod event;
pub mod raw;
mod session;
mod status;
mod transport;
mod types;

#[cfg(test)]
mod scripted;

pub use chorus_protocol::ids::{ChannelId, Epoch, Seq, UserId};
pub use chorus_protocol::resume::SubscribeOutcome;
/// The chorus.v1 message types (requests, replies, entries), as generated from the `.proto`
/// files.
pub use chorus_protocol::v1 as proto;
pub use client::{Client, SearchPages, new_client_msg_id};
pub use config::{AppInfo, ClientConfig, TokenFuture, TokenRefresher};
pub use error::{Cause, Error, ServerError, TransportError};
pub use event::{Event, Events};
pub use status::Status;
pub use transport::tls::TlsTrust;
pub use transport::{Endpoint, Scheme};
pub use types::{
    Channel, ChannelKind, ChannelPage, ChannelSummary, ChannelUnread, CustomEvent, Entry,
    EntryBody, Flag, FlagPage, FlagResolution, HistoryPage, Member, MemberAction, MemberChange,
    MemberPage, Membership, MessageSummary, NewChannel, Notice, NoticeLevel, Pin, PinPage,
    Presence, PresenceStatus, Published, Reaction, ReadMarker, Role, SearchHit, SearchOrder,
    SearchPage, SearchQuery, Snippet, Subscription, ThreadPage, ThreadSummary, TombstoneReason,
    Typing, UnreadCounts,
};
