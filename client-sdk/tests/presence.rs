//! Presence over real sockets: across two sessions of one user, statuses and invisibility,
//! who may see whom, blocks, and last-seen across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chorus_client::{Event, Events, Presence, PresenceStatus, UserId};
use common::{Chorusd, Node, channel, connect, next_event};

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

/// The next presence push about `who`.
async fn next_presence(events: &mut Events, who: &str) -> Presence {
    loop {
        if let Event::Presence(p) = next_event(events).await
            && p.user.as_str() == who
        {
            return p;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_across_sessions_statuses_and_who_sees_whom() {
    let node = Node::start(common::fast_limits).await;
    let (bob, mut bob_events) = node.client("bob").await;
    {
        let (alice, _) = node.client("alice").await;
        alice
            .create_group(&channel("room"), "Room", &[user("bob")])
            .await
            .unwrap();
        alice.close().await;
    }
    // The server ends alice's session a moment after her close returns.
    let gone = chorus_testkit::wait::wait_until(std::time::Duration::from_secs(10), || {
        let bob = bob.clone();
        // A poll may be refused by the session's rate: it then simply counts as "not yet".
        async move {
            matches!(bob.presence(&[user("alice")]).await, Ok(p) if p[0].status == PresenceStatus::Offline)
        }
    })
    .await;
    assert!(gone, "alice offline");
    let now = bob.watch_presence(&[user("alice")]).await.unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].status, PresenceStatus::Offline);
    assert!(now[0].last_seen_ms > 0, "seen before");

    // Two sessions: online with the first, still online when one goes, offline with the last.
    let (a1, _) = node.client("alice").await;
    assert_eq!(
        next_presence(&mut bob_events, "alice").await.status,
        PresenceStatus::Online
    );
    let (a2, _) = node.client("alice").await;
    a2.set_presence(PresenceStatus::Away, "lunch")
        .await
        .unwrap();
    let away = next_presence(&mut bob_events, "alice").await;
    assert_eq!(
        (away.status, away.status_text.as_str()),
        (PresenceStatus::Away, "lunch")
    );
    a2.close().await;
    let still = bob.presence(&[user("alice")]).await.unwrap();
    assert_eq!(still[0].status, PresenceStatus::Away, "one session left");
    // Invisible: offline to others, invisible to herself.
    a1.set_presence(PresenceStatus::Invisible, "")
        .await
        .unwrap();
    assert_eq!(
        next_presence(&mut bob_events, "alice").await.status,
        PresenceStatus::Offline
    );
    assert_eq!(
        a1.presence(&[user("alice")]).await.unwrap()[0].status,
        PresenceStatus::Invisible
    );
    a1.set_presence(PresenceStatus::Online, "").await.unwrap();
    assert_eq!(
        next_presence(&mut bob_events, "alice").await.status,
        PresenceStatus::Online
    );
    // A user who shares no channel sees nothing; a blocked one sees offline.
    let (carol, _) = node.client("carol").await;
    assert!(
        carol
            .watch_presence(&[user("alice")])
            .await
            .unwrap()
            .is_empty()
    );
    a1.block_user(&user("bob")).await.unwrap();
    let blocked = bob.presence(&[user("alice")]).await.unwrap();
    assert_eq!(
        (blocked[0].status, blocked[0].last_seen_ms),
        (PresenceStatus::Offline, 0)
    );
    a1.unblock_user(&user("bob")).await.unwrap();
    a1.close().await;
    let gone = next_presence(&mut bob_events, "alice").await;
    assert_eq!(gone.status, PresenceStatus::Offline);
    assert!(gone.last_seen_ms > 0);
}

/// The last-seen time is in the store: a restarted node still knows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_seen_survives_a_restart() {
    let mut node = Chorusd::start().await;
    let seen = {
        let (alice, _) = connect(&node.url(), "alice").await;
        alice
            .create_group(&channel("room"), "Room", &[user("bob")])
            .await
            .unwrap();
        let (bob, _) = connect(&node.url(), "bob").await;
        alice.close().await;
        // The last-seen write happens in the background once the session is gone.
        let ok = chorus_testkit::wait::wait_until(std::time::Duration::from_secs(10), || {
            let bob = bob.clone();
            async move {
                matches!(bob.presence(&[user("alice")]).await,
                    Ok(p) if p[0].status == PresenceStatus::Offline && p[0].last_seen_ms > 0)
            }
        })
        .await;
        assert!(ok, "alice offline with a last-seen time");
        bob.presence(&[user("alice")]).await.unwrap()[0].last_seen_ms
    };
    node.kill9();
    node.spawn().await;
    let (bob, _) = connect(&node.url(), "bob").await;
    let p = bob.presence(&[user("alice")]).await.unwrap();
    assert_eq!(p[0].status, PresenceStatus::Offline);
    assert!(
        p[0].last_seen_ms >= seen - 1_000,
        "{} vs {seen}",
        p[0].last_seen_ms
    );
}
