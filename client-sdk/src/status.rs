//! A snapshot of the connection for the app's UI (online indicator, pending messages).

use std::time::Duration;

use chorus_protocol::v1;

/// Where the client stands. Read it with [`Client::status`](crate::Client::status), or wait
/// for changes with [`Client::watch_status`](crate::Client::watch_status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Whether a connection is up (said `Hello`, got `Welcome`).
    pub connected: bool,
    /// The current (or last) session id.
    pub session_id: String,
    /// The node serving the session.
    pub node_id: String,
    /// The authenticated user.
    pub user_id: String,
    /// The limits the server announced.
    pub limits: Option<v1::Limits>,
    /// The last heartbeat's round-trip time.
    pub rtt: Option<Duration>,
    /// Publishes not yet acknowledged.
    pub outbox_len: usize,
    /// Ephemeral events (typing, presence, read markers) dropped because the app lagged.
    pub dropped_ephemeral: u64,
}
