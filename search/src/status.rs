//! What the index reports about itself: for `chorusctl search status` and the metrics.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// Counters the indexer and the index's users update.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Entries the commit listener announced.
    pub(crate) notified: AtomicU64,
    /// Entries the indexer read and applied (catch-up and rebuilds included).
    pub(crate) indexed: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) rebuilds: AtomicU64,
    /// Channels the serving generation has checkpoints for.
    pub(crate) checkpoints: AtomicU64,
    /// Entries durable in the log and not searchable yet (approximate).
    pub(crate) lag_entries: AtomicU64,
}

/// A rebuild in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Building {
    pub(crate) generation: u64,
    pub(crate) channels_done: u64,
    pub(crate) started: Instant,
}

/// A rebuild in progress, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    /// The generation being built.
    pub generation: u64,
    /// Channels of the store indexed completely so far.
    pub channels_done: u64,
    /// Since the rebuild started.
    pub elapsed: Duration,
}

/// The index as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStatus {
    /// The generation serving queries.
    pub generation: u64,
    /// The analyzer it was built with.
    pub analyzer: String,
    /// Message documents searchable.
    pub docs: u64,
    /// Channels indexed.
    pub channels: u64,
    /// Bytes of index files on disk (every generation).
    pub disk_bytes: u64,
    /// Entries durable in the log and not searchable yet (approximate).
    pub lag_entries: u64,
    /// Age of the oldest such entry's notification; zero when caught up.
    pub lag: Duration,
    /// Entries announced by the store since start.
    pub notified: u64,
    /// Entries indexed since start (catch-up and rebuilds included).
    pub indexed: u64,
    /// Commits since start.
    pub commits: u64,
    /// A rebuild in progress.
    pub rebuild: Option<RebuildProgress>,
    /// Why the indexer stopped, if it has (search keeps serving what it has).
    pub failed: Option<String>,
}
