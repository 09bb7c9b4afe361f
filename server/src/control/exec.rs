//! What each control command does.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{self, ChannelKind, CloseCode, Role};
use chorus_storage::{BackupError, BanRecord, BanScope, ChannelInfo, StoreError};
use serde_json::{Value, json};

use crate::chat::channels::NewGroup;
use crate::chat::{Actor, Chat};
use crate::clock::unix_ms;
use crate::config::FileConfig;
use crate::control::audit::Audit;
use crate::control::erasure::{self, Running};
use crate::control::users;
use crate::control::wire::{Command, ControlError};
use crate::node::Node;
use crate::outbound::Close;

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

/// Maps a failed read or write of the store; reads convert into the write family's error,
/// which holds every read failure.
pub(super) fn store_error(e: impl Into<StoreError>) -> ControlError {
    match e.into() {
        StoreError::ChannelNotFound(c) => ControlError::not_found(format!("channel {c} not found")),
        StoreError::EntryNotFound { channel, seq } => {
            ControlError::not_found(format!("no entry {seq} in {channel}"))
        }
        StoreError::ChannelExists(c) => {
            ControlError::new("conflict", format!("channel {c} exists"))
        }
        e @ (StoreError::ClientMsgIdLength { .. } | StoreError::EntryTooLarge { .. }) => {
            ControlError::bad_request(e.to_string())
        }
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

fn flag_json(f: &v1::Flag) -> Value {
    let text = match f.message.as_ref().and_then(|e| e.body.as_ref()) {
        Some(v1::channel_event::Body::Message(m)) => m.text.clone(),
        Some(_) => "(removed)".into(),
        None => String::new(),
    };
    json!({
        "flag": f.flag_id,
        "seq": f.seq,
        "user": f.user_id,
        "reporter": f.reporter_id,
        "reason": f.reason,
        "created_at_ms": f.created_at_ms,
        "text": text,
        "resolution": v1::FlagResolution::try_from(f.resolution).map_or("", |r| r.as_str_name()),
        "resolved_by": f.resolved_by,
        "note": f.note,
    })
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

/// Runs one command.
pub(crate) async fn execute(
    node: &std::sync::Arc<Node>,
    erasures: &Running,
    audit: &Audit,
    who: Admin,
    command: Command,
) -> Result<Value, ControlError> {
    let store = node.store();
    let admin = Chat::new(node, Actor::Admin);
    let by = format!("admin uid {}", who.uid);
    match command {
        Command::Status => status(node),
        Command::SearchStatus => super::search::status(node),
        Command::SearchReindex => super::search::reindex(node).await,
        Command::ClusterStatus => super::cluster::status(node).await,
        Command::ClusterPing { node: target } => super::cluster::ping(node, &target).await,
        Command::ConnectionsList { user: u } => {
            let u = u.as_deref().map(user).transpose()?;
            let sessions: Vec<Value> = node
                .hub()
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
                (Some(s), None, false) => usize::from(node.hub().close_session(&s, &c)),
                (None, Some(u), false) => node.hub().close_user(&user(&u)?, &c),
                (None, None, true) => {
                    let n = node.hub().session_count();
                    node.hub().close_all(&c);
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
                        shadow: false,
                    },
                )
                .await
                .map_err(store_error)?;
            let closed = node
                .hub()
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
            let closed = node
                .hub()
                .close_user(&u, &close(CloseCode::AuthExpired, "tokens revoked"));
            Ok(
                json!({ "user": u.as_str(), "tokens_valid_after_ms": now, "sessions_closed": closed }),
            )
        }
        Command::UsersExport { user: u } => users::export(node, &user(&u)?).await,
        Command::UsersErase { user: u } => erasure::erase(node, erasures, &user(&u)?).await,
        Command::UsersErasures => erasure::list(node, erasures),
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
            let info = admin.existing_channel(&id)?;
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
                .map(|m| user(m))
                .collect::<Result<Vec<_>, _>>()?;
            let info = admin
                .create_group(NewGroup {
                    name: name.unwrap_or_else(|| id.to_string()),
                    id: Some(id),
                    kind,
                    topic: String::new(),
                    custom: Bytes::new(),
                    owner: user(&owner)?,
                    members,
                })
                .await?;
            Ok(channel_json(&info))
        }
        Command::ChannelsArchive {
            channel: c,
            archived,
        } => {
            let info = admin.archive(&channel(&c)?, archived).await?;
            Ok(channel_json(&info))
        }
        Command::MembersAdd {
            channel: c,
            users: us,
            role: r,
        } => {
            let id = channel(&c)?;
            let r = role(r.as_deref().unwrap_or("member"))?;
            // Named ids are checked here first: a bad one is the admin's `bad_request`.
            for u in &us {
                user(u)?;
            }
            let added: Vec<String> = admin
                .add_members(&id, &us, r)
                .await?
                .iter()
                .map(ToString::to_string)
                .collect();
            Ok(json!({ "channel": id.as_str(), "added": added }))
        }
        Command::MembersRemove {
            channel: c,
            user: u,
        } => {
            let (id, u) = (channel(&c)?, user(&u)?);
            admin.remove_member(&id, u.as_str()).await?;
            Ok(json!({ "channel": id.as_str(), "removed": u.as_str() }))
        }
        Command::MembersRole {
            channel: c,
            user: u,
            role: r,
        } => {
            let (id, u, r) = (channel(&c)?, user(&u)?, role(&r)?);
            admin.set_role(&id, u.as_str(), r).await?;
            Ok(json!({ "channel": id.as_str(), "user": u.as_str(), "role": r.as_str_name() }))
        }
        Command::MessagesDelete { channel: c, seq } => {
            let id = channel(&c)?;
            let deleted = admin.delete(&id, seq, "").await?;
            Ok(json!({ "channel": id.as_str(), "seq": seq, "deletion_seq": deleted.seq }))
        }
        Command::FlagsList {
            channel: c,
            all,
            limit,
            cursor,
        } => {
            let id = channel(&c)?;
            let list = admin.list_flags(
                &v1::ListFlags {
                    channel_id: c,
                    include_resolved: all,
                    limit: limit.unwrap_or(0),
                    cursor: cursor.unwrap_or_default(),
                },
                &id,
                usize::MAX,
            )?;
            let flags: Vec<Value> = list.flags.iter().map(flag_json).collect();
            Ok(json!({ "flags": flags, "next_cursor": list.next_cursor }))
        }
        Command::FlagsResolve {
            channel: c,
            flag,
            resolution,
            note,
        } => {
            let id = channel(&c)?;
            let resolution = match resolution.as_str() {
                "dismissed" => v1::FlagResolution::Dismissed,
                "actioned" => v1::FlagResolution::Actioned,
                other => {
                    return Err(ControlError::bad_request(format!(
                        "resolution must be dismissed or actioned, not {other:?}"
                    )));
                }
            };
            admin
                .resolve_flag(
                    &v1::ResolveFlag {
                        channel_id: c,
                        flag_id: flag.clone(),
                        resolution: resolution as i32,
                        note,
                    },
                    &id,
                )
                .await?;
            Ok(
                json!({ "channel": id.as_str(), "flag": flag, "resolution": resolution.as_str_name() }),
            )
        }
        Command::ConfigShow => Ok(config_json(node)),
        Command::ConfigReload => {
            let Some(path) = &node.config().config_file else {
                return Err(ControlError::bad_request(
                    "the node was started without a config file",
                ));
            };
            let file =
                FileConfig::load(path).map_err(|e| ControlError::bad_request(e.to_string()))?;
            file.limits
                .validate()
                .map_err(|e| ControlError::bad_request(e.to_string()))?;
            file.moderation
                .validate()
                .map_err(|e| ControlError::bad_request(e.to_string()))?;
            if let Some(spec) = &file.log {
                set_log(node, spec)?;
            }
            node.set_limits(file.limits);
            let words = file.moderation.blocked_words.len();
            node.set_moderation(file.moderation);
            Ok(json!({ "limits": *node.limits(), "log": file.log, "blocked_words": words }))
        }
        Command::LogLevelSet { level } => {
            set_log(node, &level)?;
            Ok(json!({ "log": level }))
        }
        Command::Drain { reconnect_after_ms } => {
            node.start_draining();
            let sessions = node.hub().session_count();
            node.hub().close_all(&Close {
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
                .map_err(|e| match e {
                    BackupError::TargetNotEmpty(_) => ControlError::bad_request(e.to_string()),
                    other => ControlError::failed(other),
                })?;
            let manifest = json!({
                "node_id": node.config().node_id,
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

fn set_log(node: &Node, spec: &str) -> Result<(), ControlError> {
    match &node.config().log_filter {
        Some(handle) => (handle.0)(spec).map_err(ControlError::bad_request),
        None => Err(ControlError::failed(
            "this node cannot change its log filter",
        )),
    }
}

fn status(node: &Node) -> Result<Value, ControlError> {
    let s = node.stats();
    let p99_us = s.commit_p99_us.load(Ordering::Relaxed);
    let mut channels = 0u64;
    let mut after: Option<ChannelId> = None;
    loop {
        let page = node
            .store()
            .channels(after.as_ref(), 10_000)
            .map_err(store_error)?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        channels += page.len() as u64;
        after = Some(last);
    }
    Ok(json!({
        "node_id": node.config().node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": node.started().elapsed().as_secs(),
        "draining": node.is_draining(),
        "connections": {
            "ws": s.ws_connections.load(Ordering::Relaxed),
            "quic": s.quic_connections.load(Ordering::Relaxed),
        },
        "sessions": node.hub().session_count(),
        "subscriptions": node.hub().subscription_count(),
        "channels": channels,
        "entries_per_sec": s.entries_per_sec.load(Ordering::Relaxed),
        "deliveries_per_sec": s.deliveries_per_sec.load(Ordering::Relaxed),
        "store_engine": node.store().engine_name(),
        "store_bytes": node.store().disk_bytes().unwrap_or(0),
        "store_healthy": node.store().health().is_ok(),
        "commit_p99_ms": (p99_us > 0).then(|| p99_us as f64 / 1000.0),
    }))
}

fn config_json(node: &Node) -> Value {
    let c = node.config();
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
        "limits": *node.limits(),
        "shutdown_drain_ms": c.shutdown_drain.as_millis() as u64,
        "retention_interval_ms": c.retention_interval.as_millis() as u64,
        "control_socket": c.control_socket,
        "config_file": c.config_file,
    })
}
