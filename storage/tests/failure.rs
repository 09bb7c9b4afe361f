//! Failure behaviour: a failed sync or write makes the store read-only, acknowledges nothing it
//! could not persist and keeps serving reads; damaged or busy directories give typed errors at
//! open, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chorus_protocol::ids::Seq;
use chorus_storage::engine::memory::MemoryEngine;
use chorus_storage::engine::{Direction, Engine, KeyValue, Op};
use chorus_storage::{
    Anchor, EngineError, EngineKind, LogQuery, OpenError, Store, StoreConfig, StoreError,
};
use common::{cid, create, entry};

/// Wraps an engine; fails syncs (or writes) on demand, like a full disk.
#[derive(Default)]
struct FaultyEngine {
    inner: MemoryEngine,
    fail_sync: AtomicBool,
    fail_write: AtomicBool,
    synced_writes: AtomicU64,
    writes: AtomicU64,
}

impl Engine for FaultyEngine {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.inner.scan(start, end, direction, limit)
    }
    fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
        if self.fail_write.load(Ordering::SeqCst) {
            return Err(EngineError::Io(std::io::Error::other(
                "injected: disk full",
            )));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.write(ops)
    }
    fn sync(&self) -> Result<(), EngineError> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(EngineError::Io(std::io::Error::other(
                "injected: EIO on fsync",
            )));
        }
        self.synced_writes
            .store(self.writes.load(Ordering::SeqCst), Ordering::SeqCst);
        self.inner.sync()
    }
    fn disk_bytes(&self) -> Result<u64, EngineError> {
        Ok(0)
    }
}

fn faulty_store() -> (Arc<FaultyEngine>, Store) {
    let engine = Arc::new(FaultyEngine::default());
    let store = Store::with_engine(engine.clone(), StoreConfig::new("/nonexistent"));
    (engine, store)
}

fn latest() -> LogQuery {
    LogQuery {
        anchor: Anchor::Latest,
        limit: 100,
        thread: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sync_acknowledges_nothing_and_keeps_reads() {
    let (engine, store) = faulty_store();
    create(&store, "c", "alice", &[]).await;
    let c = cid("c");
    for i in 0..3 {
        store
            .append(&c, entry("alice", &format!("ok{i}"), None))
            .await
            .unwrap();
    }
    engine.fail_sync.store(true, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(&c, entry("alice", &format!("lost{i}"), None))
                .await
        }));
    }
    // The batch whose sync failed may be on disk: its callers hear "outcome unknown", never
    // "unavailable" (which promises nothing changed). Requests queued behind it after the
    // failure were never written and are refused as read-only.
    let mut unknown = 0;
    for task in tasks {
        let result = task.await.unwrap();
        match result {
            Err(StoreError::OutcomeUnknown(_)) => unknown += 1,
            Err(StoreError::ReadOnly(_)) => {}
            other => panic!("got {other:?}"),
        }
    }
    assert!(
        unknown >= 1,
        "the failed sync's own batch is outcome-unknown"
    );
    // Written to the engine but never synced: invisible, and the store refuses further writes.
    let page = store.read(&c, &latest()).unwrap();
    assert_eq!(page.entries.len(), 3);
    assert_eq!(page.position.head, Seq(3));
    assert!(matches!(store.health(), Err(StoreError::ReadOnly(_))));
    engine.fail_sync.store(false, Ordering::SeqCst);
    let later = store.append(&c, entry("alice", "after", None)).await;
    assert!(
        matches!(later, Err(StoreError::ReadOnly(_))),
        "stays read-only until reopened"
    );
    assert!(matches!(
        store.mark_read(&common::uid("alice"), &c, Seq(1), 1).await,
        Err(StoreError::ReadOnly(_))
    ));
}

/// A repeat of a reaction whose write failed is refused as read-only, not left waiting on the
/// lost entry (the overlay and the seq waits themselves: `log::channel::failure_tests`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_reaction_after_a_failed_write_is_refused_not_hung() {
    use chorus_protocol::v1::{ReactionAdded, channel_event::Body};
    let (engine, store) = faulty_store();
    create(&store, "c", "alice", &[]).await;
    let c = cid("c");
    let m = store
        .append(&c, entry("alice", "hi", None))
        .await
        .unwrap()
        .entry
        .seq;
    let react = || chorus_storage::NewEntry {
        author: Some(common::uid("bob")),
        time_ms: 1,
        body: Body::ReactionAdded(ReactionAdded {
            target_seq: m.get(),
            emoji: "👍".into(),
        }),
        client_msg_id: None,
        withheld: false,
    };
    engine.fail_write.store(true, Ordering::SeqCst);
    let first = store.append(&c, react()).await;
    assert!(
        matches!(first, Err(StoreError::OutcomeUnknown(_))),
        "{first:?}"
    );
    engine.fail_write.store(false, Ordering::SeqCst);
    let again = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.append(&c, react()),
    )
    .await
    .expect("the repeat is answered");
    assert!(matches!(again, Err(StoreError::ReadOnly(_))), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_acknowledges_nothing() {
    let (engine, store) = faulty_store();
    create(&store, "c", "alice", &[]).await;
    let c = cid("c");
    engine.fail_write.store(true, Ordering::SeqCst);
    let err = store
        .append(&c, entry("alice", "x", Some("k")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::OutcomeUnknown(ref m) if m.contains("disk full")),
        "{err}"
    );
    assert_eq!(store.position(&c).unwrap().head, Seq(0));
    // A retry of the same key does not hang on the failed pending entry.
    let retry = store.append(&c, entry("alice", "x", Some("k"))).await;
    assert!(matches!(retry, Err(StoreError::ReadOnly(_))));
    assert_eq!(
        engine.synced_writes.load(Ordering::SeqCst),
        engine.writes.load(Ordering::SeqCst)
    );
}

#[test]
fn a_second_open_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(StoreConfig::new(dir.path())).unwrap();
    let second = Store::open(StoreConfig::new(dir.path()));
    assert!(
        matches!(second, Err(OpenError::Locked { .. })),
        "{second:?}"
    );
    drop(first);
    Store::open(StoreConfig::new(dir.path())).expect("the lock is released with the store");
}

#[test]
fn a_directory_of_another_engine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(StoreConfig::new(dir.path())).unwrap());
    let mut config = StoreConfig::new(dir.path());
    config.engine = EngineKind::Sled;
    let err = Store::open(config).unwrap_err();
    assert!(matches!(err, OpenError::WrongFormat { .. }), "{err}");
}

#[test]
fn older_formats_are_upgraded_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(StoreConfig::new(dir.path())).unwrap());
    let marker = dir.path().join("FORMAT");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "chorus-store 3 fjall\n"
    );
    // A directory written by a build of format 1 or 2 opens, and is marked format 3 from then
    // on, so that those builds refuse it rather than misread what format 3 writes.
    for old in ["chorus-store 1 fjall\n", "chorus-store 2 fjall\n"] {
        std::fs::write(&marker, old).unwrap();
        drop(Store::open(StoreConfig::new(dir.path())).unwrap());
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "chorus-store 3 fjall\n"
        );
    }
    // A format this build does not know is refused, and left as it is.
    std::fs::write(&marker, "chorus-store 4 fjall\n").unwrap();
    let err = Store::open(StoreConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, OpenError::WrongFormat { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "chorus-store 4 fjall\n"
    );
}

/// Overwrites every file under `dir` with garbage of its own length, or truncates it.
fn damage(dir: &std::path::Path, truncate: bool) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            damage(&path, truncate);
        } else if path
            .file_name()
            .is_some_and(|n| n != "LOCK" && n != "FORMAT")
        {
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            let garbage = if truncate {
                vec![0x5a; len / 3]
            } else {
                vec![0xa5; len]
            };
            std::fs::write(&path, garbage).unwrap();
        }
    }
}

async fn fill(dir: &std::path::Path, engine: EngineKind) {
    let mut config = StoreConfig::new(dir);
    config.engine = engine;
    let store = Store::open(config).unwrap();
    create(&store, "c", "alice", &[]).await;
    for i in 0..200 {
        store
            .append(&cid("c"), entry("alice", &format!("m{i}"), None))
            .await
            .unwrap();
    }
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_directories_give_an_error_not_a_panic() {
    for engine in [EngineKind::Fjall, EngineKind::Sled] {
        for truncate in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            fill(dir.path(), engine).await;
            damage(dir.path(), truncate);
            let mut config = StoreConfig::new(dir.path());
            config.engine = engine;
            match Store::open(config) {
                Err(OpenError::Corrupt { message, .. }) => {
                    eprintln!("{engine:?} truncate={truncate}: {message}");
                    assert!(!message.is_empty());
                }
                Err(other) => panic!("{engine:?}: unexpected error {other}"),
                // An engine may recover by discarding a damaged journal tail; then reads must
                // still fail cleanly or succeed, never panic.
                Ok(store) => {
                    let _ = store.read(&cid("c"), &latest());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_format_marker_beside_data_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), EngineKind::Fjall).await;
    std::fs::remove_file(dir.path().join("FORMAT")).unwrap();
    let err = Store::open(StoreConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");
}
