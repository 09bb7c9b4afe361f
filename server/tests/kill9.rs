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

/// Every search hit of `query` in `room`, through all pages.
async fn all_hits(c: &mut common::Client, query: &str) -> Vec<u64> {
    use chorus_protocol::v1::{self, client_envelope::Request, reply};
    let mut seqs = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = c
            .request(Request::Search(v1::Search {
                query: query.into(),
                channel_id: "room".into(),
                limit: 50,
                cursor,
                order: v1::SearchOrder::Newest as i32,
                ..Default::default()
            }))
            .await;
        let reply::Result::SearchResults(page) = r else {
            panic!("search failed: {r:?}");
        };
        seqs.extend(page.hits.iter().map(|h| h.seq));
        if page.next_cursor.is_empty() {
            return seqs;
        }
        cursor = page.next_cursor;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_index_survives_kill_9_without_missing_or_doubling() {
    let _one = ONE_NODE_AT_A_TIME.lock().await;
    let files = NodeFiles::new(
        "[search]\ncommit_interval_ms = 20\n[limits]\nsearch_rate_per_sec = 10000\npublish_rate_per_sec = 100000\npublish_burst = 100000",
    );
    let mut acked = Vec::new();
    for round in 0..3 {
        let mut node = files.spawn();
        let mut alice = files.connect("alice").await;
        if round == 0 {
            alice.create_group("room", ChannelKind::Group, &[]).await;
        }
        for i in 0..300 {
            let a = appended(
                alice
                    .publish(
                        "room",
                        &format!("k{round}-{i}"),
                        &format!("needle {round} {i}"),
                    )
                    .await,
            );
            acked.push(a.seq);
        }
        // Killed while the indexer is most likely behind, or in the middle of a commit.
        node.kill().unwrap();
        node.wait().unwrap();
    }
    let _node = files.spawn();
    let mut alice = files.connect("alice").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut want = acked.clone();
    want.sort_unstable_by(|a, b| b.cmp(a));
    loop {
        let got = all_hits(&mut alice, "needle").await;
        let mut unique = got.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "a document indexed twice");
        if got == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} acknowledged messages searchable",
            got.len(),
            want.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, out, err) = files.chorusctl(&["search", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["docs"], 900, "{out}");
}
