//! Reactions, threads, quotes and pins over real sockets: the typed calls, the entries
//! subscribers see, what history shows, and that it all survives a `kill -9`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chorus_client::proto::{self, ErrorCode};
use chorus_client::{EntryBody, Error, Seq, UserId};
use common::{Chorusd, Node, channel, connect, next_entry};

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

fn code(e: Error) -> ErrorCode {
    match e {
        Error::Server(s) => s.code,
        other => panic!("not a server error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_threads_quotes_and_pins_over_the_wire() {
    let node = Node::start(common::fast_limits).await;
    let (alice, _) = node.client("alice").await;
    let (bob, mut bob_events) = node.client("bob").await;
    let room = channel("room");
    alice
        .create_group(&room, "Room", &[user("bob")])
        .await
        .unwrap();
    bob.subscribe(&room).await.unwrap();
    let root = alice.send_text(&room, "root").await.unwrap().seq;
    assert_eq!(next_entry(&mut bob_events).await.seq, root);

    // Reactions: live entries, idempotent, typed refusals.
    let first = alice.react(&room, root, "👍").await.unwrap();
    let live = next_entry(&mut bob_events).await;
    assert!(
        matches!(live.body, EntryBody::ReactionAdded { target, ref emoji } if target == root && emoji == "👍")
    );
    let again = alice.react(&room, root, "👍").await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    bob.react(&room, root, ":party:").await.unwrap();
    assert_eq!(
        code(bob.react(&room, root, "nope").await.unwrap_err()),
        ErrorCode::Invalid
    );
    assert_eq!(
        code(bob.unreact(&room, root, "🚀").await.unwrap_err()),
        ErrorCode::NotFound
    );

    // A thread, a reply shown in the channel, a quote.
    bob.reply(&room, root, "first reply", false).await.unwrap();
    let shown = alice.reply(&room, root, "second", true).await.unwrap().seq;
    let nested = bob.reply(&room, shown, "deeper", false).await.unwrap_err();
    assert_eq!(code(nested), ErrorCode::Invalid);
    let quote = bob
        .publish(
            &room,
            proto::Message {
                text: "as alice said".into(),
                quoted_seq: root.get(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .seq;

    // Pins: moderators only.
    assert_eq!(
        code(bob.pin(&room, root).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    alice.pin(&room, root).await.unwrap();
    assert!(alice.pin(&room, root).await.unwrap().duplicate);

    let page = bob
        .history(proto::History {
            channel_id: room.to_string(),
            anchor: Some(proto::history::Anchor::AroundSeq(root.get())),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let s = page.summary(root).expect("the root has a summary");
    assert_eq!(s.reactions.len(), 2);
    assert_eq!(
        (s.reactions[0].emoji.as_str(), s.reactions[0].count),
        ("👍", 1)
    );
    assert!(
        !s.reactions[0].reacted && s.reactions[1].reacted,
        "as bob sees it"
    );
    let thread = s.thread.as_ref().expect("a thread");
    assert_eq!(thread.reply_count, 2);
    assert_eq!(thread.last_reply, shown);
    assert_eq!(thread.participants, [user("alice"), user("bob")]);
    assert_eq!(s.pinned.as_ref().map(|(by, _)| by.as_str()), Some("alice"));

    let quoting = bob
        .history(proto::History {
            channel_id: room.to_string(),
            anchor: Some(proto::history::Anchor::AroundSeq(quote.get())),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(quoting.quoted.len(), 1);
    assert_eq!(quoting.quoted[0].seq, root);

    let threads = bob.list_threads(&room, None, 0).await.unwrap();
    assert_eq!(threads.threads.len(), 1);
    assert_eq!(
        threads.threads[0].root_entry.as_ref().map(|e| e.seq),
        Some(root)
    );
    assert!(threads.next_cursor.is_none());
    let pins = bob.list_pins(&room, None, 0).await.unwrap();
    assert_eq!(pins.pins.len(), 1);
    assert_eq!(pins.pins[0].message.seq, root);
    alice.unpin(&room, root).await.unwrap();
    assert!(bob.list_pins(&room, None, 0).await.unwrap().pins.is_empty());
}

/// Acknowledged reactions, replies and pins are durable: after `kill -9` and a restart the
/// summaries are those of before, and a repeated reaction is still recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_state_survives_kill_9() {
    let mut node = Chorusd::start().await;
    let room = channel("room");
    let root;
    {
        let (alice, _) = connect(&node.url(), "alice").await;
        alice
            .create_group(&room, "Room", &[user("bob")])
            .await
            .unwrap();
        root = alice.send_text(&room, "root").await.unwrap().seq;
        let (bob, _) = connect(&node.url(), "bob").await;
        bob.react(&room, root, "🔥").await.unwrap();
        bob.reply(&room, root, "reply", false).await.unwrap();
        alice.pin(&room, root).await.unwrap();
        node.kill9();
    }
    node.spawn().await;
    let (bob, _) = connect(&node.url(), "bob").await;
    let page = bob.latest(&room, 10).await.unwrap();
    let s = page.summary(root).expect("summary after restart");
    assert_eq!(s.reactions[0].count, 1);
    assert!(s.reactions[0].reacted);
    assert_eq!(s.thread.as_ref().map(|t| t.reply_count), Some(1));
    assert!(s.pinned.is_some());
    assert!(bob.react(&room, root, "🔥").await.unwrap().duplicate);
    assert_eq!(
        bob.list_threads(&room, None, 0)
            .await
            .unwrap()
            .threads
            .len(),
        1
    );
    assert_eq!(page.head, Seq(root.get() + 3));
}

/// A shadow ban seen from both sides, live and in history: the banned member's post reaches
/// them as posted, and everyone else as a withheld tombstone at the same seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_ban_seen_from_both_sides() {
    use chorus_client::TombstoneReason;
    let node = Node::start(common::fast_limits).await;
    let (owner, _) = node.client("owner").await;
    let (troll, mut troll_events) = node.client("troll").await;
    let (bob, mut bob_events) = node.client("bob").await;
    let room = channel("room");
    owner
        .create_group(&room, "Room", &[user("troll"), user("bob")])
        .await
        .unwrap();
    troll.subscribe(&room).await.unwrap();
    bob.subscribe(&room).await.unwrap();
    owner
        .ban(&room, &user("troll"), None, "spam", true)
        .await
        .unwrap();
    let seq = troll.send_text(&room, "buy now").await.unwrap().seq;
    let mine = next_entry(&mut troll_events).await;
    assert_eq!((mine.seq, common::text(&mine)), (seq, "buy now"));
    let theirs = next_entry(&mut bob_events).await;
    assert_eq!(theirs.seq, seq, "no gap for the others");
    assert!(matches!(
        theirs.body,
        EntryBody::Tombstone {
            reason: TombstoneReason::Withheld,
            ..
        }
    ));
    let page = bob.latest(&room, 1).await.unwrap();
    assert!(matches!(page.entries[0].body, EntryBody::Tombstone { .. }));
    let page = troll.latest(&room, 1).await.unwrap();
    assert_eq!(common::text(&page.entries[0]), "buy now");
    // A plain ban ends the member's subscription and keeps them out.
    owner.unban(&room, &user("troll")).await.unwrap();
    owner
        .ban(&room, &user("bob"), None, "", false)
        .await
        .unwrap();
    assert_eq!(
        code(bob.send_text(&room, "hi").await.unwrap_err()),
        ErrorCode::NotFound
    );
}
