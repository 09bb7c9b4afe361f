//! Appends and reads of channel logs, on every engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use chorus_protocol::ids::Seq;
use chorus_protocol::v1::{Message, channel_event::Body};
use chorus_storage::{Anchor, LogQuery, NewEntry, ReadError, StoreError};
use common::{Kind, cid, create, entry, open, text_of, uid};

fn q(anchor: Anchor, limit: usize) -> LogQuery {
    LogQuery {
        anchor,
        limit,
        thread: None,
    }
}

fn seqs(page: &chorus_storage::LogPage) -> Vec<u64> {
    page.entries.iter().map(|e| e.seq.get()).collect()
}

async fn appends_are_gapless_and_readable(kind: Kind) {
    let t = open(kind);
    create(&t.store, "general", "alice", &["bob"]).await;
    let c = cid("general");
    for i in 1..=10u64 {
        let a = t
            .store
            .append(&c, entry("alice", &format!("m{i}"), None))
            .await
            .unwrap();
        assert_eq!(a.entry.seq, Seq(i));
        assert_eq!(a.entry.ordinal, i);
        assert!(!a.duplicate);
        assert_eq!(a.entry.event.channel_id, "general");
        assert_eq!(a.entry.event.seq, i);
    }
    let pos = t.store.position(&c).unwrap();
    assert_eq!(
        (pos.head, pos.first_available, pos.message_count),
        (Seq(10), Seq(1), 10)
    );

    let latest = t.store.read(&c, &q(Anchor::Latest, 3)).unwrap();
    assert_eq!(seqs(&latest), vec![8, 9, 10]);
    assert!(latest.has_more_before && !latest.has_more_after);
    let before = t.store.read(&c, &q(Anchor::Before(Seq(4)), 5)).unwrap();
    assert_eq!(seqs(&before), vec![1, 2, 3]);
    assert!(!before.has_more_before && before.has_more_after);
    let after = t.store.read(&c, &q(Anchor::After(Seq(8)), 5)).unwrap();
    assert_eq!(seqs(&after), vec![9, 10]);
    let around = t.store.read(&c, &q(Anchor::Around(Seq(5)), 5)).unwrap();
    assert_eq!(seqs(&around), vec![3, 4, 5, 6, 7]);
    let edge = t.store.read(&c, &q(Anchor::Around(Seq(10)), 4)).unwrap();
    assert_eq!(seqs(&edge), vec![7, 8, 9, 10]);
    let none = t.store.read(&c, &q(Anchor::After(Seq(10)), 5)).unwrap();
    assert!(none.entries.is_empty() && none.has_more_before && !none.has_more_after);
    assert_eq!(text_of(&t.store.entry(&c, Seq(7)).unwrap().unwrap()), "m7");
    assert!(t.store.entry(&c, Seq(11)).unwrap().is_none());
}

async fn unknown_channels_are_refused(kind: Kind) {
    let t = open(kind);
    let err = t
        .store
        .append(&cid("nope"), entry("a", "x", None))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ChannelNotFound(_)));
    // Reads name the same cause in their own, narrower error.
    let read = t.store.position(&cid("nope")).unwrap_err();
    assert!(matches!(read, ReadError::ChannelNotFound(ref c) if c.as_str() == "nope"));
}

async fn retried_appends_return_the_original(kind: Kind) {
    let t = open(kind);
    create(&t.store, "c", "alice", &["bob"]).await;
    let c = cid("c");
    let first = t
        .store
        .append(&c, entry("alice", "hi", Some("k1")))
        .await
        .unwrap();
    t.store
        .append(&c, entry("bob", "other", Some("k1")))
        .await
        .unwrap();
    let again = t
        .store
        .append(&c, entry("alice", "hi (retry)", Some("k1")))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.entry.seq, first.entry.seq);
    assert_eq!(text_of(&again.entry), "hi");
    assert_eq!(
        t.store.position(&c).unwrap().head,
        Seq(2),
        "the retry stored nothing"
    );
    let bad = t
        .store
        .append(&c, entry("alice", "x", Some(&"k".repeat(65))))
        .await;
    assert!(matches!(
        bad,
        Err(StoreError::ClientMsgIdLength { len: 65, max: 64 })
    ));
}

async fn concurrent_retries_store_once(kind: Kind) {
    let t = open(kind);
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = t.store.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(&c, entry("alice", "once", Some("same-key")))
                .await
                .unwrap()
        }));
    }
    let mut seen = BTreeSet::new();
    let mut fresh = 0;
    for task in tasks {
        let a = task.await.unwrap();
        seen.insert(a.entry.seq);
        fresh += usize::from(!a.duplicate);
    }
    assert_eq!(seen.len(), 1, "every retry got the same seq");
    assert_eq!(fresh, 1, "exactly one append stored the entry");
    assert_eq!(t.store.position(&c).unwrap().head, Seq(1));
}

async fn concurrent_appenders_get_gapless_seqs(kind: Kind) {
    let t = open(kind);
    create(&t.store, "busy", "alice", &[]).await;
    let c = cid("busy");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = t.store.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..50 {
                let a = store
                    .append(&c, entry("alice", &format!("{w}-{i}"), None))
                    .await
                    .unwrap();
                mine.push(a.entry.seq.get());
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one appender's seqs increase"
        );
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<_>>());
    let page = t.store.read(&c, &q(Anchor::After(Seq(0)), 400)).unwrap();
    assert_eq!(seqs(&page), (1..=400).collect::<Vec<_>>());
    assert!(
        t.store
            .commit_stats()
            .batches
            .load(std::sync::atomic::Ordering::Relaxed)
            < 400
    );
}

async fn threads_list_root_and_replies(kind: Kind) {
    let t = open(kind);
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    t.store
        .append(&c, entry("alice", "root", None))
        .await
        .unwrap();
    for i in 0..5 {
        t.store
            .append(&c, entry("alice", &format!("noise{i}"), None))
            .await
            .unwrap();
        let reply = NewEntry {
            body: Body::Message(Message {
                text: format!("reply{i}"),
                thread_parent_seq: 1,
                ..Message::default()
            }),
            ..entry("bob", "", None)
        };
        t.store.append(&c, reply).await.unwrap();
    }
    let all = t
        .store
        .read(
            &c,
            &LogQuery {
                anchor: Anchor::Latest,
                limit: 50,
                thread: Some(Seq(1)),
            },
        )
        .unwrap();
    let texts: Vec<String> = all.entries.iter().map(|e| text_of(e)).collect();
    assert_eq!(
        texts,
        ["root", "reply0", "reply1", "reply2", "reply3", "reply4"]
    );
    let newest = t
        .store
        .read(
            &c,
            &LogQuery {
                anchor: Anchor::Latest,
                limit: 2,
                thread: Some(Seq(1)),
            },
        )
        .unwrap();
    assert_eq!(
        newest
            .entries
            .iter()
            .map(|e| text_of(e))
            .collect::<Vec<_>>(),
        ["reply3", "reply4"]
    );
    assert!(newest.has_more_before);
    let older = t
        .store
        .read(
            &c,
            &LogQuery {
                anchor: Anchor::Before(newest.entries[0].seq),
                limit: 10,
                thread: Some(Seq(1)),
            },
        )
        .unwrap();
    assert_eq!(
        older.entries.iter().map(|e| text_of(e)).collect::<Vec<_>>(),
        ["root", "reply0", "reply1", "reply2"]
    );
    assert!(!older.has_more_before && older.has_more_after);
}

async fn rewrite_keeps_the_log_gapless(kind: Kind) {
    let t = open(kind);
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    for i in 0..3 {
        t.store
            .append(&c, entry("alice", &format!("m{i}"), Some(&format!("k{i}"))))
            .await
            .unwrap();
    }
    let tomb = Body::Tombstone(chorus_protocol::v1::Tombstone {
        reason: 1,
        thread_parent_seq: 0,
    });
    t.store.rewrite(&c, Seq(2), tomb.clone()).await.unwrap();
    let page = t.store.read(&c, &q(Anchor::Latest, 10)).unwrap();
    assert_eq!(seqs(&page), vec![1, 2, 3]);
    assert_eq!(page.entries[1].event.body, Some(tomb));
    assert_eq!(page.entries[1].event.author_id, "alice");
    // The idempotency key still answers with the (now tombstoned) original.
    let again = t
        .store
        .append(&c, entry("alice", "m1", Some("k1")))
        .await
        .unwrap();
    assert!(again.duplicate && again.entry.seq == Seq(2));
}

async fn tail_cache_and_disk_agree(kind: Kind) {
    let t = common::open_with(kind, |c| c.tail_cache_entries = 16);
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    for i in 0..100 {
        t.store
            .append(&c, entry("alice", &format!("m{i}"), None))
            .await
            .unwrap();
    }
    // The newest 16 come from the cache, older ones from the engine; both look the same.
    let cached = t.store.read(&c, &q(Anchor::Latest, 10)).unwrap();
    let disk = t.store.read(&c, &q(Anchor::After(Seq(0)), 100)).unwrap();
    assert_eq!(disk.entries.len(), 100);
    assert_eq!(cached.entries[..], disk.entries[90..]);
    assert!(t.store.tail_cache_bytes() > 0);
    let evicted = t.store.evict_idle_logs();
    assert_eq!(evicted, 1);
    assert_eq!(t.store.tail_cache_bytes(), 0);
    let reloaded = t.store.read(&c, &q(Anchor::Latest, 10)).unwrap();
    assert_eq!(cached.entries, reloaded.entries);
}

on_every_engine!(
    appends_are_gapless_and_readable,
    unknown_channels_are_refused,
    retried_appends_return_the_original,
    concurrent_retries_store_once,
    concurrent_appenders_get_gapless_seqs,
    threads_list_root_and_replies,
    rewrite_keeps_the_log_gapless,
    tail_cache_and_disk_agree,
);

/// Acknowledged entries survive closing and reopening, with seqs, ordinals and the idempotency
/// index intact.
async fn reopen_keeps_everything(kind: Kind) {
    let mut t = open(kind);
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    for i in 0..20 {
        t.store
            .append(&c, entry("alice", &format!("m{i}"), Some(&format!("k{i}"))))
            .await
            .unwrap();
    }
    t.reopen();
    let pos = t.store.position(&c).unwrap();
    assert_eq!((pos.head, pos.message_count), (Seq(20), 20));
    let again = t
        .store
        .append(&c, entry("alice", "m3", Some("k3")))
        .await
        .unwrap();
    assert!(again.duplicate && again.entry.seq == Seq(4));
    let next = t
        .store
        .append(&c, entry("alice", "new", None))
        .await
        .unwrap();
    assert_eq!((next.entry.seq, next.entry.ordinal), (Seq(21), 21));
    assert_eq!(t.store.member(&c, &uid("alice")).unwrap().unwrap().role, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_reopen_keeps_everything() {
    reopen_keeps_everything(Kind::Fjall).await;
}

/// After a restart the idempotency filter learns the stored keys a page per append: retries of
/// keys anywhere in a long index (well past the first page) are still found, from the first
/// retry on, and a new key after them is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_reopen_are_found_across_the_whole_index() {
    let mut t = open(Kind::Fjall);
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    let n = 2_600u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let appends: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let store = t.store.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    store
                        .append(&c, entry("alice", &format!("m{i}"), Some(&format!("k{i}"))))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in appends {
            task.await.unwrap();
        }
    }
    t.reopen();
    // Newest keys first: they sort after the first page ("k999" > "k1xxx").
    for i in (0..n).rev() {
        let again = t
            .store
            .append(&c, entry("alice", "retry", Some(&format!("k{i}"))))
            .await
            .unwrap();
        assert!(again.duplicate, "k{i} was found");
        assert_eq!(text_of(&again.entry), format!("m{i}"));
    }
    assert_eq!(t.store.position(&c).unwrap().head, Seq(n));
    let fresh = t
        .store
        .append(&c, entry("alice", "new", Some("k-new")))
        .await
        .unwrap();
    assert!(!fresh.duplicate);
    assert_eq!(fresh.entry.seq, Seq(n + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_reopen_keeps_everything() {
    reopen_keeps_everything(Kind::Sled).await;
}

/// Relaxed durability acknowledges before the periodic sync: appends keep working, syncs are
/// far fewer than batches, and an explicit `sync` still makes everything durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_mode_syncs_periodically() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut t = common::open_with(Kind::Fjall, |c| {
        c.durability = chorus_storage::Durability::RelaxedPeriodicSync {
            interval: std::time::Duration::from_secs(3600),
        };
    });
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    let syncs_before = t.store.commit_stats().syncs.load(Relaxed);
    for i in 0..50 {
        t.store
            .append(&c, entry("alice", &format!("m{i}"), None))
            .await
            .unwrap();
    }
    let stats = t.store.commit_stats();
    assert!(stats.batches.load(Relaxed) >= 50);
    assert_eq!(
        stats.syncs.load(Relaxed),
        syncs_before,
        "no sync within the interval"
    );
    t.store.sync().await.unwrap();
    assert_eq!(t.store.commit_stats().syncs.load(Relaxed), syncs_before + 1);
    t.reopen();
    assert_eq!(t.store.position(&c).unwrap().head, Seq(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_refuses_writes_and_serves_reads() {
    let t = open(Kind::Fjall);
    create(&t.store, "c", "alice", &[]).await;
    let c = cid("c");
    t.store
        .append(&c, entry("alice", "before", None))
        .await
        .unwrap();
    t.store.close();
    let err = t
        .store
        .append(&c, entry("alice", "after", None))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err}");
    assert_eq!(
        t.store
            .read(&c, &q(Anchor::Latest, 10))
            .unwrap()
            .entries
            .len(),
        1
    );
}

/// The commit listener sees every durable entry once, in seq order per channel, even with
/// concurrent appenders, and only after it is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_listener_sees_every_entry_in_order() {
    struct Recorder(std::sync::Mutex<Vec<(String, u64)>>, chorus_storage::Store);
    impl chorus_storage::CommitListener for Recorder {
        fn on_commit(&self, entry: &std::sync::Arc<chorus_storage::LogEntry>) {
            let c = cid(&entry.event.channel_id);
            assert!(
                self.1.entry(&c, entry.seq).unwrap().is_some(),
                "readable before told"
            );
            self.0
                .lock()
                .unwrap()
                .push((entry.event.channel_id.clone(), entry.seq.get()));
        }
    }
    let t = open(Kind::Fjall);
    let recorder =
        std::sync::Arc::new(Recorder(std::sync::Mutex::new(Vec::new()), t.store.clone()));
    assert!(t.store.set_commit_listener(recorder.clone()));
    assert!(!t.store.set_commit_listener(recorder.clone()));
    for ch in ["a", "b"] {
        create(&t.store, ch, "alice", &[]).await;
    }
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = t.store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let ch = if (w + i) % 2 == 0 { "a" } else { "b" };
                store
                    .append(&cid(ch), entry("alice", "x", None))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // The appender is answered before the listener is told: the last entries may reach the
    // listener a moment after their appends returned.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while recorder.0.lock().unwrap().len() < 240 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let seen = recorder.0.lock().unwrap().clone();
    for ch in ["a", "b"] {
        let seqs: Vec<u64> = seen
            .iter()
            .filter(|(c, _)| c == ch)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(seqs, (1..=120).collect::<Vec<_>>(), "channel {ch}");
    }
}
