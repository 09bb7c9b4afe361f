//! The edges of a session: authentication failures, protocol violations, limits, slow
//! consumers, permissions and graceful shutdown. Each bad peer loses only its own connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chorus_protocol::codes::WEBSOCKET_CLOSE_BASE;
use chorus_protocol::v1::{
    self, ChannelKind, CloseCode, ErrorCode, Role, client_envelope::Request,
};
use common::{Client, Node, appended, error_code};

fn ws_code(c: CloseCode) -> Option<u16> {
    Some(WEBSOCKET_CLOSE_BASE + c as u16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_their_close_codes() {
    let node = Node::start().await;
    // Wrong signature.
    let forged = chorus_server::auth::mint_hs256(
        b"not-the-secret-not-the-secret-xx",
        "eve",
        chorus_server::clock::unix_ms() / 1000,
        60,
    )
    .unwrap();
    let mut c = Client::raw(node.addr()).await;
    let r = c.hello(&forged, None).await;
    assert_eq!(error_code(&r), ErrorCode::Unauthenticated);
    let d = c.until_closed().await.expect("a Disconnect push");
    assert_eq!(d.code, CloseCode::AuthInvalid as i32);
    assert!(!d.reconnect);
    assert_eq!(c.closed_with, ws_code(CloseCode::AuthInvalid));
    // Expired.
    let expired = chorus_server::auth::mint_hs256(
        common::SECRET,
        "eve",
        chorus_server::clock::unix_ms() / 1000 - 7200,
        60,
    )
    .unwrap();
    let mut c = Client::raw(node.addr()).await;
    assert_eq!(
        error_code(&c.hello(&expired, None).await),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        c.until_closed().await.map(|d| d.code),
        Some(CloseCode::AuthExpired as i32)
    );
    // No token at all.
    let mut c = Client::raw(node.addr()).await;
    assert_eq!(
        error_code(&c.hello("", None).await),
        ErrorCode::Unauthenticated
    );
    // Anything but Hello first is a protocol error.
    let mut c = Client::raw(node.addr()).await;
    c.send(Request::Ping(v1::Ping::default())).await;
    assert_eq!(
        c.until_closed().await.map(|d| d.code),
        Some(CloseCode::ProtocolError as i32)
    );
    // The node still serves everyone else.
    let mut ok = node.connect("alice").await;
    assert!(
        matches!(ok.request(Request::Ping(v1::Ping { client_time_ms: 5 })).await, v1::reply::Result::Pong(p) if p.client_time_ms == 5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_only_that_connection() {
    let node = Node::start_with(|c| c.limits.max_frame_bytes = 32 * 1024).await;
    let mut bystander = node.connect("bystander").await;
    let mut c = node.connect("mallory").await;
    // A length prefix announcing 1 MiB.
    c.send_raw(vec![0x80, 0x80, 0x40, 1, 2, 3]).await;
    assert_eq!(
        c.until_closed().await.map(|d| d.code),
        Some(CloseCode::ProtocolError as i32)
    );
    let mut c = node.connect("mallory").await;
    c.send_raw(vec![0x05, 0xff, 0xff, 0xff, 0xff, 0xff]).await;
    assert_eq!(
        c.until_closed().await.map(|d| d.code),
        Some(CloseCode::ProtocolError as i32)
    );
    let mut c = node.connect("mallory").await;
    c.ws.send_text_for_test().await;
    assert_eq!(
        c.until_closed().await.map(|d| d.code),
        Some(CloseCode::ProtocolError as i32)
    );
    assert!(matches!(
        bystander.request(Request::Ping(v1::Ping::default())).await,
        v1::reply::Result::Pong(_)
    ));
}

trait SendText {
    async fn send_text_for_test(&mut self);
}

impl<S> SendText for tokio_tungstenite::WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async fn send_text_for_test(&mut self) {
        use futures_util::SinkExt;
        self.send(tokio_tungstenite::tungstenite::Message::Text(
            "hello".into(),
        ))
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_is_rate_limited_per_user() {
    let node = Node::start_with(|c| {
        c.limits.publish_rate_per_sec = 1;
        c.limits.publish_burst = 3;
    })
    .await;
    let mut alice = node.connect("alice").await;
    alice.create_group("room", ChannelKind::Group, &[]).await;
    for i in 0..3 {
        appended(alice.publish("room", &format!("k{i}"), "x").await);
    }
    match alice.publish("room", "k3", "x").await {
        v1::reply::Result::Error(e) => {
            assert_eq!(e.error_code(), ErrorCode::RateLimited);
            assert!(e.retry_after_ms > 0 && e.retry_after_ms <= 1000);
        }
        other => panic!("{other:?}"),
    }
    // A second connection of the same user shares the budget.
    let mut again = node.connect("alice").await;
    assert_eq!(
        error_code(&again.publish("room", "k4", "x").await),
        ErrorCode::RateLimited
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_limits_are_typed_errors() {
    let node = Node::start().await;
    let mut alice = node.connect("alice").await;
    alice.create_group("room", ChannelKind::Group, &[]).await;
    let big = "x".repeat(20_000);
    assert_eq!(
        error_code(&alice.publish("room", "k", &big).await),
        ErrorCode::TooLarge
    );
    assert_eq!(
        error_code(&alice.publish("room", "", "x").await),
        ErrorCode::Invalid
    );
    assert_eq!(
        error_code(&alice.publish("room", &"k".repeat(65), "x").await),
        ErrorCode::Invalid
    );
    // An empty search query is a typed error, not a dropped connection.
    let r = alice.request(Request::Search(v1::Search::default())).await;
    assert_eq!(error_code(&r), ErrorCode::Invalid);
    let r = alice
        .request(Request::Unsubscribe(v1::Unsubscribe {
            channel_id: "room".into(),
        }))
        .await;
    assert_eq!(error_code(&r), ErrorCode::NotFound);
    alice.subscribe("room", None).await;
    let r = alice
        .request(Request::Subscribe(v1::Subscribe {
            channel_id: "room".into(),
            since: None,
        }))
        .await;
    assert_eq!(error_code(&r), ErrorCode::Conflict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_while_others_keep_receiving() {
    let node = Node::start_with(|c| {
        c.limits.max_outbound_queue_bytes = 512 * 1024;
        c.limits.publish_burst = 10_000;
        c.limits.publish_rate_per_sec = 10_000;
    })
    .await;
    let mut alice = node.connect("alice").await;
    alice
        .create_group("room", ChannelKind::Group, &["slow", "fast"])
        .await;
    let mut slow = node.connect("slow").await;
    slow.subscribe("room", None).await;
    let mut fast = node.connect("fast").await;
    let head = fast.subscribe("room", None).await.head_seq;
    // The slow client never reads; the kernel's socket buffers fill (several MiB on loopback),
    // then its queue goes over budget.
    const COUNT: u64 = 1_200;
    let body = "y".repeat(15_000);
    let reader = tokio::spawn(async move {
        let mut last = head;
        for _ in 0..COUNT {
            last = fast.next_event().await.seq;
        }
        (fast, last)
    });
    for i in 0..COUNT {
        appended(alice.publish("room", &format!("k{i}"), &body).await);
    }
    let (_fast, last) = reader.await.unwrap();
    assert_eq!(last, head + COUNT, "the fast subscriber got everything");
    let mut disconnect = None;
    while let Some(p) = slow.next_push().await {
        if let v1::push::Push::Disconnect(d) = p {
            disconnect = Some(d);
        }
    }
    let d = disconnect.expect("the slow consumer was told why");
    assert_eq!(d.code, CloseCode::SlowConsumer as i32);
    assert!(d.reconnect);
}

/// A peer that keeps its connection alive but stops reading is closed once a write has waited
/// `idle_timeout_ms`, even while its queue is far under budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_cannot_finish_in_the_idle_timeout_closes_the_connection() {
    let node = Node::start_with(|c| {
        c.limits.max_outbound_queue_bytes = 256 * 1024 * 1024;
        c.limits.publish_burst = 10_000;
        c.limits.publish_rate_per_sec = 10_000;
        c.limits.idle_timeout_ms = 1_500;
    })
    .await;
    let mut alice = node.connect("alice").await;
    alice
        .create_group("room", ChannelKind::Group, &["slow"])
        .await;
    let mut slow = node.connect("slow").await;
    slow.subscribe("room", None).await;
    // Far more than the kernel's socket buffers hold on loopback, far less than the budget.
    const COUNT: usize = 1_200;
    let body = "y".repeat(15_000);
    for i in 0..COUNT {
        appended(alice.publish("room", &format!("k{i}"), &body).await);
    }
    // Pings keep the read side busy (so the idle timeout cannot be what ends it) while
    // nothing is read; only the stuck write can close the connection.
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(8)
        && slow
            .try_send(Request::Ping(v1::Ping { client_time_ms: 0 }))
            .await
    {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // The write waits at most 1.5 s, then the close frame as long again.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(7),
        "the node closed the connection while it was still pinging"
    );
    let (events, disconnect) = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        slow.events_until_closed(),
    )
    .await
    .expect("the node closed the stuck connection");
    assert!(
        events < COUNT,
        "closed before everything was written ({events})"
    );
    if let Some(d) = disconnect {
        assert_eq!(d.code, CloseCode::SlowConsumer as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_follow_channel_kind_and_role() {
    let node = Node::start().await;
    let mut owner = node.connect("owner").await;
    owner
        .create_group("group", ChannelKind::Group, &["member"])
        .await;
    owner.create_group("town", ChannelKind::Public, &[]).await;
    let mut member = node.connect("member").await;
    let mut stranger = node.connect("stranger").await;

    // Group: strangers see nothing; members read and post; only moderators and owners manage.
    assert_eq!(
        error_code(&stranger.publish("group", "k", "x").await),
        ErrorCode::NotFound
    );
    let r = stranger
        .request(Request::Subscribe(v1::Subscribe {
            channel_id: "group".into(),
            since: None,
        }))
        .await;
    assert_eq!(error_code(&r), ErrorCode::NotFound);
    let r = stranger
        .request(Request::JoinChannel(v1::JoinChannel {
            channel_id: "group".into(),
        }))
        .await;
    assert_eq!(error_code(&r), ErrorCode::NotFound);
    appended(member.publish("group", "k", "x").await);
    let add = |who: &str| {
        Request::AddMembers(v1::AddMembers {
            channel_id: "group".into(),
            user_ids: vec![who.to_owned()],
        })
    };
    assert_eq!(
        error_code(&member.request(add("stranger")).await),
        ErrorCode::Forbidden
    );
    let promote = Request::SetMemberRole(v1::SetMemberRole {
        channel_id: "group".into(),
        user_id: "member".into(),
        role: Role::Moderator as i32,
    });
    assert_eq!(
        error_code(&member.request(promote.clone()).await),
        ErrorCode::Forbidden
    );
    assert!(matches!(
        owner.request(promote).await,
        v1::reply::Result::Done(_)
    ));
    assert!(matches!(
        member.request(add("stranger")).await,
        v1::reply::Result::Done(_)
    ));
    appended(stranger.publish("group", "k2", "now a member").await);
    // A moderator cannot remove the owner.
    let r = member
        .request(Request::RemoveMember(v1::RemoveMember {
            channel_id: "group".into(),
            user_id: "owner".into(),
        }))
        .await;
    assert_eq!(error_code(&r), ErrorCode::Forbidden);
    // The last owner cannot leave a group with other members.
    let r = owner
        .request(Request::LeaveChannel(v1::LeaveChannel {
            channel_id: "group".into(),
        }))
        .await;
    assert_eq!(error_code(&r), ErrorCode::Conflict);

    // Public: anyone reads; posting needs joining.
    stranger.subscribe("town", None).await;
    assert_eq!(
        error_code(&stranger.publish("town", "k", "x").await),
        ErrorCode::Forbidden
    );
    assert!(matches!(
        stranger
            .request(Request::JoinChannel(v1::JoinChannel {
                channel_id: "town".into()
            }))
            .await,
        v1::reply::Result::Channel(_)
    ));
    appended(stranger.publish("town", "k", "x").await);

    // Direct: the same pair gives the same channel.
    let a = owner
        .create_group("", ChannelKind::Direct, &["member"])
        .await;
    let b = member
        .create_group("", ChannelKind::Direct, &["owner"])
        .await;
    assert_eq!(a.channel.unwrap().channel_id, b.channel.unwrap().channel_id);
    let r = owner
        .request(Request::CreateChannel(v1::CreateChannel {
            kind: ChannelKind::Direct as i32,
            member_ids: vec!["owner".into()],
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&r), ErrorCode::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_follow_reads_and_posts() {
    let node = Node::start().await;
    let mut alice = node.connect("alice").await;
    alice
        .create_group("room", ChannelKind::Group, &["bob"])
        .await;
    let mut last = 0;
    for i in 0..4 {
        last = appended(alice.publish("room", &format!("k{i}"), "x").await).seq;
    }
    let mut bob = node.connect("bob").await;
    let counts = match bob
        .request(Request::GetUnread(v1::GetUnread::default()))
        .await
    {
        v1::reply::Result::UnreadCounts(u) => u,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (counts.total_unread, counts.channels[0].unread_count),
        (4, 4)
    );
    let marker = match bob
        .request(Request::MarkRead(v1::MarkRead {
            channel_id: "room".into(),
            seq: last - 1,
        }))
        .await
    {
        v1::reply::Result::ReadMarker(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!((marker.seq, marker.unread_count), (last - 1, 1));
}

fn mark(channel: &str, seq: u64) -> Request {
    Request::MarkRead(v1::MarkRead {
        channel_id: channel.into(),
        seq,
    })
}

fn read_marker(push: Option<v1::push::Push>) -> v1::ReadMarker {
    match push {
        Some(v1::push::Push::ReadMarker(m)) => m,
        other => panic!("expected a read marker, got {other:?}"),
    }
}

/// Bob and his phone in a two-member group with alice, all three subscribed; two messages.
async fn room_with_bob_on_two_sessions(node: &Node) -> (Client, Client, Client, u64) {
    let mut alice = node.connect("alice").await;
    alice
        .create_group("room", ChannelKind::Group, &["bob"])
        .await;
    let first = appended(alice.publish("room", "k1", "one").await).seq;
    appended(alice.publish("room", "k2", "two").await);
    let mut bob = node.connect("bob").await;
    let mut phone = node.connect("bob").await;
    for c in [&mut alice, &mut bob, &mut phone] {
        c.subscribe("room", None).await;
    }
    (alice, bob, phone, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_read_marker_reaches_the_readers_other_sessions_and_the_members() {
    let node = Node::start().await;
    let (mut alice, mut bob, mut phone, first) = room_with_bob_on_two_sessions(&node).await;
    let reply = match bob.request(mark("room", first)).await {
        v1::reply::Result::ReadMarker(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!((reply.seq, reply.unread_count), (first, 1));
    // Bob's other session: his marker with his unread count (once: not also as a receipt).
    let own = read_marker(phone.next_push().await);
    assert_eq!(
        (own.user_id.as_str(), own.seq, own.unread_count),
        ("bob", first, 1)
    );
    // Alice: a read receipt, without bob's count.
    let receipt = read_marker(alice.next_push().await);
    assert_eq!(
        (receipt.user_id.as_str(), receipt.seq, receipt.unread_count),
        ("bob", first, 0)
    );
    assert_eq!(receipt.updated_at_ms, reply.updated_at_ms);

    // A mark that does not move the marker tells no one: the next push each sees is the
    // next message.
    bob.request(mark("room", first)).await;
    let next = appended(alice.publish("room", "k3", "three").await).seq;
    assert_eq!(alice.next_event().await.seq, next);
    assert_eq!(phone.next_event().await.seq, next);
    assert_eq!(bob.next_event().await.seq, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_stop_above_the_member_limit_but_own_sessions_still_sync() {
    let node = Node::start_with(|c| c.limits.read_receipt_max_members = 1).await;
    let (mut alice, mut bob, mut phone, first) = room_with_bob_on_two_sessions(&node).await;
    bob.request(mark("room", first + 1)).await;
    let own = read_marker(phone.next_push().await);
    assert_eq!((own.seq, own.unread_count), (first + 1, 0));
    // Two members, limit one: alice's next push is the next message, not a receipt.
    let next = appended(alice.publish("room", "k3", "three").await).seq;
    assert_eq!(alice.next_event().await.seq, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_at_the_limit_are_sent_and_non_members_send_none() {
    // Two members (and three subscribers: bob twice) against a limit of three: at the limit.
    let node = Node::start_with(|c| c.limits.read_receipt_max_members = 3).await;
    let (mut alice, mut bob, _phone, first) = room_with_bob_on_two_sessions(&node).await;
    bob.request(mark("room", first)).await;
    assert_eq!(read_marker(alice.next_push().await).seq, first);

    // A public channel's non-member reader marks read: nobody else hears of it.
    alice.create_group("lobby", ChannelKind::Public, &[]).await;
    appended(alice.publish("lobby", "l1", "hello").await);
    alice.subscribe("lobby", None).await;
    let mut carol = node.connect("carol").await;
    carol.subscribe("lobby", None).await;
    carol.request(mark("lobby", 1)).await;
    let next = appended(alice.publish("lobby", "l2", "again").await).seq;
    assert_eq!(alice.next_event().await.seq, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_follow_the_sessions_ephemeral_rate() {
    // One receipt per second with a burst of two.
    let node = Node::start_with(|c| c.limits.ephemeral_rate_per_sec = 1).await;
    let (mut alice, mut bob, mut phone, first) = room_with_bob_on_two_sessions(&node).await;
    for k in ["k3", "k4"] {
        appended(alice.publish("room", k, "more").await);
        alice.next_event().await;
        bob.next_event().await;
        phone.next_event().await;
    }
    for seq in first..first + 3 {
        bob.request(mark("room", seq)).await;
    }
    // Every mark moved the marker: bob's phone hears of all three, alice of the first two.
    for seq in first..first + 3 {
        assert_eq!(read_marker(phone.next_push().await).seq, seq);
    }
    for seq in first..first + 2 {
        assert_eq!(read_marker(alice.next_push().await).seq, seq);
    }
    let next = appended(alice.publish("room", "k5", "last").await).seq;
    assert_eq!(alice.next_event().await.seq, next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_clients_to_come_back() {
    let mut node = Node::start().await;
    let mut alice = node.connect("alice").await;
    let waiter = tokio::spawn(async move { alice.until_closed().await });
    node.stop().await;
    let d = waiter.await.unwrap().expect("a Disconnect push");
    assert_eq!(d.code, CloseCode::GoingAway as i32);
    assert!(d.reconnect && d.reconnect_after_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_and_per_user_are_limited() {
    let node = Node::start_with(|c| {
        c.limits.max_connections_per_ip = 3;
        c.limits.max_connections_per_user = 2;
    })
    .await;
    let _a = node.connect("alice").await;
    let _b = node.connect("alice").await;
    let mut third = Client::raw(node.addr()).await;
    assert_eq!(
        error_code(&third.hello(&common::token("alice"), None).await),
        ErrorCode::LimitExceeded
    );
    assert_eq!(
        third.until_closed().await.map(|d| d.code),
        Some(CloseCode::TooManyConnections as i32)
    );
    // Three are open from 127.0.0.1 until the refused one is gone; a fourth is not even upgraded.
    // The refused connection's slot comes back when the node has finished closing it, a moment
    // after the client saw the close: until then bob's attempts are dropped, so retry.
    let url = format!("ws://{}/", node.addr());
    let mut bob = None;
    for _ in 0..250 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
            bob = Some(Client::from_ws(ws, &common::token("bob")).await);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _c = bob.expect("the refused connection's slot is released");
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/", node.addr())).await;
    assert!(
        refused.is_err(),
        "the fourth connection from one address is dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_stops_receiving() {
    let node = Node::start().await;
    let mut owner = node.connect("owner").await;
    owner
        .create_group("room", ChannelKind::Group, &["bob"])
        .await;
    let mut bob = node.connect("bob").await;
    bob.subscribe("room", None).await;
    let r = owner
        .request(Request::RemoveMember(v1::RemoveMember {
            channel_id: "room".into(),
            user_id: "bob".into(),
        }))
        .await;
    assert!(matches!(r, v1::reply::Result::Done(_)));
    match bob.next_event().await.body {
        Some(v1::channel_event::Body::MemberChanged(m)) => assert_eq!(m.user_id, "bob"),
        other => panic!("{other:?}"),
    }
    match bob.next_push().await {
        Some(v1::push::Push::SubscriptionEnded(e)) => assert_eq!(e.channel_id, "room"),
        other => panic!("{other:?}"),
    }
    appended(owner.publish("room", "after", "secret").await);
    // Bob can no longer subscribe, and nothing more arrives.
    let r = bob
        .request(Request::Subscribe(v1::Subscribe {
            channel_id: "room".into(),
            since: None,
        }))
        .await;
    assert_eq!(error_code(&r), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_and_channel_changes_are_logged() {
    let node = Node::start().await;
    let mut owner = node.connect("owner").await;
    owner
        .create_group("room", ChannelKind::Group, &["bob"])
        .await;
    let mut bob = node.connect("bob").await;
    let mine = appended(bob.publish("room", "b1", "typo").await).seq;
    let theirs = appended(owner.publish("room", "o1", "owner's").await).seq;
    let sub = bob.subscribe("room", None).await;

    let edit = |seq: u64, text: &str| {
        Request::EditMessage(v1::EditMessage {
            channel_id: "room".into(),
            target_seq: seq,
            text: text.into(),
            ..Default::default()
        })
    };
    let r = bob.request(edit(mine, "fixed")).await;
    let edited = appended(r);
    assert_eq!(
        error_code(&bob.request(edit(theirs, "hijack")).await),
        ErrorCode::Forbidden
    );
    match bob.next_event().await.body {
        Some(v1::channel_event::Body::MessageEdited(e)) => {
            assert_eq!((e.target_seq, e.text.as_str()), (mine, "fixed"))
        }
        other => panic!("{other:?}"),
    }

    let delete = |seq: u64| {
        Request::DeleteMessage(v1::DeleteMessage {
            channel_id: "room".into(),
            target_seq: seq,
            client_msg_id: String::new(),
        })
    };
    assert_eq!(
        error_code(&bob.request(delete(theirs)).await),
        ErrorCode::Forbidden
    );
    appended(owner.request(delete(mine)).await);
    match bob.next_event().await.body {
        Some(v1::channel_event::Body::MessageDeleted(d)) => assert!(d.by_moderator),
        other => panic!("{other:?}"),
    }
    // History shows a tombstone where the message was, and the log has no gap.
    let page = match bob
        .request(Request::History(v1::History {
            channel_id: "room".into(),
            limit: 50,
            ..Default::default()
        }))
        .await
    {
        v1::reply::Result::HistoryPage(p) => p,
        other => panic!("{other:?}"),
    };
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=page.head_seq).collect::<Vec<_>>());
    let original = page.events.iter().find(|e| e.seq == mine).unwrap();
    assert!(matches!(
        original.body,
        Some(v1::channel_event::Body::Tombstone(_))
    ));
    assert!(edited.seq > sub.head_seq);

    // Channel settings: owner only; archiving makes the channel read-only.
    let archive = Request::ArchiveChannel(v1::ArchiveChannel {
        channel_id: "room".into(),
        archived: true,
    });
    assert_eq!(
        error_code(&bob.request(archive.clone()).await),
        ErrorCode::Forbidden
    );
    let topic = Request::UpdateChannel(v1::UpdateChannel {
        channel_id: "room".into(),
        topic: Some("launch".into()),
        ..Default::default()
    });
    match owner.request(topic).await {
        v1::reply::Result::Channel(c) => assert_eq!(c.channel.unwrap().topic, "launch"),
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(owner.request(archive).await, v1::reply::Result::Channel(c) if c.channel.as_ref().unwrap().archived)
    );
    assert_eq!(
        error_code(&bob.publish("room", "b2", "too late").await),
        ErrorCode::Forbidden
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_an_existing_member_changes_nothing() {
    let node = Node::start().await;
    let mut owner = node.connect("owner").await;
    owner
        .create_group("room", ChannelKind::Group, &["moderator"])
        .await;
    let promote = Request::SetMemberRole(v1::SetMemberRole {
        channel_id: "room".into(),
        user_id: "moderator".into(),
        role: Role::Moderator as i32,
    });
    assert!(matches!(
        owner.request(promote).await,
        v1::reply::Result::Done(_)
    ));
    let mut moderator = node.connect("moderator").await;
    // "Adding" the owner must not demote them.
    let add = Request::AddMembers(v1::AddMembers {
        channel_id: "room".into(),
        user_ids: vec!["owner".into()],
    });
    assert!(matches!(
        moderator.request(add).await,
        v1::reply::Result::Done(_)
    ));
    let members = match owner
        .request(Request::ListMembers(v1::ListMembers {
            channel_id: "room".into(),
            ..Default::default()
        }))
        .await
    {
        v1::reply::Result::MemberList(m) => m.members,
        other => panic!("{other:?}"),
    };
    let role = |u: &str| members.iter().find(|m| m.user_id == u).map(|m| m.role);
    assert_eq!(role("owner"), Some(Role::Owner as i32));
    assert_eq!(role("moderator"), Some(Role::Moderator as i32));
    // Removing oneself goes through LeaveChannel.
    let r = owner
        .request(Request::RemoveMember(v1::RemoveMember {
            channel_id: "room".into(),
            user_id: "owner".into(),
        }))
        .await;
    assert_eq!(error_code(&r), ErrorCode::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_too_many_frames_is_a_protocol_error() {
    let node = Node::start().await;
    let mut c = node.connect("alice").await;
    let mut buf = bytes::BytesMut::new();
    for i in 0..300u64 {
        chorus_protocol::codec::encode_frame(
            &v1::ClientEnvelope::new(100 + i, Request::Ping(v1::Ping::default())),
            &mut buf,
        );
    }
    c.send_raw(buf.to_vec()).await;
    assert_eq!(
        c.until_closed().await.map(|d| d.code),
        Some(CloseCode::ProtocolError as i32)
    );
}
