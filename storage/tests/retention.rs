//! Retention by count and age, and history truncation, on every engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chorus_protocol::ids::Seq;
use chorus_protocol::v1::Message;
use chorus_protocol::v1::channel_event::Body;
use chorus_storage::{Anchor, LogQuery, NewEntry, RetentionPolicy};
use common::{Kind, cid, create, entry, open, uid};

fn latest(limit: usize) -> LogQuery {
    LogQuery {
        anchor: Anchor::Latest,
        limit,
        thread: None,
    }
}

async fn keeps_the_newest_entries(kind: Kind) {
    let t = open(kind);
    create(&t.store, "c", "alice", &["bob"]).await;
    let c = cid("c");
    for i in 1..=10 {
        let reply_to = if i > 1 { 1 } else { 0 };
        let new = NewEntry {
            body: Body::Message(Message {
                text: format!("m{i}"),
                thread_parent_seq: reply_to,
                mentions: vec!["bob".into()],
                ..Message::default()
            }),
            ..entry("alice", "", Some(&format!("k{i}")))
        };
        t.store.append(&c, new).await.unwrap();
    }
    common::keep_newest(&t.store, &c, 4).await;
    let report = t.store.run_retention(2_000).await.unwrap();
    assert_eq!((report.channels, report.entries_removed), (1, 6));
    let pos = t.store.position(&c).unwrap();
    assert_eq!((pos.first_available, pos.head), (Seq(7), Seq(10)));
    let page = t.store.read(&c, &latest(50)).unwrap();
    assert_eq!(page.entries.first().map(|e| e.seq), Some(Seq(7)));
    assert!(!page.has_more_before);
    assert!(t.store.entry(&c, Seq(6)).unwrap().is_none());
    assert_eq!(
        t.store
            .channel(&c)
            .unwrap()
            .unwrap()
            .record
            .first_available_seq,
        7
    );
    // The idempotency of a removed entry is gone with it (documented: as long as retained).
    let reused = t
        .store
        .append(&c, entry("alice", "again", Some("k2")))
        .await
        .unwrap();
    assert!(!reused.duplicate);
    // Unread counts still count from the removed prefix.
    let state = t.store.read_state(&uid("bob"), &c).unwrap();
    assert_eq!((state.unread, state.mentions), (11, 4));
    let state = t.store.mark_read(&uid("bob"), &c, Seq(3), 1).await.unwrap();
    assert_eq!(
        state.unread, 5,
        "a marker inside the removed range counts it as read"
    );
    // A second pass has nothing to do.
    assert_eq!(
        t.store.run_retention(2_000).await.unwrap().entries_removed,
        1
    );
}

async fn removes_entries_by_age(kind: Kind) {
    let t = common::open_with(kind, |c| {
        c.default_retention = RetentionPolicy {
            max_age_ms: 1_000,
            max_entries: 0,
        };
    });
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    for i in 0..6u64 {
        let new = NewEntry {
            time_ms: i * 1_000,
            ..entry("alice", "x", None)
        };
        t.store.append(&c, new).await.unwrap();
    }
    // At t = 4500, entries older than 3500 (times 0..=3000: seqs 1..=4) go.
    assert_eq!(t.store.retain_channel(&c, 4_500).await.unwrap(), 4);
    assert_eq!(t.store.position(&c).unwrap().first_available, Seq(5));
    // Everything expired: the log is empty, but seqs and ordinals keep counting.
    assert_eq!(t.store.retain_channel(&c, 100_000).await.unwrap(), 2);
    let pos = t.store.position(&c).unwrap();
    assert_eq!(
        (pos.first_available, pos.head, pos.message_count),
        (Seq(7), Seq(6), 6)
    );
    assert!(t.store.read(&c, &latest(10)).unwrap().entries.is_empty());
    let next = t.store.append(&c, entry("alice", "y", None)).await.unwrap();
    assert_eq!((next.entry.seq, next.entry.ordinal), (Seq(7), 7));
}

async fn truncation_changes_the_epoch(kind: Kind) {
    let t = open(kind);
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    for _ in 0..3 {
        t.store.append(&c, entry("alice", "x", None)).await.unwrap();
    }
    let before = t.store.position(&c).unwrap();
    let epoch = t.store.truncate(&c, 5_000).await.unwrap();
    assert_ne!(epoch, before.epoch);
    let after = t.store.position(&c).unwrap();
    assert_eq!(
        (after.epoch, after.first_available, after.head),
        (epoch, Seq(4), Seq(3))
    );
    let next = t.store.append(&c, entry("alice", "y", None)).await.unwrap();
    assert_eq!(
        (next.entry.seq, next.entry.event.epoch),
        (Seq(4), epoch.get())
    );
    assert_eq!(t.store.read(&c, &latest(10)).unwrap().entries.len(), 1);
}

on_every_engine!(
    keeps_the_newest_entries,
    removes_entries_by_age,
    truncation_changes_the_epoch
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_survives_reopen() {
    let mut t = open(Kind::Fjall);
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    for _ in 0..5 {
        t.store.append(&c, entry("alice", "x", None)).await.unwrap();
    }
    t.store.retain_channel(&c, 0).await.unwrap();
    common::keep_newest(&t.store, &c, 2).await;
    t.store.retain_channel(&c, 0).await.unwrap();
    t.reopen();
    let pos = t.store.position(&c).unwrap();
    assert_eq!(
        (pos.first_available, pos.head, pos.message_count),
        (Seq(4), Seq(5), 5)
    );
}
