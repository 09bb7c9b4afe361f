//! What each control command does.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1::{self, ChannelKind, CloseCode, MemberAction, Role, channel_event::Body};
use chorus_storage::{
    BanRecord, BanScope, ChannelInfo, ChannelPatch, NewChannel, NewEntry, StoreError,
};
use serde_json::{Value, json};

use crate::clock::unix_ms;
use crate::config::FileConfig;
use crate::control::audit::Audit;
use crate::control::users;
use crate::control::wire::{Command, ControlError};
use crate::outbound::Close;
use crate::session::Shared;

/// Who asks (from SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admin {
    pub(crate) uid: u32,
    pub(crate) pid: Option<i32>,
}

fn user(id: &str) -> Result<UserId, ControlError> {
    UserId::new(id).map_err(|e| ControlError::bad_request(e.to_string()))
}

fn channel(id: &str) -> Result<ChannelId, ControlError> {
    ChannelId::new(id).map_err(|e| ControlError::bad_request(e.to_string()))
}

fn role(name: &str) -> Result<Role, ControlError> {
    match name {
        "member" => Ok(Role::Member),
        "moderator" => Ok(Role::Moderator),
        "owner" => Ok(Role::Owner),
        other => Err(ControlError::bad_request(format!(
            "role must be member, moderator or owner, not {other:?}"
        ))),
    }
}

fn store_error(e: StoreError) -> ControlError {
    match e {
        StoreError::ChannelNotFound(c) => ControlError::not_found(format!("channel {c} not found")),
        StoreError::EntryNotFound { channel, seq } => {
            ControlError::not_found(format!("no entry {seq} in {channel}"))
        }
        StoreError::ChannelExists(c) => {
            ControlError::new("conflict", format!("channel {c} exists"))
        }
        StoreError::Invalid(m) => ControlError::bad_request(m),
        other => ControlError::failed(other),
    }
}

fn close(code: CloseCode, reason: &str) -> Close {
    Close {
        code,
        reason: reason.into(),
        reconnect_after_ms: 0,
    }
}

fn channel_json(info: &ChannelInfo) -> Value {
    let r = &info.record;
    json!({
        "channel": info.id.as_str(),
        "kind": ChannelKind::try_from(r.kind).map_or("unspecified", |k| k.as_str_name()),
        "name": r.name,
        "topic": r.topic,
        "created_by": r.created_by,
        "created_at_ms": r.created_at_ms,
        "archived": r.archived,
        "members": r.member_count,
        "epoch": info.position.epoch.get(),
        "head_seq": info.position.head.get(),
        "first_available_seq": info.position.first_available.get(),
        "messages": info.position.message_count,
    })
}

/// Appends an event made by the node (no author).
async fn server_event(shared: &Shared, id: &ChannelId, body: Body) -> Result<u64, ControlError> {
    let appended = shared
        .store
        .append(
            id,
            NewEntry {
                author: None,
                time_ms: unix_ms(),
                body,
                client_msg_id: None,
            },
        )
        .await
        .map_err(store_error)?;
    Ok(appended.entry.seq.get())
}

async fn member_event(
    shared: &Shared,
    id: &ChannelId,
    user: &UserId,
    action: MemberAction,
    role: Role,
) -> Result<u64, ControlError> {
    let seq = server_event(
        shared,
        id,
        Body::MemberChanged(v1::MemberChanged {
            user_id: user.to_string(),
            action: action as i32,
            role: role as i32,
            until_ms: 0,
        }),
    )
    .await?;
    crate::session::tell_membership(shared, user, id, action);
    Ok(seq)
}

fn existing(shared: &Shared, id: &ChannelId) -> Result<ChannelInfo, ControlError> {
    shared
        .store
        .channel(id)
        .map_err(store_error)?
        .ok_or_else(|| ControlError::not_found(format!("channel {id} not found")))
}

/// Runs one command.
pub(crate) async fn execute(
    shared: &std::sync::Arc<Shared>,
    audit: &Audit,
    admin: Admin,
    command: Command,
) -> Result<Value, ControlError> {
    let store = &shared.store;
    let by = format!("admin uid {}", admin.uid);
    match command {
        Command::Status => status(shared),
        Command::ConnectionsList { user: u } => {
            let u = u.as_deref().map(user).transpose()?;
            let sessions: Vec<Value> = shared
                .hub
                .sessions(u.as_ref())
                .into_iter()
                .map(|(info, subscriptions)| {
                    let mut v = serde_json::to_value(info).unwrap_or(Value::Null);
                    v["subscriptions"] = subscriptions.into();
                    v
                })
                .collect();
            Ok(json!({ "sessions": sessions }))
        }
        Command::ConnectionsKick {
            session,
            user: u,
            all,
            reason,
        } => {
            let reason = reason.unwrap_or_else(|| "kicked by an admin".into());
            let c = close(CloseCode::Kicked, &reason);
            let kicked = match (session, u, all) {
                (Some(s), None, false) => usize::from(shared.hub.close_session(&s, &c)),
                (None, Some(u), false) => shared.hub.close_user(&user(&u)?, &c),
                (None, None, true) => {
                    let n = shared.hub.session_count();
                    shared.hub.close_all(&c);
                    n
                }
                _ => {
                    return Err(ControlError::bad_request(
                        "give one of: a session, a user, or all",
                    ));
                }
            };
            if kicked == 0 {
                return Err(ControlError::not_found("no such session"));
            }
            Ok(json!({ "kicked": kicked }))
        }
        Command::UsersBan {
            user: u,
            reason,
            until_ms,
        } => {
            let u = user(&u)?;
            let reason = reason.unwrap_or_default();
            store
                .ban(
                    BanScope::Server,
                    &u,
                    BanRecord {
                        until_ms: until_ms.unwrap_or(0),
                        reason: reason.clone(),
                        banned_by: by,
                        created_at_ms: unix_ms(),
                    },
                )
                .await
                .map_err(store_error)?;
            let closed = shared
                .hub
                .close_user(&u, &close(CloseCode::Banned, "banned from this node"));
            Ok(json!({ "user": u.as_str(), "sessions_closed": closed }))
        }
        Command::UsersUnban { user: u } => {
            let u = user(&u)?;
            let lifted = store
                .unban(BanScope::Server, &u)
                .await
                .map_err(store_error)?;
            if !lifted {
                return Err(ControlError::not_found(format!("{u} is not banned")));
            }
            Ok(json!({ "user": u.as_str() }))
        }
        Command::UsersRevoke { user: u } => {
            let u = user(&u)?;
            // Tokens carry their issue time in whole seconds: a cut mid-second would also refuse
            // a token minted later in the same second.
            let now = unix_ms() / 1000 * 1000;
            store
                .update_user(&u, |r| r.tokens_valid_after_ms = now)
                .await
                .map_err(store_error)?;
            // AUTH_EXPIRED: a client with a token refresher fetches a new token and comes back.
            let closed = shared
                .hub
                .close_user(&u, &close(CloseCode::AuthExpired, "tokens revoked"));
            Ok(
                json!({ "user": u.as_str(), "tokens_valid_after_ms": now, "sessions_closed": closed }),
            )
        }
        Command::UsersExport { user: u } => users::export(shared, &user(&u)?).await,
        Command::UsersErase { user: u } => crate::control::erasure::erase(shared, &user(&u)?).await,
        Command::UsersErasures => crate::control::erasure::list(shared),
        Command::ChannelsList { after, limit } => {
            let after = after.as_deref().map(channel).transpose()?;
            let limit = limit.unwrap_or(100).clamp(1, 1_000);
            let ids = store.channels(after.as_ref(), limit).map_err(store_error)?;
            let mut channels = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(info) = store.channel(id).map_err(store_error)? {
                    channels.push(channel_json(&info));
                }
            }
            let next = (ids.len() == limit).then(|| ids.last().map(|c| c.to_string()));
            Ok(json!({ "channels": channels, "next_after": next.flatten() }))
        }
        Command::ChannelsShow { channel: c } => {
            let id = channel(&c)?;
            let info = existing(shared, &id)?;
            let mut members = Vec::new();
            let mut after: Option<UserId> = None;
            loop {
                let page = store
                    .members(&id, after.as_ref(), 1_000)
                    .map_err(store_error)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                after = Some(last.clone());
                for (u, m) in &page {
                    members.push(json!({
                        "user": u.as_str(),
                        "role": Role::try_from(m.role).map_or("unspecified", |r| r.as_str_name()),
                        "joined_at_ms": m.joined_at_ms,
                        "muted_until_ms": m.muted_until_ms,
                    }));
                }
            }
            let mut v = channel_json(&info);
            v["member_list"] = members.into();
            Ok(v)
        }
        Command::ChannelsCreate {
            channel: c,
            kind,
            owner,
            name,
            members,
        } => {
            let kind = match kind.as_str() {
                "group" => ChannelKind::Group,
                "public" => ChannelKind::Public,
                _ => {
                    return Err(ControlError::bad_request(
                        "kind must be group or public (direct channels are made by their users)",
                    ));
                }
            };
            let id = channel(&c)?;
            let members = members
                .iter()
                .map(|m| user(m).map(|u| (u, Role::Member)))
                .collect::<Result<Vec<_>, _>>()?;
            let info = store
                .create_channel(NewChannel {
                    id: id.clone(),
                    kind,
                    name: name.unwrap_or_else(|| id.to_string()),
                    topic: String::new(),
                    created_by: user(&owner)?,
                    created_at_ms: unix_ms(),
                    members,
                    custom: Bytes::new(),
                    retention: Default::default(),
                })
                .await
                .map_err(store_error)?;
            Ok(channel_json(&info))
        }
        Command::ChannelsArchive {
            channel: c,
            archived,
        } => {
            let id = channel(&c)?;
            existing(shared, &id)?;
            let info = store
                .update_channel(
                    &id,
                    ChannelPatch {
                        archived: Some(archived),
                        ..Default::default()
                    },
                )
                .await
                .map_err(store_error)?;
            server_event(
                shared,
                &id,
                Body::ChannelChanged(v1::ChannelChanged {
                    archived: Some(archived),
                    ..Default::default()
                }),
            )
            .await?;
            Ok(channel_json(&info))
        }
        Command::MembersAdd {
            channel: c,
            users: us,
            role: r,
        } => {
            let id = channel(&c)?;
            let r = role(r.as_deref().unwrap_or("member"))?;
            existing(shared, &id)?;
            // Refused before the record is written while no entry can log the change.
            store.check_growth().map_err(store_error)?;
            let mut added = Vec::new();
            for u in &us {
                let u = user(u)?;
                if store
                    .add_member(&id, &u, r, unix_ms())
                    .await
                    .map_err(store_error)?
                {
                    member_event(shared, &id, &u, MemberAction::Added, r).await?;
                    added.push(u.to_string());
                }
            }
            Ok(json!({ "channel": id.as_str(), "added": added }))
        }
        Command::MembersRemove {
            channel: c,
            user: u,
        } => {
            let id = channel(&c)?;
            let u = user(&u)?;
            existing(shared, &id)?;
            store.check_growth().map_err(store_error)?;
            if !store.remove_member(&id, &u).await.map_err(store_error)? {
                return Err(ControlError::not_found(format!(
                    "{u} is not a member of {id}"
                )));
            }
            member_event(shared, &id, &u, MemberAction::Removed, Role::Unspecified).await?;
            Ok(json!({ "channel": id.as_str(), "removed": u.as_str() }))
        }
        Command::MembersRole {
            channel: c,
            user: u,
            role: r,
        } => {
            let id = channel(&c)?;
            let u = user(&u)?;
            let r = role(&r)?;
            if store.member(&id, &u).map_err(store_error)?.is_none() {
                return Err(ControlError::not_found(format!(
                    "{u} is not a member of {id}"
                )));
            }
            store.check_growth().map_err(store_error)?;
            store
                .put_member(&id, &u, r, unix_ms())
                .await
                .map_err(store_error)?;
            member_event(shared, &id, &u, MemberAction::RoleChanged, r).await?;
            Ok(json!({ "channel": id.as_str(), "user": u.as_str(), "role": r.as_str_name() }))
        }
        Command::MessagesDelete { channel: c, seq } => {
            let id = channel(&c)?;
            let entry = store
                .entry(&id, Seq(seq))
                .map_err(store_error)?
                .ok_or_else(|| ControlError::not_found(format!("no entry {seq} in {id}")))?;
            let Some(Body::Message(m)) = &entry.event.body else {
                return Err(ControlError::bad_request(format!(
                    "entry {seq} of {id} is not a live message"
                )));
            };
            let thread_parent_seq = m.thread_parent_seq;
            let deleted_seq = server_event(
                shared,
                &id,
                Body::MessageDeleted(v1::MessageDeleted {
                    target_seq: seq,
                    by_moderator: true,
                }),
            )
            .await?;
            store
                .rewrite(
                    &id,
                    Seq(seq),
                    Body::Tombstone(v1::Tombstone {
                        reason: v1::tombstone::Reason::AdminRemoved as i32,
                        thread_parent_seq,
                    }),
                )
                .await
                .map_err(store_error)?;
            Ok(json!({ "channel": id.as_str(), "seq": seq, "deletion_seq": deleted_seq }))
        }
        Command::ConfigShow => Ok(config_json(shared)),
        Command::ConfigReload => {
            let Some(path) = &shared.config.config_file else {
                return Err(ControlError::bad_request(
                    "the node was started without a config file",
                ));
            };
            let file =
                FileConfig::load(path).map_err(|e| ControlError::bad_request(e.to_string()))?;
            file.limits
                .validate()
                .map_err(|e| ControlError::bad_request(e.to_string()))?;
            if let Some(spec) = &file.log {
                set_log(shared, spec)?;
            }
            shared.set_limits(file.limits);
            Ok(json!({ "limits": *shared.limits(), "log": file.log }))
        }
        Command::LogLevelSet { level } => {
            set_log(shared, &level)?;
            Ok(json!({ "log": level }))
        }
        Command::Drain { reconnect_after_ms } => {
            shared.draining.store(true, Ordering::Release);
            shared.accepting.cancel();
            let sessions = shared.hub.session_count();
            shared.hub.close_all(&Close {
                code: CloseCode::GoingAway,
                reason: "node draining".into(),
                reconnect_after_ms: reconnect_after_ms.unwrap_or(1_000),
            });
            Ok(json!({ "draining": true, "sessions_closing": sessions }))
        }
        Command::StoreBackup { dir } => {
            let dir = std::path::PathBuf::from(dir);
            if !dir.is_absolute() {
                return Err(ControlError::bad_request(
                    "the backup directory must be an absolute path",
                ));
            }
            if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
                return Err(ControlError::bad_request(format!(
                    "{} is not empty",
                    dir.display()
                )));
            }
            let report = store
                .backup(&dir.join("store"))
                .await
                .map_err(store_error)?;
            let manifest = json!({
                "node_id": shared.config.node_id,
                "version": env!("CARGO_PKG_VERSION"),
                "taken_at_ms": unix_ms(),
                "engine": report.engine,
                "pairs": report.pairs,
                "bytes": report.bytes,
                "paused_writes": report.paused_writes,
                "millis": report.millis,
            });
            std::fs::write(dir.join("BACKUP.json"), format!("{manifest:#}\n"))
                .map_err(ControlError::failed)?;
            Ok(manifest)
        }
        Command::AuditList { since_ms, limit } => {
            let records = audit
                .list(since_ms.unwrap_or(0), limit.unwrap_or(100).clamp(1, 10_000))
                .await
                .map_err(ControlError::failed)?;
            Ok(json!({ "records": records }))
        }
    }
}

fn set_log(shared: &Shared, spec: &str) -> Result<(), ControlError> {
    match &shared.config.log_filter {
        Some(handle) => (handle.0)(spec).map_err(ControlError::bad_request),
        None => Err(ControlError::failed(
            "this node cannot change its log filter",
        )),
    }
}

fn status(shared: &Shared) -> Result<Value, ControlError> {
    let s = &shared.stats;
    let p99_us = s.commit_p99_us.load(Ordering::Relaxed);
    let mut channels = 0u64;
    let mut after: Option<ChannelId> = None;
    loop {
        let page = shared
            .store
            .channels(after.as_ref(), 10_000)
            .map_err(store_error)?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        channels += page.len() as u64;
        after = Some(last);
    }
    Ok(json!({
        "node_id": shared.config.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": shared.started.elapsed().as_secs(),
        "draining": shared.draining.load(Ordering::Acquire),
        "connections": {
            "ws": s.ws_connections.load(Ordering::Relaxed),
            "quic": s.quic_connections.load(Ordering::Relaxed),
        },
        "sessions": shared.hub.session_count(),
        "subscriptions": shared.hub.subscription_count(),
        "channels": channels,
        "entries_per_sec": s.entries_per_sec.load(Ordering::Relaxed),
        "deliveries_per_sec": s.deliveries_per_sec.load(Ordering::Relaxed),
        "store_engine": shared.store.engine_name(),
        "store_bytes": shared.store.disk_bytes().unwrap_or(0),
        "store_healthy": shared.store.health().is_ok(),
        "commit_p99_ms": (p99_us > 0).then(|| p99_us as f64 / 1000.0),
    }))
}

fn config_json(shared: &Shared) -> Value {
    let c = &shared.config;
    json!({
        "node_id": c.node_id,
        "data_dir": c.data_dir,
        "ws_listen": c.ws_listen.to_string(),
        "tls": c.tls.as_ref().map(|(cert, _)| json!({"cert": cert, "key": "<redacted path>"})),
        "quic_listen": c.quic_listen.map(|a| a.to_string()),
        "http_listen": c.http_listen.map(|a| a.to_string()),
        "token_key": match &c.token_key {
            crate::config::TokenKey::Hs256(_) => "hs256 (secret redacted)",
            crate::config::TokenKey::Ed25519Pem(_) => "eddsa",
            crate::config::TokenKey::Rs256Pem(_) => "rs256",
        },
        "token_audience": c.token_audience,
        "token_issuer": c.token_issuer,
        "store": {
            "dir": c.store.dir,
            "engine": c.store.engine.as_str(),
            "durability": format!("{:?}", c.store.durability),
            "min_free_bytes": c.store.min_free_disk_bytes,
        },
        "retention_max_age_ms": c.store.default_retention.max_age_ms,
        "retention_max_entries": c.store.default_retention.max_entries,
        "limits": *shared.limits(),
        "shutdown_drain_ms": c.shutdown_drain.as_millis() as u64,
        "retention_interval_ms": c.retention_interval.as_millis() as u64,
        "control_socket": c.control_socket,
        "config_file": c.config_file,
    })
}
