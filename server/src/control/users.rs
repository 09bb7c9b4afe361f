//! A user's data: everything stored about them (export), and the right to be forgotten (erase).
//!
//! Authored entries are found by scanning every channel's log: there is no per-author index,
//! so both commands cost one pass over the store. They are rare admin actions; the pass reads
//! in pages and holds no lock.

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1::{self, MemberAction, channel_event::Body};
use chorus_storage::{Anchor, BanScope, LogEntry, LogQuery, NewEntry};
use serde_json::{Value, json};

use crate::clock::unix_ms;
use crate::control::wire::ControlError;
use crate::session::Shared;

/// Entries read per page while scanning.
const PAGE: usize = 1_000;

/// Calls `visit` with every entry of every channel, channel by channel, in seq order.
async fn for_each_entry(
    shared: &Shared,
    mut visit: impl FnMut(&ChannelId, &LogEntry),
) -> Result<(), ControlError> {
    let store = &shared.store;
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

fn tombstone(thread_parent_seq: u64) -> Body {
    Body::Tombstone(v1::Tombstone {
        reason: v1::tombstone::Reason::UserErased as i32,
        thread_parent_seq,
    })
}

/// Everything stored about `user`.
pub(crate) async fn export(shared: &Shared, user: &UserId) -> Result<Value, ControlError> {
    let store = &shared.store;
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
    for_each_entry(shared, |channel, e| {
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

/// Erases `user`: their entries become tombstones with an anonymous author, membership events
/// naming them name the anonymous id instead, their memberships, read markers, server ban and
/// direct-pair index entries go, their profile is blanked and marked erased, their tokens are
/// refused and their sessions closed. Logs stay gapless.
pub(crate) async fn erase(shared: &Shared, user: &UserId) -> Result<Value, ControlError> {
    let store = &shared.store;
    let anonymous = format!("erased-{:016x}", rand::random::<u64>());
    // Whole seconds, like the tokens' issue times (see `users.revoke`).
    let now = unix_ms() / 1000 * 1000;
    // Refuse new sessions first, so that nothing new is written while the pass runs.
    store
        .update_user(user, |u| {
            u.display_name.clear();
            u.erased = true;
            u.tokens_valid_after_ms = now;
        })
        .await
        .map_err(ControlError::failed)?;
    let closed = shared.hub.close_user(
        user,
        &crate::outbound::Close {
            code: v1::CloseCode::AuthInvalid,
            reason: "account erased".into(),
            reconnect_after_ms: 0,
        },
    );
    // Content the user wrote becomes a tombstone; every other entry by or about them keeps its
    // meaning under the anonymous id (a membership change, a deletion, a channel change).
    let mut rewrites: Vec<(ChannelId, Seq, Body, bool, bool)> = Vec::new();
    for_each_entry(shared, |channel, e| {
        let authored = e.event.author_id == user.as_str();
        let body =
            match &e.event.body {
                Some(Body::Message(m)) if authored => Some((tombstone(m.thread_parent_seq), true)),
                Some(
                    Body::MessageEdited(_) | Body::ReactionAdded(_) | Body::ReactionRemoved(_),
                ) if authored => Some((tombstone(0), true)),
                Some(Body::MemberChanged(m)) if m.user_id == user.as_str() => {
                    let mut m = m.clone();
                    m.user_id.clone_from(&anonymous);
                    Some((Body::MemberChanged(m), false))
                }
                Some(other) if authored => Some((other.clone(), false)),
                _ => None,
            };
        if let Some((body, content)) = body {
            rewrites.push((channel.clone(), e.seq, body, content, authored));
        }
    })
    .await?;
    let (mut erased, mut anonymised) = (0u64, 0u64);
    for (channel, seq, body, content, authored) in rewrites {
        let author = authored.then_some(anonymous.as_str());
        store
            .rewrite_as(&channel, seq, body, author)
            .await
            .map_err(ControlError::failed)?;
        if content {
            erased += 1;
        } else {
            anonymised += 1;
        }
    }
    let mut memberships = 0u64;
    loop {
        let channels = store
            .user_channels(user, None, 1_000)
            .map_err(ControlError::failed)?;
        if channels.is_empty() {
            break;
        }
        for channel in &channels {
            store
                .remove_member(channel, user)
                .await
                .map_err(ControlError::failed)?;
            store
                .forget_read_marker(user, channel)
                .await
                .map_err(ControlError::failed)?;
            memberships += 1;
            // Members see someone left, under the anonymous id.
            let left = Body::MemberChanged(v1::MemberChanged {
                user_id: anonymous.clone(),
                action: MemberAction::Removed as i32,
                role: v1::Role::Unspecified as i32,
                until_ms: 0,
            });
            store
                .append(
                    channel,
                    NewEntry {
                        author: None,
                        time_ms: unix_ms(),
                        body: left,
                        client_msg_id: None,
                    },
                )
                .await
                .map_err(ControlError::failed)?;
        }
    }
    store
        .unban(BanScope::Server, user)
        .await
        .map_err(ControlError::failed)?;
    let direct_pairs = store
        .forget_direct_pairs(user)
        .await
        .map_err(ControlError::failed)?;
    Ok(json!({
        "user": user.as_str(),
        "anonymous_id": anonymous,
        "entries_erased": erased,
        "entries_anonymised": anonymised,
        "memberships_removed": memberships,
        "direct_pairs_removed": direct_pairs,
        "sessions_closed": closed,
    }))
}
