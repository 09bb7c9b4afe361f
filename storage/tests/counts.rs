//! The counts kept beside the membership records (a channel's owners, a user's channels)
//! always equal what a scan of the records finds, through any sequence of membership changes
//! and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_protocol::v1::{ChannelKind, Role};
use chorus_storage::NewChannel;
use common::{Kind, cid, open, uid};
use proptest::prelude::*;

const USERS: usize = 4;
const CHANNELS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Create {
        ch: usize,
        owner: usize,
        members: Vec<usize>,
    },
    Add {
        ch: usize,
        user: usize,
    },
    Role {
        ch: usize,
        user: usize,
        owner: bool,
    },
    Remove {
        ch: usize,
        user: usize,
    },
    Reopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..CHANNELS, 0..USERS, prop::collection::vec(0..USERS, 0..3))
            .prop_map(|(ch, owner, members)| Op::Create { ch, owner, members }),
        3 => (0..CHANNELS, 0..USERS).prop_map(|(ch, user)| Op::Add { ch, user }),
        2 => (0..CHANNELS, 0..USERS, any::<bool>()).prop_map(|(ch, user, owner)| Op::Role { ch, user, owner }),
        2 => (0..CHANNELS, 0..USERS).prop_map(|(ch, user)| Op::Remove { ch, user }),
        1 => Just(Op::Reopen),
    ]
}

fn user(i: usize) -> chorus_protocol::ids::UserId {
    uid(&format!("u{i}"))
}

fn channel(i: usize) -> chorus_protocol::ids::ChannelId {
    cid(&format!("c{i}"))
}

async fn run(kind: Kind, ops: Vec<Op>) {
    let mut t = open(kind);
    // The model: each existing channel's members and their roles.
    let mut model: BTreeMap<usize, BTreeMap<usize, Role>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Create { ch, owner, members } => {
                let created = t
                    .store
                    .create_channel(NewChannel {
                        id: channel(ch),
                        kind: ChannelKind::Group,
                        name: String::new(),
                        topic: String::new(),
                        created_by: user(owner),
                        created_at_ms: 1,
                        members: members.iter().map(|m| (user(*m), Role::Member)).collect(),
                        custom: Bytes::new(),
                        retention: Default::default(),
                    })
                    .await;
                if let std::collections::btree_map::Entry::Vacant(slot) = model.entry(ch) {
                    created.unwrap();
                    let mut m = BTreeMap::from([(owner, Role::Owner)]);
                    for u in members {
                        m.entry(u).or_insert(Role::Member);
                    }
                    slot.insert(m);
                } else {
                    assert!(created.is_err());
                }
            }
            Op::Add { ch, user: u } => {
                let Some(m) = model.get_mut(&ch) else {
                    continue;
                };
                let added = t
                    .store
                    .add_member(&channel(ch), &user(u), Role::Member, 2)
                    .await
                    .unwrap();
                assert_eq!(added, !m.contains_key(&u));
                m.entry(u).or_insert(Role::Member);
            }
            Op::Role { ch, user: u, owner } => {
                let Some(m) = model.get_mut(&ch) else {
                    continue;
                };
                let role = if owner { Role::Owner } else { Role::Moderator };
                t.store
                    .put_member(&channel(ch), &user(u), role, 3)
                    .await
                    .unwrap();
                m.insert(u, role);
            }
            Op::Remove { ch, user: u } => {
                let Some(m) = model.get_mut(&ch) else {
                    continue;
                };
                let removed = t.store.remove_member(&channel(ch), &user(u)).await.unwrap();
                assert_eq!(removed, m.remove(&u).is_some());
            }
            Op::Reopen => {
                if kind != Kind::Memory {
                    t.reopen();
                }
            }
        }
        for (ch, members) in &model {
            let owners = members.values().filter(|r| **r == Role::Owner).count() as u32;
            assert_eq!(
                t.store.owner_count(&channel(*ch)).await.unwrap(),
                owners,
                "owners of c{ch}"
            );
        }
        for u in 0..USERS {
            let expected = model.values().filter(|m| m.contains_key(&u)).count();
            let listed = t.store.user_channels(&user(u), None, 100).unwrap().len();
            assert_eq!(listed, expected, "index of u{u}");
            // Asked with a limit below the count, the answer is the limit.
            if expected > 0 {
                assert_eq!(
                    t.store
                        .user_channel_count(&user(u), expected - 1)
                        .await
                        .unwrap(),
                    expected - 1
                );
            }
            assert_eq!(
                t.store.user_channel_count(&user(u), 100).await.unwrap(),
                expected,
                "count of u{u}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn kept_counts_match_the_records_in_memory(ops in prop::collection::vec(arb_op(), 1..40)) {
        common::runtime().block_on(run(Kind::Memory, ops));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn kept_counts_match_the_records_across_restarts(ops in prop::collection::vec(arb_op(), 1..30)) {
        common::runtime().block_on(run(Kind::Fjall, ops));
    }
}
