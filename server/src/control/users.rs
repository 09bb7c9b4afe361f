//! A user's data: everything stored about them (export), and the right to be forgotten (erase).
//!
//! Authored entries are found by scanning every channel's log: there is no per-author index,
//! so both commands cost one pass over the store. They are rare admin actions; the pass reads
//! in pages and holds no lock.

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1::{self, MemberAction, channel_event::Body};
use chorus_storage::{Anchor, BanScope, LogEntry, LogQuery};
use serde_json::{Value, json};

use crate::clock::unix_ms;
use crate::control::wire::ControlError;
use crate::node::Node;

/// Entries read per page while scanning.
const PAGE: usize = 1_000;

/// Calls `visit` with every entry of every channel, channel by channel, in seq order. Stops
/// with a `stopped` error between pages once the node is shutting down.
pub(super) async fn for_each_entry(
    node: &Node,
    mut visit: impl FnMut(&ChannelId, &LogEntry),
) -> Result<(), ControlError> {
    let store = node.store();
    let mut after_channel: Option<ChannelId> = None;
    loop {
        let channels = store
            .channels(after_channel.as_ref(), 1_000)
            .map_err(ControlError::failed)?;
        let Some(last) = channels.last().cloned() else {
            return Ok(());
        };
        for channel in &channels {
            let mut after = Seq(0);
            loop {
                let page = store
                    .read(
                        channel,
                        &LogQuery {
                            anchor: Anchor::After(after),
                            limit: PAGE,
                            thread: None,
                        },
                    )
                    .map_err(ControlError::failed)?;
                for entry in &page.entries {
                    visit(channel, entry);
                    after = entry.seq;
                }
                // Reads are synchronous: let other tasks run between pages.
                tokio::task::yield_now().await;
                if node.stopping().is_cancelled() {
                    return Err(stopped());
                }
                if !page.has_more_after || page.entries.is_empty() {
                    break;
                }
            }
        }
        after_channel = Some(last);
    }
}

/// An entry as JSON, for exports.
fn entry_json(channel: &ChannelId, e: &LogEntry) -> Value {
    let ev = &e.event;
    let body = match &ev.body {
        Some(Body::Message(m)) => json!({
            "type": "message",
            "client_msg_id": m.client_msg_id,
            "text": m.text,
            "thread_parent_seq": m.thread_parent_seq,
            "mentions": m.mentions,
            "attachments": m.attachments.iter().map(|a| json!({
                "url": a.url, "name": a.name, "mime_type": a.mime_type, "size_bytes": a.size_bytes,
            })).collect::<Vec<_>>(),
            "custom_hex": hex_of(&m.custom),
        }),
        Some(Body::MessageEdited(m)) => json!({
            "type": "edit", "target_seq": m.target_seq, "text": m.text, "mentions": m.mentions,
        }),
        Some(Body::MessageDeleted(d)) => json!({"type": "delete", "target_seq": d.target_seq}),
        Some(Body::ReactionAdded(r)) => {
            json!({"type": "reaction_added", "target_seq": r.target_seq, "emoji": r.emoji})
        }
        Some(Body::ReactionRemoved(r)) => {
            json!({"type": "reaction_removed", "target_seq": r.target_seq, "emoji": r.emoji})
        }
        Some(Body::MemberChanged(m)) => json!({
            "type": "member", "user_id": m.user_id,
            "action": MemberAction::try_from(m.action).map_or("unspecified", |a| a.as_str_name()),
        }),
        Some(Body::ChannelChanged(c)) => json!({
            "type": "channel_changed", "name": c.name, "topic": c.topic, "archived": c.archived,
        }),
        Some(Body::Tombstone(_)) => json!({"type": "tombstone"}),
        Some(Body::MessagePinned(p)) => json!({"type": "pinned", "target_seq": p.target_seq}),
        Some(Body::MessageUnpinned(p)) => json!({"type": "unpinned", "target_seq": p.target_seq}),
        None => json!({"type": "unknown"}),
    };
    json!({
        "channel": channel.as_str(),
        "seq": e.seq.get(),
        "time_ms": ev.server_time_ms,
        "body": body,
    })
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The node is shutting down: a long admin pass ends (an erasure resumes at the next start).
pub(super) fn stopped() -> ControlError {
    ControlError::new(
        "stopped",
        "the node is shutting down; an erasure resumes when it starts again",
    )
}

pub(super) fn tombstone(thread_parent_seq: u64) -> Body {
    Body::Tombstone(v1::Tombstone {
        reason: v1::tombstone::Reason::UserErased as i32,
        thread_parent_seq,
    })
}

/// Everything stored about `user`.
pub(crate) async fn export(node: &Node, user: &UserId) -> Result<Value, ControlError> {
    let store = node.store();
    let profile = store.user(user).map_err(ControlError::failed)?;
    let ban = store
        .ban_of(BanScope::Server, user, unix_ms())
        .map_err(ControlError::failed)?;
    let mut memberships = Vec::new();
    let mut after: Option<ChannelId> = None;
    loop {
        let channels = store
            .user_channels(user, after.as_ref(), 1_000)
            .map_err(ControlError::failed)?;
        let Some(last) = channels.last().cloned() else {
            break;
        };
        for channel in &channels {
            let member = store.member(channel, user).map_err(ControlError::failed)?;
            let read = store.read_state(user, channel).ok();
            memberships.push(json!({
                "channel": channel.as_str(),
                "role": member.as_ref().map(|m| v1::Role::try_from(m.role).map_or("unspecified", |r| r.as_str_name())),
                "joined_at_ms": member.as_ref().map(|m| m.joined_at_ms),
                "muted_until_ms": member.as_ref().map(|m| m.muted_until_ms),
                "read_marker": read.map(|r| json!({
                    "last_read_seq": r.last_read.get(),
                    "unread": r.unread,
                    "mentions": r.mentions,
                    "updated_at_ms": r.updated_at_ms,
                })),
            }));
        }
        after = Some(last);
    }
    let mut authored = Vec::new();
    let mut reactions = Vec::new();
    for_each_entry(node, |channel, e| {
        if e.event.author_id == user.as_str() {
            let item = entry_json(channel, e);
            if matches!(
                e.event.body,
                Some(Body::ReactionAdded(_) | Body::ReactionRemoved(_))
            ) {
                reactions.push(item);
            } else {
                authored.push(item);
            }
        }
    })
    .await?;
    Ok(json!({
        "user": user.as_str(),
        "exported_at_ms": unix_ms(),
        "profile": profile.map(|p| json!({
            "display_name": p.display_name,
            "created_at_ms": p.created_at_ms,
            "last_seen_ms": p.last_seen_ms,
            "tokens_valid_after_ms": p.tokens_valid_after_ms,
            "erased": p.erased,
        })),
        "server_ban": ban.map(|b| json!({"until_ms": b.until_ms, "reason": b.reason, "created_at_ms": b.created_at_ms})),
        "memberships": memberships,
        "authored": authored,
        "reactions": reactions,
    }))
}
