//! What error codes and close codes mean for a client: whether to retry, whether and when to
//! reconnect, and how close codes travel on each transport. The codes themselves are the
//! `ErrorCode` and `CloseCode` enums of `proto/chorus/v1/errors.proto`.

use crate::v1::{CloseCode, Disconnect, Error, ErrorCode};

/// What a client should do after the server closed its connection with a given code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reconnect {
    /// Reconnect at once and resume: the close was about this connection only (slow consumer).
    Immediately,
    /// Reconnect with exponential backoff and full jitter, then resume.
    WithBackoff,
    /// Reconnect after `Disconnect.reconnect_after_ms` (or the client's backoff when 0), trying
    /// `Disconnect.alternate_urls` first: the node is going away.
    AfterAdvisedDelay,
    /// Get a fresh token from the app, then reconnect.
    AfterTokenRefresh,
    /// Do not reconnect automatically; tell the app.
    Never,
}

/// WebSocket close codes 4000-4999 are for applications; chorus uses 4000 + `CloseCode`.
pub const WEBSOCKET_CLOSE_BASE: u16 = 4000;

impl CloseCode {
    /// The reconnect advice that comes with this code.
    pub const fn reconnect(self) -> Reconnect {
        match self {
            CloseCode::SlowConsumer => Reconnect::Immediately,
            CloseCode::GoingAway => Reconnect::AfterAdvisedDelay,
            CloseCode::AuthExpired => Reconnect::AfterTokenRefresh,
            CloseCode::Normal
            | CloseCode::Banned
            | CloseCode::AuthInvalid
            | CloseCode::UnsupportedVersion => Reconnect::Never,
            CloseCode::Unspecified
            | CloseCode::PolicyViolation
            | CloseCode::ProtocolError
            | CloseCode::HandshakeTimeout
            | CloseCode::IdleTimeout
            | CloseCode::Kicked
            | CloseCode::InternalError
            | CloseCode::TooManyConnections => Reconnect::WithBackoff,
        }
    }

    /// The code of the WebSocket close frame: 4000 + this code.
    pub fn websocket_code(self) -> u16 {
        // Close codes are small protobuf enum values (0..=14).
        WEBSOCKET_CLOSE_BASE + self as u16
    }

    /// The close code behind a WebSocket close frame's code, if it is one of ours.
    pub fn from_websocket_code(code: u16) -> Option<Self> {
        let value = code.checked_sub(WEBSOCKET_CLOSE_BASE)?;
        CloseCode::try_from(i32::from(value)).ok()
    }

    /// The QUIC application close code: the code itself.
    pub fn quic_code(self) -> u32 {
        self as u32
    }

    /// The close code behind a QUIC application close code, if it is one of ours.
    pub fn from_quic_code(code: u64) -> Option<Self> {
        let value = i32::try_from(code).ok()?;
        CloseCode::try_from(value).ok()
    }

    /// The `Disconnect` push announcing this close, with the reconnect flag set from the code's
    /// advice.
    pub fn disconnect(self, reason: impl Into<String>) -> Disconnect {
        Disconnect {
            code: self as i32,
            reason: reason.into(),
            reconnect: self.reconnect() != Reconnect::Never,
            reconnect_after_ms: 0,
            alternate_urls: Vec::new(),
        }
    }
}

impl ErrorCode {
    /// Whether the same request may succeed if sent again unchanged. Publishes are safe to retry
    /// because of `client_msg_id`.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal
        )
    }
}

impl Error {
    /// An error with a code and a human-readable message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
            retry_after_ms: 0,
            field: String::new(),
        }
    }

    /// Names the request field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// Advises the earliest useful retry.
    pub fn with_retry_after_ms(mut self, ms: u32) -> Self {
        self.retry_after_ms = ms;
        self
    }

    /// The code, with unknown values (from a newer server) read as `Unspecified`.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::try_from(self.code).unwrap_or(ErrorCode::Unspecified)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_code().as_str_name(), self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CLOSE_CODES: [CloseCode; 15] = [
        CloseCode::Unspecified,
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::SlowConsumer,
        CloseCode::PolicyViolation,
        CloseCode::AuthExpired,
        CloseCode::ProtocolError,
        CloseCode::Banned,
        CloseCode::AuthInvalid,
        CloseCode::HandshakeTimeout,
        CloseCode::IdleTimeout,
        CloseCode::UnsupportedVersion,
        CloseCode::Kicked,
        CloseCode::InternalError,
        CloseCode::TooManyConnections,
    ];

    #[test]
    fn close_codes_round_trip_through_both_transports() {
        for code in ALL_CLOSE_CODES {
            assert_eq!(
                CloseCode::from_websocket_code(code.websocket_code()),
                Some(code)
            );
            assert_eq!(
                CloseCode::from_quic_code(u64::from(code.quic_code())),
                Some(code)
            );
            assert!((4000..5000).contains(&code.websocket_code()));
        }
        assert_eq!(CloseCode::from_websocket_code(1000), None);
        assert_eq!(CloseCode::from_websocket_code(4999), None);
        assert_eq!(CloseCode::from_quic_code(u64::MAX), None);
    }

    #[test]
    fn bans_and_bad_tokens_never_reconnect() {
        assert_eq!(CloseCode::Banned.reconnect(), Reconnect::Never);
        assert_eq!(CloseCode::AuthInvalid.reconnect(), Reconnect::Never);
        assert_eq!(
            CloseCode::AuthExpired.reconnect(),
            Reconnect::AfterTokenRefresh
        );
        assert_eq!(CloseCode::SlowConsumer.reconnect(), Reconnect::Immediately);
        assert!(!CloseCode::Banned.disconnect("banned").reconnect);
        assert!(CloseCode::GoingAway.disconnect("draining").reconnect);
    }

    #[test]
    fn unknown_error_codes_read_as_unspecified() {
        let e = Error {
            code: 999,
            ..Error::new(ErrorCode::Internal, "x")
        };
        assert_eq!(e.error_code(), ErrorCode::Unspecified);
        assert!(ErrorCode::RateLimited.is_retryable());
        assert!(!ErrorCode::Forbidden.is_retryable());
    }
}
