//! A bot that answers in a channel: `!ping`, `!echo <text>`, `!time`, `!help`.
//!
//! ```text
//! cargo run -p chorus-client --example bot -- \
//!     --url wss://localhost:8443/ --pin-cert chorus-data/dev-cert.pem \
//!     --token "$(cargo run -q --bin chorusd -- token --user bot)" --channel general
//! ```
//! It reconnects and resumes by itself (through the SDK), answers each command exactly once
//! (entries arrive once), and replies in the thread of the command.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use chorus_client::proto;
use chorus_client::{ChannelId, Client, ClientConfig, EntryBody, Event, TlsTrust};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The node: wss://host:port/, ws://host:port/ or quic://host:port.
    #[arg(long)]
    url: String,
    /// The bot's access token.
    #[arg(long, env = "CHORUS_TOKEN")]
    token: String,
    /// The public channel to serve.
    #[arg(long, default_value = "general")]
    channel: String,
    /// Trust exactly this certificate (a dev node's self-signed cert.pem).
    #[arg(long)]
    pin_cert: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let trust = args
        .pin_cert
        .map_or(TlsTrust::WebPkiRoots, TlsTrust::PinnedCertFile);
    let (client, mut events) =
        Client::connect(ClientConfig::new(&args.url, args.token)?.trust(trust)).await?;
    let me = client.status().user_id;
    let channel = ChannelId::new(args.channel)?;
    if let Err(e) = client.join_channel(&channel).await {
        if e.server_code() != Some(proto::ErrorCode::NotFound) {
            return Err(e.into());
        }
        client.create_public(&channel, channel.as_str()).await?;
    }
    client.subscribe(&channel).await?;
    println!("{me} serves #{channel}");

    while let Some(event) = events.recv().await {
        match event {
            Event::Entry(e) if e.author.as_ref().is_none_or(|a| a.as_str() != me) => {
                let EntryBody::Message(m) = &e.body else {
                    continue;
                };
                let Some(answer) = answer(&m.text, e.server_time_ms) else {
                    continue;
                };
                let reply = proto::Message {
                    text: answer,
                    thread_parent_seq: if m.thread_parent_seq != 0 {
                        m.thread_parent_seq
                    } else {
                        e.seq.get()
                    },
                    mentions: e.author.iter().map(ToString::to_string).collect(),
                    ..Default::default()
                };
                if let Err(err) = client.publish(&channel, reply).await {
                    println!("could not answer #{}: {err}", e.seq);
                }
            }
            Event::Closed { reason, .. } => {
                println!("stopped: {reason}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The answer to a command, if the text is one.
fn answer(text: &str, server_time_ms: u64) -> Option<String> {
    let (command, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    Some(match command {
        "!ping" => "pong".to_owned(),
        "!echo" if !rest.is_empty() => rest.to_owned(),
        "!time" => format!("server time: {server_time_ms} ms since the Unix epoch"),
        "!help" => "commands: !ping, !echo <text>, !time".to_owned(),
        _ => return None,
    })
}
