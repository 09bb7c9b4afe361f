//! Both log-key layouts in a real fjall store: channels created now get log numbers, never the
//! same one twice (also across a restart), and a channel from before numbers (`L` keys) still
//! appends, reads, deduplicates, survives a restart and has retention applied. Likewise both
//! idempotency layouts: hashed keys, their collisions (stored in full), and channels from
//! before hashed keys.

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
            },
        )
        .await
        .unwrap();
    (a.entry.seq, a.duplicate)
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
    store.inner.logs.remove(&cid("old"));

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

    store
        .update_channel(
            &cid("old"),
            ChannelPatch {
                retention: Some(RetentionPolicy {
                    max_age_ms: 0,
                    max_entries: 2,
                }),
                ..ChannelPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.retain_channel(&cid("old"), 2_000).await.unwrap(), 4);
    assert_eq!(count(&store, keys::LOG), 2);
    assert_eq!(seqs(&store, "old"), [5, 6]);
    // The numbered logs were not touched.
    assert_eq!(count(&store, keys::NUMBERED_LOG), 5);
    assert_eq!(record(&store, "old").log_number, 0);
}

/// Pretends `id` was created before hashed idempotency keys (store format 2).
async fn without_hashed_idem(store: &Store, id: &str) {
    let mut record = record(store, id);
    record.hashed_idem = false;
    store
        .inner
        .commit(vec![Op::Put(
            keys::channel(&cid(id)),
            record.encode_to_vec(),
        )])
        .await
        .unwrap();
    store.inner.logs.remove(&cid(id));
}

fn idem_keys(store: &Store, id: &str) -> keys::IdemKeys {
    store.inner.channel_log(&cid(id)).unwrap().idem_keys.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_and_full_idempotency_keys_deduplicate_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "new").await;
    create(&store, "old").await;
    without_hashed_idem(&store, "old").await;
    assert!(record(&store, "new").hashed_idem);
    for (i, key) in ["k1", "k2", "k3"].into_iter().enumerate() {
        let seq = Seq(i as u64 + 1);
        assert_eq!(append(&store, "new", key, Some(key)).await, (seq, false));
        assert_eq!(append(&store, "old", key, Some(key)).await, (seq, false));
    }
    assert_eq!(
        (count(&store, keys::HASHED_IDEM), count(&store, keys::IDEM)),
        (3, 3)
    );
    assert_eq!(
        append(&store, "new", "again", Some("k2")).await,
        (Seq(2), true)
    );
    assert_eq!(
        append(&store, "old", "again", Some("k2")).await,
        (Seq(2), true)
    );

    // After a restart the filters learn the stored keys again.
    store.close();
    drop(store);
    let store = open(dir.path());
    for id in ["new", "old"] {
        assert_eq!(
            append(&store, id, "again", Some("k3")).await,
            (Seq(3), true)
        );
        assert_eq!(append(&store, id, "k4", Some("k4")).await, (Seq(4), false));
        assert_eq!(seqs(&store, id), [1, 2, 3, 4]);
    }
    assert_eq!(
        (count(&store, keys::HASHED_IDEM), count(&store, keys::IDEM)),
        (4, 4)
    );

    // Retention removes both kinds with their entries.
    for id in ["new", "old"] {
        store
            .update_channel(
                &cid(id),
                ChannelPatch {
                    retention: Some(RetentionPolicy {
                        max_age_ms: 0,
                        max_entries: 1,
                    }),
                    ..ChannelPatch::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(store.retain_channel(&cid(id), 2_000).await.unwrap(), 3);
    }
    assert_eq!(
        (count(&store, keys::HASHED_IDEM), count(&store, keys::IDEM)),
        (1, 1)
    );
}

/// Two keys with one hash: the second goes under its full key, is found there, and retention
/// removes each from where it is. A collision is staged by moving the first key's hashed
/// entry to the second key's hashed key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_collision_stores_the_second_key_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "c").await;
    assert_eq!(append(&store, "c", "x", Some("x")).await, (Seq(1), false));
    let ik = idem_keys(&store, "c");
    let (hx, hy) = (
        ik.hashed("alice", "x").unwrap(),
        ik.hashed("alice", "y").unwrap(),
    );
    let held = store.inner.engine.get(&hx).unwrap().unwrap();
    store
        .inner
        .commit(vec![Op::Delete(hx), Op::Put(hy.clone(), held)])
        .await
        .unwrap();
    store.close();
    drop(store);
    let store = open(dir.path());

    assert_eq!(append(&store, "c", "y", Some("y")).await, (Seq(2), false));
    assert_eq!(count(&store, keys::IDEM), 1, "y is stored in full");
    assert_eq!(
        count(&store, keys::HASHED_IDEM),
        1,
        "the slot still holds x"
    );
    assert_eq!(append(&store, "c", "y", Some("y")).await, (Seq(2), true));
    store.close();
    drop(store);
    let store = open(dir.path());
    assert_eq!(append(&store, "c", "y", Some("y")).await, (Seq(2), true));

    // The slot's holder goes first; y, still stored, is found under its full key.
    store
        .inner
        .commit(vec![Op::Delete(hy.clone())])
        .await
        .unwrap();
    assert_eq!(append(&store, "c", "y", Some("y")).await, (Seq(2), true));

    // Retention deletes y's full key, not a hashed key that is not y's.
    let z = append(&store, "c", "z", Some("z")).await;
    assert_eq!(z, (Seq(3), false));
    store
        .update_channel(
            &cid("c"),
            ChannelPatch {
                retention: Some(RetentionPolicy {
                    max_age_ms: 0,
                    max_entries: 1,
                }),
                ..ChannelPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.retain_channel(&cid("c"), 2_000).await.unwrap(), 2);
    assert_eq!(count(&store, keys::IDEM), 0);
    assert_eq!(count(&store, keys::HASHED_IDEM), 1, "z's");
    assert!(
        store
            .inner
            .engine
            .get(&ik.hashed("alice", "z").unwrap())
            .unwrap()
            .is_some()
    );
}

/// A key whose hashed key an append still on its way to disk takes goes in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hashed_key_taken_by_a_pending_append_is_not_shared() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "c").await;
    assert_eq!(append(&store, "c", "a", Some("a")).await, (Seq(1), false));
    let log = store.inner.channel_log(&cid("c")).unwrap();
    log.hold_slot_for_test(log.idem_keys.hashed("alice", "b").unwrap());
    assert_eq!(append(&store, "c", "b", Some("b")).await, (Seq(2), false));
    assert_eq!(
        (count(&store, keys::HASHED_IDEM), count(&store, keys::IDEM)),
        (1, 1)
    );
    assert_eq!(append(&store, "c", "b", Some("b")).await, (Seq(2), true));
}
