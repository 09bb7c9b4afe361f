//! The errors of each layer and operation family: the engine's, opening a store, reading,
//! writing, and backups.
//!
//! Each operation returns the narrowest error it can produce: a read cannot be refused for a
//! full disk or a read-only store, so [`ReadError`] has no such variants, and a caller
//! matching on it has no cases that cannot happen. Writes return [`StoreError`], which holds
//! every read failure too (a write reads before it writes) through `From<ReadError>`.

use std::path::PathBuf;
use std::sync::Arc;

use chorus_protocol::ids::{ChannelId, Seq, UserId};

/// A failure inside a storage engine (I/O, corruption, the engine's own poisoning).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine reported an error; the text is the engine's.
    #[error("{engine}: {message}")]
    Backend {
        /// Which engine.
        engine: &'static str,
        /// The engine's description of the failure.
        message: String,
    },
    /// An I/O error outside the engine's own calls (e.g. syncing its files).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A value is larger than the engine can store safely.
    #[error("value of {len} bytes is over the limit of {max}")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The engine refused work after an earlier failure (a test's injected fault, or a real one).
    #[error("engine failed earlier and refuses writes: {0}")]
    Failed(String),
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another `Store` in this process) holds the data directory.
    #[error("the data directory {dir} is in use by another process (lock file {lock})")]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The directory holds data of another engine or format version.
    #[error("the data directory {dir} holds {found}, but {expected} was asked for")]
    WrongFormat {
        /// The data directory.
        dir: PathBuf,
        /// What the marker file says.
        found: String,
        /// What this build and configuration expect.
        expected: String,
    },
    /// The engine could not read the data: a corrupt or truncated data directory.
    #[error("the data directory {dir} is corrupt or unreadable: {message}")]
    Corrupt {
        /// The data directory.
        dir: PathBuf,
        /// What the engine said.
        message: String,
    },
    /// An I/O error while preparing the directory.
    #[error("I/O on {dir}: {source}")]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The engine is not compiled into this build.
    #[error("the {0} engine is not compiled into this build (cargo feature)")]
    EngineNotBuilt(&'static str),
}

/// Why a read (a log page, an entry, a position, a metadata record) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The channel does not exist.
    #[error("channel {0} does not exist")]
    ChannelNotFound(ChannelId),
    /// The engine failed while reading.
    #[error("storage engine: {0}")]
    Engine(#[source] Arc<EngineError>),
    /// Stored bytes do not decode: corruption, or data from a newer incompatible version.
    #[error("corrupt record under key {key}: {message}")]
    Corrupt {
        /// The key, in hex.
        key: String,
        /// What failed to decode.
        message: String,
    },
}

impl From<EngineError> for ReadError {
    fn from(e: EngineError) -> Self {
        ReadError::Engine(Arc::new(e))
    }
}

/// Why a write (an append, a rewrite, a metadata change, a sync) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A write failed to become durable earlier; the store accepts no more writes until it is
    /// reopened, and keeps serving reads.
    #[error("the store is read-only after a failed write: {0}")]
    ReadOnly(String),
    /// The write or the sync of this request's batch failed: its changes may or may not be
    /// stored (an engine can fail after part of a batch reached its journal), and the store is
    /// now read-only. Only a retry after the store is reopened settles it: an idempotent append
    /// (same `client_msg_id`) is then recognised if it was stored.
    #[error("the write failed and may or may not be stored: {0}")]
    OutcomeUnknown(String),
    /// Too little disk space is free for new entries (below the store's watermark): refused
    /// before anything was written; retried writes pass again once space is freed.
    #[error("the disk is almost full: {free_bytes} bytes free, new entries need {min_free_bytes}")]
    DiskFull {
        /// Bytes free at the last reading.
        free_bytes: u64,
        /// The watermark.
        min_free_bytes: u64,
    },
    /// The channel does not exist.
    #[error("channel {0} does not exist")]
    ChannelNotFound(ChannelId),
    /// The channel (or direct pair) already exists.
    #[error("channel {0} already exists")]
    ChannelExists(ChannelId),
    /// The user is not a member of the channel.
    #[error("{user} is not a member of {channel}")]
    NotMember {
        /// The channel.
        channel: ChannelId,
        /// The user.
        user: UserId,
    },
    /// The entry does not exist (never written, or removed by retention).
    #[error("entry {seq} of channel {channel} does not exist")]
    EntryNotFound {
        /// The channel.
        channel: ChannelId,
        /// The seq asked for.
        seq: Seq,
    },
    /// A reaction would put more distinct emoji on the message than the limit: all users'
    /// (`per_user` false) or this user's (`per_user` true).
    #[error("message {target} of {channel} has the most distinct reactions allowed ({max})")]
    TooManyReactions {
        /// The channel.
        channel: ChannelId,
        /// The message.
        target: Seq,
        /// The limit.
        max: u32,
        /// Whether the user's own limit was reached.
        per_user: bool,
    },
    /// The user has not reacted to the message with this emoji.
    #[error("no reaction {emoji:?} by this user on message {target} of {channel}")]
    ReactionNotFound {
        /// The channel.
        channel: ChannelId,
        /// The message.
        target: Seq,
        /// The emoji.
        emoji: String,
    },
    /// The channel has the most pins allowed.
    #[error("channel {channel} has the most pinned messages allowed ({max})")]
    TooManyPins {
        /// The channel.
        channel: ChannelId,
        /// The limit.
        max: u32,
    },
    /// The message is not pinned.
    #[error("message {target} of {channel} is not pinned")]
    NotPinned {
        /// The channel.
        channel: ChannelId,
        /// The message.
        target: Seq,
    },
    /// One of two users blocks the other: no direct channel is made between them.
    #[error("one of the two users blocks the other")]
    Blocked,
    /// A user blocks the most users allowed.
    #[error("a user blocks at most {max} users")]
    TooManyBlocks {
        /// The limit.
        max: usize,
    },
    /// An idempotency key is empty or longer than the store keeps.
    #[error("client_msg_id must be 1 to {max} bytes, not {len}")]
    ClientMsgIdLength {
        /// Its length in bytes.
        len: usize,
        /// The longest accepted.
        max: usize,
    },
    /// An encoded entry is larger than the store accepts.
    #[error("entry of {len} bytes is over the limit of {max}")]
    EntryTooLarge {
        /// Its encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The engine failed.
    #[error("storage engine: {0}")]
    Engine(#[source] Arc<EngineError>),
    /// Stored bytes do not decode: corruption, or data from a newer incompatible version.
    #[error("corrupt record under key {key}: {message}")]
    Corrupt {
        /// The key, in hex.
        key: String,
        /// What failed to decode.
        message: String,
    },
    /// The store is closing or closed.
    #[error("the store is closed")]
    Closed,
}

impl From<EngineError> for StoreError {
    fn from(e: EngineError) -> Self {
        StoreError::Engine(Arc::new(e))
    }
}

impl From<ReadError> for StoreError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::ChannelNotFound(c) => StoreError::ChannelNotFound(c),
            ReadError::Engine(e) => StoreError::Engine(e),
            ReadError::Corrupt { key, message } => StoreError::Corrupt { key, message },
        }
    }
}

/// Why an online backup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The target exists and holds files.
    #[error("backup target {0} is not empty")]
    TargetNotEmpty(PathBuf),
    /// The target directory could not be read, made, renamed into place or synced.
    #[error("backup target {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The target could not be prepared as a store directory (lock file, format marker, engine).
    #[error("backup target: {0}")]
    Target(#[source] OpenError),
    /// Everything acknowledged could not be synced before the copy.
    #[error("sync before the backup: {0}")]
    Sync(#[source] StoreError),
    /// The engine failed while copying.
    #[error("storage engine: {0}")]
    Engine(#[source] EngineError),
    /// The backup's thread could not start, or ended without a result.
    #[error("backup thread: {0}")]
    Thread(String),
}

impl From<EngineError> for BackupError {
    fn from(e: EngineError) -> Self {
        BackupError::Engine(e)
    }
}
