//! Store configuration: where, which engine, how durable, how much memory.

use std::path::PathBuf;
use std::time::Duration;

/// Which engine holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineKind {
    /// fjall (LSM tree), the default: twice sled's durable append rate, a third of its disk.
    Fjall,
    /// sled 0.34, made durable by fsyncing its data file after each flush.
    Sled,
}

impl EngineKind {
    /// The name used in config files and the directory marker.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Fjall => "fjall",
            EngineKind::Sled => "sled",
        }
    }

    /// Parses a config value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fjall" => Some(EngineKind::Fjall),
            "sled" => Some(EngineKind::Sled),
            _ => None,
        }
    }
}

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// After the batch holding the entry is fsynced. An acknowledged entry survives a crash of
    /// the process or the machine. The default.
    Sync,
    /// Relaxed: after the entry reaches the operating system (it survives `kill -9`), with an
    /// fsync every `interval`. A power loss or kernel crash can lose entries acknowledged in the
    /// last interval. Only for deployments that accept that.
    RelaxedPeriodicSync {
        /// Time between fsyncs.
        interval: Duration,
    },
}

/// How long entries are kept. Zero fields mean "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Remove entries older than this, in milliseconds.
    pub max_age_ms: u64,
    /// Keep at most this many newest entries.
    pub max_entries: u64,
}

/// Everything [`crate::Store::open`] needs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory; created if missing. Only one process may open it.
    pub dir: PathBuf,
    /// The engine.
    pub engine: EngineKind,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// Most requests made durable by one sync.
    pub max_batch: usize,
    /// How long the writer waits for more requests before syncing a batch that is not full.
    /// Zero (the default) syncs as soon as the previous sync ends: requests that arrive during
    /// a sync form the next batch by themselves.
    pub max_batch_delay: std::time::Duration,
    /// Requests that may wait for the writer at once; further callers wait for room.
    pub queue_capacity: usize,
    /// Newest entries kept in memory per channel, so that catch-up reads rarely touch disk.
    pub tail_cache_entries: usize,
    /// Bytes of the tail cache of one channel.
    pub tail_cache_bytes_per_channel: usize,
    /// Bytes of all tail caches together; past it, a channel keeps only its newest few entries.
    pub tail_cache_total_bytes: usize,
    /// Engine block/page cache, in bytes.
    pub engine_cache_bytes: u64,
    /// Files the engine keeps open at most (fjall's descriptor cache; at least 10). The node
    /// keeps this many descriptors out of its connections' reach.
    pub max_open_files: usize,
    /// New entries (appends, channel creations) are refused while less than this many bytes
    /// are free on the store's file system (`StoreError::DiskFull`); 0 turns the check off.
    pub min_free_disk_bytes: u64,
    /// Retention of channels whose own policy is unset.
    pub default_retention: RetentionPolicy,
}

impl StoreConfig {
    /// Defaults for a data directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            engine: EngineKind::Fjall,
            durability: Durability::Sync,
            max_batch: 4096,
            max_batch_delay: Duration::ZERO,
            queue_capacity: 65_536,
            tail_cache_entries: 256,
            tail_cache_bytes_per_channel: 256 * 1024,
            tail_cache_total_bytes: 256 * 1024 * 1024,
            engine_cache_bytes: 64 * 1024 * 1024,
            max_open_files: 256,
            min_free_disk_bytes: 256 * 1024 * 1024,
            default_retention: RetentionPolicy::default(),
        }
    }
}
