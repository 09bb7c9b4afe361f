//! The default engine: fjall, a pure-Rust LSM tree.
//!
//! A write commits a fjall batch, which appends it to the active journal file and hands it to
//! the operating system. `sync` then fdatasyncs that journal file through a handle of our own,
//! instead of `Database::persist`, because `persist` holds the journal lock during the fsync and
//! would stop the next batch from being written meanwhile; group commit pipelines writes and
//! syncs. This relies on two facts of fjall 3.1 (pinned exactly in the workspace for this
//! reason): journals are `<dir>/<id>.jnl` with increasing ids (a test below checks that a write
//! reaches the newest one before any sync), and rotating to a new journal fsyncs the old one and
//! then the directory (`journal::writer::Writer::rotate`). So fsyncing the newest journal covers
//! every batch written before the sync started.
//!
//! When this can go: once fjall syncs a journal without holding its writer lock (the rotation
//! half of it is fjall-rs/fjall#282, open when this was written), `Database::persist` serves
//! group commit as well, and this engine can drop its own journal handle and the exact pin;
//! the test `writes_reach_the_newest_journal_before_sync` says when the layout
//! assumption breaks on an upgrade.
//!
//! The store's `memtable-reaper` thread frees flushed memtables off fjall's locks (see
//! `engine/reaper.rs`).

use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::reaper::MemtableReaper;
use super::{Direction, Engine, KeyValue, Op, collect_directed};
use crate::error::EngineError;

/// A fjall database with one keyspace holding the store's whole key space.
pub struct FjallEngine {
    /// First, so that it stops before the database shuts down.
    reaper: MemtableReaper,
    db: Database,
    keyspace: Keyspace,
    dir: PathBuf,
    /// The newest journal known, by id, with a handle to fsync it.
    journal: Mutex<(u64, File)>,
}

impl std::fmt::Debug for FjallEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallEngine").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> EngineError {
    EngineError::Backend {
        engine: "fjall",
        message: e.to_string(),
    }
}

impl FjallEngine {
    /// Opens (or creates) the database in `dir`, with a block cache of `cache_bytes` and at
    /// most `max_open_files` (at least 10) table files held open.
    pub fn open(dir: &Path, cache_bytes: u64, max_open_files: usize) -> Result<Self, EngineError> {
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            .max_cached_files(Some(max_open_files.max(10)))
            .open()
            .map_err(backend)?;
        let keyspace = db
            .keyspace("chorus", KeyspaceCreateOptions::default)
            .map_err(backend)?;
        let id = newest_journal(dir)?.ok_or_else(|| {
            backend("no journal file (<id>.jnl) in the directory: unexpected fjall layout")
        })?;
        let file = File::open(journal_path(dir, id))?;
        let reaper = MemtableReaper::start(keyspace.clone())?;
        Ok(Self {
            db,
            keyspace,
            dir: dir.to_path_buf(),
            journal: Mutex::new((id, file)),
            reaper,
        })
    }
}

/// How long a journal open waits out a full descriptor table.
const OPEN_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens `path`, retrying for up to [`OPEN_RETRY_FOR`] while the process or the system is out
/// of file descriptors (`EMFILE`, `ENFILE`): that passes when connections close, and failing
/// the sync for it would make the store read-only until a restart.
fn open_retrying(path: &Path) -> std::io::Result<File> {
    let deadline = std::time::Instant::now() + OPEN_RETRY_FOR;
    loop {
        match File::open(path) {
            Err(e)
                if e.raw_os_error().is_some_and(is_fd_exhaustion)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// `EMFILE` (24) or `ENFILE` (23) on Linux and the BSDs.
fn is_fd_exhaustion(errno: i32) -> bool {
    errno == 24 || errno == 23
}

fn journal_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id}.jnl"))
}

/// The highest journal id in `dir`.
fn newest_journal(dir: &Path) -> Result<Option<u64>, EngineError> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        newest = newest.max(id);
    }
    Ok(newest)
}

impl Engine for FjallEngine {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.keyspace.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        let iter = self.keyspace.range::<&[u8], _>((start, end));
        collect_directed(iter, direction, limit, |guard: fjall::Guard| {
            let (k, v) = guard.into_inner().map_err(backend)?;
            Ok((k.to_vec(), v.to_vec()))
        })
    }

    fn visit_snapshot(&self, visit: &mut super::Visitor<'_>) -> Result<bool, EngineError> {
        use fjall::Readable;
        let snapshot = self.db.snapshot();
        for guard in snapshot.iter(&self.keyspace) {
            let (k, v) = guard.into_inner().map_err(backend)?;
            visit(&k, &v)?;
        }
        Ok(true)
    }

    fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
        let mut batch = self.db.batch();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(&self.keyspace, k.as_slice(), v.as_slice()),
                Op::Delete(k) => batch.remove(&self.keyspace, k.as_slice()),
            }
        }
        batch.commit().map_err(backend)
    }

    fn sync(&self) -> Result<(), EngineError> {
        let mut journal = self
            .journal
            .lock()
            .map_err(|_| backend("journal lock poisoned"))?;
        // Follow rotations: a newer journal means fjall fsynced the older ones.
        while journal_path(&self.dir, journal.0 + 1).exists() {
            let id = journal.0 + 1;
            *journal = (id, open_retrying(&journal_path(&self.dir, id))?);
        }
        // Journals are preallocated; fdatasync also writes the extent changes needed to read the
        // new data back.
        journal.1.sync_data()?;
        Ok(())
    }

    fn disk_bytes(&self) -> Result<u64, EngineError> {
        self.db.disk_space().map_err(backend)
    }

    fn memtables_freed(&self) -> u64 {
        self.reaper.freed()
    }
}

impl Drop for FjallEngine {
    fn drop(&mut self) {
        // Flushes and fsyncs through fjall as well; an error here shows at the next open.
        let _ = self.db.persist(PersistMode::SyncAll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of the newest journal, as the operating system has them. (Journals are
    /// preallocated, so their length says nothing.)
    fn journal_head(dir: &Path) -> Vec<u8> {
        use std::io::Read;
        let id = newest_journal(dir).unwrap().unwrap();
        let mut head = vec![0; 64 * 1024];
        let n = File::open(journal_path(dir, id))
            .unwrap()
            .read(&mut head)
            .unwrap();
        head.truncate(n);
        head
    }

    /// The layout `sync` relies on: a committed write is in the newest journal file, in the
    /// operating system, before any persist.
    #[test]
    fn writes_reach_the_newest_journal_before_sync() {
        let dir = tempfile::tempdir().unwrap();
        let engine = FjallEngine::open(dir.path(), 1 << 20, 64).unwrap();
        // Incompressible, so that journal compression cannot hide it.
        let value: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(
            !journal_head(dir.path())
                .windows(value.len())
                .any(|w| w == value)
        );
        engine
            .write(&[Op::Put(b"k".to_vec(), value.clone())])
            .unwrap();
        assert!(
            journal_head(dir.path())
                .windows(value.len())
                .any(|w| w == value)
        );
        engine.sync().unwrap();
        assert_eq!(engine.get(b"k").unwrap(), Some(value));
    }
}
