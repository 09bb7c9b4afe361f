//! Online backups taken while appends keep coming: the copy opens as a store holding every
//! entry acknowledged before the backup started, each log gapless.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chorus_protocol::ids::Seq;
use chorus_storage::{Anchor, BackupError, LogQuery};
use common::{Kind, cid, create, entry, open, open_in, text_of};

async fn backup_under_load(kind: Kind) {
    let t = open(kind);
    let store = t.store.clone();
    for c in ["a", "b"] {
        create(&store, c, "alice", &[]).await;
    }
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for c in ["a", "b"] {
        let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let a = store
                    .append(&cid(c), entry("alice", &format!("{c}{i}"), None))
                    .await
                    .unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push((c, a.entry.seq, format!("{c}{i}")));
                i += 1;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let before: Vec<_> = acked.lock().unwrap().clone();
    let target = tempfile::tempdir().unwrap();
    let report = store.backup(&target.path().join("store")).await.unwrap();
    assert_eq!(report.paused_writes, kind == Kind::Sled);
    assert!(report.pairs > before.len() as u64);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let during = acked.lock().unwrap().len();
    assert!(during > before.len(), "appends went on during the backup");

    // Refused: a non-empty target.
    let again = store.backup(&target.path().join("store")).await;
    assert!(
        matches!(again, Err(BackupError::TargetNotEmpty(ref p)) if p.ends_with("store")),
        "{again:?}"
    );

    // Restore: open the copy as a store.
    let restored = open_in(kind, &target.path().join("store"), |_| {});
    for (c, seq, text) in &before {
        let e = restored
            .entry(&cid(c), *seq)
            .unwrap()
            .expect("acknowledged entry in the backup");
        assert_eq!(&text_of(&e), text);
    }
    for c in ["a", "b"] {
        let position = restored.position(&cid(c)).unwrap();
        let page = restored
            .read(
                &cid(c),
                &LogQuery {
                    anchor: Anchor::After(Seq(0)),
                    limit: 100_000,
                    thread: None,
                },
            )
            .unwrap();
        let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq.get()).collect();
        assert_eq!(
            seqs,
            (1..=position.head.get()).collect::<Vec<_>>(),
            "gapless"
        );
    }
    // The restored store takes new writes.
    restored
        .append(&cid("a"), entry("alice", "after restore", None))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_backup_while_writing() {
    backup_under_load(Kind::Fjall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_backup_while_writing() {
    backup_under_load(Kind::Sled).await;
}
