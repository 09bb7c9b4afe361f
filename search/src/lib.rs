//! `chorus-search`: the message search index of a Chorus node.
//!
//! One tantivy index per node under `<data>/search/`, fed from durable log entries by its own
//! thread and never on the publish path: the store's commit listener only marks a channel
//! dirty, and the indexer reads the channel's log from the position it last committed. That
//! position is a checkpoint document per channel, committed with the documents it covers, so
//! after `kill -9` indexing resumes exactly where the last commit left it: no document of an
//! entry past a checkpoint can exist, so nothing is missed and nothing is indexed twice.
//!
//! # Layout
//! - `schema`: the documents (a message's current content; a channel's checkpoint), the
//!   analyzers.
//! - `generation`: one built index in its directory, the `ACTIVE` and `BUILDING` markers.
//! - `apply`: what a channel's entries do to a generation (adds, edits, deletes, retention,
//!   cut histories), from its checkpoint on.
//! - `feed`: the indexer thread: catch-up, live entries, edits, deletes, retention, erasure,
//!   rebuilds.
//! - `query`: the query language made into tantivy queries with the reader's scope, collection
//!   under a time budget, keyset cursors, snippets.
//! - `status`: what the index reports.
//!
//! The index decides nothing about permissions: the caller passes the channels the user may
//! read now and re-checks every hit against the log before showing it.

mod apply;
mod error;
mod feed;
mod generation;
mod query;
mod schema;
mod shared;
mod status;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use chorus_protocol::ids::UserId;
use chorus_storage::Store;
use tokio::sync::oneshot;

pub use error::SearchError;
pub use feed::FeedConfig;
pub use query::{Hit, Order, Scope, SearchPage, SearchRequest, Snippet};
pub use schema::{Analyzer, Checkpoint};
pub use status::{IndexStatus, RebuildProgress};

use feed::Feed;
use generation::{ACTIVE, BUILDING, Generation, Marker, WriterBudget, dir_bytes};
use shared::{Command, Pending, Shared};

/// How the index is set up.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// Its directory (`<data>/search`).
    pub dir: PathBuf,
    /// How text becomes words. Changing it rebuilds the index in the background; the old one
    /// serves until the new one is complete.
    pub analyzer: Analyzer,
    /// The indexer's pacing and memory.
    pub feed: FeedConfig,
}

/// The node's search index.
pub struct SearchIndex {
    shared: Arc<Shared>,
    root: PathBuf,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SearchIndex {
    /// Opens (or creates) the index under `config.dir` and starts its indexer, which first
    /// catches up with everything `store` holds that the index does not.
    pub fn open(config: SearchConfig, store: Store) -> Result<Self, SearchError> {
        let root = config.dir.clone();
        std::fs::create_dir_all(&root).map_err(|e| SearchError::io(&root, e))?;
        let budget = WriterBudget {
            memory_bytes: config.feed.writer_memory_bytes,
        };
        let analyzer = config.analyzer;
        let (active, building) = open_generations(&root, analyzer, budget)?;
        remove_stale(&root, &active, building.as_ref());
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            serving: RwLock::new(Arc::new(query::Serving::of(&active))),
            counters: Default::default(),
            building: Mutex::new(None),
            failed: Mutex::new(None),
            oldest_inflight_ms: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        });
        let feed = Feed::new(
            shared.clone(),
            store,
            root.clone(),
            config.feed,
            analyzer,
            active,
            building,
        );
        let thread = std::thread::Builder::new()
            .name("chorus-search".into())
            .spawn(move || feed.run())
            .map_err(|e| SearchError::io(&root, e))?;
        Ok(SearchIndex {
            shared,
            root,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The channel with this id has new durable entries. Cheap and non-blocking: for the
    /// commit listener.
    pub fn notify(&self, channel: &str) {
        self.shared.notify(channel);
    }

    /// Look at every channel again (after retention removed entries: their documents go).
    pub fn rescan(&self) {
        self.shared.signal(|p| p.rescan = true);
    }

    /// Removes every document `user` wrote, and returns once that is committed (erasure).
    pub async fn forget_author(&self, user: &UserId) -> Result<(), SearchError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .command(Command::ForgetAuthor(user.clone(), tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Returns once every entry durable before the call is searchable (it looks at every
    /// channel: for tests and operators, not for request paths).
    pub async fn sync(&self) -> Result<(), SearchError> {
        let (tx, rx) = oneshot::channel();
        self.shared.command(Command::Sync(tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Starts rebuilding the index from the log in a new generation, beside the one serving;
    /// returns the new generation's number. Queries switch to it when it is complete.
    pub async fn reindex(&self) -> Result<u64, SearchError> {
        let (tx, rx) = oneshot::channel();
        self.shared.command(Command::Reindex(tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs one search (blocking: call it off the async threads).
    pub fn search(&self, req: &SearchRequest<'_>) -> Result<SearchPage, SearchError> {
        let serving = self.shared.serving();
        query::run(&serving, req)
    }

    /// The index as it stands.
    pub fn status(&self) -> IndexStatus {
        let c = &self.shared.counters;
        let serving = self.shared.serving();
        let channels = c.checkpoints.load(Ordering::Relaxed);
        let oldest_pending = {
            let p = self.shared.pending();
            p.dirty.values().min().copied()
        };
        let inflight_ms = self.shared.oldest_inflight_ms.load(Ordering::Relaxed);
        let inflight = (inflight_ms != u64::MAX)
            .then(|| self.shared.epoch + Duration::from_millis(inflight_ms));
        let lag = oldest_pending
            .into_iter()
            .chain(inflight)
            .min()
            .map_or(Duration::ZERO, |t| t.elapsed());
        let building = *self
            .shared
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        IndexStatus {
            generation: serving.generation,
            analyzer: serving.analyzer.name(),
            docs: serving
                .reader
                .searcher()
                .num_docs()
                .saturating_sub(channels),
            channels,
            disk_bytes: disk_bytes(&self.root),
            lag_entries: c.lag_entries.load(Ordering::Relaxed),
            lag,
            notified: c.notified.load(Ordering::Relaxed),
            indexed: c.indexed.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            rebuild: building.map(|b| RebuildProgress {
                generation: b.generation,
                channels_done: b.channels_done,
                elapsed: b.started.elapsed(),
            }),
            failed: self
                .shared
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .filter(|why| why != "stopped"),
        }
    }

    /// Stops the indexer after a last commit. Idempotent; also done on drop.
    pub fn close(&self) {
        self.shared.signal(|p| p.stop = true);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for SearchIndex {
    fn drop(&mut self) {
        self.close();
    }
}

fn stopped() -> SearchError {
    SearchError::Stopped("the indexer stopped".into())
}

/// The generation to serve and the rebuild to resume. A generation made with another
/// analyzer keeps serving (with its own analyzer) while a rebuild with the configured one
/// runs; one of another format, or none, starts a fresh, empty generation that the catch-up
/// scan fills.
fn open_generations(
    root: &Path,
    analyzer: Analyzer,
    budget: WriterBudget,
) -> Result<(Generation, Option<Generation>), SearchError> {
    let active = Marker::read(&root.join(ACTIVE))?;
    let building = Marker::read(&root.join(BUILDING))?;
    let newest = active
        .iter()
        .chain(building.iter())
        .map(|m| m.number)
        .max()
        .unwrap_or(0);
    let old_analyzer = active
        .as_ref()
        .filter(|m| m.format == Marker::new(0, analyzer).format)
        .and_then(|m| Analyzer::parse(&m.analyzer).map(|a| (m.clone(), a)));
    let Some((marker, serving_analyzer)) = old_analyzer else {
        let marker = Marker::new(newest + 1, analyzer);
        let g = Generation::open(root, marker.clone(), analyzer, budget)?;
        marker.write(&root.join(ACTIVE))?;
        remove_marker(root, BUILDING)?;
        return Ok((g, None));
    };
    let active = Generation::open(root, marker, serving_analyzer, budget)?;
    if serving_analyzer == analyzer {
        let building =
            match building.filter(|b| b.fits(analyzer) && b.number > active.marker.number) {
                Some(b) => Some(Generation::open(root, b, analyzer, budget)?),
                None => {
                    remove_marker(root, BUILDING)?;
                    None
                }
            };
        return Ok((active, building));
    }
    // The analyzer changed: build a generation with the new one (resuming one under way).
    let number = match building.filter(|b| b.fits(analyzer)) {
        Some(b) => b.number,
        None => newest + 1,
    };
    let marker = Marker::new(number, analyzer);
    let g = Generation::open(root, marker.clone(), analyzer, budget)?;
    marker.write(&root.join(BUILDING))?;
    tracing::info!(from = %serving_analyzer.name(), to = %analyzer.name(), "search analyzer changed: rebuilding the index");
    Ok((active, Some(g)))
}

fn remove_marker(root: &Path, name: &str) -> Result<(), SearchError> {
    let path = root.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SearchError::io(path, e)),
    }
}

/// Removes generation directories neither marker names (an abandoned rebuild, a generation
/// replaced while a query still held it).
fn remove_stale(root: &Path, active: &Generation, building: Option<&Generation>) {
    let keep: Vec<&Path> = std::iter::once(active.dir.as_path())
        .chain(building.map(|b| b.dir.as_path()))
        .collect();
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let is_gen = e.file_name().to_string_lossy().starts_with("gen-");
        if is_gen
            && path.is_dir()
            && !keep.contains(&path.as_path())
            && let Err(err) = std::fs::remove_dir_all(&path)
        {
            tracing::warn!(dir = %path.display(), error = %err, "could not remove a stale search index");
        }
    }
}

/// Bytes of every generation under `root`.
fn disk_bytes(root: &Path) -> u64 {
    std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| dir_bytes(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}
