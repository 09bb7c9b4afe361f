//! Online backups: a consistent image of the whole key space, copied into a new store
//! directory while the node keeps writing.
//!
//! fjall (and the memory engine) copy from a snapshot, so writes never wait. sled has no
//! snapshots: its backup holds the writer back for the duration of the copy (appends wait; none
//! fail), which the report says.
//!
//! Every entry acknowledged before the backup started is in it: acknowledged means synced, and
//! the image is taken after that. The image may also hold entries written but not yet
//! acknowledged when it was taken; their appenders got (or will get) their acknowledgement, so
//! they are real entries too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::engine::{Engine, Op};
use crate::error::{BackupError, EngineError};
use crate::store::{Store, check_format, lock_dir, open_engine};

/// Pairs per write batch in the copy.
const COPY_BATCH: usize = 1024;
/// Table files the backup's target engine keeps open: few, since they come out of the
/// descriptors a node reserves beside the store's own.
const BACKUP_OPEN_FILES: usize = 32;

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The new store directory.
    pub dir: PathBuf,
    /// The engine (same as the source's).
    pub engine: &'static str,
    /// Key-value pairs copied.
    pub pairs: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// Whether writes were held back during the copy (engines without snapshots).
    pub paused_writes: bool,
    /// How long the copy took, in milliseconds.
    pub millis: u64,
}

impl Store {
    /// Copies a consistent image of the store into `target`, a directory that must not exist
    /// or be empty. The result is a complete store directory of the same engine: open it with
    /// `Store::open` (or point a node's data directory at its parent) to restore.
    pub async fn backup(&self, target: &Path) -> Result<BackupReport, BackupError> {
        if target.exists()
            && std::fs::read_dir(target)
                .map_err(|source| BackupError::Io {
                    path: target.to_path_buf(),
                    source,
                })?
                .next()
                .is_some()
        {
            return Err(BackupError::TargetNotEmpty(target.to_path_buf()));
        }
        // Everything acknowledged so far is synced; flush relaxed-mode writes too.
        self.sync().await.map_err(BackupError::Sync)?;
        let source = self.inner.engine.clone();
        let gate = self.inner.write_gate.clone();
        let kind = self.inner.config.engine;
        let cache = self.inner.config.engine_cache_bytes;
        let target = target.to_path_buf();
        // The copy blocks on disk I/O: a thread of its own keeps the caller's runtime free.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("chorus-store-backup".into())
            .spawn(move || {
                let _ = tx.send(copy(&*source, &gate, kind, cache, &target));
            })
            .map_err(|e| BackupError::Thread(e.to_string()))?;
        rx.await
            .map_err(|_| BackupError::Thread("it ended without a result".into()))?
    }
}

/// Copies into a sibling directory and renames it to `target` only when complete, so that a
/// copy that fails half-way (a full disk) never looks like a store.
fn copy(
    source: &dyn Engine,
    gate: &std::sync::RwLock<()>,
    kind: crate::config::EngineKind,
    cache: u64,
    target: &Path,
) -> Result<BackupReport, BackupError> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let partial = target.with_file_name(format!(".{name}.partial-{:016x}", rand_id()));
    let result = copy_into(source, gate, kind, cache, &partial).and_then(|mut report| {
        let io = |source| BackupError::Io {
            path: target.to_path_buf(),
            source,
        };
        if target.exists() {
            std::fs::remove_dir(target).map_err(io)?;
        }
        std::fs::rename(&partial, target).map_err(io)?;
        if let Some(parent) = target.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        report.dir = target.to_path_buf();
        Ok(report)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

/// A name suffix unlikely to collide, without a random-number dependency.
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn copy_into(
    source: &dyn Engine,
    gate: &std::sync::RwLock<()>,
    kind: crate::config::EngineKind,
    cache: u64,
    target: &Path,
) -> Result<BackupReport, BackupError> {
    let start = Instant::now();
    std::fs::create_dir_all(target).map_err(|source| BackupError::Io {
        path: target.to_path_buf(),
        source,
    })?;
    let _lock = lock_dir(target).map_err(BackupError::Target)?;
    check_format(target, kind).map_err(BackupError::Target)?;
    let dest: Arc<dyn Engine> =
        open_engine(kind, &target.join(kind.as_str()), cache, BACKUP_OPEN_FILES)
            .map_err(BackupError::Target)?;
    let mut batch = Vec::with_capacity(COPY_BATCH);
    let (mut pairs, mut bytes) = (0u64, 0u64);
    let mut visit = |k: &[u8], v: &[u8]| -> Result<(), EngineError> {
        pairs += 1;
        bytes += (k.len() + v.len()) as u64;
        batch.push(Op::Put(k.to_vec(), v.to_vec()));
        if batch.len() >= COPY_BATCH {
            dest.write(&batch)?;
            batch.clear();
        }
        Ok(())
    };
    let mut paused_writes = false;
    if !source.visit_snapshot(&mut visit)? {
        paused_writes = true;
        let _still = gate.write().unwrap_or_else(|p| p.into_inner());
        let mut after: Option<Vec<u8>> = None;
        loop {
            let start = after
                .as_deref()
                .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
            let page = source.scan(
                start,
                std::ops::Bound::Unbounded,
                crate::engine::Direction::Forward,
                COPY_BATCH,
            )?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            for (k, v) in &page {
                visit(k, v)?;
            }
        }
    }
    if !batch.is_empty() {
        dest.write(&batch)?;
    }
    dest.sync()?;
    let engine = dest.name();
    drop(dest);
    Ok(BackupReport {
        dir: target.to_path_buf(),
        engine,
        pairs,
        bytes,
        paused_writes,
        millis: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
