//! The control protocol: one JSON object per line each way. Shared by the node and
//! `chorusctl`; `docs/operations.md` documents it for `socat` and scripts.
//!
//! Request: `{"v":1,"id":7,"cmd":"users.ban","user":"bob","reason":"spam"}` (`id` is optional
//! and echoed). Response: `{"v":1,"id":7,"ok":true,"result":{...}}` or
//! `{"v":1,"id":7,"ok":false,"error":{"code":"not_found","message":"..."}}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version in every request and response.
pub const CONTROL_VERSION: u32 = 1;

/// Longest request line accepted, bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Every command, with its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", deny_unknown_fields)]
pub enum Command {
    /// Node figures.
    #[serde(rename = "status")]
    Status,
    /// Sessions, optionally of one user.
    #[serde(rename = "connections.list")]
    ConnectionsList {
        /// Only this user's.
        #[serde(default)]
        user: Option<String>,
    },
    /// Closes a session, or every session of a user (close code KICKED: clients reconnect).
    #[serde(rename = "connections.kick")]
    ConnectionsKick {
        /// The session id.
        #[serde(default)]
        session: Option<String>,
        /// Or all of this user's sessions.
        #[serde(default)]
        user: Option<String>,
        /// Or every session of the node (a reconnect storm on purpose: load tests).
        #[serde(default)]
        all: bool,
        /// Shown to the client.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Bans a user from the node and closes their sessions (BANNED: no reconnect).
    #[serde(rename = "users.ban")]
    UsersBan {
        /// The user.
        user: String,
        /// Why (audit and moderators).
        #[serde(default)]
        reason: Option<String>,
        /// Until when, unix ms (absent: until lifted).
        #[serde(default)]
        until_ms: Option<u64>,
    },
    /// Lifts a node ban.
    #[serde(rename = "users.unban")]
    UsersUnban {
        /// The user.
        user: String,
    },
    /// Refuses the user's tokens issued before now and closes their sessions.
    #[serde(rename = "users.revoke")]
    UsersRevoke {
        /// The user.
        user: String,
    },
    /// Everything stored about a user, as JSON.
    #[serde(rename = "users.export")]
    UsersExport {
        /// The user.
        user: String,
    },
    /// Erases a user's content and identity (right to be forgotten), as a job that survives
    /// a restart; the reply comes when it is done.
    #[serde(rename = "users.erase")]
    UsersErase {
        /// The user.
        user: String,
    },
    /// The erasures not finished yet, with their progress.
    #[serde(rename = "users.erasures")]
    UsersErasures,
    /// Channels in id order.
    #[serde(rename = "channels.list")]
    ChannelsList {
        /// Start after this id.
        #[serde(default)]
        after: Option<String>,
        /// At most this many (default 100, at most 1,000).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// One channel with its members.
    #[serde(rename = "channels.show")]
    ChannelsShow {
        /// The channel.
        channel: String,
    },
    /// Creates a group or public channel owned by `owner`.
    #[serde(rename = "channels.create")]
    ChannelsCreate {
        /// The channel id.
        channel: String,
        /// "group" or "public".
        kind: String,
        /// The owner.
        owner: String,
        /// Display name.
        #[serde(default)]
        name: Option<String>,
        /// Other members.
        #[serde(default)]
        members: Vec<String>,
    },
    /// Archives (or, with `archived: false`, restores) a channel.
    #[serde(rename = "channels.archive")]
    ChannelsArchive {
        /// The channel.
        channel: String,
        /// Default true.
        #[serde(default = "yes")]
        archived: bool,
    },
    /// Adds members.
    #[serde(rename = "channels.members.add")]
    MembersAdd {
        /// The channel.
        channel: String,
        /// The users.
        users: Vec<String>,
        /// "member" (default), "moderator" or "owner".
        #[serde(default)]
        role: Option<String>,
    },
    /// Removes a member.
    #[serde(rename = "channels.members.remove")]
    MembersRemove {
        /// The channel.
        channel: String,
        /// The user.
        user: String,
    },
    /// Sets a member's role.
    #[serde(rename = "channels.members.role")]
    MembersRole {
        /// The channel.
        channel: String,
        /// The user.
        user: String,
        /// "member", "moderator" or "owner".
        role: String,
    },
    /// Deletes a message (tombstone; the log stays gapless).
    #[serde(rename = "messages.delete")]
    MessagesDelete {
        /// The channel.
        channel: String,
        /// The message's seq.
        seq: u64,
    },
    /// A channel's moderation queue, newest first.
    #[serde(rename = "flags.list")]
    FlagsList {
        /// The channel.
        channel: String,
        /// Closed flags too.
        #[serde(default)]
        all: bool,
        /// Page size (default 50).
        #[serde(default)]
        limit: Option<u32>,
        /// From the previous page's `next_cursor`.
        #[serde(default)]
        cursor: Option<String>,
    },
    /// Closes a flag.
    #[serde(rename = "flags.resolve")]
    FlagsResolve {
        /// The channel.
        channel: String,
        /// The flag's id.
        flag: String,
        /// "dismissed" or "actioned".
        resolution: String,
        /// A note for the record.
        #[serde(default)]
        note: String,
    },
    /// The configuration in force (secrets redacted).
    #[serde(rename = "config.show")]
    ConfigShow,
    /// Re-reads limits and the log filter from the config file.
    #[serde(rename = "config.reload")]
    ConfigReload,
    /// Sets the log filter.
    #[serde(rename = "log_level.set")]
    LogLevelSet {
        /// A tracing filter: "debug", "info,chorus_server=trace", ...
        level: String,
    },
    /// Stops accepting and asks every client to reconnect elsewhere (GOING_AWAY).
    #[serde(rename = "drain")]
    Drain {
        /// The delay clients are advised to wait (default 1,000 ms).
        #[serde(default)]
        reconnect_after_ms: Option<u32>,
    },
    /// Writes a consistent copy of the store into a new directory (a data directory).
    #[serde(rename = "store.backup")]
    StoreBackup {
        /// Absolute path of a directory that does not exist or is empty.
        dir: String,
    },
    /// The search index: documents, size, lag, a rebuild's progress.
    #[serde(rename = "search.status")]
    SearchStatus,
    /// Rebuilds the search index from the log, beside the one serving (which keeps serving
    /// until the new one is complete).
    #[serde(rename = "search.reindex")]
    SearchReindex,
    /// The cluster's members as this node sees them, with its connections and counters.
    #[serde(rename = "cluster.status")]
    ClusterStatus,
    /// A request/response round trip to another node of the cluster.
    #[serde(rename = "cluster.ping")]
    ClusterPing {
        /// The node id.
        node: String,
    },
    /// Admin actions recorded in the audit log.
    #[serde(rename = "audit.list")]
    AuditList {
        /// Only actions at or after this time, unix ms.
        #[serde(default)]
        since_ms: Option<u64>,
        /// The newest this many (default 100).
        #[serde(default)]
        limit: Option<usize>,
    },
}

fn yes() -> bool {
    true
}

/// The `cmd` names, to tell an unknown command from bad arguments.
pub const COMMANDS: &[&str] = &[
    "status",
    "connections.list",
    "connections.kick",
    "users.ban",
    "users.unban",
    "users.revoke",
    "users.export",
    "users.erase",
    "users.erasures",
    "channels.list",
    "channels.show",
    "channels.create",
    "channels.archive",
    "channels.members.add",
    "channels.members.remove",
    "channels.members.role",
    "messages.delete",
    "flags.list",
    "flags.resolve",
    "config.show",
    "config.reload",
    "log_level.set",
    "drain",
    "store.backup",
    "search.status",
    "search.reindex",
    "cluster.status",
    "cluster.ping",
    "audit.list",
];

impl Command {
    /// Whether the command changes anything (those are audited; `users.export` too, as it
    /// reads personal data).
    pub fn audited(&self) -> bool {
        !matches!(
            self,
            Command::Status
                | Command::ConnectionsList { .. }
                | Command::ChannelsList { .. }
                | Command::ChannelsShow { .. }
                | Command::FlagsList { .. }
                | Command::ConfigShow
                | Command::AuditList { .. }
                | Command::UsersErasures
                | Command::SearchStatus
                | Command::ClusterStatus
                | Command::ClusterPing { .. }
        )
    }

    /// The request line for this command.
    pub fn to_line(&self, id: u64) -> String {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("v".into(), CONTROL_VERSION.into());
            map.insert("id".into(), id.into());
        }
        format!("{value}\n")
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Always [`CONTROL_VERSION`].
    pub v: u32,
    /// The request's `id`, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Whether the command succeeded.
    pub ok: bool,
    /// The command's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// A failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `parse_error`, `unsupported_version`, `unknown_command`, `bad_request`, `not_found`,
    /// `conflict`, `too_large` or `failed`.
    pub code: String,
    /// For humans.
    pub message: String,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ControlError {
    /// One of the [`ErrorBody`] codes.
    pub code: &'static str,
    /// For humans.
    pub message: String,
}

impl ControlError {
    /// A failure with a code.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Arguments that cannot be used.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("bad_request", message)
    }

    /// Something named does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not_found", message)
    }

    /// The node could not do it.
    pub fn failed(message: impl std::fmt::Display) -> Self {
        Self::new("failed", message.to_string())
    }
}

/// Parses a request line: the id (echoed even when the rest is wrong) and the command.
pub fn parse_request(line: &[u8]) -> (Option<Value>, Result<Command, ControlError>) {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return (None, Err(ControlError::new("parse_error", e.to_string()))),
    };
    let Value::Object(mut map) = value else {
        return (
            None,
            Err(ControlError::new(
                "parse_error",
                "a request is a JSON object",
            )),
        );
    };
    let id = map.remove("id");
    match map.remove("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(CONTROL_VERSION)) => {}
        Some(other) => {
            return (
                id,
                Err(ControlError::new(
                    "unsupported_version",
                    format!("version {other} is not supported; this node speaks {CONTROL_VERSION}"),
                )),
            );
        }
        None => {
            return (
                id,
                Err(ControlError::bad_request(
                    "missing \"v\" (the protocol version, 1)",
                )),
            );
        }
    }
    match map.get("cmd") {
        Some(Value::String(cmd)) if COMMANDS.contains(&cmd.as_str()) => {}
        Some(Value::String(cmd)) => {
            return (
                id,
                Err(ControlError::new(
                    "unknown_command",
                    format!("unknown command {cmd:?}"),
                )),
            );
        }
        _ => return (id, Err(ControlError::bad_request("missing \"cmd\""))),
    }
    let command: Command = match serde_json::from_value(Value::Object(map.clone())) {
        Ok(c) => c,
        Err(e) => return (id, Err(ControlError::bad_request(e.to_string()))),
    };
    // serde ignores extra fields of argument-less commands: a typo must not pass silently.
    if let Ok(Value::Object(known)) = serde_json::to_value(&command)
        && let Some(extra) = map.keys().find(|k| !known.contains_key(*k))
    {
        return (
            id,
            Err(ControlError::bad_request(format!(
                "unknown field {extra:?}"
            ))),
        );
    }
    (id, Ok(command))
}

impl Response {
    /// A response line for a result.
    pub fn line(id: Option<Value>, result: Result<Value, ControlError>) -> String {
        let response = match result {
            Ok(result) => Response {
                v: CONTROL_VERSION,
                id,
                ok: true,
                result: Some(result),
                error: None,
            },
            Err(e) => Response {
                v: CONTROL_VERSION,
                id,
                ok: false,
                result: None,
                error: Some(ErrorBody {
                    code: e.code.to_owned(),
                    message: e.message,
                }),
            },
        };
        let mut line = serde_json::to_string(&response).unwrap_or_else(|_| {
            r#"{"v":1,"ok":false,"error":{"code":"failed","message":"unencodable response"}}"#
                .to_owned()
        });
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_parse_or_say_what_is_wrong() {
        let (id, cmd) = parse_request(br#"{"v":1,"id":3,"cmd":"users.ban","user":"bob"}"#);
        assert_eq!(id, Some(Value::from(3)));
        assert_eq!(
            cmd.unwrap(),
            Command::UsersBan {
                user: "bob".into(),
                reason: None,
                until_ms: None
            }
        );
        let code = |line: &[u8]| parse_request(line).1.unwrap_err().code;
        assert_eq!(code(b"{not json"), "parse_error");
        assert_eq!(code(b"[1]"), "parse_error");
        assert_eq!(code(br#"{"cmd":"status"}"#), "bad_request");
        assert_eq!(code(br#"{"v":2,"cmd":"status"}"#), "unsupported_version");
        assert_eq!(code(br#"{"v":1,"cmd":"nope"}"#), "unknown_command");
        assert_eq!(code(br#"{"v":1}"#), "bad_request");
        assert_eq!(code(br#"{"v":1,"cmd":"users.ban"}"#), "bad_request");
        assert_eq!(code(br#"{"v":1,"cmd":"status","extra":1}"#), "bad_request");
        assert_eq!(
            code(br#"{"v":1,"cmd":"messages.delete","channel":"c","seq":-1}"#),
            "bad_request"
        );
        // Every command round-trips through its request line.
        let all = [
            Command::Status,
            Command::Drain {
                reconnect_after_ms: Some(5),
            },
            Command::ChannelsArchive {
                channel: "c".into(),
                archived: true,
            },
        ];
        for c in all {
            let line = c.to_line(9);
            assert_eq!(parse_request(line.trim_end().as_bytes()).1.unwrap(), c);
        }
        for name in COMMANDS {
            let line = format!(r#"{{"v":1,"cmd":"{name}"}}"#);
            let parsed = parse_request(line.as_bytes()).1;
            assert_ne!(
                parsed.err().map(|e| e.code),
                Some("unknown_command"),
                "{name}"
            );
        }
    }
}
