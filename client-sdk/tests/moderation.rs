//! Moderation over real sockets: mutes, slow mode, blocklists and the moderation queue, with
//! the typed errors a client sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chorus_client::proto::{self, ErrorCode};
use chorus_client::{Error, FlagResolution, UserId};
use common::{Node, channel};

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

/// Slow mode of `ms` and a blocklist refusing "casino".
fn slow_and_casino(room: &chorus_client::ChannelId, ms: u32) -> proto::UpdateChannel {
    proto::UpdateChannel {
        channel_id: room.to_string(),
        slow_mode_ms: Some(ms),
        blocklist: Some(proto::Blocklist {
            words: vec!["casino".into()],
            action: proto::BlockAction::Refuse as i32,
        }),
        ..Default::default()
    }
}

fn server_error(e: Error) -> chorus_client::ServerError {
    match e {
        Error::Server(s) => s,
        other => panic!("not a server error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutes_slow_mode_blocklists_and_flags_over_the_wire() {
    let node = Node::start(common::fast_limits).await;
    let (owner, _) = node.client("owner").await;
    let (member, _) = node.client("member").await;
    let room = channel("room");
    owner
        .create_group(&room, "Room", &[user("member")])
        .await
        .unwrap();

    owner
        .mute(&room, &user("member"), None, "cool off")
        .await
        .unwrap();
    let muted = server_error(member.send_text(&room, "hi").await.unwrap_err());
    assert_eq!(muted.code, ErrorCode::Forbidden);
    owner.unmute(&room, &user("member")).await.unwrap();
    member.send_text(&room, "hi").await.unwrap();

    let updated = owner
        .update_channel(slow_and_casino(&room, 1_500))
        .await
        .unwrap();
    assert_eq!(updated.channel.slow_mode_ms, 1_500);
    assert_eq!(
        updated.channel.blocklist.map(|b| b.words),
        Some(vec!["casino".to_owned()])
    );
    let blocked = server_error(member.send_text(&room, "Casino night").await.unwrap_err());
    assert_eq!(blocked.code, ErrorCode::BlockedContent);
    assert_eq!(blocked.field.as_deref(), Some("message.text"));
    // The outbox waits out a RATE_LIMITED refusal by its retry_after: the second post is
    // stored a cooldown after the first.
    let first = member.send_text(&room, "first").await.unwrap();
    let second = member.send_text(&room, "second").await.unwrap();
    let gap = Duration::from_millis(second.server_time_ms - first.server_time_ms);
    assert!(gap >= Duration::from_millis(1_500), "{gap:?}");
    owner.send_text(&room, "owners are exempt").await.unwrap();

    let seq = owner.send_text(&room, "flag me").await.unwrap().seq;
    member.flag_message(&room, seq, "rude").await.unwrap();
    member
        .flag_user(&room, &user("owner"), "rude too")
        .await
        .unwrap();
    let denied = server_error(member.list_flags(&room, false, None, 0).await.unwrap_err());
    assert_eq!(denied.code, ErrorCode::Forbidden);
    let queue = owner.list_flags(&room, false, None, 0).await.unwrap();
    assert_eq!(queue.flags.len(), 2);
    let on_message = queue.flags.iter().find(|f| f.seq == Some(seq)).unwrap();
    assert_eq!(on_message.reporter, Some(user("member")));
    assert_eq!(
        on_message.message.as_ref().and_then(|m| m.text()),
        Some("flag me")
    );
    owner
        .resolve_flag(&room, &on_message.id, FlagResolution::Actioned, "deleted")
        .await
        .unwrap();
    let open = owner.list_flags(&room, false, None, 0).await.unwrap();
    assert_eq!(open.flags.len(), 1);
    let all = owner.list_flags(&room, true, None, 0).await.unwrap();
    let closed = all.flags.iter().find(|f| f.id == on_message.id).unwrap();
    assert_eq!(closed.resolution, FlagResolution::Actioned);
    assert_eq!(closed.resolved_by, Some(user("owner")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_over_the_wire() {
    let node = Node::start(common::fast_limits).await;
    let (alice, _) = node.client("alice").await;
    let (bob, _) = node.client("bob").await;
    let dm = alice.direct_channel(&user("bob")).await.unwrap().channel.id;
    bob.send_text(&dm, "hello").await.unwrap();
    alice.block_user(&user("bob")).await.unwrap();
    assert_eq!(alice.blocked_users().await.unwrap(), [user("bob")]);
    let refused = server_error(bob.send_text(&dm, "still there?").await.unwrap_err());
    assert_eq!(refused.code, ErrorCode::Forbidden);
    alice.unblock_user(&user("bob")).await.unwrap();
    assert!(alice.blocked_users().await.unwrap().is_empty());
    bob.send_text(&dm, "thanks").await.unwrap();
}

/// Every acknowledged moderation record survives `kill -9`: mutes, bans, shadow bans, slow
/// mode and blocklists, flags and their resolution, blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_state_survives_kill_9() {
    use common::{Chorusd, connect};
    let mut node = Chorusd::start().await;
    let room = channel("room");
    {
        let (owner, _) = connect(&node.url(), "owner").await;
        owner
            .create_group(&room, "Room", &[user("muted"), user("troll"), user("rude")])
            .await
            .unwrap();
        owner.mute(&room, &user("muted"), None, "").await.unwrap();
        owner
            .ban(&room, &user("troll"), None, "", true)
            .await
            .unwrap();
        owner
            .ban(&room, &user("rude"), None, "", false)
            .await
            .unwrap();
        owner
            .update_channel(slow_and_casino(&room, 5_000))
            .await
            .unwrap();
        owner
            .flag_user(&room, &user("muted"), "spam")
            .await
            .unwrap();
        owner.block_user(&user("stalker")).await.unwrap();
        node.kill9();
    }
    node.spawn().await;
    let (owner, _) = connect(&node.url(), "owner").await;
    let (muted, _) = connect(&node.url(), "muted").await;
    let (troll, _) = connect(&node.url(), "troll").await;
    let (rude, _) = connect(&node.url(), "rude").await;
    let refused = server_error(muted.send_text(&room, "hi").await.unwrap_err());
    assert_eq!(refused.code, ErrorCode::Forbidden, "still muted");
    let kept_out = server_error(rude.join_channel(&room).await.unwrap_err());
    assert_ne!(
        kept_out.code,
        ErrorCode::Unspecified,
        "still banned: {kept_out:?}"
    );
    let seq = troll.send_text(&room, "still here").await.unwrap().seq;
    let seen = owner.latest(&room, 1).await.unwrap();
    assert_eq!(seen.entries[0].seq, seq);
    assert!(
        seen.entries[0].text().is_none(),
        "still shadow-banned: withheld"
    );
    let channel = owner.get_channel(&room).await.unwrap().channel;
    assert_eq!(channel.slow_mode_ms, 5_000);
    assert_eq!(
        channel.blocklist.map(|b| b.words),
        Some(vec!["casino".to_owned()])
    );
    assert_eq!(
        owner
            .list_flags(&room, false, None, 0)
            .await
            .unwrap()
            .flags
            .len(),
        1
    );
    assert_eq!(owner.blocked_users().await.unwrap(), [user("stalker")]);
}
