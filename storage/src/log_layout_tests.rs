//! Both log-key layouts in a real fjall store: channels created now get log numbers, never the
//! same one twice (also across a restart), and a channel from before numbers (`L` keys) still
//! appends, reads, deduplicates, survives a restart and has retention applied. Also erasure's
//! index clean-up: a rewrite under a new author drops the entry's idempotency key, and the
//! direct-pair index entries naming a user can be forgotten.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::Bound;
use std::path::Path;

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1::{ChannelKind, Message, channel_event::Body};
use prost::Message as _;

use crate::engine::{Direction, Op};
use crate::records::ChannelRecord;
use crate::{
    Anchor, ChannelPatch, EngineKind, LogQuery, NewChannel, NewEntry, RetentionPolicy, Store,
    StoreConfig, keys,
};

fn open(dir: &Path) -> Store {
    let mut config = StoreConfig::new(dir);
    config.engine = EngineKind::Fjall;
    config.engine_cache_bytes = 8 * 1024 * 1024;
    Store::open(config).unwrap()
}

fn cid(s: &str) -> ChannelId {
    ChannelId::new(s).unwrap()
}

async fn create(store: &Store, id: &str) {
    store
        .create_channel(NewChannel {
            id: cid(id),
            kind: ChannelKind::Group,
            name: id.to_owned(),
            topic: String::new(),
            created_by: UserId::new("alice").unwrap(),
            created_at_ms: 1_000,
            members: Vec::new(),
            custom: Bytes::new(),
            retention: RetentionPolicy::default(),
        })
        .await
        .unwrap();
}

fn record(store: &Store, id: &str) -> ChannelRecord {
    store
        .inner
        .record(&keys::channel(&cid(id)))
        .unwrap()
        .unwrap()
}

/// How many keys of one table the engine holds.
fn count(store: &Store, table: u8) -> usize {
    store
        .inner
        .engine
        .scan(
            Bound::Included(&[table][..]),
            Bound::Excluded(&[table + 1][..]),
            Direction::Forward,
            usize::MAX,
        )
        .unwrap()
        .len()
}

async fn append(store: &Store, id: &str, text: &str, key: Option<&str>) -> (Seq, bool) {
    let a = store
        .append(
            &cid(id),
            NewEntry {
                author: Some(UserId::new("alice").unwrap()),
                time_ms: 1_000,
                body: Body::Message(Message {
                    text: text.to_owned(),
                    ..Message::default()
                }),
                client_msg_id: key.map(str::to_owned),
                withheld: false,
            },
        )
        .await
        .unwrap();
    (a.entry.seq, a.duplicate)
}

/// Gives channel `id` a retention policy of its newest `n` entries.
async fn keep_newest(store: &Store, id: &str, n: u64) {
    store
        .update_channel(
            &cid(id),
            ChannelPatch {
                retention: Some(RetentionPolicy {
                    max_age_ms: 0,
                    max_entries: n,
                }),
                ..ChannelPatch::default()
            },
        )
        .await
        .unwrap();
}

fn seqs(store: &Store, id: &str) -> Vec<u64> {
    let query = LogQuery {
        anchor: Anchor::Latest,
        limit: 100,
        thread: None,
    };
    let page = store.read(&cid(id), &query).unwrap();
    page.entries.iter().map(|e| e.seq.get()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_and_named_logs_live_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "a").await;
    create(&store, "b").await;
    assert_eq!(
        (
            record(&store, "a").log_number,
            record(&store, "b").log_number
        ),
        (1, 2)
    );

    // `old` as a channel from before numbers: its record has none, and nothing is logged yet.
    create(&store, "old").await;
    let mut old = record(&store, "old");
    old.log_number = 0;
    store
        .inner
        .commit(vec![Op::Put(
            keys::channel(&cid("old")),
            old.encode_to_vec(),
        )])
        .await
        .unwrap();
    store.inner.logs.forget(&cid("old"));

    for i in 1..=5 {
        append(&store, "a", &format!("a{i}"), None).await;
        append(&store, "old", &format!("o{i}"), None).await;
    }
    assert_eq!(
        (count(&store, keys::LOG), count(&store, keys::NUMBERED_LOG)),
        (5, 5)
    );
    assert_eq!(seqs(&store, "old"), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(&store, "a"), [1, 2, 3, 4, 5]);

    store.close();
    drop(store);
    let store = open(dir.path());
    // The counter was stored with the channels: no number is given twice.
    create(&store, "c").await;
    assert_eq!(record(&store, "c").log_number, 4);
    assert_eq!(seqs(&store, "old"), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(&store, "a"), [1, 2, 3, 4, 5]);
    assert_eq!(
        append(&store, "old", "o6", Some("k")).await,
        (Seq(6), false)
    );
    assert_eq!(append(&store, "old", "o6", Some("k")).await, (Seq(6), true));
    assert_eq!(count(&store, keys::LOG), 6);

    keep_newest(&store, "old", 2).await;
    assert_eq!(store.retain_channel(&cid("old"), 2_000).await.unwrap(), 4);
    assert_eq!(count(&store, keys::LOG), 2);
    assert_eq!(seqs(&store, "old"), [5, 6]);
    // The numbered logs were not touched.
    assert_eq!(count(&store, keys::NUMBERED_LOG), 5);
    assert_eq!(record(&store, "old").log_number, 0);
}

/// Erasing an author (a rewrite under a new author) drops the entries' idempotency keys, which
/// name the old author and which retention, going by the new author, would never find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_author_takes_the_idempotency_key_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "c").await;
    assert_eq!(append(&store, "c", "m1", Some("k1")).await, (Seq(1), false));
    assert_eq!(append(&store, "c", "m2", Some("k2")).await, (Seq(2), false));
    assert_eq!(count(&store, keys::IDEM), 2);
    let body = |text: &str| {
        Body::Message(Message {
            text: text.to_owned(),
            ..Message::default()
        })
    };
    // An edit by the same author keeps it; a new author drops it.
    store.rewrite(&cid("c"), Seq(1), body("m1'")).await.unwrap();
    assert_eq!(count(&store, keys::IDEM), 2);
    let e = store
        .rewrite_as(&cid("c"), Seq(1), body("gone"), Some("erased-01"))
        .await
        .unwrap();
    assert_eq!(e.event.author_id, "erased-01");
    assert_eq!(count(&store, keys::IDEM), 1);
    assert_eq!(append(&store, "c", "m2", Some("k2")).await, (Seq(2), true));

    // Retention then removes what is left, and finds nothing of the old author to miss.
    keep_newest(&store, "c", 1).await;
    append(&store, "c", "m3", None).await;
    assert_eq!(store.retain_channel(&cid("c"), 2_000).await.unwrap(), 2);
    assert_eq!(count(&store, keys::IDEM), 0);
}

/// Erasure's direct-pair cleanup: every pair naming the user goes, on either side of the key;
/// the channels and other pairs stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_user_deletes_the_direct_pairs_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let u = |s: &str| UserId::new(s).unwrap();
    for (a, b, id) in [
        ("alice", "bob", "d1"),
        ("carol", "alice", "d2"),
        ("bob", "carol", "d3"),
        ("alicea", "bob", "d4"),
    ] {
        store
            .direct_channel(&u(a), &u(b), cid(id), 1_000)
            .await
            .unwrap();
    }
    assert_eq!(count(&store, keys::DIRECT), 4);
    assert_eq!(store.forget_direct_pairs(&u("alice")).await.unwrap(), 2);
    assert_eq!(count(&store, keys::DIRECT), 2);
    assert!(
        store.channel(&cid("d1")).unwrap().is_some(),
        "the channel stays"
    );
    // The other pairs still find their channels.
    let (d3, created) = store
        .direct_channel(&u("carol"), &u("bob"), cid("new"), 2_000)
        .await
        .unwrap();
    assert_eq!((d3.id, created), (cid("d3"), false));
    let (d4, created) = store
        .direct_channel(&u("bob"), &u("alicea"), cid("new"), 2_000)
        .await
        .unwrap();
    assert_eq!((d4.id, created), (cid("d4"), false));
    assert_eq!(store.forget_direct_pairs(&u("nobody")).await.unwrap(), 0);
    // A forgotten pair is a new one.
    let (d5, created) = store
        .direct_channel(&u("bob"), &u("alice"), cid("d5"), 3_000)
        .await
        .unwrap();
    assert_eq!((d5.id, created), (cid("d5"), true));
}
