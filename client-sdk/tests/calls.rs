//! Every typed call against a real node, and how refusals come back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chorus_client::proto::{self, ErrorCode};
use chorus_client::{
    ChannelKind, Client, ClientConfig, EntryBody, Error, Event, Role, Seq, SubscribeOutcome,
    TransportError, UserId,
};
use common::{Node, channel, next_entry, next_event, text};

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_typed_call_works_against_the_server() {
    let node = Node::start(common::fast_limits).await;
    let (alice, mut alice_events) = node.client("alice").await;
    let (bob, mut bob_events) = node.client("bob").await;
    assert!(matches!(
        alice_events.recv().await,
        Some(Event::Connected {
            reconnect: false,
            ..
        })
    ));
    let status = alice.status();
    assert!(status.connected);
    assert_eq!(status.user_id, "alice");
    assert!(status.limits.is_some());

    assert!(alice.ping().await.unwrap() < Duration::from_secs(5));
    let expires = alice.refresh_token(common::token("alice")).await.unwrap();
    assert!(expires > 0);

    // Channels.
    let room = channel("room");
    let created = alice
        .create_group(&room, "Room", &[user("bob")])
        .await
        .unwrap();
    let c = &created.channel;
    assert_eq!((c.kind, c.name.as_str()), (ChannelKind::Group, "Room"));
    assert_eq!(created.my_role, Some(Role::Owner));
    assert_eq!(
        alice.get_channel(&room).await.unwrap().channel.member_count,
        2
    );
    let updated = alice
        .update_channel(proto::UpdateChannel {
            channel_id: room.to_string(),
            topic: Some("talk".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(updated.channel.topic, "talk");
    let public = channel("lobby");
    alice.create_public(&public, "Lobby").await.unwrap();
    assert_eq!(
        bob.join_channel(&public).await.unwrap().my_role,
        Some(Role::Member)
    );
    let listed = bob
        .list_channels(proto::ListChannels {
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<_> = listed
        .channels
        .iter()
        .map(|s| s.channel.id.to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["lobby", "room"]);
    bob.leave_channel(&public).await.unwrap();

    let direct = alice.direct_channel(&user("bob")).await.unwrap();
    let again = bob.direct_channel(&user("alice")).await.unwrap();
    assert_eq!(direct.channel.kind, ChannelKind::Direct);
    assert_eq!(
        direct.channel.id, again.channel.id,
        "one direct channel per pair"
    );

    // Members.
    alice
        .add_members(&room, &[user("carol"), user("dave")])
        .await
        .unwrap();
    alice
        .set_member_role(&room, &user("bob"), Role::Moderator)
        .await
        .unwrap();
    alice.remove_member(&room, &user("dave")).await.unwrap();
    let members = alice.list_members(&room, 10, "").await.unwrap();
    let mut roles: Vec<_> = members
        .members
        .iter()
        .map(|m| (m.user.to_string(), m.role))
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            ("alice".into(), Some(Role::Owner)),
            ("bob".into(), Some(Role::Moderator)),
            ("carol".into(), Some(Role::Member))
        ]
    );

    // Messages and the event stream.
    let sub = bob.subscribe(&room).await.unwrap();
    assert!(matches!(sub.outcome, SubscribeOutcome::Fresh { .. }));
    let head = sub.head;
    let first = alice.send_text(&room, "hello").await.unwrap();
    assert_eq!(first.seq, head.next());
    assert!(!first.duplicate);
    let e = next_entry(&mut bob_events).await;
    assert_eq!(
        (e.seq, e.author.clone(), text(&e)),
        (first.seq, Some(user("alice")), "hello")
    );

    // A resend with the same client_msg_id is acknowledged with the original seq.
    let resent = alice
        .publish(
            &room,
            proto::Message {
                client_msg_id: first.client_msg_id.clone(),
                text: "hello".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((resent.seq, resent.duplicate), (first.seq, true));

    let reply = alice
        .publish(
            &room,
            proto::Message {
                text: "in a thread".into(),
                thread_parent_seq: first.seq.get(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let edited = alice
        .edit_message(proto::EditMessage {
            channel_id: room.to_string(),
            target_seq: first.seq.get(),
            text: "hello, edited".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let deleted = alice.delete_message(&room, reply.seq).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(next_entry(&mut bob_events).await);
    }
    assert_eq!(
        seen.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [reply.seq, edited.seq, deleted.seq]
    );
    assert!(matches!(&seen[1].body, EntryBody::MessageEdited(m) if m.text == "hello, edited"));
    assert!(
        matches!(&seen[2].body, EntryBody::MessageDeleted { target, .. } if *target == reply.seq)
    );

    // History, threads, read markers and unread counts.
    let page = bob.latest(&room, 50).await.unwrap();
    assert_eq!(page.head, deleted.seq);
    let thread = bob
        .history(proto::History {
            channel_id: room.to_string(),
            thread_parent_seq: first.seq.get(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        thread.entries.iter().any(|e| e.seq == reply.seq),
        "the thread holds its reply (now a tombstone)"
    );
    let unread = bob.unread(std::slice::from_ref(&room)).await.unwrap();
    assert!(unread.channels[0].unread_count >= 2);
    let marker = bob.mark_read(&room, Seq(deleted.seq.get())).await.unwrap();
    assert_eq!((marker.seq, marker.user), (deleted.seq, user("bob")));
    assert_eq!(
        bob.unread(std::slice::from_ref(&room))
            .await
            .unwrap()
            .channels[0]
            .unread_count,
        0
    );

    // Typing reaches the other subscriber as an ephemeral event.
    alice.subscribe(&room).await.unwrap();
    bob.typing(&room, true, None).await.unwrap();
    loop {
        if let Event::Typing(t) = next_event(&mut alice_events).await {
            assert_eq!(
                (t.user.as_str(), t.typing, t.channel),
                ("bob", true, room.clone())
            );
            break;
        }
    }

    // Unsubscribe: no more entries for bob.
    bob.unsubscribe(&room).await.unwrap();
    alice.send_text(&room, "after").await.unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Event::Entry(e) = next_event(&mut bob_events).await {
                return e;
            }
        }
    })
    .await;
    assert!(nothing.is_err(), "no entry after unsubscribing");

    alice.archive_channel(&room, true).await.unwrap();
    let refused = alice.send_text(&room, "archived").await.unwrap_err();
    assert_eq!(refused.server_code(), Some(ErrorCode::Forbidden));

    alice.close().await;
    loop {
        match alice_events.recv().await {
            Some(Event::Closed { .. }) => break,
            Some(_) => {}
            None => panic!("stream ended without Closed"),
        }
    }
    assert!(matches!(alice.ping().await, Err(Error::Shutdown)));
    assert!(alice_events.recv().await.is_none(), "the stream ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_errors() {
    let node = Node::start(|_| {}).await;

    // An invalid token: the first connect fails with the close code, no retry.
    let bad = Client::connect(ClientConfig::new(&node.url(), "not-a-token").unwrap()).await;
    assert!(
        matches!(
            bad,
            Err(Error::Closed {
                code: proto::CloseCode::AuthInvalid,
                ..
            })
        ),
        "{bad:?}"
    );
    // Nothing listens: a transport error.
    let port = common::free_port();
    let down =
        Client::connect(ClientConfig::new(&format!("ws://127.0.0.1:{port}/"), "t").unwrap()).await;
    // The socket's error stays reachable as the source.
    match &down {
        Err(Error::Transport(e @ TransportError::Connect { .. })) => {
            assert!(std::error::Error::source(e).is_some(), "{e:?}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(matches!(
        ClientConfig::new("http://x/", "t"),
        Err(Error::InvalidUrl { .. })
    ));

    let (alice, _events) = node.client("alice").await;
    let missing = alice.get_channel(&channel("nope")).await.unwrap_err();
    assert_eq!(missing.server_code(), Some(ErrorCode::NotFound));
    let (bob, _bob_events) = node.client("bob").await;
    alice
        .create_group(&channel("private"), "P", &[])
        .await
        .unwrap();
    let forbidden = bob.send_text(&channel("private"), "hi").await.unwrap_err();
    assert!(
        matches!(
            forbidden.server_code(),
            Some(ErrorCode::Forbidden | ErrorCode::NotFound)
        ),
        "{forbidden:?}"
    );
    let conflict = alice
        .create_group(&channel("private"), "P", &[])
        .await
        .unwrap_err();
    assert_eq!(conflict.server_code(), Some(ErrorCode::Conflict));
    match alice.subscribe(&channel("private")).await {
        Ok(_) => {}
        Err(e) => panic!("{e}"),
    }
    let twice = alice.subscribe(&channel("private")).await.unwrap_err();
    assert_eq!(twice.server_code(), Some(ErrorCode::Conflict));

    // Over the message limit: the server refuses it. Over the frame limit: the SDK refuses it
    // itself (sent, it would close the connection, and be resent after every reconnect).
    let big = alice
        .send_text(&channel("private"), "x".repeat(20_000))
        .await
        .unwrap_err();
    assert_eq!(big.server_code(), Some(ErrorCode::TooLarge), "{big:?}");
    let huge = alice
        .send_text(&channel("private"), "x".repeat(70_000))
        .await
        .unwrap_err();
    assert!(matches!(huge, Error::InvalidArgument(_)), "{huge:?}");
    alice
        .send_text(&channel("private"), "still connected")
        .await
        .unwrap();
    // The status follows the acknowledgement (it is updated right after the reply is sent).
    alice
        .watch_status()
        .wait_for(|s| s.outbox_len == 0)
        .await
        .unwrap();
}

/// App-defined ephemeral events reach the channel's other subscribers and are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_events_reach_live_subscribers() {
    let node = Node::start(common::fast_limits).await;
    let (alice, mut alice_events) = node.client("alice").await;
    let (bob, _) = node.client("bob").await;
    let room = channel("room");
    alice
        .create_group(&room, "Room", &[user("bob")])
        .await
        .unwrap();
    alice.subscribe(&room).await.unwrap();
    bob.send_event(&room, "voice.recording", &b"on"[..], None)
        .await
        .unwrap();
    let event = loop {
        if let Event::Custom(e) = next_event(&mut alice_events).await {
            break e;
        }
    };
    assert_eq!(
        (event.kind.as_str(), &event.payload[..]),
        ("voice.recording", &b"on"[..])
    );
    assert_eq!(event.user, user("bob"));
    let code = |e: Error| match e {
        Error::Server(s) => s.code,
        other => panic!("{other:?}"),
    };
    let bad = bob.send_event(&room, "no spaces", &b""[..], None).await;
    assert_eq!(code(bad.unwrap_err()), ErrorCode::Invalid);
    let big = bob.send_event(&room, "big", vec![0u8; 5_000], None).await;
    assert_eq!(code(big.unwrap_err()), ErrorCode::TooLarge);
    let (eve, _) = node.client("eve").await;
    let outsider = eve.send_event(&room, "x", &b""[..], None).await;
    assert_eq!(code(outsider.unwrap_err()), ErrorCode::NotFound);
}
