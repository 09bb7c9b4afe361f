//! The chat rules on the memory engine, without sockets: who may do what in which kind of
//! channel (the permission matrix), the rules that keep data consistent, and the bounded
//! listings. The socket tests (`server/tests/`) check the same requests end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{self, ChannelKind, Role};
use chorus_storage::Store;
use chorus_storage::engine::memory::MemoryEngine;

use super::channels::NewGroup;
use super::{Actor, Chat, Error};
use crate::admission::{Door, FdBudget};
use crate::auth::Verifier;
use crate::config::{Config, LimitsConfig};
use crate::hub::Hub;
use crate::node::Node;

fn node_with(tweak: impl FnOnce(&mut LimitsConfig)) -> Node {
    let mut config = Config::for_tests(std::path::Path::new("/nonexistent"), b"secret");
    tweak(&mut config.limits);
    let store = Store::with_engine(Arc::new(MemoryEngine::new()), config.store.clone());
    let verifier = Verifier::new(&config.token_key, None, None).unwrap();
    Node::new(
        store,
        Arc::new(Hub::default()),
        config,
        verifier,
        Door::new(FdBudget::new(None, 0)),
    )
}

fn node() -> Node {
    node_with(|_| {})
}

fn u(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn c(s: &str) -> ChannelId {
    ChannelId::new(s).unwrap()
}

/// A channel `id` of `kind` owned by `owner`, with `members`.
async fn group(node: &Node, id: &str, kind: ChannelKind, owner: &str, members: &[&str]) {
    Chat::new(node, Actor::Admin)
        .create_group(NewGroup {
            id: Some(c(id)),
            kind,
            name: id.into(),
            topic: String::new(),
            custom: Bytes::new(),
            owner: u(owner),
            members: members.iter().map(|m| u(m)).collect(),
        })
        .await
        .unwrap();
}

fn message(key: &str) -> v1::Publish {
    v1::Publish {
        channel_id: String::new(),
        message: Some(v1::Message {
            client_msg_id: key.into(),
            text: "hi".into(),
            ..Default::default()
        }),
    }
}

async fn publish(node: &Node, user: &UserId, channel: &str, key: &str) -> Result<u64, Error> {
    let mut p = message(key);
    p.channel_id = channel.into();
    let durable = Chat::user(node, user).publish(p).await?;
    Ok(durable.await?.seq)
}

/// Publishes as `user` the message `edit` shapes; its seq once durable.
pub(super) async fn publish_with(
    node: &crate::node::Node,
    user: &str,
    channel: &str,
    key: &str,
    edit: impl FnOnce(&mut v1::Message),
) -> Result<u64, Error> {
    let mut p = message(key);
    p.channel_id = channel.into();
    if let Some(m) = p.message.as_mut() {
        edit(m);
    }
    let user = u(user);
    let durable = Chat::user(node, &user).publish(p).await?;
    Ok(durable.await?.seq)
}

/// The one entry at `seq` of channel `channel` as `actor` reads it.
pub(super) fn entry_as(node: &Node, actor: Actor<'_>, channel: &str, seq: u64) -> v1::ChannelEvent {
    Chat::new(node, actor)
        .history(
            v1::History {
                channel_id: channel.into(),
                anchor: Some(v1::history::Anchor::AroundSeq(seq)),
                limit: 1,
                ..Default::default()
            },
            1 << 20,
        )
        .unwrap()
        .events
        .remove(0)
}

pub(super) fn refused(r: Result<impl std::fmt::Debug, Error>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(Error::Forbidden(_)) => "forbidden",
        Err(Error::NotFound(_) | Error::NotAMessage(_)) => "not_found",
        Err(Error::Conflict(_)) => "conflict",
        Err(Error::Invalid { .. }) => "invalid",
        Err(Error::LimitExceeded { .. }) => "limit",
        // What the store refuses is judged by the code clients see.
        Err(e @ Error::Store(_)) => match v1::Error::from(e).code() {
            v1::ErrorCode::NotFound => "not_found",
            v1::ErrorCode::LimitExceeded => "limit",
            v1::ErrorCode::Forbidden => "forbidden",
            other => panic!("unexpected store refusal {other:?}"),
        },
        Err(e) => panic!("unexpected {e:?}"),
    }
}

/// Each role against each membership-changing request in a group channel.
#[tokio::test]
async fn who_may_change_members_of_a_group() {
    let node = node();
    group(
        &node,
        "g",
        ChannelKind::Group,
        "owner",
        &["mod", "member", "other"],
    )
    .await;
    let g = c("g");
    let admin = Chat::new(&node, Actor::Admin);
    admin.set_role(&g, "mod", Role::Moderator).await.unwrap();
    let (owner, moderator, member, stranger) = (u("owner"), u("mod"), u("member"), u("stranger"));
    // Adding: moderators and up.
    let add = |who: &UserId, new: &str| {
        let users = vec![new.to_owned()];
        let node = &node;
        let who = who.clone();
        async move {
            Chat::user(node, &who)
                .add_members(&c("g"), &users, Role::Member)
                .await
        }
    };
    assert_eq!(refused(add(&member, "n1").await), "forbidden");
    // The right to add is checked before the named ids: a bad id from a member is FORBIDDEN.
    assert_eq!(refused(add(&member, "not an id!").await), "forbidden");
    assert_eq!(refused(add(&moderator, "not an id!").await), "invalid");
    assert_eq!(
        refused(add(&stranger, "n1").await),
        "not_found",
        "a group is not revealed"
    );
    assert_eq!(refused(add(&moderator, "n1").await), "ok");
    assert_eq!(refused(add(&owner, "n2").await), "ok");
    // Removing: only members of lower rank.
    let remove = |who: &UserId, target: &str| {
        let node = &node;
        let (who, target) = (who.clone(), target.to_owned());
        async move { Chat::user(node, &who).remove_member(&c("g"), &target).await }
    };
    assert_eq!(refused(remove(&member, "other").await), "forbidden");
    assert_eq!(refused(remove(&moderator, "owner").await), "forbidden");
    assert_eq!(
        refused(remove(&moderator, "mod").await),
        "invalid",
        "leaving is LeaveChannel"
    );
    assert_eq!(refused(remove(&moderator, "other").await), "ok");
    assert_eq!(refused(remove(&owner, "mod").await), "ok");
    // Roles: owners only.
    let set = |who: &UserId, target: &str, role: Role| {
        let node = &node;
        let (who, target) = (who.clone(), target.to_owned());
        async move {
            Chat::user(node, &who)
                .set_role(&c("g"), &target, role)
                .await
        }
    };
    assert_eq!(
        refused(set(&member, "n1", Role::Moderator).await),
        "forbidden"
    );
    assert_eq!(
        refused(set(&owner, "n1", Role::Unspecified).await),
        "invalid"
    );
    assert_eq!(
        refused(set(&owner, "nobody", Role::Member).await),
        "not_found"
    );
    assert_eq!(
        refused(set(&owner, "owner", Role::Member).await),
        "conflict",
        "the last owner"
    );
    assert_eq!(refused(set(&owner, "n1", Role::Owner).await), "ok");
    assert_eq!(
        refused(set(&owner, "owner", Role::Member).await),
        "ok",
        "another owner remains"
    );
    // An admin acts as an owner.
    assert_eq!(refused(admin.remove_member(&g, "n2").await), "ok");
}

/// Leaving: the last owner of a group with other members hands over first; anyone else leaves.
#[tokio::test]
async fn the_last_owner_stays_until_someone_takes_over() {
    let node = node();
    group(&node, "g", ChannelKind::Group, "owner", &["member"]).await;
    let g = c("g");
    let (owner, member) = (u("owner"), u("member"));
    assert_eq!(
        refused(Chat::user(&node, &owner).leave(&g).await),
        "conflict"
    );
    assert_eq!(refused(Chat::user(&node, &member).leave(&g).await), "ok");
    assert_eq!(
        refused(Chat::user(&node, &member).leave(&g).await),
        "not_found"
    );
    // Alone, the owner may leave.
    assert_eq!(refused(Chat::user(&node, &owner).leave(&g).await), "ok");
}

/// Posting, editing and deleting by role, and what archives and mutes do.
#[tokio::test]
async fn who_may_post_edit_and_delete() {
    let node = node();
    group(
        &node,
        "pub",
        ChannelKind::Public,
        "owner",
        &["author", "other"],
    )
    .await;
    let admin = Chat::new(&node, Actor::Admin);
    admin
        .set_role(&c("pub"), "other", Role::Moderator)
        .await
        .unwrap();
    let (author, moderator, reader) = (u("author"), u("other"), u("reader"));
    let seq = publish(&node, &author, "pub", "k1").await.unwrap();
    // A public channel is readable by anyone, but only members post.
    assert!(Chat::user(&node, &reader).get_channel(&c("pub")).is_ok());
    assert_eq!(
        refused(publish(&node, &reader, "pub", "k2").await),
        "forbidden"
    );
    // Only the author edits.
    let edit = |who: &UserId| {
        let node = &node;
        let who = who.clone();
        async move {
            Chat::user(node, &who)
                .edit(v1::EditMessage {
                    channel_id: "pub".into(),
                    target_seq: seq,
                    text: "edited".into(),
                    ..Default::default()
                })
                .await
        }
    };
    assert_eq!(refused(edit(&moderator).await), "forbidden");
    assert_eq!(refused(edit(&author).await), "ok");
    // The author or a moderator deletes; a member who is neither does not.
    let other_seq = publish(&node, &moderator, "pub", "k3").await.unwrap();
    assert_eq!(
        refused(
            Chat::user(&node, &author)
                .delete(&c("pub"), other_seq, "")
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        refused(
            Chat::user(&node, &moderator)
                .delete(&c("pub"), seq, "")
                .await
        ),
        "ok"
    );
    // A tombstone is no message: deleting it again is refused as such.
    assert!(matches!(
        Chat::user(&node, &author).delete(&c("pub"), seq, "").await,
        Err(Error::NotAMessage(_))
    ));
    // Muted members and archived channels take no posts.
    node.store()
        .set_mute(&c("pub"), &author, u64::MAX)
        .await
        .unwrap();
    assert_eq!(
        refused(publish(&node, &author, "pub", "k4").await),
        "forbidden"
    );
    admin.archive(&c("pub"), true).await.unwrap();
    assert_eq!(
        refused(publish(&node, &moderator, "pub", "k5").await),
        "forbidden"
    );
}

/// Private channels are not revealed to non-members; public ones are joined, groups are not.
#[tokio::test]
async fn private_channels_are_not_revealed() {
    let node = node();
    group(&node, "g", ChannelKind::Group, "owner", &[]).await;
    group(&node, "p", ChannelKind::Public, "owner", &[]).await;
    let stranger = u("stranger");
    let chat = Chat::user(&node, &stranger);
    assert_eq!(refused(chat.get_channel(&c("g"))), "not_found");
    assert_eq!(refused(chat.join(&c("g")).await), "not_found");
    assert_eq!(refused(chat.join(&c("p")).await), "ok");
    assert_eq!(
        chat.join(&c("p")).await.unwrap().my_role,
        Role::Member as i32,
        "joining twice writes nothing"
    );
}

/// Direct channels keep exactly their two owners, for admins too.
#[tokio::test]
async fn direct_channels_keep_their_two_members() {
    let node = node();
    let (a, b) = (u("a"), u("b"));
    let dm = Chat::user(&node, &a).direct(&b).await.unwrap();
    assert_eq!(dm.record.member_count, 2);
    let again = Chat::user(&node, &b).direct(&a).await.unwrap();
    assert_eq!(again.id, dm.id, "one channel per pair");
    let admin = Chat::new(&node, Actor::Admin);
    assert_eq!(
        refused(
            admin
                .add_members(&dm.id, &["c".to_owned()], Role::Member)
                .await
        ),
        "forbidden"
    );
    assert_eq!(refused(admin.remove_member(&dm.id, "a").await), "forbidden");
    assert_eq!(
        refused(admin.set_role(&dm.id, "a", Role::Member).await),
        "forbidden"
    );
    assert_eq!(refused(Chat::user(&node, &a).direct(&a).await), "invalid");
}

/// Events an admin causes carry no author; a user's carry the user.
#[tokio::test]
async fn admin_events_have_no_author() {
    let node = node();
    group(&node, "g", ChannelKind::Group, "owner", &[]).await;
    let page = Chat::new(&node, Actor::Admin)
        .history(
            v1::History {
                channel_id: "g".into(),
                limit: 10,
                ..Default::default()
            },
            1 << 20,
        )
        .unwrap();
    assert!(!page.events.is_empty());
    assert!(page.events.iter().all(|e| e.author_id.is_empty()));
    let seq = publish(&node, &u("owner"), "g", "k").await.unwrap();
    let entry = node
        .store()
        .entry(&c("g"), chorus_protocol::ids::Seq(seq))
        .unwrap()
        .unwrap();
    assert_eq!(entry.event.author_id, "owner");
}

/// The membership limit refuses a join, an addition or a creation past it, writing nothing.
#[tokio::test]
async fn memberships_stop_at_the_limit() {
    let node = node_with(|l| l.max_memberships_per_user = 2);
    group(&node, "a", ChannelKind::Public, "owner", &["u"]).await;
    group(&node, "b", ChannelKind::Public, "owner2", &["u"]).await;
    group(&node, "c", ChannelKind::Group, "owner3", &[]).await;
    let user = u("u");
    assert_eq!(
        refused(Chat::user(&node, &user).join(&c("c")).await),
        "not_found"
    );
    group(&node, "d", ChannelKind::Public, "owner4", &[]).await;
    assert_eq!(
        refused(Chat::user(&node, &user).join(&c("d")).await),
        "limit"
    );
    let admin = Chat::new(&node, Actor::Admin);
    assert_eq!(
        refused(
            admin
                .add_members(&c("c"), &["u".to_owned()], Role::Member)
                .await
        ),
        "limit"
    );
    assert_eq!(
        node.store().user_channels(&user, None, 10).unwrap().len(),
        2
    );
    // Leaving makes room again.
    Chat::user(&node, &user).leave(&c("a")).await.unwrap();
    assert_eq!(refused(Chat::user(&node, &user).join(&c("d")).await), "ok");
}

/// Listing with public discovery pages through the user's channels, then the public ones,
/// each exactly once, while every page examines at most `public_list_scan` channels.
#[tokio::test]
async fn public_discovery_pages_with_a_bounded_scan() {
    let node = node_with(|l| l.public_list_scan = 3);
    for i in 0..10 {
        group(
            &node,
            &format!("priv{i:02}"),
            ChannelKind::Group,
            "someone",
            &[],
        )
        .await;
    }
    for id in ["pub-a", "pub-b", "pub-c"] {
        group(&node, id, ChannelKind::Public, "someone", &[]).await;
    }
    for id in ["mine-1", "mine-2", "mine-3"] {
        group(&node, id, ChannelKind::Group, "me", &[]).await;
    }
    group(&node, "pub-joined", ChannelKind::Public, "someone", &["me"]).await;
    let me = u("me");
    let chat = Chat::user(&node, &me);
    let mut cursor = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = chat
            .list_channels(
                v1::ListChannels {
                    limit: 2,
                    cursor: cursor.clone(),
                    include_public: true,
                },
                1 << 20,
            )
            .unwrap();
        assert!(page.channels.len() <= 2);
        seen.extend(
            page.channels
                .iter()
                .map(|s| s.channel.as_ref().unwrap().channel_id.clone()),
        );
        pages += 1;
        assert!(pages < 50, "the listing ends");
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let (mine, public): (Vec<_>, Vec<_>) = seen
        .iter()
        .partition(|id| !id.starts_with("pub-") || *id == "pub-joined");
    assert_eq!(mine.len(), 4, "all of mine first: {seen:?}");
    assert!(seen[..4].iter().all(|id| mine.contains(&id)), "{seen:?}");
    assert_eq!(
        public,
        vec!["pub-a", "pub-b", "pub-c"],
        "public ones by id, joined one not again"
    );
    // Without public discovery, the user's channels page on their own.
    let first = chat
        .list_channels(
            v1::ListChannels {
                limit: 3,
                cursor: String::new(),
                include_public: false,
            },
            1 << 20,
        )
        .unwrap();
    assert_eq!(first.channels.len(), 3);
    let rest = chat
        .list_channels(
            v1::ListChannels {
                limit: 3,
                cursor: first.next_cursor,
                include_public: false,
            },
            1 << 20,
        )
        .unwrap();
    assert_eq!(rest.channels.len(), 1);
    assert!(rest.next_cursor.is_empty());
    assert!(matches!(
        chat.list_channels(
            v1::ListChannels {
                limit: 3,
                cursor: "x".into(),
                include_public: true
            },
            1 << 20
        ),
        Err(Error::Invalid {
            field: "cursor",
            ..
        })
    ));
}

mod blocks;
mod derived;
mod moderation;
