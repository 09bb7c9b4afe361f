//! The recorder against one in-process node (no root needed): what SDK clients did and saw
//! becomes a history that the checkers accept, and that they reject once tampered with, so a
//! green workload run means the recorder saw the real operations.

use std::time::Duration;

use chorus_client::{ChannelId, Client, ClientConfig, UserId};
use chorus_cluster_tests::checkers;
use chorus_cluster_tests::history::Outcome;
use chorus_cluster_tests::recorder::{Ended, Recorder, read_log};
use chorus_testkit::node::Node;
use chorus_testkit::token::token;

async fn client(node: &Node, user: &str) -> (Client, chorus_client::Events) {
    let config = ClientConfig::new(&format!("ws://{}/", node.addr()), token(user))
        .unwrap_or_else(|e| panic!("{e}"));
    Client::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

#[tokio::test]
async fn a_recorded_history_passes_the_checkers_and_fails_them_once_tampered_with() {
    let node = Node::start().await;
    let (alice, _a) = client(&node, "alice").await;
    let (bob, bob_events) = client(&node, "bob").await;
    let room = ChannelId::new("room").unwrap_or_else(|e| panic!("{e}"));
    let bob_id = UserId::new("bob").unwrap_or_else(|e| panic!("{e}"));
    alice
        .create_group(&room, "Room", &[bob_id])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    bob.subscribe(&room).await.unwrap_or_else(|e| panic!("{e}"));

    let recorder = Recorder::new();
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let sub = {
        let rec = recorder.clone();
        tokio::spawn(async move {
            rec.subscriber(0, bob_events, async move {
                let _ = done_rx.wait_for(|d| *d).await;
            })
            .await
        })
    };
    let (attempt, give_up) = (Duration::from_secs(3), Duration::from_secs(10));
    for k in 0..20 {
        let outcome = recorder
            .publish(0, &alice, &room, &format!("k{k}"), attempt, give_up)
            .await;
        assert!(matches!(outcome, Outcome::Ok { .. }), "{outcome:?}");
    }
    // A retry of a stored key is acknowledged with the original position.
    let again = recorder
        .publish(0, &alice, &room, "k3", attempt, give_up)
        .await;
    let first = recorder.history(Vec::new()).ops[3].outcome.clone();
    assert_eq!(again, first);
    // A publish the server refuses (bob may not post to a channel he is not in) is a failure.
    let elsewhere = ChannelId::new("elsewhere").unwrap_or_else(|e| panic!("{e}"));
    alice
        .create_group(&elsewhere, "Elsewhere", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = recorder
        .publish(0, &bob, &elsewhere, "no", attempt, give_up)
        .await;
    assert!(matches!(refused, Outcome::Fail(_)), "{refused:?}");

    let log = read_log(&alice, &room)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = log.last().map_or(0, |e| e.seq);
    while recorder.delivered_up_to(0, &room).unwrap_or(0) < head {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = done_tx.send(true);
    assert_eq!(
        sub.await.unwrap_or_else(|e| panic!("{e}")),
        Ended::Closed("stopped".into())
    );

    let h = recorder.history(vec![log.clone()]);
    assert_eq!(h.ops.len(), 22);
    assert_eq!(h.deliveries.len(), 20, "the subscriber got every message");
    assert_eq!(checkers::all(&h), Ok(()));

    // Tampered: an acknowledged entry missing from the log, or stored twice.
    let mut lost = h.clone();
    lost.logs[0].retain(|e| e.key != "k7");
    assert!(checkers::no_lost_acknowledged_write(&lost).is_err());
    let mut doubled = h.clone();
    doubled.logs[0].push(log[log.len() - 1].clone());
    assert!(checkers::no_duplicate(&doubled).is_err());
    let mut skipped = h;
    skipped.deliveries.remove(5);
    assert!(checkers::subscribers_gapless_and_nothing_phantom(&skipped).is_err());
}
