//! Bounded queues that lose nothing: an app that reads events late still gets every entry once
//! and in order; a full outbox is a typed error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chorus_client::{Client, ClientConfig, Error, Event, UserId};
use common::{Chorusd, Node, channel, next_entry, text, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_entry_once_in_order() {
    let node = Node::start(common::fast_limits).await;
    let (alice, _a) = node.client("alice").await;
    let (bob, mut bob_events) = Client::connect(
        ClientConfig::new(&node.url(), token("bob"))
            .unwrap()
            .event_capacity(16),
    )
    .await
    .unwrap();
    let room = channel("room");
    alice
        .create_group(&room, "Room", &[UserId::new("bob").unwrap()])
        .await
        .unwrap();
    bob.subscribe(&room).await.unwrap();

    // Bob reads nothing while 300 entries arrive: far more than his 16-event queue.
    let mut last = 0;
    for i in 0..300 {
        last = alice
            .send_text(&room, format!("m{i}"))
            .await
            .unwrap()
            .seq
            .get();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut texts = Vec::new();
    let mut previous = None;
    loop {
        let e = next_entry(&mut bob_events).await;
        let seq = e.seq.get();
        if let Some(p) = previous {
            assert_eq!(seq, p + 1, "in order, no gap, no duplicate");
        }
        previous = Some(seq);
        texts.push(text(&e).to_owned());
        if seq == last {
            break;
        }
    }
    let expected: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    // Still live afterwards.
    let more = alice.send_text(&room, "live").await.unwrap();
    let e = next_entry(&mut bob_events).await;
    assert_eq!((e.seq, text(&e)), (more.seq, "live"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_with_a_typed_error() {
    let mut node = Chorusd::start().await;
    let (alice, mut events) = Client::connect(
        ClientConfig::new(&node.url(), token("alice"))
            .unwrap()
            .outbox_capacity(3)
            .backoff(Duration::from_millis(20), Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let room = channel("room");
    alice.create_group(&room, "Room", &[]).await.unwrap();
    node.kill9();
    loop {
        if let Some(Event::Disconnected { .. }) = events.recv().await {
            break;
        }
    }
    let mut queued = Vec::new();
    for i in 0..3 {
        let alice = alice.clone();
        let room = room.clone();
        queued.push(tokio::spawn(async move {
            alice.send_text(&room, format!("q{i}")).await
        }));
    }
    alice
        .watch_status()
        .wait_for(|s| s.outbox_len == 3)
        .await
        .unwrap();
    let full = alice.send_text(&room, "one too many").await;
    assert!(
        matches!(full, Err(Error::OutboxFull { capacity: 3 })),
        "{full:?}"
    );

    node.spawn().await;
    for q in queued {
        tokio::time::timeout(Duration::from_secs(30), q)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
