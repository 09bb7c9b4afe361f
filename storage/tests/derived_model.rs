//! Model-based property test of what the log derives: random posts, replies, reactions, pins
//! and their removals run against the store and against a plain in-memory model; every
//! outcome (stored, duplicate, refused) and, at the end, every summary, thread list and pin
//! list are compared.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use chorus_protocol::ids::Seq;
use chorus_protocol::v1::{self, Message, channel_event::Body};
use chorus_storage::{AggregateLimits, NewEntry, StoreError};
use common::{Kind, cid, create, open, uid};
use proptest::prelude::*;

const USERS: usize = 4;
const EMOJI: [&str; 4] = ["👍", "🎉", ":party:", "❤️"];
const LIMITS: AggregateLimits = AggregateLimits {
    reactions_per_message: 3,
    reactions_per_user: 2,
    pins_per_channel: 2,
};

#[derive(Debug, Clone)]
enum Op {
    Post {
        author: usize,
    },
    Reply {
        author: usize,
        root: usize,
    },
    React {
        user: usize,
        msg: usize,
        emoji: usize,
        add: bool,
    },
    Pin {
        user: usize,
        msg: usize,
        add: bool,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..USERS).prop_map(|author| Op::Post { author }),
        2 => (0..USERS, 0..8usize).prop_map(|(author, root)| Op::Reply { author, root }),
        5 => (0..USERS, 0..8usize, 0..EMOJI.len(), any::<bool>())
            .prop_map(|(user, msg, emoji, add)| Op::React { user, msg, emoji, add }),
        1 => (0..USERS, 0..8usize, any::<bool>()).prop_map(|(user, msg, add)| Op::Pin { user, msg, add }),
    ]
}

fn user(i: usize) -> String {
    format!("u{i}")
}

/// One emoji's reactions in the model: the users, in the order they reacted.
#[derive(Debug, Default, Clone)]
struct Emoji {
    name: String,
    users: Vec<String>,
}

#[derive(Debug, Default)]
struct Model {
    /// Root messages (not replies) by post order: seq and author.
    roots: Vec<(u64, String)>,
    /// Per message seq: emoji in the order of their first reaction (re-added: at the end).
    reactions: BTreeMap<u64, Vec<Emoji>>,
    /// Per (message, user): the emoji and the seq of each reaction.
    mine: BTreeMap<(u64, String), Vec<(String, u64)>>,
    /// Per root: reply count, last reply seq, participants.
    threads: BTreeMap<u64, (u32, u64, Vec<String>)>,
    /// Pins, the latest first: target and pin seq.
    pins: Vec<(u64, u64)>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Stored,
    Duplicate(u64),
    Refused,
}

fn outcome(r: Result<chorus_storage::Appended, StoreError>) -> (Outcome, u64) {
    match r {
        Ok(a) if a.duplicate => (Outcome::Duplicate(a.entry.seq.get()), 0),
        Ok(a) => (Outcome::Stored, a.entry.seq.get()),
        Err(
            StoreError::TooManyReactions { .. }
            | StoreError::ReactionNotFound { .. }
            | StoreError::TooManyPins { .. }
            | StoreError::NotPinned { .. },
        ) => (Outcome::Refused, 0),
        Err(e) => panic!("unexpected {e}"),
    }
}

fn run(ops: Vec<Op>) {
    let rt = common::runtime();
    rt.block_on(async move {
        let t = open(Kind::Memory);
        let store = &t.store;
        store.set_aggregate_limits(LIMITS);
        let c = cid("m");
        create(store, "m", "u0", &[]).await;
        let mut m = Model::default();
        let append = |author: &str, body: Body| {
            store.append(
                &c,
                NewEntry {
                    author: Some(uid(author)),
                    time_ms: 5,
                    body,
                    client_msg_id: None,
                    withheld: false,
                },
            )
        };
        for op in ops {
            match op {
                Op::Post { author } => {
                    let a = append(&user(author), Body::Message(Message::default())).await;
                    m.roots.push((a.unwrap().entry.seq.get(), user(author)));
                }
                Op::Reply { author, root } => {
                    let Some((root, root_author)) = m.roots.get(root).cloned() else {
                        continue;
                    };
                    let body = Body::Message(Message {
                        thread_parent_seq: root,
                        ..Message::default()
                    });
                    let seq = append(&user(author), body).await.unwrap().entry.seq.get();
                    let t = m.threads.entry(root).or_insert((0, 0, vec![root_author]));
                    t.0 += 1;
                    t.1 = seq;
                    if t.2.len() < 10 && !t.2.contains(&user(author)) {
                        t.2.push(user(author));
                    }
                }
                Op::React {
                    user: u,
                    msg,
                    emoji,
                    add,
                } => {
                    let Some((target, _)) = m.roots.get(msg).cloned() else {
                        continue;
                    };
                    let (name, who) = (EMOJI[emoji].to_owned(), user(u));
                    let body = if add {
                        Body::ReactionAdded(v1::ReactionAdded {
                            target_seq: target,
                            emoji: name.clone(),
                        })
                    } else {
                        Body::ReactionRemoved(v1::ReactionRemoved {
                            target_seq: target,
                            emoji: name.clone(),
                        })
                    };
                    let (got, seq) = outcome(append(&who, body).await);
                    let mine = m.mine.entry((target, who.clone())).or_default();
                    let all = m.reactions.entry(target).or_default();
                    let expected = if add {
                        if let Some((_, s)) = mine.iter().find(|(e, _)| *e == name) {
                            Outcome::Duplicate(*s)
                        } else if mine.len() >= LIMITS.reactions_per_user as usize
                            || (!all.iter().any(|e| e.name == name)
                                && all.len() >= LIMITS.reactions_per_message as usize)
                        {
                            Outcome::Refused
                        } else {
                            mine.push((name.clone(), seq));
                            match all.iter_mut().find(|e| e.name == name) {
                                Some(e) => e.users.push(who.clone()),
                                None => all.push(Emoji {
                                    name: name.clone(),
                                    users: vec![who.clone()],
                                }),
                            }
                            Outcome::Stored
                        }
                    } else if let Some(i) = mine.iter().position(|(e, _)| *e == name) {
                        mine.remove(i);
                        if let Some(j) = all.iter().position(|e| e.name == name) {
                            all[j].users.retain(|x| *x != who);
                            if all[j].users.is_empty() {
                                all.remove(j);
                            }
                        }
                        Outcome::Stored
                    } else {
                        Outcome::Refused
                    };
                    assert_eq!(got, expected, "{who} {name} on {target}, add {add}");
                }
                Op::Pin { user: u, msg, add } => {
                    let Some((target, _)) = m.roots.get(msg).cloned() else {
                        continue;
                    };
                    let body = if add {
                        Body::MessagePinned(v1::MessagePinned { target_seq: target })
                    } else {
                        Body::MessageUnpinned(v1::MessageUnpinned { target_seq: target })
                    };
                    let (got, seq) = outcome(append(&user(u), body).await);
                    let at = m.pins.iter().position(|(t, _)| *t == target);
                    let expected = match (add, at) {
                        (true, Some(i)) => Outcome::Duplicate(m.pins[i].1),
                        (true, None) if m.pins.len() >= LIMITS.pins_per_channel as usize => {
                            Outcome::Refused
                        }
                        (true, None) => {
                            m.pins.insert(0, (target, seq));
                            Outcome::Stored
                        }
                        (false, Some(i)) => {
                            m.pins.remove(i);
                            Outcome::Stored
                        }
                        (false, None) => Outcome::Refused,
                    };
                    assert_eq!(got, expected, "pin {target}, add {add}");
                }
            }
        }
        // Every summary, as each user reads it.
        let seqs: Vec<Seq> = m.roots.iter().map(|(s, _)| Seq(*s)).collect();
        for reader in 0..USERS {
            let summaries = store
                .summaries(&c, &seqs, Some(&uid(&user(reader))))
                .unwrap();
            for (seq, _) in &m.roots {
                let s = summaries.iter().find(|s| s.seq == *seq);
                let want = m.reactions.get(seq).cloned().unwrap_or_default();
                let got: Vec<(String, u32)> = s
                    .map(|s| {
                        s.reactions
                            .iter()
                            .map(|r| (r.emoji.clone(), r.count))
                            .collect()
                    })
                    .unwrap_or_default();
                let want_counts: Vec<(String, u32)> = want
                    .iter()
                    .map(|e| (e.name.clone(), e.users.len() as u32))
                    .collect();
                assert_eq!(got, want_counts, "reactions of {seq}");
                for r in s.map(|s| s.reactions.clone()).unwrap_or_default() {
                    let e = want.iter().find(|e| e.name == r.emoji).unwrap();
                    assert_eq!(r.reacted, e.users.contains(&user(reader)), "reacted {seq}");
                    assert_eq!(r.users.len(), e.users.len().min(3), "users named {seq}");
                    assert!(r.users.iter().all(|u| e.users.contains(u)), "only reactors");
                }
                let thread = s.and_then(|s| s.thread.clone());
                match m.threads.get(seq) {
                    Some((count, last, participants)) => {
                        let t = thread.expect("a thread");
                        assert_eq!((t.reply_count, t.last_reply_seq), (*count, *last));
                        assert_eq!(&t.participants, participants);
                    }
                    None => assert!(thread.is_none()),
                }
                let pinned = m.pins.iter().any(|(t, _)| t == seq);
                assert_eq!(s.is_some_and(|s| s.pinned), pinned, "pinned {seq}");
            }
        }
        let listed: Vec<u64> = store
            .pins(&c)
            .unwrap()
            .iter()
            .map(|p| p.target_seq)
            .collect();
        let want: Vec<u64> = m.pins.iter().map(|(t, _)| *t).collect();
        assert_eq!(listed, want, "pins, the latest first");
        let mut want_threads: Vec<(u64, u64)> = m
            .threads
            .iter()
            .map(|(root, (_, last, _))| (*last, *root))
            .collect();
        want_threads.sort_unstable_by(|a, b| b.cmp(a));
        let got_threads: Vec<(u64, u64)> = store
            .threads(&c, None, 100)
            .unwrap()
            .threads
            .iter()
            .map(|t| (t.last_reply_seq, t.root_seq))
            .collect();
        assert_eq!(got_threads, want_threads, "threads, the latest reply first");
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn derived_state_follows_the_model(ops in proptest::collection::vec(arb_op(), 1..120)) {
        run(ops);
    }
}
