//! Search through the SDK over real sockets: typed pages, the paginator, snippets, and the
//! server's typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use chorus_client::proto::ErrorCode;
use chorus_client::{Error, SearchQuery, UserId};
use common::{Node, channel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_pages_through_the_sdk() {
    let node = Node::start(common::fast_limits).await;
    let (alice, _) = node.client("alice").await;
    let room = channel("room");
    alice
        .create_group(&room, "Room", &[UserId::new("bob").unwrap()])
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(
            alice
                .send_text(&room, format!("launch checklist item {i}"))
                .await
                .unwrap()
                .seq,
        );
    }
    seqs.reverse();
    let query = SearchQuery::new("launch")
        .in_channel(room.clone())
        .newest_first()
        .limit(2);
    // Indexing follows the log within the commit interval: wait for the newest.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let first = alice.search(&query, None).await.unwrap();
        if first.hits.first().map(|h| h.entry.seq) == Some(seqs[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "not indexed in time");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut pages = alice.search_pages(query);
    let mut found = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        assert!(page.hits.len() <= 2);
        for hit in page.hits {
            let s = &hit.snippet;
            assert_eq!(&s.fragment[s.highlighted[0].clone()], "launch");
            found.push(hit.entry.seq);
        }
    }
    assert_eq!(found, seqs);
    // Bob, a member, finds it without naming the channel; an outsider does not.
    let (bob, _) = node.client("bob").await;
    assert_eq!(
        bob.search(&SearchQuery::new("checklist"), None)
            .await
            .unwrap()
            .hits
            .len(),
        5
    );
    let (carol, _) = node.client("carol").await;
    assert!(
        carol
            .search(&SearchQuery::new("checklist").with_public(), None)
            .await
            .unwrap()
            .hits
            .is_empty()
    );
    // A bad query is a typed server error.
    match alice.search(&SearchQuery::new("from:"), None).await {
        Err(Error::Server(e)) => assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::Invalid, Some("query"))
        ),
        other => panic!("{other:?}"),
    }
}
