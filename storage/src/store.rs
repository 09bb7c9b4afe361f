//! The `Store` handle: opening a data directory, the shared state, and the plumbing every
//! operation uses (queueing writes, striped locks, record reads).

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hash};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1::channel_event::Body;
use prost::Message;
use tokio::sync::oneshot;

use crate::commit::{CommitListener, CommitStats, Completion, FailState, Queue, Writer};
use crate::config::{EngineKind, StoreConfig};
use crate::engine::{Engine, Op, fjall::FjallEngine};
use crate::error::{OpenError, ReadError, StoreError};
use crate::log::{
    AggregateLimits, AppendTicket, Appended, LogPage, LogPosition, LogQuery, Logs, NewEntry,
    ThreadCursor, ThreadPage,
};
use crate::records::decode_record;
use crate::records::{LogEntry, PinRecord};

/// The format this build writes; a directory with another one is refused at open, except
/// version 1, which is upgraded in place. Version 2 added numbered log keys (`keys::LogKeys`):
/// a build that knows only version 1 would not find those channels' entries, so it must refuse
/// a version 2 directory rather than open it.
const FORMAT_VERSION: u32 = 3;
/// Formats this build opens and upgrades; only the marker changes. Version 1 data is read as it
/// is (its channels keep their `L` log keys); version 2 has no entry of the flagged entry format
/// (withheld posts) nor derived records, which version 3 writes and older builds cannot read.
const UPGRADABLE_FORMATS: [u32; 2] = [1, 2];
const FORMAT_FILE: &str = "FORMAT";
const LOCK_FILE: &str = "LOCK";
/// Striped locks serialize read-modify-write of one record without a global lock.
const STRIPES: usize = 256;

/// The durable store of a node. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.inner.engine.name())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) config: StoreConfig,
    /// The writer's queue.
    pub(crate) queue: Arc<Queue>,
    pub(crate) stats: Arc<CommitStats>,
    /// The channel logs, loaded on first use.
    pub(crate) logs: Logs,
    stripes: Vec<tokio::sync::Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// See `Writer::gate`.
    pub(crate) write_gate: Arc<std::sync::RwLock<()>>,
    /// The next channel log number (`keys::LogKeys`); read from the engine at the first
    /// channel creation.
    pub(crate) next_log_number: std::sync::Mutex<Option<u64>>,
    /// Held for the store's lifetime: the directory lock.
    _lock: Option<File>,
}

impl Store {
    /// Opens (or creates) the store in `config.dir` with the configured engine.
    pub fn open(config: StoreConfig) -> Result<Self, OpenError> {
        let dir = config.dir.clone();
        let io = |source| OpenError::Io {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let lock = lock_dir(&dir)?;
        check_format(&dir, config.engine)?;
        let engine_dir = dir.join(config.engine.as_str());
        let cache = config.engine_cache_bytes;
        // fjall panics below 10.
        let files = config.max_open_files.max(10);
        // A damaged directory must give an error, never take the node down with a panic.
        let opened =
            std::panic::catch_unwind(|| open_engine(config.engine, &engine_dir, cache, files));
        let engine = match opened {
            Ok(Ok(engine)) => engine,
            Ok(Err(e @ OpenError::EngineNotBuilt(_))) => return Err(e),
            Ok(Err(e)) => return Err(corrupt(&dir, e)),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "the engine panicked while opening".into());
                return Err(OpenError::Corrupt { dir, message });
            }
        };
        Ok(Self::start(engine, config, Some(lock)))
    }

    /// A store over a ready engine (the memory engine, or a test's fault-injecting wrapper).
    /// `config.dir` is not used.
    pub fn with_engine(engine: Arc<dyn Engine>, config: StoreConfig) -> Self {
        Self::start(engine, config, None)
    }

    fn start(engine: Arc<dyn Engine>, config: StoreConfig, lock: Option<File>) -> Self {
        let engine: Arc<dyn Engine> = Arc::new(crate::engine::cached::RecordCache::new(
            engine,
            crate::engine::cached::RECORD_CACHE_ENTRIES,
        ));
        let capacity = config.queue_capacity.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let failed = Arc::new(FailState::default());
        let stats = Arc::new(CommitStats::default());
        let write_gate = Arc::new(std::sync::RwLock::new(()));
        let writer = Writer {
            gate: write_gate.clone(),
            rx,
            engine: engine.clone(),
            failed: failed.clone(),
            stats: stats.clone(),
            durability: config.durability,
            max_batch: config.max_batch.max(1),
            max_batch_delay: config.max_batch_delay,
        };
        let handle = std::thread::Builder::new()
            .name("chorus-store-writer".into())
            .spawn(move || writer.run())
            .ok();
        let disk = crate::disk::DiskWatch::new(
            config.dir.clone(),
            if lock.is_some() {
                config.min_free_disk_bytes
            } else {
                0
            },
        );
        let queue = Arc::new(Queue::new(tx, capacity, failed, disk));
        Self {
            inner: Arc::new(Inner {
                logs: Logs::new(engine.clone(), queue.clone(), &config),
                engine,
                queue,
                stats,
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                hasher: std::collections::hash_map::RandomState::new(),
                writer: std::sync::Mutex::new(handle),
                write_gate,
                next_log_number: std::sync::Mutex::new(None),
                _lock: lock,
                config,
            }),
        }
    }

    /// Sets the listener told of every new durable entry (once per store; a second call returns
    /// false and changes nothing).
    pub fn set_commit_listener(&self, listener: Arc<dyn CommitListener>) -> bool {
        self.inner.logs.set_listener(listener)
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.inner.engine.name()
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> Result<u64, ReadError> {
        Ok(self.inner.engine.disk_bytes()?)
    }

    /// fjall memtables whose memory the engine's reaper thread freed (see `engine::reaper`).
    pub fn memtables_freed(&self) -> u64 {
        self.inner.engine.memtables_freed()
    }

    /// Batches, requests and syncs made so far by the group-commit writer.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.inner.stats
    }

    /// Whether the store takes writes: not after a failed write made it read-only, nor while
    /// the disk is below the free-space watermark (and why).
    pub fn health(&self) -> Result<(), StoreError> {
        self.inner.queue.health()
    }

    /// Whether new entries are taken now: `Err` after a failed write (`ReadOnly`) or below the
    /// free-space watermark (`DiskFull`). For callers that write a record and then log the
    /// change, so that they refuse before the record.
    pub fn check_growth(&self) -> Result<(), StoreError> {
        self.health()
    }

    /// Makes everything written so far durable (also in relaxed mode).
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .queue
            .submit(Vec::new(), Completion::Done(tx), true)
            .await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops the writer after it has made every queued request durable. Later writes fail with
    /// `Closed`; reads keep working.
    pub fn close(&self) {
        self.inner.close();
    }
}

/// The channel logs' operations (done by the `Logs` component).
impl Store {
    /// Appends an entry and returns once it is durable (or was stored before under the same
    /// idempotency key).
    pub async fn append(&self, channel: &ChannelId, new: NewEntry) -> Result<Appended, StoreError> {
        self.begin_append(channel, new).await?.durable().await
    }

    /// The first half of an append: validates, waits for room in the writer's queue, assigns
    /// the seq and queues the entry. Appends begun one after another by one caller get
    /// increasing seqs, so a connection can pipeline publishes and still keep their order;
    /// the returned ticket resolves when the entry is durable.
    pub async fn begin_append(
        &self,
        channel: &ChannelId,
        new: NewEntry,
    ) -> Result<AppendTicket, StoreError> {
        self.inner.logs.begin_append(channel, new).await
    }

    /// Replaces the content of the entry at `seq` (a deleted message, an erased user), keeping
    /// its seq, author and time so that the log stays gapless.
    pub async fn rewrite(
        &self,
        channel: &ChannelId,
        seq: Seq,
        body: Body,
    ) -> Result<Arc<LogEntry>, StoreError> {
        self.inner.logs.rewrite_as(channel, seq, body, None).await
    }

    /// [`Store::rewrite`], also replacing the author: erasing a user leaves their entries with
    /// an anonymous author.
    pub async fn rewrite_as(
        &self,
        channel: &ChannelId,
        seq: Seq,
        body: Body,
        author: Option<&str>,
    ) -> Result<Arc<LogEntry>, StoreError> {
        self.inner.logs.rewrite_as(channel, seq, body, author).await
    }

    /// Where the channel's log stands.
    pub fn position(&self, channel: &ChannelId) -> Result<LogPosition, ReadError> {
        self.inner.logs.position(channel)
    }

    /// One entry, if it is durable and still available.
    pub fn entry(&self, channel: &ChannelId, seq: Seq) -> Result<Option<Arc<LogEntry>>, ReadError> {
        self.inner.logs.entry(channel, seq)
    }

    /// A page of the log.
    pub fn read(&self, channel: &ChannelId, query: &LogQuery) -> Result<LogPage, ReadError> {
        self.inner.logs.read(channel, query)
    }

    /// The summaries (reactions, thread, pin) of those messages at `seqs` that have any, in
    /// the order asked; `reader` decides each `ReactionCount.reacted`.
    pub fn summaries(
        &self,
        channel: &ChannelId,
        seqs: &[Seq],
        reader: Option<&UserId>,
    ) -> Result<Vec<chorus_protocol::v1::MessageSummary>, ReadError> {
        self.inner
            .logs
            .summaries(channel, seqs, reader.map(UserId::as_str))
    }

    /// A page of the channel's threads, the latest reply first.
    pub fn threads(
        &self,
        channel: &ChannelId,
        after: Option<ThreadCursor>,
        limit: usize,
    ) -> Result<ThreadPage, ReadError> {
        self.inner.logs.threads(channel, after, limit.max(1))
    }

    /// The channel's pins, the most recently pinned first (at most the pin limit).
    pub fn pins(&self, channel: &ChannelId) -> Result<Vec<PinRecord>, ReadError> {
        self.inner.logs.pins(channel)
    }

    /// Puts `anonymous` in place of `user` in the records the log derived that name them: the
    /// participants of the threads rooted at `roots` and the pins they made (an erasure).
    pub async fn anonymise_derived(
        &self,
        channel: &ChannelId,
        roots: &[Seq],
        user: &UserId,
        anonymous: &str,
    ) -> Result<(), StoreError> {
        self.inner
            .logs
            .anonymise_derived(channel, roots, user.as_str(), anonymous)
            .await
    }

    /// Sets the limits that reactions and pins are held to (a configuration reload may
    /// change them).
    pub fn set_aggregate_limits(&self, limits: AggregateLimits) {
        self.inner.logs.set_aggregate_limits(limits);
    }

    /// Drops the cached state of channels with no append in flight, so that idle channels do
    /// not hold memory. Returns how many were dropped.
    pub fn evict_idle_logs(&self) -> usize {
        self.inner.logs.evict_idle()
    }

    /// Bytes held by all tail caches.
    pub fn tail_cache_bytes(&self) -> usize {
        self.inner.logs.tail_cache_bytes()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    fn close(&self) {
        self.queue.close();
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Writes `ops` durably (one atomic batch) and returns when they are durable.
    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue.submit(ops, Completion::Done(tx), false).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The striped lock for a record key.
    pub(crate) fn stripe(&self, key: &impl Hash) -> &tokio::sync::Mutex<()> {
        &self.stripes[self.stripe_index(key)]
    }

    /// The striped locks of the stripes `indices` (from [`Inner::stripe_index`]), held
    /// together. Stripes are not reentrant and two keys may share one, so each distinct stripe
    /// is taken once; they are taken in index order, so that two holders of several stripes
    /// never wait on each other.
    pub(crate) async fn lock_all(
        &self,
        mut indices: Vec<usize>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        indices.sort_unstable();
        indices.dedup();
        let mut guards = Vec::with_capacity(indices.len());
        for i in indices {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }

    /// The stripes a membership change holds: the channel's (its record, its members) and the
    /// user's (the user's record with its channel count).
    pub(crate) async fn lock_membership(
        &self,
        channel: &ChannelId,
        user: &chorus_protocol::ids::UserId,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        self.lock_all(vec![
            self.stripe_index(channel),
            self.stripe_index(&crate::keys::user(user)),
        ])
        .await
    }

    /// The stripe [`Inner::stripe`] takes for `key`.
    pub(crate) fn stripe_index(&self, key: &impl Hash) -> usize {
        self.hasher.hash_one(key) as usize % STRIPES
    }

    /// Up to `limit` pairs under `prefix`, in key order, after the key `after` if given.
    pub(crate) fn page(
        &self,
        prefix: &[u8],
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<crate::engine::KeyValue>, ReadError> {
        let (start, end) = crate::engine::prefix_bounds(prefix);
        let start = after.map_or(start, std::ops::Bound::Excluded);
        Ok(self.engine.scan(
            crate::engine::as_ref_bound(&start),
            crate::engine::as_ref_bound(&end),
            crate::engine::Direction::Forward,
            limit,
        )?)
    }

    /// A channel's key and record; `ChannelNotFound` when it does not exist.
    pub(crate) fn channel_record(
        &self,
        id: &ChannelId,
    ) -> Result<(Vec<u8>, crate::records::ChannelRecord), ReadError> {
        let key = crate::keys::channel(id);
        let record = self
            .record(&key)?
            .ok_or_else(|| ReadError::ChannelNotFound(id.clone()))?;
        Ok((key, record))
    }

    /// Reads and decodes a record.
    pub(crate) fn record<M: Message + Default>(&self, key: &[u8]) -> Result<Option<M>, ReadError> {
        match self.engine.get(key)? {
            Some(v) => Ok(Some(decode_record(key, &v)?)),
            None => Ok(None),
        }
    }
}

fn corrupt(dir: &Path, e: impl std::fmt::Display) -> OpenError {
    OpenError::Corrupt {
        dir: dir.to_path_buf(),
        message: e.to_string(),
    }
}

pub(crate) fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| OpenError::Io {
            dir: dir.to_path_buf(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::Locked {
            dir: dir.to_path_buf(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(OpenError::Io {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

/// Checks (or writes, for a new directory) the marker naming the format and engine.
pub(crate) fn check_format(dir: &Path, engine: EngineKind) -> Result<(), OpenError> {
    let expected = format!("chorus-store {FORMAT_VERSION} {}\n", engine.as_str());
    let path = dir.join(FORMAT_FILE);
    let io = |source| OpenError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    match File::open(&path) {
        Ok(mut f) => {
            let mut found = String::new();
            f.read_to_string(&mut found).map_err(io)?;
            if found == expected {
                return Ok(());
            }
            let upgradable = UPGRADABLE_FORMATS
                .iter()
                .any(|v| found == format!("chorus-store {v} {}\n", engine.as_str()));
            if !upgradable {
                return Err(OpenError::WrongFormat {
                    dir: dir.to_path_buf(),
                    found: found.trim().to_owned(),
                    expected: expected.trim().to_owned(),
                });
            }
            // Before anything of the new format is written: a crash in between leaves the old
            // marker on data that is still entirely of the old format.
            write_marker(dir, &expected).map_err(io)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join(engine.as_str()).exists() {
                return Err(corrupt(
                    dir,
                    "engine data present but the FORMAT file is missing",
                ));
            }
            write_marker(dir, &expected).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

/// Writes the format marker durably and atomically (a new file renamed over the old one).
fn write_marker(dir: &Path, marker: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(marker.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(FORMAT_FILE))?;
    File::open(dir)?.sync_all()
}

pub(crate) fn open_engine(
    kind: EngineKind,
    dir: &Path,
    cache: u64,
    max_open_files: usize,
) -> Result<Arc<dyn Engine>, OpenError> {
    let fail = |e: crate::error::EngineError| corrupt(dir, e);
    match kind {
        EngineKind::Fjall => Ok(Arc::new(
            FjallEngine::open(dir, cache, max_open_files).map_err(fail)?,
        )),
        #[cfg(feature = "sled")]
        EngineKind::Sled => Ok(Arc::new(
            crate::engine::sled::SledEngine::open(dir, cache).map_err(fail)?,
        )),
        #[cfg(not(feature = "sled"))]
        EngineKind::Sled => Err(OpenError::EngineNotBuilt("sled")),
    }
}
