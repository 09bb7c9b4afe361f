//! A terminal chat client on the SDK.
//!
//! ```text
//! cargo run -p chorus-client --example chat -- \
//!     --url wss://localhost:8443/ --pin-cert chorus-data/dev-cert.pem \
//!     --token "$(cargo run -q --bin chorusd -- token --user alice)" --channel general
//! ```
//! Type a line to send it to the current channel. Commands: `/history [n]`, `/join <channel>`,
//! `/dm <user>`, `/channels`, `/quit`.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context;
use chorus_client::proto;
use chorus_client::{ChannelId, Client, ClientConfig, Entry, EntryBody, Event, TlsTrust, UserId};
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
            for e in client.latest(current, n).await?.entries {
                println!("{}", render(&e));
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
        w if w.starts_with('/') => {
            println!("commands: /history [n], /join <channel>, /dm <user>, /channels, /quit")
        }
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
    for e in client.latest(channel, 20).await?.entries {
        println!("{}", render(&e));
    }
    println!("* now in #{channel}");
    Ok(())
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
        _ => format!("{author} did something this client does not show"),
    };
    format!("[{time}] #{} {:>5} {what}", e.channel, e.seq)
}
