//! The rules of reactions, threads, quotes and pins: who may, what is refused, and what
//! history shows beside the messages.

use chorus_protocol::v1::{self, ChannelKind, Role};

use super::{c, group, node, node_with, publish, publish_with, refused, u};
use crate::chat::{Actor, Chat, Error};

fn react(channel: &str, seq: u64, emoji: &str) -> v1::React {
    v1::React {
        channel_id: channel.into(),
        target_seq: seq,
        emoji: emoji.into(),
        client_msg_id: String::new(),
    }
}

fn unreact(channel: &str, seq: u64, emoji: &str) -> v1::Unreact {
    v1::Unreact {
        channel_id: channel.into(),
        target_seq: seq,
        emoji: emoji.into(),
        client_msg_id: String::new(),
    }
}

/// Members react; readers who are not members, muted members, admins and archived channels
/// do not; emoji are checked; a reaction takes from the publish budget.
#[tokio::test]
async fn who_may_react() {
    let node = node();
    group(
        &node,
        "pub",
        ChannelKind::Public,
        "owner",
        &["member", "muted"],
    )
    .await;
    group(&node, "grp", ChannelKind::Group, "owner", &[]).await;
    let seq = publish(&node, &u("owner"), "pub", "k").await.unwrap();
    let as_user = |who: &str| u(who);
    let (member, reader, muted) = (as_user("member"), as_user("reader"), as_user("muted"));
    assert_eq!(
        refused(
            Chat::user(&node, &member)
                .react(react("pub", seq, "👍"))
                .await
        ),
        "ok"
    );
    let again = Chat::user(&node, &member)
        .react(react("pub", seq, "👍"))
        .await
        .unwrap();
    assert!(
        again.duplicate,
        "the same reaction again answers with the first"
    );
    assert_eq!(
        refused(
            Chat::user(&node, &reader)
                .react(react("pub", seq, "👍"))
                .await
        ),
        "forbidden",
        "a public channel's reader who is no member"
    );
    let grp_seq = publish(&node, &u("owner"), "grp", "k").await.unwrap();
    assert_eq!(
        refused(
            Chat::user(&node, &reader)
                .react(react("grp", grp_seq, "👍"))
                .await
        ),
        "not_found",
        "a private channel is not revealed"
    );
    node.store()
        .set_mute(&c("pub"), &muted, u64::MAX)
        .await
        .unwrap();
    assert_eq!(
        refused(
            Chat::user(&node, &muted)
                .react(react("pub", seq, "👍"))
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        refused(
            Chat::new(&node, Actor::Admin)
                .react(react("pub", seq, "👍"))
                .await
        ),
        "forbidden",
        "an admin has no reactions of their own"
    );
    for bad in ["", "ok", "👍👍", ":no spaces:"] {
        assert_eq!(
            refused(
                Chat::user(&node, &member)
                    .react(react("pub", seq, bad))
                    .await
            ),
            "invalid",
            "{bad:?}"
        );
    }
    assert_eq!(
        refused(
            Chat::user(&node, &member)
                .react(react("pub", 999, "👍"))
                .await
        ),
        "not_found"
    );
    // Unreacting what is not there is NOT_FOUND; one's own reaction goes.
    assert_eq!(
        refused(
            Chat::user(&node, &member)
                .unreact(unreact("pub", seq, "🎉"))
                .await
        ),
        "not_found"
    );
    assert_eq!(
        refused(
            Chat::user(&node, &member)
                .unreact(unreact("pub", seq, "👍"))
                .await
        ),
        "ok"
    );
    Chat::new(&node, Actor::Admin)
        .archive(&c("pub"), true)
        .await
        .unwrap();
    assert_eq!(
        refused(
            Chat::user(&node, &member)
                .react(react("pub", seq, "👍"))
                .await
        ),
        "forbidden"
    );
}

#[tokio::test]
async fn reactions_share_the_publish_budget_and_limits_name_the_emoji() {
    let node = node_with(|l| {
        l.publish_burst = 2;
        l.publish_rate_per_sec = 1;
        l.max_reactions_per_user = 1;
    });
    group(&node, "g", ChannelKind::Group, "owner", &["m"]).await;
    let seq = publish(&node, &u("owner"), "g", "k").await.unwrap();
    let m = u("m");
    Chat::user(&node, &m)
        .react(react("g", seq, "👍"))
        .await
        .unwrap();
    match Chat::user(&node, &m).react(react("g", seq, "🎉")).await {
        Err(e @ Error::Store(_)) => {
            let wire: v1::Error = e.into();
            assert_eq!(wire.code(), v1::ErrorCode::LimitExceeded);
            assert_eq!(wire.field, "emoji");
        }
        other => panic!("{other:?}"),
    }
    // The burst of two is spent (the refused reaction took its token before the limit).
    assert!(matches!(
        Chat::user(&node, &m).react(react("g", seq, "🚀")).await,
        Err(Error::RateLimited { .. })
    ));
}

/// Replies name a root that is a message and not itself a reply; a quote names a message;
/// history shows the root's thread, the reactions as the reader sees them, and the quoted
/// entries outside the page.
#[tokio::test]
async fn replies_quotes_and_what_history_shows() {
    let node = node();
    group(&node, "g", ChannelKind::Group, "owner", &["a", "b"]).await;
    let root = publish_with(&node, "a", "g", "root", |_| {}).await.unwrap();
    let r1 = publish_with(&node, "b", "g", "r1", |m| m.thread_parent_seq = root)
        .await
        .unwrap();
    let nested = publish_with(&node, "a", "g", "r2", |m| m.thread_parent_seq = r1).await;
    assert!(matches!(
        nested,
        Err(Error::Invalid {
            field: "message.thread_parent_seq",
            ..
        })
    ));
    let alone = publish_with(&node, "a", "g", "s", |m| m.show_in_channel = true).await;
    assert!(matches!(
        alone,
        Err(Error::Invalid {
            field: "message.show_in_channel",
            ..
        })
    ));
    let missing = publish_with(&node, "a", "g", "q0", |m| m.quoted_seq = 999).await;
    assert!(matches!(
        missing,
        Err(Error::Invalid {
            field: "message.quoted_seq",
            ..
        })
    ));
    let shown = publish_with(&node, "a", "g", "r3", |m| {
        m.thread_parent_seq = root;
        m.show_in_channel = true;
    })
    .await
    .unwrap();
    Chat::user(&node, &u("b"))
        .react(react("g", root, "👍"))
        .await
        .unwrap();
    let quote = publish_with(&node, "b", "g", "q", |m| m.quoted_seq = root)
        .await
        .unwrap();

    let history = |reader: &str, anchor| {
        Chat::user(&node, &u(reader))
            .history(
                v1::History {
                    channel_id: "g".into(),
                    anchor,
                    limit: 1,
                    thread_parent_seq: 0,
                },
                1 << 20,
            )
            .unwrap()
    };
    let page = history("b", Some(v1::history::Anchor::AroundSeq(root)));
    let s = &page.summaries[0];
    assert_eq!(s.seq, root);
    let thread = s.thread.as_ref().expect("the root shows its thread");
    assert_eq!(thread.reply_count, 2);
    assert_eq!(thread.last_reply_seq, shown);
    assert_eq!(thread.participants, ["a", "b"]);
    assert!(s.reactions[0].reacted, "b reacted");
    assert!(
        !history("a", Some(v1::history::Anchor::AroundSeq(root))).summaries[0].reactions[0].reacted
    );
    // The quoting message's page carries the quoted root.
    let page = history("a", Some(v1::history::Anchor::AroundSeq(quote)));
    assert_eq!(page.events[0].seq, quote);
    assert_eq!(page.quoted.len(), 1);
    assert_eq!(page.quoted[0].seq, root);
    let threads = Chat::user(&node, &u("a"))
        .list_threads(
            v1::ListThreads {
                channel_id: "g".into(),
                ..Default::default()
            },
            1 << 20,
        )
        .unwrap();
    assert_eq!(threads.threads.len(), 1);
    assert_eq!(threads.threads[0].root.as_ref().map(|e| e.seq), Some(root));
}

/// Moderators and owners pin and unpin; members do not; readers list the pins.
#[tokio::test]
async fn who_may_pin() {
    let node = node();
    group(&node, "g", ChannelKind::Group, "owner", &["mod", "member"]).await;
    let admin = Chat::new(&node, Actor::Admin);
    admin
        .set_role(&c("g"), "mod", Role::Moderator)
        .await
        .unwrap();
    let seq = publish(&node, &u("member"), "g", "k").await.unwrap();
    let pin = |who: &str| {
        let who = u(who);
        let node = &node;
        async move { Chat::user(node, &who).pin(&c("g"), seq, "").await }
    };
    assert_eq!(refused(pin("member").await), "forbidden");
    assert_eq!(refused(pin("outsider").await), "not_found");
    assert_eq!(refused(pin("mod").await), "ok");
    assert!(pin("owner").await.unwrap().duplicate);
    let list = Chat::user(&node, &u("member"))
        .list_pins(
            v1::ListPins {
                channel_id: "g".into(),
                ..Default::default()
            },
            1 << 20,
        )
        .unwrap();
    assert_eq!(list.pins.len(), 1);
    assert_eq!(list.pins[0].pinned_by, "mod");
    assert_eq!(list.pins[0].message.as_ref().map(|e| e.seq), Some(seq));
    assert!(list.next_cursor.is_empty());
    assert_eq!(
        refused(
            Chat::user(&node, &u("member"))
                .unpin(&c("g"), seq, "")
                .await
        ),
        "forbidden"
    );
    assert_eq!(refused(admin.unpin(&c("g"), seq, "").await), "ok");
    assert_eq!(refused(admin.unpin(&c("g"), seq, "").await), "not_found");
}
