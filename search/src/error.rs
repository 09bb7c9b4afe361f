//! What can go wrong in the search index.

use std::path::PathBuf;

use chorus_protocol::search::QueryError;

/// A search index error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The query does not parse or asks what cannot be answered.
    #[error("bad query: {0}")]
    Query(#[from] QueryError),
    /// A `thread:` operator without one channel to look in.
    #[error("`thread:` needs one channel (`in:` or the request's channel)")]
    ThreadNeedsChannel,
    /// The cursor is not one this node gave for this query and order.
    #[error("bad cursor")]
    BadCursor,
    /// A rebuild is already running.
    #[error("a rebuild of the index is already running")]
    ReindexRunning,
    /// The indexer has stopped (the node is shutting down, or it failed).
    #[error("the search indexer is not running: {0}")]
    Stopped(String),
    /// The index files could not be read or written.
    #[error("search index I/O on {path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The index engine (tantivy) failed.
    #[error("search index: {0}")]
    Index(String),
    /// The log could not be read.
    #[error("reading the log: {0}")]
    Log(#[from] chorus_storage::ReadError),
}

impl SearchError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        SearchError::Io {
            path: path.into(),
            message: e.to_string(),
        }
    }
}
