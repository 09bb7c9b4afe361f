//! The delivery contract through a real `chorusd` that is SIGKILLed and restarted: the app's
//! stream has no gap and no duplicate, and the outbox delivers every publish exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chorus_client::{Event, Events, Published, UserId};
use common::{Chorusd, channel, connect, text};

/// Reads entries until one with `last` arrived; checks seqs are consecutive from the first.
async fn entries_until(events: &mut Events, last: u64) -> (Vec<String>, bool, bool) {
    let mut texts = Vec::new();
    let mut previous: Option<u64> = None;
    let (mut disconnected, mut reconnected) = (false, false);
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("no event within 30 s")
            .expect("stream ended");
        match event {
            Event::Entry(e) => {
                let seq = e.seq.get();
                if let Some(p) = previous {
                    assert_eq!(seq, p + 1, "gap or duplicate in the app's stream");
                }
                previous = Some(seq);
                texts.push(text(&e).to_owned());
                if seq == last {
                    return (texts, disconnected, reconnected);
                }
            }
            Event::Disconnected { .. } => disconnected = true,
            Event::Connected { reconnect, .. } => reconnected |= reconnect,
            Event::Reload { .. } => panic!("a reload means entries could not be recovered"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_while_publishing_loses_and_duplicates_nothing() {
    let mut node = Chorusd::start().await;
    let (alice, _alice_events) = connect(&node.url(), "alice").await;
    let (bob, mut bob_events) = connect(&node.url(), "bob").await;
    let room = channel("room");
    alice
        .create_group(&room, "Room", &[UserId::new("bob").unwrap()])
        .await
        .unwrap();
    bob.subscribe(&room).await.unwrap();

    const N: usize = 400;
    let publisher = {
        let alice = alice.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..N {
                let alice = alice.clone();
                let room = room.clone();
                acks.push(tokio::spawn(async move {
                    alice.send_text(&room, format!("m{i}")).await
                }));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            let mut results = Vec::new();
            for a in acks {
                results.push(a.await.unwrap());
            }
            results
        })
    };
    // Kill the node while publishes are flowing; bring it back on the same port and data.
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.spawn().await;

    let results: Vec<Published> = tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("publishes did not all resolve")
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every publish is acknowledged"))
        .collect();
    let seqs: BTreeSet<u64> = results.iter().map(|p| p.seq.get()).collect();
    assert_eq!(seqs.len(), N, "every publish has its own seq");
    let last = *seqs.last().unwrap();

    let (texts, disconnected, reconnected) = entries_until(&mut bob_events, last).await;
    assert!(
        disconnected && reconnected,
        "the subscriber went through a reconnect"
    );
    let unique: BTreeSet<&String> = texts.iter().collect();
    assert_eq!(
        texts.len(),
        N,
        "each message exactly once: {} entries",
        texts.len()
    );
    assert_eq!(unique.len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_keeps_publishes_across_a_restart() {
    let mut node = Chorusd::start().await;
    let (alice, mut alice_events) = connect(&node.url(), "alice").await;
    let room = channel("room");
    alice.create_group(&room, "Room", &[]).await.unwrap();
    alice.subscribe(&room).await.unwrap();

    node.kill9();
    // Wait until the client noticed, then publish while the node is down.
    loop {
        if let Some(Event::Disconnected { .. }) = alice_events.recv().await {
            break;
        }
    }
    let mut pending = Vec::new();
    for i in 0..20 {
        let client = alice.clone();
        let room = room.clone();
        pending.push(tokio::spawn(async move {
            client.send_text(&room, format!("offline {i}")).await
        }));
        // Keep the call order deterministic: the next publish is made once this one is queued.
        alice
            .watch_status()
            .wait_for(|s| s.outbox_len == i + 1)
            .await
            .unwrap();
    }
    assert_eq!(alice.status().outbox_len, 20);
    assert!(!alice.status().connected);

    node.spawn().await;
    let mut seqs = Vec::new();
    for p in pending {
        let published = tokio::time::timeout(Duration::from_secs(30), p)
            .await
            .expect("an outbox publish did not resolve")
            .unwrap()
            .unwrap();
        seqs.push(published.seq.get());
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "stored in call order: {seqs:?}"
    );
    let (texts, _, _) = entries_until(&mut alice_events, *seqs.last().unwrap()).await;
    let expected: Vec<String> = (0..20).map(|i| format!("offline {i}")).collect();
    assert_eq!(texts, expected);
    let page = alice.latest(&room, 100).await.unwrap();
    let stored: Vec<&str> = page
        .entries
        .iter()
        .map(text)
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(stored, expected, "each stored once");
    assert_eq!(alice.status().outbox_len, 0);
}
