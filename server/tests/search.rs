//! `Search` over the wire, on a real node: who finds what (members, removed members, banned
//! users, private and public channels), edits, deletes and erasure within the lag bound,
//! snippets, paging, limits, and the control commands.

#![cfg(feature = "search")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use chorus_protocol::v1::{self, ChannelKind, ErrorCode, client_envelope::Request, reply};
use common::{Client, Node};

/// How long an acknowledged change may take to show in search (the test node commits every
/// 50 ms; the bound leaves room for a loaded machine).
const LAG_BOUND: Duration = Duration::from_secs(5);

async fn search(c: &mut Client, query: &str, public: bool) -> Result<v1::SearchResults, v1::Error> {
    search_in(c, query, "", public, "").await
}

async fn search_in(
    c: &mut Client,
    query: &str,
    channel: &str,
    public: bool,
    cursor: &str,
) -> Result<v1::SearchResults, v1::Error> {
    match c
        .request(Request::Search(v1::Search {
            query: query.into(),
            channel_id: channel.into(),
            limit: 2,
            cursor: cursor.into(),
            include_public: public,
            order: v1::SearchOrder::Newest as i32,
        }))
        .await
    {
        reply::Result::SearchResults(r) => Ok(r),
        reply::Result::Error(e) => Err(e),
        other => panic!("unexpected reply {other:?}"),
    }
}

/// The seqs a search finds, once they are `want` (polled until the lag bound).
async fn finds(c: &mut Client, query: &str, public: bool, want: &[u64]) {
    let deadline = Instant::now() + LAG_BOUND;
    loop {
        let got: Vec<u64> = search(c, query, public)
            .await
            .unwrap()
            .hits
            .iter()
            .map(|h| h.seq)
            .collect();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: found {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn appended(r: reply::Result) -> u64 {
    match r {
        reply::Result::Appended(a) => a.seq,
        other => panic!("not appended: {other:?}"),
    }
}

async fn ok(c: &mut Client, r: Request) {
    if let reply::Result::Error(e) = c.request(r).await {
        panic!("refused: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn members_find_their_channels_and_lose_them_at_once() {
    let node = Node::start().await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    let mut carol = node.connect("carol").await;
    alice
        .create_group("team", ChannelKind::Group, &["bob"])
        .await;
    alice.create_group("lobby", ChannelKind::Public, &[]).await;
    let s1 = appended(alice.publish("team", "k1", "quarterly roadmap draft").await);
    let s2 = appended(alice.publish("lobby", "k2", "public roadmap").await);
    finds(&mut bob, "roadmap", false, &[s1]).await;
    // Public channels when asked: everyone; private ones: members only.
    finds(&mut carol, "roadmap", false, &[]).await;
    finds(&mut carol, "roadmap", true, &[s2]).await;
    // Naming a channel: a private one is not found for an outsider.
    let e = search_in(&mut carol, "roadmap", "team", false, "")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound as i32);
    // Removed: the next search no longer finds the channel's messages.
    ok(
        &mut alice,
        Request::RemoveMember(v1::RemoveMember {
            channel_id: "team".into(),
            user_id: "bob".into(),
        }),
    )
    .await;
    assert!(
        search(&mut bob, "roadmap", true)
            .await
            .unwrap()
            .hits
            .iter()
            .all(|h| h.channel_id != "team")
    );
    // Banned from a public channel: not found there either.
    ok(
        &mut alice,
        Request::BanMember(v1::BanMember {
            channel_id: "lobby".into(),
            user_id: "carol".into(),
            ..Default::default()
        }),
    )
    .await;
    assert!(
        search(&mut carol, "roadmap", true)
            .await
            .unwrap()
            .hits
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_deletes_and_erasure_show_within_the_lag_bound() {
    let node = Node::start_with(|c| {
        c.control_socket = Some(c.data_dir.join("control.sock"));
    })
    .await;
    let mut alice = node.connect("alice").await;
    let mut eve = node.connect("eve").await;
    alice
        .create_group("ops", ChannelKind::Group, &["eve"])
        .await;
    let s1 = appended(
        alice
            .publish("ops", "k1", "the database migration starts")
            .await,
    );
    let s2 = appended(
        eve.publish("ops", "k2", "eve asks about the migration")
            .await,
    );
    finds(&mut alice, "migration", false, &[s2, s1]).await;
    ok(
        &mut alice,
        Request::EditMessage(v1::EditMessage {
            channel_id: "ops".into(),
            target_seq: s1,
            text: "the schema upgrade starts".into(),
            ..Default::default()
        }),
    )
    .await;
    finds(&mut alice, "migration", false, &[s2]).await;
    finds(&mut alice, "upgrade", false, &[s1]).await;
    // The hit carries the current text, and a snippet marking the match.
    let r = search(&mut alice, "upgrade", false).await.unwrap();
    let Some(v1::channel_event::Body::Message(m)) = &r.hits[0].body else {
        panic!("not a message");
    };
    assert_eq!(m.text, "the schema upgrade starts");
    let snip = &r.snippets[0];
    let h = &snip.highlighted[0];
    assert_eq!(&snip.fragment[h.start as usize..h.end as usize], "upgrade");
    ok(
        &mut alice,
        Request::DeleteMessage(v1::DeleteMessage {
            channel_id: "ops".into(),
            target_seq: s1,
            ..Default::default()
        }),
    )
    .await;
    finds(&mut alice, "upgrade", false, &[]).await;
    // Erasure: nothing eve wrote is found.
    let socket = node.dir.path().join("control.sock");
    let out = std::process::Command::new(chorus_testkit::process::workspace_bin("chorusctl"))
        .args([
            "--socket",
            socket.to_str().unwrap(),
            "users",
            "erase",
            "eve",
            "--yes",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        search(&mut alice, "migration", false)
            .await
            .unwrap()
            .hits
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_follow_without_overlap_and_limits_hold() {
    let node = Node::start().await;
    let mut alice = node.connect("alice").await;
    alice.create_group("log", ChannelKind::Group, &[]).await;
    let mut seqs = Vec::new();
    for i in 0..7 {
        seqs.push(appended(
            alice
                .publish("log", &format!("k{i}"), &format!("entry {i} alpha"))
                .await,
        ));
    }
    seqs.reverse();
    finds(&mut alice, "alpha in:log", false, &seqs[..2]).await;
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = search_in(&mut alice, "alpha", "log", false, &cursor)
            .await
            .unwrap();
        all.extend(r.hits.iter().map(|h| h.seq));
        if r.next_cursor.is_empty() {
            break;
        }
        cursor = r.next_cursor;
    }
    assert_eq!(all, seqs);
    // Bad input gets typed errors and the connection stays.
    let e = search(&mut alice, "say \"unclosed", false)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.field.as_str()),
        (ErrorCode::Invalid as i32, "query")
    );
    let e = search_in(&mut alice, "alpha", "log", false, "n-garbage")
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.field.as_str()),
        (ErrorCode::Invalid as i32, "cursor")
    );
    let e = search(&mut alice, &"x".repeat(600), false)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TooLarge as i32);
    let e = search(&mut alice, "thread:3", false).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Invalid as i32);
    assert!(search(&mut alice, "alpha", false).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_search_rate_is_per_user() {
    let node = Node::start_with(|c| {
        c.limits.search_rate_per_sec = 1;
    })
    .await;
    let mut alice = node.connect("alice").await;
    // A burst of twice the rate, then refusals with a retry time.
    assert!(search(&mut alice, "a", false).await.is_ok());
    assert!(search(&mut alice, "a", false).await.is_ok());
    let e = search(&mut alice, "a", false).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::RateLimited as i32);
    assert!(e.retry_after_ms > 0);
}
