//! The durability promise end to end: a real `chorusd` process acknowledges publishes, is
//! SIGKILLed, restarts on the same data directory, and every acknowledged message is there,
//! once, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use chorus_protocol::v1::ChannelKind;
use common::process::{NodeFiles, ONE_NODE_AT_A_TIME};
use common::{appended, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9() {
    let _one = ONE_NODE_AT_A_TIME.lock().await;
    let files = NodeFiles::new("");

    let mut node = files.spawn();
    let mut alice = files.connect("alice").await;
    let epoch = alice
        .create_group("room", ChannelKind::Group, &[])
        .await
        .channel
        .unwrap()
        .epoch;
    let mut acked = Vec::new();
    for i in 0..50 {
        let a = appended(
            alice
                .publish("room", &format!("k{i}"), &format!("m{i}"))
                .await,
        );
        acked.push((a.seq, format!("m{i}")));
    }
    node.kill().unwrap(); // SIGKILL: no shutdown, no final sync.
    node.wait().unwrap();
    drop(alice);

    let mut node = files.spawn();
    let mut alice = files.connect("alice").await;
    let sub = alice.subscribe("room", Some((epoch, 0))).await;
    assert!(sub.recovered);
    assert!(sub.head_seq >= acked.last().unwrap().0);
    let mut seen = Vec::new();
    for _ in 0..sub.head_seq {
        let e = alice.next_event().await;
        seen.push((e.seq, text(&e).to_owned()));
    }
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=sub.head_seq).collect::<Vec<_>>()
    );
    for (seq, body) in &acked {
        assert!(
            seen.contains(&(*seq, body.clone())),
            "acknowledged m{seq} lost"
        );
    }
    // A retry of an acknowledged publish is still recognised after the crash.
    let retry = appended(alice.publish("room", "k7", "m7").await);
    assert!(retry.duplicate);
    node.kill().unwrap();
    node.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let _one = ONE_NODE_AT_A_TIME.lock().await;
    let files = NodeFiles::new("");
    let mut node = files.spawn();
    let mut alice = files.connect("alice").await;
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(node.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let d = alice.until_closed().await.expect("a Disconnect push");
    assert_eq!(d.code, chorus_protocol::v1::CloseCode::GoingAway as i32);
    let exit = tokio::task::spawn_blocking(move || node.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}
