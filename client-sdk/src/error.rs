//! The SDK's one error type. Every failure an app can see is a variant here, so that an app can
//! decide per kind whether to retry, re-authenticate, or tell the user.

use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::v1::{self, CloseCode, ErrorCode};

/// An error the server returned for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The protocol's error code.
    pub code: ErrorCode,
    /// A human-readable explanation (for logs, not for matching).
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
    /// When the server asked the client to wait before trying again.
    pub retry_after: Option<Duration>,
}

impl ServerError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }
}

impl From<v1::Error> for ServerError {
    fn from(e: v1::Error) -> Self {
        let code = e.error_code();
        Self {
            code,
            message: e.message,
            field: (!e.field.is_empty()).then_some(e.field),
            retry_after: (e.retry_after_ms > 0)
                .then(|| Duration::from_millis(u64::from(e.retry_after_ms))),
        }
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str_name(), self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field {field})")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong for an app using the SDK.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a `ws://`, `wss://` or `quic://` URL the SDK can use.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An argument was refused before anything was sent (an invalid id, for example).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The TLS settings could not be used (unreadable CA file, bad certificate).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The transport could not be established or failed (DNS, TCP, TLS handshake, QUIC).
    #[error("transport error: {0}")]
    Transport(#[from] TransportError),
    /// The server sent something that does not follow chorus.v1.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused the request.
    #[error("server error {0}")]
    Server(ServerError),
    /// No reply within the request timeout. The request may still take effect.
    #[error("timed out")]
    Timeout,
    /// The connection dropped after the request was sent and before its reply: the request may
    /// or may not have taken effect. (Publishes never fail this way: the outbox resends them.)
    #[error("connection lost before the reply: the request may or may not have taken effect")]
    ConnectionLost,
    /// The server closed the connection for good (an invalid token, a ban, an unsupported
    /// protocol version): the client does not reconnect.
    #[error("closed by the server ({}): {reason}", code.as_str_name())]
    Closed {
        /// The close code.
        code: CloseCode,
        /// The server's reason.
        reason: String,
    },
    /// The outbox already holds as many unacknowledged publishes as it may.
    #[error("the outbox is full ({capacity} publishes are waiting to be sent)")]
    OutboxFull {
        /// The outbox's capacity.
        capacity: usize,
    },
    /// The token-refresh callback failed, or none is configured when the token expired.
    #[error("token refresh failed: {0}")]
    TokenRefresh(String),
    /// The client was shut down (by `close`, or because its connection task ended).
    #[error("the client is shut down")]
    Shutdown,
}

impl Error {
    /// The server's error code, when the server refused the request.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server(e) => Some(e.code),
            _ => None,
        }
    }

    pub(crate) fn unexpected(request: &'static str, got: &'static str) -> Self {
        Error::Protocol(format!("reply {got} to a {request} request"))
    }
}

impl From<v1::Error> for Error {
    fn from(e: v1::Error) -> Self {
        Error::Server(e.into())
    }
}

impl From<chorus_protocol::ids::IdError> for Error {
    fn from(e: chorus_protocol::ids::IdError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

/// The cause of a failure below the protocol, shared so that an [`Error`] stays cloneable (one
/// goes to every call waiting on a connection).
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a transport could not be established, or ended.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The host name did not resolve to an address.
    #[error("resolve {host}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// What the resolver said.
        #[source]
        source: Cause,
    },
    /// The TCP connection could not be opened.
    #[error("connect {url}: {source}")]
    Connect {
        /// The URL dialled.
        url: String,
        /// The socket error.
        #[source]
        source: Cause,
    },
    /// The TLS handshake failed (an untrusted or mismatched certificate, for example).
    #[error("TLS handshake: {0}")]
    TlsHandshake(#[source] Cause),
    /// The server did not upgrade the connection to a chorus WebSocket.
    #[error("WebSocket upgrade: {0}")]
    Upgrade(String),
    /// A QUIC step failed: binding the endpoint, connecting, opening the stream.
    #[error("QUIC {step}: {source}")]
    Quic {
        /// `endpoint`, `connect` or `stream`.
        step: &'static str,
        /// quinn's error.
        #[source]
        source: Cause,
    },
    /// A write to the connection failed.
    #[error("write: {0}")]
    Write(String),
    /// The connection closed before the session was established, with no close code.
    #[error("{0}")]
    Closed(String),
}

impl TransportError {
    /// A [`TransportError::Quic`] for `step` caused by `source`.
    pub(crate) fn quic(
        step: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        TransportError::Quic {
            step,
            source: Arc::new(source),
        }
    }
}
