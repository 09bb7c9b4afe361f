//! Blocks: no direct channel is made or posted to between two users once either blocks the
//! other; lifting the block restores it; a user's block list pages.

use chorus_protocol::v1::{self, ChannelKind};

use super::{node, refused, u};
use crate::chat::Chat;

fn direct(with: &str) -> v1::CreateChannel {
    v1::CreateChannel {
        kind: ChannelKind::Direct as i32,
        member_ids: vec![with.into()],
        ..Default::default()
    }
}

async fn dm(node: &crate::node::Node, from: &str, id: &str, key: &str) -> &'static str {
    let mut p = super::message(key);
    p.channel_id = id.into();
    let from = u(from);
    match Chat::user(node, &from).publish(p).await {
        Ok(durable) => refused(durable.await),
        Err(e) => refused(Err::<(), _>(e)),
    }
}

#[tokio::test]
async fn a_block_closes_the_direct_channel_both_ways_until_lifted() {
    let node = node();
    let (alice, bob, carol) = (u("alice"), u("bob"), u("carol"));
    let ab = Chat::user(&node, &alice)
        .create_channel(direct("bob"))
        .await
        .unwrap();
    let ab = ab.channel.unwrap().channel_id;
    assert_eq!(dm(&node, "bob", &ab, "k1").await, "ok");
    let ab_id = crate::chat::channel_id("c", &ab).unwrap();
    let k1 = node.store().position(&ab_id).unwrap().head.get();
    Chat::user(&node, &alice).block("bob").await.unwrap();
    Chat::user(&node, &alice).block("bob").await.unwrap();
    assert_eq!(
        dm(&node, "bob", &ab, "k2").await,
        "forbidden",
        "the blocked"
    );
    assert_eq!(
        dm(&node, "alice", &ab, "k3").await,
        "forbidden",
        "the blocker"
    );
    // Nor edits or pins in it.
    let edit = Chat::user(&node, &bob)
        .edit(v1::EditMessage {
            channel_id: ab.clone(),
            target_seq: k1,
            text: "rewritten".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(refused(edit), "forbidden");
    let pin = Chat::user(&node, &alice).pin(&ab_id, k1, "").await;
    assert_eq!(refused(pin), "forbidden");
    // No new direct channel either, whoever asks; carol is not concerned.
    Chat::user(&node, &bob).block("carol").await.unwrap();
    assert_eq!(
        refused(
            Chat::user(&node, &carol)
                .create_channel(direct("bob"))
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        refused(
            Chat::user(&node, &carol)
                .create_channel(direct("alice"))
                .await
        ),
        "ok"
    );
    assert_eq!(
        refused(Chat::user(&node, &alice).block("alice").await),
        "invalid"
    );
    let list = Chat::user(&node, &alice)
        .list_blocks(&v1::ListBlocks::default())
        .unwrap();
    assert_eq!(list.user_ids, ["bob"]);
    Chat::user(&node, &alice).unblock("bob").await.unwrap();
    assert_eq!(dm(&node, "bob", &ab, "k4").await, "ok", "lifted");
    // A block both ways needs both lifted.
    Chat::user(&node, &alice).block("bob").await.unwrap();
    Chat::user(&node, &bob).block("alice").await.unwrap();
    Chat::user(&node, &alice).unblock("bob").await.unwrap();
    assert_eq!(dm(&node, "alice", &ab, "k5").await, "forbidden");
    Chat::user(&node, &bob).unblock("alice").await.unwrap();
    assert_eq!(dm(&node, "alice", &ab, "k6").await, "ok");
}

#[tokio::test]
async fn block_lists_page_and_stop_at_the_limit() {
    let node = super::node_with(|l| l.max_blocks_per_user = 3);
    let me = u("me");
    let chat = Chat::user(&node, &me);
    for other in ["a", "b", "c"] {
        chat.block(other).await.unwrap();
    }
    assert_eq!(refused(chat.block("d").await), "limit");
    let first = chat
        .list_blocks(&v1::ListBlocks {
            limit: 2,
            cursor: String::new(),
        })
        .unwrap();
    assert_eq!(first.user_ids, ["a", "b"]);
    let rest = chat
        .list_blocks(&v1::ListBlocks {
            limit: 2,
            cursor: first.next_cursor,
        })
        .unwrap();
    assert_eq!(rest.user_ids, ["c"]);
    assert!(rest.next_cursor.is_empty());
}
