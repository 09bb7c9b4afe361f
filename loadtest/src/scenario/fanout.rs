//! One channel, many subscribers, a few publishers: at a fixed rate (latency) or with a window
//! of unacknowledged publishes per publisher (maximum throughput).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use chorus_protocol::v1::{self, client_envelope::Request, reply};
use serde_json::json;

use super::actor::{Pace, Plan};
use super::orchestrate;
use super::{ConnectTiming, Setup};
use crate::report::Report;

/// `fanout` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Subscribers.
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// Publishers.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Total publishes per second (fixed rate).
    #[arg(long, conflicts_with = "window", value_parser = super::positive_rate)]
    pub rate: Option<f64>,
    /// Unacknowledged publishes per publisher (maximum throughput; 64 when neither this nor
    /// `--rate` is given). At most the node's in-flight limit (`Welcome.limits`, 256 by
    /// default): a larger window runs at that limit.
    #[arg(long)]
    pub window: Option<usize>,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Message text bytes.
    #[arg(long, default_value_t = 64)]
    pub body: usize,
}

/// Runs `fanout`.
pub async fn run(setup: &Setup, args: &Args) -> anyhow::Result<Report> {
    if args.subscribers == 0 || args.publishers == 0 {
        bail!("fanout needs at least one subscriber and one publisher");
    }
    if let Some(rate) = args.rate {
        super::check_rate(rate)?;
    }
    let pace = match (args.rate, args.window) {
        (Some(r), None) => Pace::Rate(r / args.publishers as f64),
        (None, w) => Pace::Window(w.unwrap_or(64)),
        (Some(_), Some(_)) => bail!("give --rate or --window, not both"),
    };
    let mut report = setup.report(
        "fanout",
        json!({
            "subscribers": args.subscribers, "publishers": args.publishers, "rate": args.rate,
            "window": match pace { Pace::Window(w) => Some(w), _ => None },
            "duration_secs": args.duration, "body_bytes": args.body,
        }),
    );
    let channel = format!("lt{}-fanout-{:04x}", setup.run_id, rand::random::<u16>());
    let mut connect = ConnectTiming::default();
    let mut errors = BTreeMap::new();
    let mut publishers = setup
        .connect_many(
            args.publishers,
            |i| setup.user("pub", i),
            &mut connect,
            &mut errors,
        )
        .await;
    let Some((_, owner)) = publishers.first_mut() else {
        bail!("no publisher could connect: {errors:?}");
    };
    owner.create_public(&channel).await?;
    eprintln!("connecting {} subscribers...", args.subscribers);
    let subscribers = setup
        .connect_many(
            args.subscribers,
            |i| setup.user("sub", i),
            &mut connect,
            &mut errors,
        )
        .await;
    let mut members = Vec::new();
    for (_, mut conn) in subscribers.into_iter().chain(publishers) {
        join(&mut conn, &channel).await?;
        members.push(conn);
    }
    // Subscribed only once everyone has joined: each join is a channel event, and joins after
    // a subscription would be queued for it unread until the run starts (~500,000 events for
    // 1,000 subscribers, drained during the measured run).
    let mut actors = Vec::new();
    for mut conn in members {
        let publisher = conn.welcome.user_id.contains("-pub-");
        let subscriptions = if publisher {
            Vec::new()
        } else {
            vec![(channel.clone(), conn.subscribe(&channel).await?)]
        };
        let id = u32::try_from(actors.len()).unwrap_or(u32::MAX);
        actors.push((
            conn,
            Plan {
                id,
                publish_to: if publisher {
                    vec![(channel.clone(), 1.0)]
                } else {
                    Vec::new()
                },
                pace: if publisher {
                    pace.clone()
                } else {
                    Pace::Silent
                },
                body: args.body,
                subscriptions,
                typing_every: 0,
                mark_read_every: 0,
            },
        ));
    }
    report.connections = actors.len() as u64;
    connect.fill(&mut report);
    report.errors = errors;
    eprintln!("publishing for {} s...", args.duration);
    orchestrate::measure(
        setup,
        actors,
        Duration::from_secs(args.duration),
        &mut report,
    )
    .await;
    Ok(report)
}

/// Joins a public channel (a no-op for its creator, who is a member).
pub async fn join(conn: &mut crate::lean::Lean, channel: &str) -> anyhow::Result<()> {
    match conn
        .request(Request::JoinChannel(v1::JoinChannel {
            channel_id: channel.to_owned(),
        }))
        .await?
    {
        reply::Result::Channel(_) => Ok(()),
        other => bail!("joining {channel}: {other:?}"),
    }
}
