//! The node's own ids (the protocol's ids are in `chorus_protocol::ids`): the key a session has
//! in the hub, the id it is announced by, and the transport it came over.

use std::fmt;

/// A session's key in the hub: small, copied on every subscription and push, never sent to
/// clients. Keys start at 1; [`SessionKey::NONE`] is no session's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(u64);

impl SessionKey {
    /// A key no session has: "except nobody" where a push skips the sender's session.
    pub const NONE: SessionKey = SessionKey(0);

    /// The key with this number (the node hands them out from 1).
    pub(crate) const fn new(n: u64) -> Self {
        Self(n)
    }
}

/// A session's id as `Welcome` announces it and `chorusctl connections` shows it: `s-` and 16
/// hex digits, random, so that one session's id tells nothing of another's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(random_id("s-"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for SessionId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// The transport a client connection came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Transport {
    /// WebSocket, over TCP with or without TLS.
    #[serde(rename = "websocket")]
    Ws,
    /// QUIC, one bidirectional stream.
    #[serde(rename = "quic")]
    Quic,
}

impl Transport {
    /// The label in metrics and admin output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "websocket",
            Transport::Quic => "quic",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `prefix` and 16 random hex digits: ids the node makes (sessions, channels, direct channels).
pub(crate) fn random_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_have_their_prefix_and_differ() {
        let (a, b) = (SessionId::random(), SessionId::random());
        assert!(a.as_str().starts_with("s-") && a.as_str().len() == 18);
        assert_ne!(a, b);
    }

    #[test]
    fn transports_serialize_as_their_labels() {
        assert_eq!(serde_json::to_string(&Transport::Quic).unwrap(), "\"quic\"");
        assert_eq!(Transport::Ws.to_string(), "websocket");
    }
}
