//! The rules of mutes and bans: who may moderate whom, what a mute or a ban stops, expiry,
//! and shadow bans seen from both sides.

use chorus_protocol::v1::{self, ChannelKind, Role, tombstone::Reason};

use super::{c, entry_as, group, node, publish, publish_with, refused, u};
use crate::chat::{Actor, Chat};
use crate::clock::unix_ms;

fn ban(user: &str, shadow: bool) -> v1::BanMember {
    v1::BanMember {
        channel_id: "pub".into(),
        user_id: user.into(),
        duration_ms: 0,
        reason: "spam".into(),
        shadow,
    }
}

/// Each role against mute and ban: moderators act on lower roles only, owners on moderators
/// too, admins on anyone; nobody on themself.
#[tokio::test]
async fn who_may_moderate_whom() {
    let node = node();
    group(
        &node,
        "pub",
        ChannelKind::Public,
        "owner",
        &["mod", "mod2", "m1", "m2"],
    )
    .await;
    let admin = Chat::new(&node, Actor::Admin);
    admin
        .set_role(&c("pub"), "mod", Role::Moderator)
        .await
        .unwrap();
    admin
        .set_role(&c("pub"), "mod2", Role::Moderator)
        .await
        .unwrap();
    let ch = c("pub");
    let mute = |who: &str, whom: &'static str| {
        let who = u(who);
        let node = &node;
        let ch = ch.clone();
        async move { Chat::user(node, &who).mute(&ch, whom, 0, "calm down").await }
    };
    assert_eq!(refused(mute("m1", "m2").await), "forbidden", "a member");
    assert_eq!(refused(mute("mod", "mod2").await), "forbidden", "an equal");
    assert_eq!(
        refused(mute("mod", "owner").await),
        "forbidden",
        "a higher role"
    );
    assert_eq!(refused(mute("mod", "mod").await), "invalid", "themself");
    assert_eq!(
        refused(mute("mod", "nobody").await),
        "not_found",
        "not a member"
    );
    assert_eq!(refused(mute("mod", "m1").await), "ok");
    assert_eq!(refused(mute("owner", "mod2").await), "ok");
    assert_eq!(refused(admin.mute(&ch, "owner", 0, "").await), "ok");
    let member = |who: &str| node.store().member(&ch, &u(who)).unwrap().unwrap();
    assert!(member("m1").muted_until_ms > unix_ms());
    // A muted member neither posts nor reacts; unmuting lets them again.
    let seq = publish(&node, &u("m2"), "pub", "k").await.unwrap();
    assert_eq!(
        refused(publish(&node, &u("m1"), "pub", "k1").await),
        "forbidden"
    );
    let react = v1::React {
        channel_id: "pub".into(),
        target_seq: seq,
        emoji: "👍".into(),
        client_msg_id: String::new(),
    };
    assert_eq!(
        refused(Chat::user(&node, &u("m1")).react(react.clone()).await),
        "forbidden"
    );
    Chat::user(&node, &u("mod"))
        .unmute(&ch, "m1")
        .await
        .unwrap();
    assert_eq!(refused(publish(&node, &u("m1"), "pub", "k2").await), "ok");
    // An expired mute stops nothing.
    node.store()
        .set_mute(&ch, &u("m2"), unix_ms() - 1)
        .await
        .unwrap();
    assert_eq!(refused(publish(&node, &u("m2"), "pub", "k3").await), "ok");
    // The log shows the actions to members.
    let page = Chat::user(&node, &u("m2"))
        .history(
            v1::History {
                channel_id: "pub".into(),
                limit: 50,
                ..Default::default()
            },
            1 << 20,
        )
        .unwrap();
    let actions: Vec<v1::MemberAction> = page
        .events
        .iter()
        .filter_map(|e| match &e.body {
            Some(v1::channel_event::Body::MemberChanged(m)) if m.user_id == "m1" => {
                v1::MemberAction::try_from(m.action).ok()
            }
            _ => None,
        })
        .collect();
    assert!(
        actions.ends_with(&[v1::MemberAction::Muted, v1::MemberAction::Unmuted]),
        "{actions:?}"
    );
}

/// A ban removes the member, and keeps them from joining or reading the public channel
/// until it is lifted; a user can be banned before they join.
#[tokio::test]
async fn a_ban_removes_and_keeps_out_until_lifted() {
    let node = node();
    group(&node, "pub", ChannelKind::Public, "owner", &["m1"]).await;
    let (owner, m1, later) = (u("owner"), u("m1"), u("later"));
    let ch = c("pub");
    Chat::user(&node, &owner)
        .ban(&ban("m1", false), &ch)
        .await
        .unwrap();
    Chat::user(&node, &owner)
        .ban(&ban("later", false), &ch)
        .await
        .unwrap();
    assert!(node.store().member(&ch, &m1).unwrap().is_none(), "removed");
    for who in [&m1, &later] {
        assert_eq!(refused(Chat::user(&node, who).join(&ch).await), "forbidden");
        assert_eq!(
            refused(Chat::user(&node, who).get_channel(&ch)),
            "forbidden"
        );
    }
    let listed = Chat::user(&node, &m1)
        .list_channels(
            v1::ListChannels {
                include_public: true,
                ..Default::default()
            },
            1 << 20,
        )
        .unwrap();
    assert!(
        listed.channels.is_empty(),
        "a banned channel is not offered: {listed:?}"
    );
    assert_eq!(
        refused(Chat::user(&node, &owner).unban(&ch, "nobody").await),
        "not_found"
    );
    // A moderator cannot add a banned user back without lifting the ban.
    let back = Chat::user(&node, &owner)
        .add_members(&ch, &["m1".to_owned()], Role::Member)
        .await;
    assert_eq!(refused(back), "conflict");
    Chat::user(&node, &owner).unban(&ch, "m1").await.unwrap();
    assert_eq!(refused(Chat::user(&node, &m1).join(&ch).await), "ok");
    // A ban with a duration ends by itself: one that ended a moment ago stops nothing.
    let ended = chorus_storage::BanRecord {
        until_ms: unix_ms() - 1,
        ..Default::default()
    };
    let scope = chorus_storage::BanScope::Channel(&ch);
    node.store().ban(scope, &later, ended).await.unwrap();
    assert_eq!(refused(Chat::user(&node, &later).join(&ch).await), "ok");
}

/// A shadow-banned member notices nothing: their posts are accepted and read back as posted,
/// while everyone else reads a withheld tombstone at the same seq.
#[tokio::test]
async fn a_shadow_ban_seen_from_both_sides() {
    let node = node();
    group(
        &node,
        "pub",
        ChannelKind::Public,
        "owner",
        &["troll", "other"],
    )
    .await;
    let ch = c("pub");
    Chat::user(&node, &u("owner"))
        .ban(&ban("troll", true), &ch)
        .await
        .unwrap();
    assert!(
        node.store().member(&ch, &u("troll")).unwrap().is_some(),
        "still a member"
    );
    let seq = publish(&node, &u("troll"), "pub", "k").await.unwrap();
    let read = |who: &str| {
        let who = u(who);
        entry_as(&node, Actor::User(&who), "pub", seq)
    };
    assert!(matches!(
        read("troll").body,
        Some(v1::channel_event::Body::Message(_))
    ));
    let seen = read("other");
    assert_eq!(seen.seq, seq, "the same seq: no gap");
    match seen.body {
        Some(v1::channel_event::Body::Tombstone(t)) => assert_eq!(t.reason(), Reason::Withheld),
        other => panic!("{other:?}"),
    }
    assert!(seen.author_id.is_empty());
    // Nobody but the author can react to it; an admin reads it as posted.
    let react = v1::React {
        channel_id: "pub".into(),
        target_seq: seq,
        emoji: "👍".into(),
        client_msg_id: String::new(),
    };
    assert_eq!(
        refused(Chat::user(&node, &u("other")).react(react).await),
        "not_found"
    );
    let admin_view = entry_as(&node, Actor::Admin, "pub", seq);
    assert!(matches!(
        admin_view.body,
        Some(v1::channel_event::Body::Message(_))
    ));
    // Their edits are withheld like their posts.
    let edit = Chat::user(&node, &u("troll"))
        .edit(v1::EditMessage {
            channel_id: "pub".into(),
            target_seq: seq,
            text: "edited spam".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let entry = node
        .store()
        .entry(&ch, chorus_protocol::ids::Seq(edit.seq))
        .unwrap()
        .unwrap();
    assert!(entry.withheld, "an edit by a shadow-banned member");
    // Leaving and joining again does not shake it off; lifting it does.
    Chat::user(&node, &u("troll")).leave(&ch).await.unwrap();
    Chat::user(&node, &u("troll")).join(&ch).await.unwrap();
    let again = publish(&node, &u("troll"), "pub", "k2").await.unwrap();
    let entry = node
        .store()
        .entry(&ch, chorus_protocol::ids::Seq(again))
        .unwrap()
        .unwrap();
    assert!(entry.withheld);
    Chat::user(&node, &u("owner"))
        .unban(&ch, "troll")
        .await
        .unwrap();
    let visible = publish(&node, &u("troll"), "pub", "k3").await.unwrap();
    let entry = node
        .store()
        .entry(&ch, chorus_protocol::ids::Seq(visible))
        .unwrap()
        .unwrap();
    assert!(!entry.withheld);
}

fn slow(ms: u32) -> v1::UpdateChannel {
    v1::UpdateChannel {
        channel_id: "pub".into(),
        slow_mode_ms: Some(ms),
        ..Default::default()
    }
}

/// Slow mode: a member waits between two posts and is told how long; moderators do not wait;
/// the clock is tokio's, paused here.
#[tokio::test(start_paused = true)]
async fn slow_mode_spaces_a_members_posts() {
    let node = node();
    group(&node, "pub", ChannelKind::Public, "owner", &["m", "mod"]).await;
    let owner_id = u("owner");
    let owner = Chat::user(&node, &owner_id);
    Chat::new(&node, Actor::Admin)
        .set_role(&c("pub"), "mod", Role::Moderator)
        .await
        .unwrap();
    assert_eq!(
        refused(owner.update_channel(slow(21_600_001)).await),
        "invalid"
    );
    let info = owner.update_channel(slow(10_000)).await.unwrap();
    assert_eq!(info.record.slow_mode_ms, 10_000);
    publish(&node, &u("m"), "pub", "k1").await.unwrap();
    match publish(&node, &u("m"), "pub", "k2").await {
        Err(crate::chat::Error::RateLimited { retry_after_ms, .. }) => {
            assert_eq!(retry_after_ms, 10_000)
        }
        other => panic!("{other:?}"),
    }
    tokio::time::advance(std::time::Duration::from_millis(4_000)).await;
    match publish(&node, &u("m"), "pub", "k2").await {
        Err(crate::chat::Error::RateLimited { retry_after_ms, .. }) => {
            assert_eq!(retry_after_ms, 6_000, "the wait shrinks")
        }
        other => panic!("{other:?}"),
    }
    for k in ["a", "b", "c"] {
        assert_eq!(
            refused(publish(&node, &u("mod"), "pub", k).await),
            "ok",
            "moderators are exempt"
        );
    }
    tokio::time::advance(std::time::Duration::from_millis(6_000)).await;
    assert_eq!(refused(publish(&node, &u("m"), "pub", "k2").await), "ok");
    owner.update_channel(slow(0)).await.unwrap();
    assert_eq!(
        refused(publish(&node, &u("m"), "pub", "k3").await),
        "ok",
        "off again"
    );
}

async fn post_text(
    node: &crate::node::Node,
    who: &str,
    key: &str,
    text: &str,
) -> Result<u64, crate::chat::Error> {
    publish_with(node, who, "pub", key, |m| m.text = text.into()).await
}

/// Blocklists: the server's refuses, the channel's flags; flags reach the moderation queue
/// with readers' own reports, and moderators close them.
#[tokio::test]
async fn blocklists_and_the_moderation_queue() {
    let node = node();
    group(
        &node,
        "pub",
        ChannelKind::Public,
        "owner",
        &["m", "reader2"],
    )
    .await;
    node.set_moderation(crate::config::ModerationConfig {
        blocked_words: vec!["Scam".into()],
        blocked_words_action: None,
    });
    match post_text(&node, "m", "k1", "total SCAM here").await {
        Err(e @ crate::chat::Error::Blocked { .. }) => {
            let wire: v1::Error = e.into();
            assert_eq!(wire.code(), v1::ErrorCode::BlockedContent);
            assert_eq!(wire.field, "message.text");
        }
        other => panic!("{other:?}"),
    }
    let owner_id = u("owner");
    let owner = Chat::user(&node, &owner_id);
    let list = v1::UpdateChannel {
        channel_id: "pub".into(),
        blocklist: Some(v1::Blocklist {
            words: vec!["Buy Now".into(), "buy now".into()],
            action: v1::BlockAction::Flag as i32,
        }),
        ..Default::default()
    };
    let info = owner.update_channel(list).await.unwrap();
    assert_eq!(info.record.blocked_words, ["buy now"], "normalised, once");
    let shown = owner.summary(&info).unwrap().channel.unwrap().blocklist;
    assert!(shown.is_some(), "the owner sees the list");
    let hidden = Chat::user(&node, &u("m"))
        .summary(&info)
        .unwrap()
        .channel
        .unwrap()
        .blocklist;
    assert!(hidden.is_none(), "a member does not");
    let seq = post_text(&node, "m", "k2", "please buy now!")
        .await
        .unwrap();
    // A reader reports a message, twice (once counted), and a user.
    let flag = |seq: u64, user: &str| v1::FlagMessage {
        channel_id: "pub".into(),
        seq,
        reason: "rude".into(),
        user_id: user.into(),
    };
    let reader_id = u("reader2");
    let reader = Chat::user(&node, &reader_id);
    let other = post_text(&node, "owner", "k3", "fine words").await.unwrap();
    reader.flag(&flag(other, ""), &c("pub")).await.unwrap();
    reader.flag(&flag(other, ""), &c("pub")).await.unwrap();
    reader.flag(&flag(0, "m"), &c("pub")).await.unwrap();
    assert_eq!(
        refused(reader.flag(&flag(999, ""), &c("pub")).await),
        "not_found"
    );
    let ask = v1::ListFlags {
        channel_id: "pub".into(),
        ..Default::default()
    };
    assert_eq!(
        refused(reader.list_flags(&ask, &c("pub"), 1 << 20)),
        "forbidden"
    );
    let queue = owner.list_flags(&ask, &c("pub"), 1 << 20).unwrap();
    assert_eq!(queue.flags.len(), 3, "{queue:?}");
    let newest = &queue.flags[0];
    assert_eq!(
        (newest.seq, newest.user_id.as_str()),
        (0, "m"),
        "newest first"
    );
    let blocked = queue.flags.iter().find(|f| f.seq == seq).unwrap();
    assert!(blocked.reporter_id.is_empty(), "raised by the blocklist");
    assert_eq!(blocked.user_id, "m");
    assert!(blocked.message.is_some());
    let resolve = v1::ResolveFlag {
        channel_id: "pub".into(),
        flag_id: blocked.flag_id.clone(),
        resolution: v1::FlagResolution::Dismissed as i32,
        note: "ok".into(),
    };
    assert_eq!(
        refused(reader.resolve_flag(&resolve, &c("pub")).await),
        "forbidden"
    );
    owner.resolve_flag(&resolve, &c("pub")).await.unwrap();
    assert_eq!(
        owner
            .list_flags(&ask, &c("pub"), 1 << 20)
            .unwrap()
            .flags
            .len(),
        2
    );
    let all = v1::ListFlags {
        include_resolved: true,
        limit: 2,
        ..ask.clone()
    };
    let page = owner.list_flags(&all, &c("pub"), 1 << 20).unwrap();
    assert_eq!(page.flags.len(), 2);
    let rest = owner
        .list_flags(
            &v1::ListFlags {
                cursor: page.next_cursor.clone(),
                ..all
            },
            &c("pub"),
            1 << 20,
        )
        .unwrap();
    assert_eq!(rest.flags.len(), 1);
    assert!(rest.next_cursor.is_empty());
    assert_eq!(rest.flags[0].resolution(), v1::FlagResolution::Dismissed);
}

/// With the channel's moderation log off, mutes and bans write no entry; they still apply.
#[tokio::test]
async fn a_channel_may_keep_moderation_out_of_its_log() {
    let node = node();
    group(&node, "pub", ChannelKind::Public, "owner", &["m1", "m2"]).await;
    let ch = c("pub");
    let owner_id = u("owner");
    let owner = Chat::user(&node, &owner_id);
    owner
        .update_channel(v1::UpdateChannel {
            channel_id: "pub".into(),
            moderation_log: Some(v1::ModerationLog::None as i32),
            ..Default::default()
        })
        .await
        .unwrap();
    let head = node.store().position(&ch).unwrap().head;
    owner.mute(&ch, "m1", 0, "").await.unwrap();
    owner.ban(&ban("m2", false), &ch).await.unwrap();
    assert_eq!(
        node.store().position(&ch).unwrap().head,
        head,
        "nothing logged"
    );
    assert_eq!(
        refused(publish(&node, &u("m1"), "pub", "k").await),
        "forbidden"
    );
    assert!(
        node.store().member(&ch, &u("m2")).unwrap().is_none(),
        "banned all the same"
    );
}
