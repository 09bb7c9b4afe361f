//! A terminal chat client on the SDK.
//!
//! ```text
//! cargo run -p chorus-client --example chat -- \
//!     --url wss://localhost:8443/ --pin-cert chorus-data/dev-cert.pem \
//!     --token "$(cargo run -q --bin chorusd -- token --user alice)" --channel general
//! ```
//! Type a line to send it to the current channel. Commands: `/history [n]`, `/join <channel>`,
//! `/dm <user>`, `/channels`, `/react <seq> <emoji>`, `/unreact <seq> <emoji>`,
//! `/thread <seq> <text>`, `/threads`, `/pin <seq>`, `/pins`, `/presence <user>...`,
//! `/status online|away|busy|invisible [text]`, `/mute <user> [minutes]`, `/ban <user>`,
//! `/flag <seq> <reason>`, `/block <user>`, `/unblock <user>`, `/search <query>` (all your
//! channels and public ones, best match first, matches in `[brackets]`), `/quit`. Each entry
//! shows its
//! seq, so that commands can name it; `/history` shows reaction counts and replies.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context;
use chorus_client::proto;
use chorus_client::{
    ChannelId, Client, ClientConfig, Entry, EntryBody, Event, HistoryPage, PresenceStatus,
    SearchQuery, Seq, Snippet, TlsTrust, UserId,
};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
struct Args {
    /// The node: wss://host:port/, ws://host:port/ or quic://host:port.
    #[arg(long)]
    url: String,
    /// An access token (chorusd token --user NAME mints one on a dev node).
    #[arg(long, env = "CHORUS_TOKEN")]
    token: String,
    /// The channel to start in (a public channel; created if missing).
    #[arg(long, default_value = "general")]
    channel: String,
    /// Trust exactly this certificate (a dev node's self-signed cert.pem).
    #[arg(long, conflicts_with = "ca_file")]
    pin_cert: Option<PathBuf>,
    /// Trust the CA certificates in this PEM file.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let trust = match (args.pin_cert, args.ca_file) {
        (Some(pin), _) => TlsTrust::PinnedCertFile(pin),
        (None, Some(ca)) => TlsTrust::CaFile(ca),
        (None, None) => TlsTrust::WebPkiRoots,
    };
    let config = ClientConfig::new(&args.url, args.token)?.trust(trust);
    let (client, mut events) = Client::connect(config).await.context("connecting")?;
    println!("connected as {}", client.status().user_id);

    let mut current = ChannelId::new(args.channel.as_str())?;
    enter_public(&client, &current).await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = stdin.next_line() => {
                let Some(line) = line? else { break };
                match command(&client, &mut current, line.trim()).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => println!("! {e}"),
                }
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                if !show(&client, event).await {
                    break;
                }
            }
        }
    }
    client.close().await;
    Ok(())
}

/// Runs one input line; false to quit.
async fn command(client: &Client, current: &mut ChannelId, line: &str) -> anyhow::Result<bool> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "" => {}
        "/quit" => return Ok(false),
        "/history" => {
            let n = rest.trim().parse().unwrap_or(20);
            print_page(&client.latest(current, n).await?);
        }
        "/react" | "/unreact" => {
            let (seq, emoji) = seq_and(rest)?;
            if word == "/react" {
                client.react(current, seq, emoji).await?;
            } else {
                client.unreact(current, seq, emoji).await?;
            }
        }
        "/thread" => {
            let (seq, text) = seq_and(rest)?;
            client.reply(current, seq, text, false).await?;
        }
        "/search" => {
            let query = SearchQuery::new(rest.trim()).with_public().limit(10);
            let page = client.search(&query, None).await?;
            for hit in &page.hits {
                let e = &hit.entry;
                let who = e.author.as_ref().map_or("-", |u| u.as_str());
                println!("  {} #{} {who}: {}", e.channel, e.seq, marked(&hit.snippet));
            }
            if page.hits.is_empty() {
                println!("  (nothing found)");
            }
        }
        "/threads" => {
            for t in client.list_threads(current, None, 20).await?.threads {
                let root = t.root_entry.as_ref().and_then(Entry::text).unwrap_or("");
                println!("  #{} {} replies: {root}", t.root, t.reply_count);
            }
        }
        "/pin" => {
            client.pin(current, seq_and(rest)?.0).await?;
        }
        "/pins" => {
            for p in client.list_pins(current, None, 20).await?.pins {
                println!("  {}", render(&p.message));
            }
        }
        "/presence" => {
            let users: Vec<UserId> = rest
                .split_whitespace()
                .map(UserId::new)
                .collect::<Result<_, _>>()?;
            for p in client.watch_presence(&users).await? {
                println!("  {} is {:?} {}", p.user, p.status, p.status_text);
            }
        }
        "/status" => {
            let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let status = match status.trim() {
                "away" => PresenceStatus::Away,
                "busy" => PresenceStatus::DoNotDisturb,
                "invisible" => PresenceStatus::Invisible,
                _ => PresenceStatus::Online,
            };
            client.set_presence(status, text.trim()).await?;
        }
        "/mute" => {
            let mut words = rest.split_whitespace();
            let user = UserId::new(words.next().unwrap_or(""))?;
            let minutes: Option<u64> = words.next().and_then(|m| m.parse().ok());
            let duration = minutes.map(|m| std::time::Duration::from_secs(m * 60));
            client.mute(current, &user, duration, "").await?;
        }
        "/ban" => {
            let user = UserId::new(rest.trim())?;
            client.ban(current, &user, None, "", false).await?;
        }
        "/flag" => {
            let (seq, reason) = seq_and(rest)?;
            client.flag_message(current, seq, reason).await?;
            println!("* reported to the moderators");
        }
        "/block" | "/unblock" => {
            let user = UserId::new(rest.trim())?;
            if word == "/block" {
                client.block_user(&user).await?;
            } else {
                client.unblock_user(&user).await?;
            }
        }
        "/join" => {
            let channel = ChannelId::new(rest.trim())?;
            enter_public(client, &channel).await?;
            *current = channel;
        }
        "/dm" => {
            let user = UserId::new(rest.trim())?;
            let channel = client.direct_channel(&user).await?.channel.id;
            subscribe(client, &channel).await?;
            println!("* direct channel with {user}: {channel}");
            *current = channel;
        }
        "/channels" => {
            let list = client
                .list_channels(proto::ListChannels {
                    limit: 100,
                    ..Default::default()
                })
                .await?;
            for s in list.channels {
                let c = &s.channel;
                println!("  {} ({} unread) {}", c.id, s.unread_count, c.name);
            }
        }
        w if w.starts_with('/') => println!(
            "commands: /history [n], /join <channel>, /dm <user>, /channels, /react <seq> <emoji>, \
             /unreact <seq> <emoji>, /thread <seq> <text>, /threads, /pin <seq>, /pins, \
             /presence <user>..., /status <online|away|busy|invisible> [text], \
             /mute <user> [minutes], /ban <user>, /flag <seq> <reason>, /block <user>, \
             /unblock <user>, /quit"
        ),
        _ => {
            client.send_text(current, line).await?;
        }
    }
    Ok(true)
}

/// Joins (creating it if needed) a public channel, subscribes and shows its recent history.
async fn enter_public(client: &Client, channel: &ChannelId) -> anyhow::Result<()> {
    if let Err(e) = client.join_channel(channel).await {
        if e.server_code() != Some(proto::ErrorCode::NotFound) {
            return Err(e.into());
        }
        client.create_public(channel, channel.as_str()).await?;
    }
    subscribe(client, channel).await?;
    print_page(&client.latest(channel, 20).await?);
    println!("* now in #{channel}");
    Ok(())
}

/// `<seq> <rest>` of a command.
fn seq_and(rest: &str) -> anyhow::Result<(Seq, &str)> {
    let (seq, rest) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
    Ok((Seq(seq.parse().context("a message seq")?), rest.trim()))
}

/// A page's messages with their reaction counts and thread replies.
/// A snippet with its matching words in brackets.
fn marked(s: &Snippet) -> String {
    let mut out = String::new();
    let mut at = 0;
    for r in &s.highlighted {
        out.push_str(&s.fragment[at..r.start]);
        out.push('[');
        out.push_str(&s.fragment[r.clone()]);
        out.push(']');
        at = r.end;
    }
    out.push_str(&s.fragment[at..]);
    out
}

fn print_page(page: &HistoryPage) {
    for e in &page.entries {
        let mut line = render(e);
        if let Some(s) = page.summary(e.seq) {
            for r in &s.reactions {
                line.push_str(&format!(" [{} {}]", r.emoji, r.count));
            }
            if let Some(t) = &s.thread {
                line.push_str(&format!(" ({} replies)", t.reply_count));
            }
            if s.pinned.is_some() {
                line.push_str(" (pinned)");
            }
        }
        println!("{line}");
    }
}

async fn subscribe(client: &Client, channel: &ChannelId) -> anyhow::Result<()> {
    match client.subscribe(channel).await {
        Ok(_) => Ok(()),
        // Already subscribed (coming back to a channel).
        Err(e) if e.server_code() == Some(proto::ErrorCode::Conflict) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Prints an event; false when the client stopped.
async fn show(client: &Client, event: Event) -> bool {
    match event {
        Event::Entry(e) => println!("{}", render(&e)),
        Event::Reload { channel, head, .. } => {
            println!("* #{channel} changed while away; reloading");
            if let Ok(page) = client.latest(&channel, 20).await {
                for e in page.entries.iter().filter(|e| e.seq <= head) {
                    println!("{}", render(e));
                }
            }
        }
        Event::Disconnected {
            reason, retry_in, ..
        } => {
            println!("* disconnected ({reason}); retrying in {retry_in:.1?}")
        }
        Event::Connected {
            reconnect: true, ..
        } => println!("* reconnected"),
        Event::Typing(t) if t.typing => println!("* {} is typing in #{}", t.user, t.channel),
        Event::Presence(p) => println!("* {} is {:?} {}", p.user, p.status, p.status_text),
        Event::SubscriptionEnded { channel, .. } => println!("* left #{channel}"),
        Event::Notice(n) => println!("* notice: {}", n.text),
        Event::Closed { reason, .. } => {
            println!("* connection closed: {reason}");
            return false;
        }
        _ => {}
    }
    true
}

/// One line per entry: time (UTC), channel, author, content.
fn render(e: &Entry) -> String {
    let secs = e.server_time_ms / 1000;
    let time = format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    );
    let author = e
        .author
        .as_ref()
        .map_or_else(|| "(server)".to_owned(), ToString::to_string);
    let what = match &e.body {
        EntryBody::Message(m) if m.thread_parent_seq != 0 => {
            format!("{author} (in thread {}): {}", m.thread_parent_seq, m.text)
        }
        EntryBody::Message(m) => format!("{author}: {}", m.text),
        EntryBody::MessageEdited(m) => format!("{author} edited #{}: {}", m.target_seq, m.text),
        EntryBody::MessageDeleted { target, .. } => format!("{author} deleted #{target}"),
        EntryBody::MemberChanged(m) => match &m.user {
            Some(user) => format!("{user} {:?}", m.action),
            None => format!("{:?}", m.action),
        },
        EntryBody::ChannelChanged(_) => format!("{author} changed the channel"),
        EntryBody::Tombstone { .. } => "(deleted)".to_owned(),
        EntryBody::ReactionAdded { target, emoji } => {
            format!("{author} reacted {emoji} to #{target}")
        }
        EntryBody::ReactionRemoved { target, emoji } => {
            format!("{author} took back {emoji} from #{target}")
        }
        EntryBody::MessagePinned { target } => format!("{author} pinned #{target}"),
        EntryBody::MessageUnpinned { target } => format!("{author} unpinned #{target}"),
        _ => format!("{author} did something this client does not show"),
    };
    format!("[{time}] #{} {:>5} {what}", e.channel, e.seq)
}
