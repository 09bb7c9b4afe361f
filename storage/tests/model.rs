//! Model-based property test: random operation sequences run against the store and against a
//! plain in-memory model, and every read is compared. Runs on the memory engine (many cases) and
//! on fjall and sled with reopen in the sequence (fewer cases, real files).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};

use chorus_protocol::ids::Seq;
use chorus_protocol::v1::{Message, Tombstone, channel_event::Body};
use chorus_storage::{Anchor, LogQuery, NewEntry};
use common::{Kind, cid, create, uid};
use proptest::prelude::*;

const CHANNELS: usize = 2;
const USERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Append {
        ch: usize,
        author: usize,
        key: Option<u8>,
        mention: Option<usize>,
    },
    Read {
        ch: usize,
        anchor: u8,
        at: u64,
        limit: usize,
    },
    MarkRead {
        user: usize,
        ch: usize,
        seq: u64,
    },
    ReadState {
        user: usize,
        ch: usize,
    },
    Retain {
        ch: usize,
        keep: u64,
    },
    Tombstone {
        ch: usize,
        seq: u64,
    },
    Truncate {
        ch: usize,
    },
    Evict,
    Reopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    let ch = 0..CHANNELS;
    prop_oneof![
        6 => (ch.clone(), 0..USERS, prop::option::of(0u8..4), prop::option::of(0..USERS))
            .prop_map(|(ch, author, key, mention)| Op::Append { ch, author, key, mention }),
        3 => (ch.clone(), 0u8..4, 0u64..30, 1usize..8)
            .prop_map(|(ch, anchor, at, limit)| Op::Read { ch, anchor, at, limit }),
        2 => (0..USERS, ch.clone(), 0u64..30).prop_map(|(user, ch, seq)| Op::MarkRead { user, ch, seq }),
        2 => (0..USERS, ch.clone()).prop_map(|(user, ch)| Op::ReadState { user, ch }),
        1 => (ch.clone(), 1u64..8).prop_map(|(ch, keep)| Op::Retain { ch, keep }),
        1 => (ch.clone(), 0u64..30).prop_map(|(ch, seq)| Op::Tombstone { ch, seq }),
        1 => ch.prop_map(|ch| Op::Truncate { ch }),
        1 => Just(Op::Evict),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelEntry {
    author: usize,
    text: String,
    tombstone: bool,
    ordinal: u64,
    mention: Option<usize>,
    key: Option<u8>,
}

#[derive(Debug, Default)]
struct ModelChannel {
    entries: BTreeMap<u64, ModelEntry>,
    head: u64,
    first: u64,
    messages: u64,
    removed_ordinal: u64,
    markers: HashMap<usize, (u64, u64)>,
}

impl ModelChannel {
    fn new() -> Self {
        Self {
            first: 1,
            ..Self::default()
        }
    }

    fn cut(&mut self, cut: u64, ordinal: u64) {
        self.entries.retain(|&s, _| s >= cut);
        self.first = cut;
        self.removed_ordinal = ordinal;
    }
}

fn user(i: usize) -> String {
    format!("user{i}")
}

fn text(e: &chorus_storage::LogEntry) -> (String, bool) {
    match &e.event.body {
        Some(Body::Message(m)) => (m.text.clone(), false),
        Some(Body::Tombstone(_)) => (String::new(), true),
        other => panic!("unexpected body {other:?}"),
    }
}

async fn run(kind: Kind, ops: Vec<Op>) {
    let mut t = common::open(kind);
    let mut model: Vec<ModelChannel> = (0..CHANNELS).map(|_| ModelChannel::new()).collect();
    for ch in 0..CHANNELS {
        create(&t.store, &format!("ch{ch}"), &user(0), &[]).await;
    }
    let mut counter = 0u64;
    for op in ops {
        match op {
            Op::Append {
                ch,
                author,
                key,
                mention,
            } => {
                counter += 1;
                let m = &mut model[ch];
                let key_str = key.map(|k| format!("key{k}"));
                let text = format!("msg{counter}");
                let new = NewEntry {
                    author: Some(uid(&user(author))),
                    time_ms: counter,
                    body: Body::Message(Message {
                        text: text.clone(),
                        mentions: mention.map(user).into_iter().collect(),
                        ..Message::default()
                    }),
                    client_msg_id: key_str.clone(),
                    withheld: false,
                };
                let got = t.store.append(&cid(&format!("ch{ch}")), new).await.unwrap();
                let existing = key.and_then(|k| {
                    m.entries
                        .iter()
                        .find(|(_, e)| e.key == Some(k) && e.author == author)
                        .map(|(s, _)| *s)
                });
                match existing {
                    Some(seq) => {
                        assert!(got.duplicate, "retry of {key_str:?} must be a duplicate");
                        assert_eq!(got.entry.seq.get(), seq);
                    }
                    None => {
                        assert!(!got.duplicate);
                        m.head += 1;
                        m.messages += 1;
                        assert_eq!(
                            (got.entry.seq.get(), got.entry.ordinal),
                            (m.head, m.messages)
                        );
                        m.entries.insert(
                            m.head,
                            ModelEntry {
                                author,
                                text,
                                tombstone: false,
                                ordinal: m.messages,
                                mention,
                                key,
                            },
                        );
                    }
                }
            }
            Op::Read {
                ch,
                anchor,
                at,
                limit,
            } => {
                let m = &model[ch];
                let anchor = match anchor {
                    0 => Anchor::Latest,
                    1 => Anchor::Before(Seq(at)),
                    2 => Anchor::After(Seq(at)),
                    _ => Anchor::Around(Seq(at)),
                };
                let page = t
                    .store
                    .read(
                        &cid(&format!("ch{ch}")),
                        &LogQuery {
                            anchor,
                            limit,
                            thread: None,
                        },
                    )
                    .unwrap();
                let avail: Vec<u64> = m.entries.keys().copied().collect();
                let (lo_bound, hi_bound, window): (u64, u64, Vec<u64>) = match anchor {
                    Anchor::Latest => {
                        let w = avail[avail.len().saturating_sub(limit)..].to_vec();
                        (0, u64::MAX, w)
                    }
                    Anchor::Before(s) => {
                        let below: Vec<u64> =
                            avail.iter().copied().filter(|&x| x < s.get()).collect();
                        (
                            s.get(),
                            s.get().saturating_sub(1),
                            below[below.len().saturating_sub(limit)..].to_vec(),
                        )
                    }
                    Anchor::After(s) => {
                        let w: Vec<u64> = avail
                            .iter()
                            .copied()
                            .filter(|&x| x > s.get())
                            .take(limit)
                            .collect();
                        (s.get() + 1, s.get(), w)
                    }
                    Anchor::Around(s) => {
                        let half = ((limit - 1) / 2) as u64;
                        let idx = avail
                            .iter()
                            .position(|&x| x >= s.get().saturating_sub(half))
                            .unwrap_or(avail.len());
                        let start = idx.min(avail.len().saturating_sub(limit));
                        (
                            0,
                            u64::MAX,
                            avail[start..(start + limit).min(avail.len())].to_vec(),
                        )
                    }
                };
                let got: Vec<u64> = page.entries.iter().map(|e| e.seq.get()).collect();
                assert_eq!(got, window, "{anchor:?} limit {limit} over {avail:?}");
                let (lo, hi) = match (window.first(), window.last()) {
                    (Some(&a), Some(&b)) => (a, b),
                    _ => (lo_bound, hi_bound),
                };
                assert_eq!(
                    page.has_more_before,
                    avail.iter().any(|&x| x < lo),
                    "has_more_before"
                );
                assert_eq!(
                    page.has_more_after,
                    avail.iter().any(|&x| x > hi),
                    "has_more_after"
                );
                for e in &page.entries {
                    let want = &m.entries[&e.seq.get()];
                    let (txt, tomb) = text(e);
                    assert_eq!(tomb, want.tombstone);
                    if !tomb {
                        assert_eq!(txt, want.text);
                    }
                    assert_eq!(e.event.author_id, user(want.author));
                    assert_eq!(e.ordinal, want.ordinal);
                }
                assert_eq!(
                    (
                        page.position.head.get(),
                        page.position.first_available.get()
                    ),
                    (m.head, m.first)
                );
            }
            Op::MarkRead { user: u, ch, seq } => {
                let m = &mut model[ch];
                let target = seq.min(m.head);
                let current = m.markers.get(&u).copied().unwrap_or((0, 0));
                if target > current.0 {
                    let ordinal = m
                        .entries
                        .get(&target)
                        .map_or(m.removed_ordinal, |e| e.ordinal);
                    m.markers.insert(u, (target, ordinal));
                }
                let state = t
                    .store
                    .mark_read(&uid(&user(u)), &cid(&format!("ch{ch}")), Seq(seq), 1)
                    .await
                    .unwrap();
                check_state(m, u, &state);
            }
            Op::ReadState { user: u, ch } => {
                let state = t
                    .store
                    .read_state(&uid(&user(u)), &cid(&format!("ch{ch}")))
                    .unwrap();
                check_state(&model[ch], u, &state);
            }
            Op::Retain { ch, keep } => {
                let c = cid(&format!("ch{ch}"));
                common::keep_newest(&t.store, &c, keep).await;
                let removed = t.store.retain_channel(&c, 0).await.unwrap();
                let m = &mut model[ch];
                let mut expected = 0;
                if m.head >= m.first + keep {
                    let cut = m.head + 1 - keep;
                    expected = m.entries.range(..cut).count() as u64;
                    let ordinal = m
                        .entries
                        .get(&(cut - 1))
                        .map_or(m.removed_ordinal, |e| e.ordinal);
                    m.cut(cut, ordinal);
                }
                assert_eq!(removed, expected);
            }
            Op::Tombstone { ch, seq } => {
                let c = cid(&format!("ch{ch}"));
                let result = t
                    .store
                    .rewrite(
                        &c,
                        Seq(seq),
                        Body::Tombstone(Tombstone {
                            reason: 1,
                            thread_parent_seq: 0,
                        }),
                    )
                    .await;
                match model[ch].entries.get_mut(&seq) {
                    Some(e) => {
                        result.unwrap();
                        e.tombstone = true;
                    }
                    None => assert!(result.is_err()),
                }
            }
            Op::Truncate { ch } => {
                let c = cid(&format!("ch{ch}"));
                let before = t.store.position(&c).unwrap().epoch;
                let epoch = t.store.truncate(&c, 1).await.unwrap();
                assert!(epoch > before);
                let m = &mut model[ch];
                let (cut, ordinal) = (m.head + 1, m.messages);
                m.cut(cut, ordinal);
            }
            Op::Evict => {
                t.store.evict_idle_logs();
            }
            Op::Reopen => {
                if kind != Kind::Memory {
                    t.reopen();
                }
            }
        }
    }
}

fn check_state(m: &ModelChannel, u: usize, state: &chorus_storage::ReadState) {
    let (seq, ordinal) = m.markers.get(&u).copied().unwrap_or((0, 0));
    assert_eq!(state.last_read, Seq(seq));
    assert_eq!(state.unread, m.messages.saturating_sub(ordinal), "unread");
    // A deleted (tombstoned) message mentions nobody.
    let mentions = m
        .entries
        .range(seq + 1..)
        .filter(|(_, e)| e.mention == Some(u) && !e.tombstone)
        .count() as u64;
    assert_eq!(state.mentions, mentions, "mentions");
    assert_eq!(state.head, Seq(m.head));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn memory_store_matches_the_model(ops in prop::collection::vec(arb_op(), 1..60)) {
        common::runtime().block_on(run(Kind::Memory, ops));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn fjall_store_matches_the_model(ops in prop::collection::vec(arb_op(), 1..60)) {
        common::runtime().block_on(run(Kind::Fjall, ops));
    }

    #[test]
    fn sled_store_matches_the_model(ops in prop::collection::vec(arb_op(), 1..60)) {
        common::runtime().block_on(run(Kind::Sled, ops));
    }
}
