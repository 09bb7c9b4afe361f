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
use chorus_client::proto::{self, channel_event::Body};
use chorus_client::{ChannelId, Client, ClientConfig, Event, TlsTrust, UserId};
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
            for e in client.latest(current, n).await?.events {
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
            let summary = client.direct_channel(&user).await?;
            let id = summary.channel.map(|c| c.channel_id).unwrap_or_default();
            let channel = ChannelId::new(id)?;
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
                let c = s.channel.unwrap_or_default();
                println!("  {} ({} unread) {}", c.channel_id, s.unread_count, c.name);
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
    for e in client.latest(channel, 20).await?.events {
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
                for e in page.events.iter().filter(|e| e.seq <= head.get()) {
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
        Event::Typing(t) if t.typing => println!("* {} is typing in #{}", t.user_id, t.channel_id),
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
fn render(e: &proto::ChannelEvent) -> String {
    let secs = e.server_time_ms / 1000;
    let time = format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    );
    let what = match &e.body {
        Some(Body::Message(m)) if m.thread_parent_seq != 0 => {
            format!(
                "{} (in thread {}): {}",
                e.author_id, m.thread_parent_seq, m.text
            )
        }
        Some(Body::Message(m)) => format!("{}: {}", e.author_id, m.text),
        Some(Body::MessageEdited(m)) => {
            format!("{} edited #{}: {}", e.author_id, m.target_seq, m.text)
        }
        Some(Body::MessageDeleted(d)) => format!("{} deleted #{}", e.author_id, d.target_seq),
        Some(Body::MemberChanged(m)) => format!("{} {:?}", m.user_id, m.action()),
        Some(Body::ChannelChanged(_)) => format!("{} changed the channel", e.author_id),
        Some(Body::Tombstone(_)) => "(deleted)".to_owned(),
        _ => format!("{} did something this client does not show", e.author_id),
    };
    format!("[{time}] #{} {:>5} {what}", e.channel_id, e.seq)
}
