//! `chorusctl`: the admin CLI of a running node, over its control socket.
//!
//! Tables for people by default, `--json` for scripts. Exit status: 0 on success, 1 when the
//! node refused the command, 2 when the node could not be reached.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chorus_server::control::wire::{Command, Response};
use clap::{Parser, Subcommand};
use serde_json::Value;

mod render;

use render::render;

#[derive(Parser)]
#[command(
    name = "chorusctl",
    version,
    about = "Administer a running chorusd node"
)]
struct Cli {
    /// The node's control socket (default: `<data-dir>/control.sock`).
    #[arg(long, env = "CHORUS_CONTROL_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// The node's data directory (default: ./chorus-data if it exists, else /var/lib/chorus).
    #[arg(long, env = "CHORUS_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Print the node's JSON result instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the node to accept the connection and for each reply (0: no
    /// limit; a backup of a large store or an erasure may need more than the default).
    #[arg(long, env = "CHORUS_CTL_TIMEOUT", global = true, default_value_t = 60)]
    timeout: u64,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
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
    /// The audit log of admin actions.
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Subcommand)]
enum Connections {
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
enum Users {
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
enum Channels {
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
enum Members {
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
enum Messages {
    /// Deletes a message (tombstone; the log stays gapless).
    Delete {
        /// The channel.
        channel: String,
        /// The message's seq.
        seq: u64,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// The configuration in force (secrets redacted).
    Show,
    /// Re-reads limits and the log filter from the config file.
    Reload,
}

#[derive(Subcommand)]
enum LogLevel {
    /// Sets the log filter ("debug", "info,chorus_server=trace", ...).
    Set {
        /// The filter.
        level: String,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Writes a consistent copy of the store into DIR while the node keeps running.
    Backup {
        /// A directory that does not exist or is empty (made absolute).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
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

/// A connection to the node.
struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Control {
    fn connect(path: &std::path::Path, timeout: Option<Duration>) -> anyhow::Result<Self> {
        let stream = connect_within(path, timeout)
            .with_context(|| format!("cannot reach the node at {}", path.display()))?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 1,
        })
    }

    fn call(&mut self, command: &Command) -> anyhow::Result<Response> {
        let id = self.next_id;
        self.next_id += 1;
        // A node that refuses the connection (all admin slots taken) has answered and closed
        // already: the write then fails, and the answer waiting to be read says why.
        let written = self.writer.write_all(command.to_line(id).as_bytes());
        let mut line = String::new();
        if let Err(e) = written {
            if self.reader.read_line(&mut line).unwrap_or(0) > 0 {
                return serde_json::from_str(&line).context("unreadable response");
            }
            return Err(e.into());
        }
        match self.reader.read_line(&mut line) {
            Ok(0) => bail!("the node closed the control connection"),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("no reply from the node within the timeout (--timeout)")
            }
            Err(e) => return Err(e.into()),
        }
        serde_json::from_str(&line).context("unreadable response")
    }
}

/// Connects to a Unix socket, giving up after `timeout` (std has no connect timeout for Unix
/// sockets, and a connect blocks while the listener's accept queue is full).
fn connect_within(
    path: &std::path::Path,
    timeout: Option<Duration>,
) -> std::io::Result<UnixStream> {
    let Some(timeout) = timeout else {
        return UnixStream::connect(path);
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    // Left behind if it never returns; the process exits soon after.
    std::thread::spawn(move || {
        let _ = tx.send(UnixStream::connect(path));
    });
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the node did not accept the connection within the timeout (--timeout)",
        ))
    })
}

fn socket_path(cli: &Cli) -> PathBuf {
    if let Some(s) = &cli.socket {
        return s.clone();
    }
    let dir = cli.data_dir.clone().unwrap_or_else(|| {
        let dev = PathBuf::from("./chorus-data");
        if dev.exists() {
            dev
        } else {
            PathBuf::from("/var/lib/chorus")
        }
    });
    dir.join("control.sock")
}

fn parse_since(s: &str) -> anyhow::Result<u64> {
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

fn command(top: &Top) -> anyhow::Result<Command> {
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
        Top::Audit(AuditCmd::List { since, limit }) => Command::AuditList {
            since_ms: since.as_deref().map(parse_since).transpose()?,
            limit: Some(*limit),
        },
    })
}

fn run(cli: &Cli) -> anyhow::Result<bool> {
    let request = command(&cli.command)?;
    let path = socket_path(cli);
    let timeout = (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout));
    let mut control = Control::connect(&path, timeout)?;
    let response = control.call(&request)?;
    if !response.ok {
        let e = response
            .error
            .unwrap_or_else(|| chorus_server::control::wire::ErrorBody {
                code: "failed".into(),
                message: "no error given".into(),
            });
        if cli.json {
            println!("{}", serde_json::json!({"error": e}));
        }
        eprintln!("error: {}: {}", e.code, e.message);
        return Ok(false);
    }
    let result = response.result.unwrap_or(Value::Null);
    if let Top::Users(Users::Export { out, .. }) = &cli.command {
        std::fs::write(out, format!("{result:#}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
        return Ok(true);
    }
    if cli.json {
        println!("{result:#}");
    } else {
        render(&result);
    }
    if let Top::Drain { wait_secs, .. } = &cli.command {
        let deadline = Instant::now() + Duration::from_secs(*wait_secs);
        loop {
            let status = control.call(&Command::Status)?;
            let sessions = status
                .result
                .as_ref()
                .and_then(|r| r["sessions"].as_u64())
                .unwrap_or(0);
            eprintln!("sessions left: {sessions}");
            if sessions == 0 {
                eprintln!("drained");
                break;
            }
            if Instant::now() >= deadline {
                eprintln!("{sessions} sessions still open after {wait_secs} s");
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(true)
}

fn main() {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chorusctl: {e:#}");
            std::process::exit(2);
        }
    }
}
