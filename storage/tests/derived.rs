//! What the log derives: reactions, threads and pins, on every engine — their rules, their
//! idempotency, concurrent appends, restarts and retention.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::{self, Message, channel_event::Body};
use chorus_storage::{AggregateLimits, Appended, NewEntry, Store, StoreError, ThreadCursor};
use common::{Kind, cid, create, entry, keep_newest, open, uid};

fn by(author: &str, body: Body) -> NewEntry {
    NewEntry {
        author: Some(uid(author)),
        time_ms: 2_000,
        body,
        client_msg_id: None,
        withheld: false,
    }
}

fn react(emoji: &str, target: Seq) -> Body {
    Body::ReactionAdded(v1::ReactionAdded {
        target_seq: target.get(),
        emoji: emoji.to_owned(),
    })
}

fn unreact(emoji: &str, target: Seq) -> Body {
    Body::ReactionRemoved(v1::ReactionRemoved {
        target_seq: target.get(),
        emoji: emoji.to_owned(),
    })
}

fn reply(text: &str, root: Seq) -> Body {
    Body::Message(Message {
        text: text.to_owned(),
        thread_parent_seq: root.get(),
        ..Message::default()
    })
}

fn pin(target: Seq) -> Body {
    Body::MessagePinned(v1::MessagePinned {
        target_seq: target.get(),
    })
}

fn unpin(target: Seq) -> Body {
    Body::MessageUnpinned(v1::MessageUnpinned {
        target_seq: target.get(),
    })
}

/// A message by `author`; its seq.
async fn message(store: &Store, c: &ChannelId, author: &str, text: &str) -> Seq {
    store
        .append(c, entry(author, text, None))
        .await
        .unwrap()
        .entry
        .seq
}

/// A root message with one reaction, one reply and a pin.
async fn root_with_everything(store: &Store, c: &ChannelId) -> Seq {
    let m = message(store, c, "alice", "root").await;
    post(store, c, "bob", react("👍", m)).await;
    post(store, c, "bob", reply("r", m)).await;
    post(store, c, "alice", pin(m)).await;
    m
}

async fn post(store: &Store, c: &ChannelId, author: &str, body: Body) -> Appended {
    store.append(c, by(author, body)).await.expect("appended")
}

fn summary(store: &Store, c: &ChannelId, seq: Seq, reader: &str) -> Option<v1::MessageSummary> {
    store
        .summaries(c, &[seq], Some(&uid(reader)))
        .unwrap()
        .into_iter()
        .next()
}

async fn reactions_count_name_and_repeat_as_duplicates(kind: Kind) {
    let t = open(kind);
    let c = cid("r");
    create(&t.store, "r", "alice", &[]).await;
    let m = message(&t.store, &c, "alice", "hi").await;
    let mut first = None;
    for user in ["alice", "bob", "carol", "dave"] {
        let a = post(&t.store, &c, user, react("👍", m)).await;
        assert!(!a.duplicate);
        first.get_or_insert(a.entry.seq);
    }
    post(&t.store, &c, "bob", react(":party:", m)).await;
    let head = t.store.position(&c).unwrap().head;
    let again = post(&t.store, &c, "alice", react("👍", m)).await;
    assert!(again.duplicate, "the same reaction again is a duplicate");
    assert_eq!(
        Some(again.entry.seq),
        first,
        "it answers with the first reaction"
    );
    assert_eq!(
        t.store.position(&c).unwrap().head,
        head,
        "and stores nothing"
    );

    let s = summary(&t.store, &c, m, "alice").expect("the message has a summary");
    assert_eq!(s.reactions.len(), 2);
    let thumbs = &s.reactions[0];
    assert_eq!((thumbs.emoji.as_str(), thumbs.count), ("👍", 4));
    assert_eq!(
        thumbs.users,
        ["alice", "bob", "carol"],
        "the earliest three"
    );
    assert!(thumbs.reacted, "alice reacted");
    assert!(!s.reactions[1].reacted, "alice did not party");
    let eve = summary(&t.store, &c, m, "eve").unwrap();
    assert!(eve.reactions.iter().all(|r| !r.reacted));

    // A named reactor leaves: the list is refilled from the others.
    post(&t.store, &c, "bob", unreact("👍", m)).await;
    let s = summary(&t.store, &c, m, "alice").unwrap();
    assert_eq!(s.reactions[0].count, 3);
    assert_eq!(s.reactions[0].users, ["alice", "carol", "dave"]);
    // The last one of an emoji takes the emoji away.
    post(&t.store, &c, "bob", unreact(":party:", m)).await;
    let s = summary(&t.store, &c, m, "alice").unwrap();
    assert_eq!(s.reactions.len(), 1);
}

async fn a_missing_reaction_or_a_limit_is_refused_before_a_seq(kind: Kind) {
    let t = open(kind);
    let c = cid("l");
    create(&t.store, "l", "alice", &[]).await;
    t.store.set_aggregate_limits(AggregateLimits {
        reactions_per_message: 2,
        reactions_per_user: 1,
        pins_per_channel: 1,
    });
    let m = message(&t.store, &c, "alice", "hi").await;
    let head = t.store.position(&c).unwrap().head;
    let missing = t.store.append(&c, by("bob", unreact("👍", m))).await;
    assert!(
        matches!(missing, Err(StoreError::ReactionNotFound { ref emoji, .. }) if emoji == "👍"),
        "{missing:?}"
    );
    assert_eq!(t.store.position(&c).unwrap().head, head, "no seq was taken");

    post(&t.store, &c, "alice", react("👍", m)).await;
    let own = t.store.append(&c, by("alice", react("🎉", m))).await;
    assert!(
        matches!(
            own,
            Err(StoreError::TooManyReactions {
                max: 1,
                per_user: true,
                ..
            })
        ),
        "{own:?}"
    );
    post(&t.store, &c, "bob", react("🎉", m)).await;
    let third = t.store.append(&c, by("carol", react("🚀", m))).await;
    assert!(
        matches!(
            third,
            Err(StoreError::TooManyReactions {
                max: 2,
                per_user: false,
                ..
            })
        ),
        "{third:?}"
    );
    // An emoji already there still takes more users.
    post(&t.store, &c, "carol", react("🎉", m)).await;

    let other = message(&t.store, &c, "alice", "two").await;
    post(&t.store, &c, "alice", pin(m)).await;
    let over = t.store.append(&c, by("alice", pin(other))).await;
    assert!(
        matches!(over, Err(StoreError::TooManyPins { max: 1, .. })),
        "{over:?}"
    );
    // A target that is not in the log is refused.
    let ahead = t.store.append(&c, by("bob", react("👍", Seq(999)))).await;
    assert!(
        matches!(ahead, Err(StoreError::EntryNotFound { .. })),
        "{ahead:?}"
    );
}

async fn concurrent_reactions_are_counted_exactly(kind: Kind) {
    let t = open(kind);
    let store = Arc::new(t.store.clone());
    let c = cid("many");
    create(&store, "many", "alice", &[]).await;
    let m = store
        .append(&c, entry("alice", "hot", None))
        .await
        .unwrap()
        .entry
        .seq;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (store, c) = (store.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            store
                .append(&c, by(&format!("u{i}"), react("🔥", m)))
                .await
                .unwrap()
        }));
    }
    // One user's same reaction, many times at once: stored once.
    for _ in 0..10 {
        let (store, c) = (store.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            store.append(&c, by("zed", react("🔥", m))).await.unwrap()
        }));
    }
    let mut zed = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let a = task.await.unwrap();
        if i >= 40 {
            zed.push((a.entry.seq, a.duplicate));
        }
    }
    assert_eq!(zed.iter().filter(|(_, dup)| !dup).count(), 1, "{zed:?}");
    assert!(
        zed.iter().all(|(s, _)| *s == zed[0].0),
        "every repeat names one seq: {zed:?}"
    );
    let s = summary(&store, &c, m, "zed").unwrap();
    assert_eq!(s.reactions[0].count, 41);
    assert!(s.reactions[0].reacted);
    assert_eq!(store.position(&c).unwrap().head, Seq(m.get() + 41));
}

async fn threads_summarise_and_list_by_latest_reply(kind: Kind) {
    let t = open(kind);
    let c = cid("t");
    create(&t.store, "t", "alice", &[]).await;
    let a = message(&t.store, &c, "alice", "root a").await;
    let b = message(&t.store, &c, "bob", "root b").await;
    post(&t.store, &c, "bob", reply("1", a)).await;
    post(&t.store, &c, "carol", reply("1", b)).await;
    post(&t.store, &c, "carol", reply("2", a)).await;
    let last = post(&t.store, &c, "bob", reply("3", a)).await;

    let s = summary(&t.store, &c, a, "bob")
        .unwrap()
        .thread
        .expect("a thread");
    assert_eq!(s.reply_count, 3);
    assert_eq!(s.last_reply_seq, last.entry.seq.get());
    assert_eq!(s.last_reply_ms, 2_000);
    assert_eq!(
        s.participants,
        ["alice", "bob", "carol"],
        "the root's author first"
    );

    let page = t.store.threads(&c, None, 1).unwrap();
    assert_eq!(page.threads.len(), 1);
    assert_eq!(page.threads[0].root_seq, a.get(), "the latest reply first");
    let next = page.next.expect("another page");
    let page = t.store.threads(&c, Some(next), 1).unwrap();
    assert_eq!(page.threads[0].root_seq, b.get());
    assert_eq!(page.threads[0].participants, ["bob", "carol"]);
    assert!(page.next.is_none(), "no third page");
    // A thread moves to the front with each reply, and is listed once.
    post(&t.store, &c, "alice", reply("again", b)).await;
    let page = t.store.threads(&c, None, 10).unwrap();
    let roots: Vec<u64> = page.threads.iter().map(|t| t.root_seq).collect();
    assert_eq!(roots, [b.get(), a.get()]);
    let stale = ThreadCursor {
        last_reply: Seq(u64::MAX),
        root: Seq(0),
    };
    assert_eq!(
        t.store.threads(&c, Some(stale), 10).unwrap().threads.len(),
        2
    );
}

async fn pins_repeat_as_duplicates_and_unpin(kind: Kind) {
    let t = open(kind);
    let c = cid("p");
    create(&t.store, "p", "alice", &[]).await;
    let m = message(&t.store, &c, "bob", "pin me").await;
    let n = message(&t.store, &c, "bob", "and me").await;
    let first = post(&t.store, &c, "alice", pin(m)).await;
    let again = post(&t.store, &c, "alice", pin(m)).await;
    assert!(again.duplicate);
    assert_eq!(again.entry.seq, first.entry.seq);
    post(&t.store, &c, "alice", pin(n)).await;
    let pins = t.store.pins(&c).unwrap();
    let targets: Vec<u64> = pins.iter().map(|p| p.target_seq).collect();
    assert_eq!(targets, [n.get(), m.get()], "the latest pin first");
    assert_eq!(pins[1].pinned_by, "alice");
    assert_eq!(pins[1].pin_seq, first.entry.seq.get());
    assert!(summary(&t.store, &c, m, "bob").unwrap().pinned);

    post(&t.store, &c, "alice", unpin(m)).await;
    assert_eq!(t.store.pins(&c).unwrap().len(), 1);
    assert!(
        summary(&t.store, &c, m, "bob").is_none(),
        "nothing left to summarise"
    );
    let twice = t.store.append(&c, by("alice", unpin(m))).await;
    assert!(
        matches!(twice, Err(StoreError::NotPinned { .. })),
        "{twice:?}"
    );
}

async fn derived_records_survive_a_restart(kind: Kind) {
    if kind == Kind::Memory {
        return;
    }
    let mut t = open(kind);
    let c = cid("d");
    create(&t.store, "d", "alice", &[]).await;
    let m = root_with_everything(&t.store, &c).await;
    t.reopen();
    let s = summary(&t.store, &c, m, "bob").unwrap();
    assert_eq!(s.reactions[0].count, 1);
    assert!(s.reactions[0].reacted);
    assert_eq!(s.thread.unwrap().reply_count, 1);
    assert!(s.pinned);
    assert_eq!(t.store.threads(&c, None, 5).unwrap().threads.len(), 1);
    // The state goes on from what was stored: the same reaction is still a duplicate.
    assert!(post(&t.store, &c, "bob", react("👍", m)).await.duplicate);
}

async fn retention_takes_the_derived_records_of_removed_messages(kind: Kind) {
    let t = open(kind);
    let c = cid("ret");
    create(&t.store, "ret", "alice", &[]).await;
    let m = root_with_everything(&t.store, &c).await;
    for i in 0..3 {
        t.store
            .append(&c, entry("alice", &format!("new {i}"), None))
            .await
            .unwrap();
    }
    keep_newest(&t.store, &c, 2).await;
    assert!(t.store.retain_channel(&c, 10_000).await.unwrap() > 0);
    assert!(
        t.store
            .summaries(&c, &[m], Some(&uid("bob")))
            .unwrap()
            .is_empty()
    );
    assert!(t.store.threads(&c, None, 5).unwrap().threads.is_empty());
    assert!(t.store.pins(&c).unwrap().is_empty());
    let late = t.store.append(&c, by("bob", react("🎉", m))).await;
    assert!(
        matches!(late, Err(StoreError::EntryNotFound { .. })),
        "{late:?}"
    );
}

on_every_engine!(
    reactions_count_name_and_repeat_as_duplicates,
    a_missing_reaction_or_a_limit_is_refused_before_a_seq,
    concurrent_reactions_are_counted_exactly,
    threads_summarise_and_list_by_latest_reply,
    pins_repeat_as_duplicates_and_unpin,
    derived_records_survive_a_restart,
    retention_takes_the_derived_records_of_removed_messages,
);
