//! What can go wrong on the cluster endpoint and in membership.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chorus_protocol::peer::PeerErrorCode;

/// The cluster layer's errors.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A configuration value is invalid.
    #[error("cluster config: {0}")]
    Config(String),
    /// Certificates or keys could not be made, read or used.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster endpoint could not listen.
    #[error("cannot bind the cluster endpoint on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A peer could not be reached (no route, handshake failed, refused our certificate).
    #[error("peer at {addr} unreachable: {reason}")]
    Unreachable {
        /// Where it was dialled.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A node this one has never heard of and has no address for.
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// A peer refused the handshake.
    #[error("refused by the peer at {addr}: {code:?}: {message}")]
    Refused {
        /// The peer's address.
        addr: SocketAddr,
        /// Its reason.
        code: PeerErrorCode,
        /// Its words.
        message: String,
    },
    /// A request got no answer within its deadline.
    #[error("request to {peer} timed out after {after:?}")]
    Timeout {
        /// The node asked.
        peer: String,
        /// The deadline.
        after: Duration,
    },
    /// A frame was larger than the limit.
    #[error("peer frame over the limit of {max} bytes")]
    FrameTooLarge {
        /// The limit.
        max: usize,
    },
    /// A frame did not decode, or a stream held the wrong number of frames.
    #[error("bad peer frame: {0}")]
    BadFrame(String),
    /// The connection or stream went away mid-request.
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The peer answered with an error.
    #[error("{peer} answered {code:?}: {message}")]
    Remote {
        /// The peer.
        peer: String,
        /// Its code.
        code: PeerErrorCode,
        /// Its words.
        message: String,
    },
    /// A bounded queue is full; retry later.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// The endpoint is shutting down.
    #[error("the cluster endpoint is shutting down")]
    Closed,
}
