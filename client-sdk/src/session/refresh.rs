//! The token-refresh state machine (`docs/protocol.md` section 5.6), one for both reasons to
//! refresh: in band before the token expires (`RefreshToken` on the open connection), and before
//! reconnecting after the server closed with `AUTH_EXPIRED`. Either way the app's refresher is
//! asked for a token; what the token is for decides what happens next.
//!
//! Expiries are in the server's clock; the caller converts them with the clock of the last
//! `Welcome`, so no local wall clock is involved.

use std::time::{Duration, Instant};

/// A failed in-band refresh is retried this much later.
pub(super) const REFRESH_RETRY: Duration = Duration::from_secs(10);

/// The most a refresh is made ahead of expiry.
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// What a fetched token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Sent in band as `RefreshToken`.
    InBand,
    /// Used for the next `Hello`.
    Reconnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing planned: no refresher, no expiry, or offline with a valid token.
    Idle,
    /// Refresh in band at this time.
    Due(Instant),
    /// The app's refresher is running.
    Fetching(Purpose),
    /// An in-band `RefreshToken` is in flight.
    Sending,
    /// Ask the refresher again at this time.
    Retry(Instant, Purpose),
}

/// What the session does with a fetched token (or failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Fetched {
    /// Nothing was waiting for it (the connection dropped meanwhile).
    Ignored,
    /// Send `RefreshToken` with it.
    SendInBand(String),
    /// The in-band refresh failed; it is retried after [`REFRESH_RETRY`].
    InBandFailed(String),
    /// Reconnect with it.
    Reconnect(String),
    /// The refresh before reconnecting failed: retry after a backoff delay
    /// ([`Refresh::retry_reconnect_at`]).
    ReconnectFailed(String),
}

/// One client's token refresh.
#[derive(Debug)]
pub(super) struct Refresh {
    has_refresher: bool,
    state: State,
}

impl Refresh {
    /// Without a refresher the state machine stays idle: an expired token ends the client.
    pub(super) fn new(has_refresher: bool) -> Self {
        Self {
            has_refresher,
            state: State::Idle,
        }
    }

    /// Plans the in-band refresh for a token valid until `expires_at_ms` (server clock, 0 for
    /// no expiry), when a fifth of its remaining lifetime, at most a minute, is left.
    pub(super) fn schedule(&mut self, now: Instant, server_now_ms: u64, expires_at_ms: u64) {
        if !self.has_refresher || expires_at_ms == 0 {
            self.state = State::Idle;
            return;
        }
        let left = Duration::from_millis(expires_at_ms.saturating_sub(server_now_ms));
        let margin = (left / 5).min(MAX_MARGIN);
        self.state = State::Due(now + left.saturating_sub(margin));
    }

    /// The server refused the session's `RefreshToken`: the old token stays in force; try again.
    pub(super) fn refused(&mut self, now: Instant) {
        self.state = State::Retry(now + REFRESH_RETRY, Purpose::InBand);
    }

    /// The server closed with `AUTH_EXPIRED`. Returns whether a token is being fetched (false:
    /// no refresher, so the client cannot go on).
    pub(super) fn auth_expired(&mut self) -> bool {
        if !self.has_refresher {
            return false;
        }
        self.state = State::Fetching(Purpose::Reconnect);
        true
    }

    /// The retry of a failed refresh before reconnecting.
    pub(super) fn retry_reconnect_at(&mut self, at: Instant) {
        self.state = State::Retry(at, Purpose::Reconnect);
    }

    /// Returns whether to ask the app's refresher for a token now.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.state {
            State::Due(at) if now >= at => {
                self.state = State::Fetching(Purpose::InBand);
                true
            }
            State::Retry(at, purpose) if now >= at => {
                self.state = State::Fetching(purpose);
                true
            }
            _ => false,
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Due(at) | State::Retry(at, _) => Some(at),
            _ => None,
        }
    }

    /// The app's refresher answered.
    pub(super) fn fetched(&mut self, now: Instant, result: Result<String, String>) -> Fetched {
        let State::Fetching(purpose) = self.state else {
            return Fetched::Ignored;
        };
        match (purpose, result) {
            (Purpose::InBand, Ok(token)) => {
                self.state = State::Sending;
                Fetched::SendInBand(token)
            }
            (Purpose::InBand, Err(e)) => {
                self.state = State::Retry(now + REFRESH_RETRY, Purpose::InBand);
                Fetched::InBandFailed(e)
            }
            (Purpose::Reconnect, Ok(token)) => {
                self.state = State::Idle;
                Fetched::Reconnect(token)
            }
            (Purpose::Reconnect, Err(e)) => {
                // Stays fetching until the session sets the retry time.
                Fetched::ReconnectFailed(e)
            }
        }
    }

    /// The connection dropped: an in-band refresh has nothing to go to, and the next `Welcome`
    /// plans anew. A refresh before reconnecting goes on.
    pub(super) fn connection_lost(&mut self) {
        if !matches!(
            self.state,
            State::Fetching(Purpose::Reconnect) | State::Retry(_, Purpose::Reconnect)
        ) {
            self.state = State::Idle;
        }
    }

    /// The session stopped.
    pub(super) fn stop(&mut self) {
        self.state = State::Idle;
    }
}
