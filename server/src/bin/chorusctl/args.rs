//! `chorusctl`'s command line: the arguments, and the control command each one sends.

use std::path::PathBuf;

use anyhow::bail;
use chorus_server::control::wire::Command;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chorusctl",
    version,
    about = "Administer a running chorusd node"
)]
pub(crate) struct Cli {
    /// The node's control socket (default: `<data-dir>/control.sock`).
    #[arg(long, env = "CHORUS_CONTROL_SOCKET", global = true)]
    pub(crate) socket: Option<PathBuf>,
    /// The node's data directory (default: ./chorus-data if it exists, else /var/lib/chorus).
    #[arg(long, env = "CHORUS_DATA_DIR", global = true)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Print the node's JSON result instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Seconds to wait for the node to accept the connection and for each reply (0: no
    /// limit; a backup of a large store or an erasure may need more than the default).
    #[arg(long, env = "CHORUS_CTL_TIMEOUT", global = true, default_value_t = 60)]
    pub(crate) timeout: u64,
    #[command(subcommand)]
    pub(crate) command: Top,
}

#[derive(Subcommand)]
pub(crate) enum Top {
    /// Node id, version, uptime, connections, sessions, rates, store size, commit p99.
    Status,
    /// Sessions.
    #[command(subcommand)]
    Connections(Connections),
    /// Bans, revocation, export and erasure.
    #[command(subcommand)]
    Users(Users),
    /// Channels and their members.
    #[command(subcommand)]
    Channels(Channels),
    /// Messages.
    #[command(subcommand)]
    Messages(Messages),
    /// A channel's moderation queue.
    #[command(subcommand)]
    Flags(Flags),
    /// The configuration in force.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// The log filter.
    #[command(subcommand, name = "log-level")]
    LogLevel(LogLevel),
    /// Stop accepting, send every client elsewhere (GOING_AWAY), report until none is left.
    Drain {
        /// The delay clients are advised to wait before reconnecting, ms.
        #[arg(long, default_value_t = 1_000)]
        reconnect_after_ms: u32,
        /// Give up waiting for sessions to close after this many seconds.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
    },
    /// Online backups.
    #[command(subcommand)]
    Store(StoreCmd),
    /// The message search index.
    #[command(subcommand)]
    Search(SearchCmd),
    /// The audit log of admin actions.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// The cluster: certificates (offline) and members (from the node).
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Subcommand)]
pub(crate) enum ClusterCmd {
    /// Makes a cluster CA in DIR (ca.pem, ca-key.pem, cluster-id) and, for each node, a
    /// directory DIR/NODE/ with what that node needs; copy it to the node's cert_dir
    /// (default DATA_DIR/cluster). Keep ca-key.pem off the nodes. No node is contacted.
    Init {
        /// Where to write; must not hold a CA yet.
        #[arg(long)]
        dir: PathBuf,
        /// The cluster's name; a node of another cluster is refused.
        #[arg(long, default_value = "chorus")]
        cluster_id: String,
        /// The node ids, comma separated (each a DNS label: a-z, 0-9, '-').
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
    },
    /// Issues DIR/NODE/ for one more node from the CA in DIR.
    AddNode {
        /// The directory `cluster init` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// The new node's id.
        node: String,
    },
    /// Members as this node sees them: state, addresses, connection, RTT, last heard,
    /// version; the endpoint's counters.
    Status,
    /// A request/response round trip to another node.
    Ping {
        /// The node id.
        node: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum Connections {
    /// Sessions, oldest first.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Closes a session (or all of a user's) with KICKED; clients reconnect.
    Kick {
        /// The session id.
        session: Option<String>,
        /// All sessions of this user.
        #[arg(long, conflicts_with = "session")]
        user: Option<String>,
        /// Every session of the node.
        #[arg(long, conflicts_with_all = ["session", "user"])]
        all: bool,
        /// Shown to the client.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum Users {
    /// Bans a user from the node and closes their sessions.
    Ban {
        /// The user.
        user: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Until when, unix ms (default: until lifted).
        #[arg(long)]
        until_ms: Option<u64>,
    },
    /// Lifts a ban.
    Unban {
        /// The user.
        user: String,
    },
    /// Refuses the user's tokens issued before now and closes their sessions.
    Revoke {
        /// The user.
        user: String,
    },
    /// Writes everything stored about a user to a JSON file.
    Export {
        /// The user.
        user: String,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Erases a user's content and identity (irreversible). A job: it survives a restart of
    /// the node, which resumes it; waits until it is done (see --timeout).
    Erase {
        /// The user.
        user: String,
        /// Confirms the erasure.
        #[arg(long)]
        yes: bool,
    },
    /// Erasures not finished yet (running, or waiting to resume), with their progress.
    Erasures,
}

#[derive(Subcommand)]
pub(crate) enum Channels {
    /// Channels in id order.
    List {
        /// Start after this id.
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One channel with its members.
    Show {
        /// The channel.
        channel: String,
    },
    /// Creates a group or public channel.
    Create {
        /// The channel id.
        channel: String,
        /// group or public.
        #[arg(long, default_value = "group")]
        kind: String,
        /// The owner.
        #[arg(long)]
        owner: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// A member (repeat for more).
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Archives a channel (read-only), or restores it.
    Archive {
        /// The channel.
        channel: String,
        /// Restore instead.
        #[arg(long)]
        restore: bool,
    },
    /// Members.
    #[command(subcommand)]
    Members(Members),
}

#[derive(Subcommand)]
pub(crate) enum Members {
    /// Adds members.
    Add {
        /// The channel.
        channel: String,
        /// The users.
        #[arg(required = true)]
        users: Vec<String>,
        /// member, moderator or owner.
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Removes a member.
    Remove {
        /// The channel.
        channel: String,
        /// The user.
        user: String,
    },
    /// Sets a member's role.
    Role {
        /// The channel.
        channel: String,
        /// The user.
        user: String,
        /// member, moderator or owner.
        role: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum Messages {
    /// Deletes a message (tombstone; the log stays gapless).
    Delete {
        /// The channel.
        channel: String,
        /// The message's seq.
        seq: u64,
    },
}

#[derive(Subcommand)]
pub(crate) enum Flags {
    /// The channel's flags, newest first (open ones, or `--all`).
    List {
        /// The channel.
        channel: String,
        /// Closed flags too.
        #[arg(long)]
        all: bool,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
        /// From the previous page's next_cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Closes a flag as dismissed or actioned.
    Resolve {
        /// The channel.
        channel: String,
        /// The flag's id (from `flags list`).
        flag: String,
        /// dismissed or actioned.
        resolution: String,
        /// A note for the record.
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConfigCmd {
    /// The configuration in force (secrets redacted).
    Show,
    /// Re-reads limits and the log filter from the config file.
    Reload,
}

#[derive(Subcommand)]
pub(crate) enum LogLevel {
    /// Sets the log filter ("debug", "info,chorus_server=trace", ...).
    Set {
        /// The filter.
        level: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum StoreCmd {
    /// Writes a consistent copy of the store into DIR while the node keeps running.
    Backup {
        /// A directory that does not exist or is empty (made absolute).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum SearchCmd {
    /// Documents, size on disk, lag behind the log, a rebuild's progress.
    Status,
    /// Rebuilds the index from the log while the node keeps serving searches from the old one.
    Reindex {
        /// Print progress until the new index serves.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCmd {
    /// Admin actions, oldest first.
    List {
        /// Only since then: unix ms, or an age like 90s, 30m, 12h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// The newest this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

pub(crate) fn parse_since(s: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let bad = || anyhow::anyhow!("bad --since {s:?}: use unix ms or 90s, 30m, 12h, 7d");
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let secs = match unit {
        's' => n,
        'm' => n.saturating_mul(60),
        'h' => n.saturating_mul(3_600),
        'd' => n.saturating_mul(86_400),
        _ => return Err(bad()),
    };
    Ok(chorus_server::clock::unix_ms().saturating_sub(secs.saturating_mul(1_000)))
}

pub(crate) fn command(top: &Top) -> anyhow::Result<Command> {
    Ok(match top {
        Top::Status => Command::Status,
        Top::Connections(Connections::List { user }) => {
            Command::ConnectionsList { user: user.clone() }
        }
        Top::Connections(Connections::Kick {
            session,
            user,
            all,
            reason,
        }) => {
            if session.is_none() && user.is_none() && !all {
                bail!("give a session id, --user or --all");
            }
            Command::ConnectionsKick {
                session: session.clone(),
                user: user.clone(),
                all: *all,
                reason: reason.clone(),
            }
        }
        Top::Users(Users::Ban {
            user,
            reason,
            until_ms,
        }) => Command::UsersBan {
            user: user.clone(),
            reason: reason.clone(),
            until_ms: *until_ms,
        },
        Top::Users(Users::Unban { user }) => Command::UsersUnban { user: user.clone() },
        Top::Users(Users::Revoke { user }) => Command::UsersRevoke { user: user.clone() },
        Top::Users(Users::Export { user, .. }) => Command::UsersExport { user: user.clone() },
        Top::Users(Users::Erase { user, yes }) => {
            if !yes {
                bail!("erasing {user} cannot be undone: add --yes");
            }
            Command::UsersErase { user: user.clone() }
        }
        Top::Users(Users::Erasures) => Command::UsersErasures,
        Top::Channels(Channels::List { after, limit }) => Command::ChannelsList {
            after: after.clone(),
            limit: Some(*limit),
        },
        Top::Channels(Channels::Show { channel }) => Command::ChannelsShow {
            channel: channel.clone(),
        },
        Top::Channels(Channels::Create {
            channel,
            kind,
            owner,
            name,
            members,
        }) => Command::ChannelsCreate {
            channel: channel.clone(),
            kind: kind.clone(),
            owner: owner.clone(),
            name: name.clone(),
            members: members.clone(),
        },
        Top::Channels(Channels::Archive { channel, restore }) => Command::ChannelsArchive {
            channel: channel.clone(),
            archived: !restore,
        },
        Top::Channels(Channels::Members(Members::Add {
            channel,
            users,
            role,
        })) => Command::MembersAdd {
            channel: channel.clone(),
            users: users.clone(),
            role: Some(role.clone()),
        },
        Top::Channels(Channels::Members(Members::Remove { channel, user })) => {
            Command::MembersRemove {
                channel: channel.clone(),
                user: user.clone(),
            }
        }
        Top::Channels(Channels::Members(Members::Role {
            channel,
            user,
            role,
        })) => Command::MembersRole {
            channel: channel.clone(),
            user: user.clone(),
            role: role.clone(),
        },
        Top::Messages(Messages::Delete { channel, seq }) => Command::MessagesDelete {
            channel: channel.clone(),
            seq: *seq,
        },
        Top::Flags(Flags::List {
            channel,
            all,
            limit,
            cursor,
        }) => Command::FlagsList {
            channel: channel.clone(),
            all: *all,
            limit: *limit,
            cursor: cursor.clone(),
        },
        Top::Flags(Flags::Resolve {
            channel,
            flag,
            resolution,
            note,
        }) => Command::FlagsResolve {
            channel: channel.clone(),
            flag: flag.clone(),
            resolution: resolution.clone(),
            note: note.clone(),
        },
        Top::Config(ConfigCmd::Show) => Command::ConfigShow,
        Top::Config(ConfigCmd::Reload) => Command::ConfigReload,
        Top::LogLevel(LogLevel::Set { level }) => Command::LogLevelSet {
            level: level.clone(),
        },
        Top::Drain {
            reconnect_after_ms, ..
        } => Command::Drain {
            reconnect_after_ms: Some(*reconnect_after_ms),
        },
        Top::Store(StoreCmd::Backup { dir }) => Command::StoreBackup {
            dir: std::path::absolute(dir)?.to_string_lossy().into_owned(),
        },
        Top::Search(SearchCmd::Status) => Command::SearchStatus,
        Top::Search(SearchCmd::Reindex { .. }) => Command::SearchReindex,
        Top::Cluster(ClusterCmd::Status) => Command::ClusterStatus,
        Top::Cluster(ClusterCmd::Ping { node }) => Command::ClusterPing { node: node.clone() },
        Top::Cluster(ClusterCmd::Init { .. } | ClusterCmd::AddNode { .. }) => {
            anyhow::bail!("cluster init and add-node run offline, without a node")
        }
        Top::Audit(AuditCmd::List { since, limit }) => Command::AuditList {
            since_ms: since.as_deref().map(parse_since).transpose()?,
            limit: Some(*limit),
        },
    })
}
