//! Channels, members, read markers with unread counts, users and bans, on every engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use chorus_protocol::ids::Seq;
use chorus_protocol::v1::{ChannelKind, Message, Role, channel_event::Body};
use chorus_storage::{BanRecord, BanScope, ChannelPatch, NewEntry, StoreError};
use common::{Kind, cid, create, entry, open, uid};

async fn channels_and_members(kind: Kind) {
    let t = open(kind);
    create(&t.store, "team", "alice", &["bob", "carol"]).await;
    let c = cid("team");
    let info = t.store.channel(&c).unwrap().unwrap();
    assert_eq!(info.record.member_count, 3);
    assert_eq!(info.record.kind(), ChannelKind::Group);
    assert_eq!(info.position.head, Seq(0));
    assert_eq!(info.position.first_available, Seq(1));
    assert_eq!(
        t.store.member(&c, &uid("alice")).unwrap().unwrap().role(),
        Role::Owner
    );
    assert_eq!(
        t.store.member(&c, &uid("bob")).unwrap().unwrap().role(),
        Role::Member
    );

    let again = t.store.create_channel(chorus_storage::NewChannel {
        id: c.clone(),
        kind: ChannelKind::Public,
        name: String::new(),
        topic: String::new(),
        created_by: uid("mallory"),
        created_at_ms: 5,
        members: vec![],
        custom: Bytes::new(),
        retention: Default::default(),
    });
    assert!(matches!(again.await, Err(StoreError::ChannelExists(_))));

    assert!(
        t.store
            .put_member(&c, &uid("dave"), Role::Moderator, 2_000)
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .put_member(&c, &uid("dave"), Role::Member, 3_000)
            .await
            .unwrap()
    );
    let dave = t.store.member(&c, &uid("dave")).unwrap().unwrap();
    assert_eq!((dave.role(), dave.joined_at_ms), (Role::Member, 2_000));
    assert!(t.store.remove_member(&c, &uid("carol")).await.unwrap());
    assert!(!t.store.remove_member(&c, &uid("carol")).await.unwrap());
    let members: Vec<String> = t
        .store
        .members(&c, None, 10)
        .unwrap()
        .into_iter()
        .map(|(u, _)| u.to_string())
        .collect();
    assert_eq!(members.len(), 3);
    assert!(!members.contains(&"carol".to_owned()));
    let page1 = t.store.members(&c, None, 2).unwrap();
    let page2 = t.store.members(&c, Some(&page1[1].0), 2).unwrap();
    assert_eq!(page1.len() + page2.len(), 3);
    assert_eq!(t.store.channel(&c).unwrap().unwrap().record.member_count, 3);
    assert_eq!(
        t.store.user_channels(&uid("dave"), None, 10).unwrap(),
        vec![c.clone()]
    );
    assert!(
        t.store
            .user_channels(&uid("carol"), None, 10)
            .unwrap()
            .is_empty()
    );

    t.store.set_mute(&c, &uid("bob"), 9_000).await.unwrap();
    assert_eq!(
        t.store
            .member(&c, &uid("bob"))
            .unwrap()
            .unwrap()
            .muted_until_ms,
        9_000
    );
    assert!(matches!(
        t.store.set_mute(&c, &uid("zed"), 1).await,
        Err(StoreError::NotMember { .. })
    ));

    let patched = t
        .store
        .update_channel(
            &c,
            ChannelPatch {
                topic: Some("launch".into()),
                archived: Some(true),
                ..ChannelPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (patched.record.name.as_str(), patched.record.topic.as_str()),
        ("team", "launch")
    );
    assert!(patched.record.archived);
    create(&t.store, "other", "bob", &[]).await;
    let all = t.store.channels(None, 10).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(t.store.channels(Some(&all[0]), 10).unwrap(), all[1..]);
}

async fn direct_pairs_are_unique(kind: Kind) {
    let t = open(kind);
    let (a, b) = (uid("alice"), uid("bob"));
    let (first, created) = t
        .store
        .direct_channel(&a, &b, cid("dm-1"), 10)
        .await
        .unwrap();
    assert!(created);
    let (second, created) = t
        .store
        .direct_channel(&b, &a, cid("dm-2"), 20)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(first.id, second.id);
    assert_eq!(second.record.kind(), ChannelKind::Direct);
    assert_eq!(second.record.member_count, 2);
    assert!(t.store.channel(&cid("dm-2")).unwrap().is_none());
}

/// Direct channels take two stripes (the pair's and the new channel's). Once a pair and its id
/// shared a stripe and the creation waited on itself forever, taking every other key on that
/// stripe with it; with 1,500 channels at least one such pair is all but certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_direct_channels_at_once() {
    let t = open(Kind::Memory);
    let store = t.store.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1_500 {
        // Both ends ask at once, each with its own candidate id: one wins, both get it.
        for (x, y, side) in [("a", "b", "x"), ("b", "a", "y")] {
            let store = store.clone();
            let (x, y) = (uid(&format!("{x}{i}")), uid(&format!("{y}{i}")));
            let id = cid(&format!("dm-{i}-{side}"));
            tasks.spawn(async move {
                let (info, _) = store.direct_channel(&x, &y, id, 1).await?;
                Ok::<_, StoreError>((i, info.id))
            });
        }
    }
    let all = tokio::time::timeout(std::time::Duration::from_secs(60), tasks.join_all())
        .await
        .expect("no direct channel creation may wait forever");
    let mut by_pair = std::collections::HashMap::new();
    for result in all {
        let (i, id) = result.unwrap();
        by_pair.entry(i).or_insert_with(Vec::new).push(id);
    }
    assert_eq!(by_pair.len(), 1_500);
    assert!(
        by_pair
            .values()
            .all(|ids| ids.len() == 2 && ids[0] == ids[1])
    );
    let user = store
        .update_user(&uid("someone"), |u| u.last_seen_ms = 1)
        .await;
    assert!(user.is_ok(), "other keys still lock");
}

async fn unread_counts_need_no_scan(kind: Kind) {
    let t = open(kind);
    create(&t.store, "c", "alice", &["bob"]).await;
    let c = cid("c");
    let bob = uid("bob");
    for i in 0..5 {
        t.store
            .append(&c, entry("alice", &format!("m{i}"), None))
            .await
            .unwrap();
    }
    // Reactions are log entries but not messages: they do not count as unread.
    t.store
        .append(
            &c,
            NewEntry {
                body: Body::ReactionAdded(chorus_protocol::v1::ReactionAdded {
                    target_seq: 1,
                    emoji: "👍".into(),
                }),
                ..entry("alice", "", None)
            },
        )
        .await
        .unwrap();
    let mention = NewEntry {
        body: Body::Message(Message {
            text: "@bob look".into(),
            mentions: vec!["bob".into()],
            ..Message::default()
        }),
        ..entry("alice", "", None)
    };
    t.store.append(&c, mention).await.unwrap();

    let state = t.store.read_state(&bob, &c).unwrap();
    assert_eq!(
        (state.last_read, state.unread, state.mentions, state.head),
        (Seq(0), 6, 1, Seq(7))
    );
    let state = t.store.mark_read(&bob, &c, Seq(3), 50).await.unwrap();
    assert_eq!(
        (state.last_read, state.unread, state.mentions),
        (Seq(3), 3, 1)
    );
    // Markers never move back.
    let state = t.store.mark_read(&bob, &c, Seq(2), 60).await.unwrap();
    assert_eq!((state.last_read, state.updated_at_ms), (Seq(3), 50));
    // Beyond the head is clamped to the head.
    let state = t.store.mark_read(&bob, &c, Seq(99), 70).await.unwrap();
    assert_eq!(
        (state.last_read, state.unread, state.mentions),
        (Seq(7), 0, 0)
    );
    // Whether a mark moved the marker (read receipts are sent only then).
    assert!(
        !t.store
            .advance_read_marker(&bob, &c, Seq(7), 80)
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .advance_read_marker(&bob, &c, Seq(5), 80)
            .await
            .unwrap()
    );
    let alice = uid("alice");
    assert!(
        t.store
            .advance_read_marker(&alice, &c, Seq(5), 80)
            .await
            .unwrap()
    );
    assert!(
        t.store
            .advance_read_marker(&alice, &c, Seq(6), 81)
            .await
            .unwrap()
    );
}

async fn users_and_bans(kind: Kind) {
    let t = open(kind);
    let u = uid("alice");
    assert!(t.store.user(&u).unwrap().is_none());
    t.store
        .update_user(&u, |r| r.last_seen_ms = 5)
        .await
        .unwrap();
    let r = t
        .store
        .update_user(&u, |r| r.display_name = "Alice".into())
        .await
        .unwrap();
    assert_eq!((r.display_name.as_str(), r.last_seen_ms), ("Alice", 5));
    assert_eq!(t.store.user(&u).unwrap().unwrap(), r);

    let c = cid("c");
    let ban = BanRecord {
        until_ms: 1_000,
        reason: "spam".into(),
        banned_by: "mod".into(),
        created_at_ms: 1,
        shadow: false,
    };
    t.store
        .ban(BanScope::Channel(&c), &u, ban.clone())
        .await
        .unwrap();
    assert_eq!(
        t.store.ban_of(BanScope::Channel(&c), &u, 500).unwrap(),
        Some(ban)
    );
    assert_eq!(
        t.store.ban_of(BanScope::Channel(&c), &u, 1_000).unwrap(),
        None,
        "expired"
    );
    assert_eq!(t.store.ban_of(BanScope::Server, &u, 500).unwrap(), None);
    t.store
        .ban(BanScope::Server, &u, BanRecord::default())
        .await
        .unwrap();
    assert!(
        t.store
            .ban_of(BanScope::Server, &u, u64::MAX)
            .unwrap()
            .is_some(),
        "0 = forever"
    );
    assert!(t.store.unban(BanScope::Server, &u).await.unwrap());
    assert!(!t.store.unban(BanScope::Server, &u).await.unwrap());
}

on_every_engine!(
    channels_and_members,
    direct_pairs_are_unique,
    unread_counts_need_no_scan,
    users_and_bans,
);
