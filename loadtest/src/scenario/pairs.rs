//! N connections in N/2 direct channels, exchanging messages at a fixed total rate: the
//! latency of one-to-one chat with every message durable.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use chorus_protocol::v1::{self, ChannelKind, client_envelope::Request, reply};
use serde_json::json;

use super::actor::{Pace, Plan};
use super::orchestrate;
use super::{ConnectTiming, Setup};
use crate::report::Report;

/// `pairs` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Connections (two per direct channel).
    #[arg(long, default_value_t = 2_000)]
    pub connections: usize,
    /// Messages per second, all pairs together.
    #[arg(long, default_value_t = 30_000.0, value_parser = super::positive_rate)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Message text bytes.
    #[arg(long, default_value_t = 64)]
    pub body: usize,
}

/// Runs `pairs`.
pub async fn run(setup: &Setup, args: &Args) -> anyhow::Result<Report> {
    let n = args.connections / 2 * 2;
    if n == 0 {
        bail!("pairs needs at least two connections");
    }
    super::check_rate(args.rate)?;
    let mut report = setup.report("pairs", json!({
        "connections": n, "rate": args.rate, "duration_secs": args.duration, "body_bytes": args.body,
    }));
    let mut connect = ConnectTiming::default();
    let mut errors = BTreeMap::new();
    eprintln!("connecting {n} clients...");
    let mut conns = setup
        .connect_many(n, |i| setup.user("pair", i), &mut connect, &mut errors)
        .await;
    conns.sort_by_key(|(i, _)| *i);
    eprintln!("{} connected", conns.len());
    let mut by_index: BTreeMap<usize, crate::lean::Lean> = conns.into_iter().collect();
    let per_conn = args.rate / n as f64;
    let mut actors = Vec::new();
    for pair in 0..n / 2 {
        let (Some(mut a), Some(mut b)) = (
            by_index.remove(&(2 * pair)),
            by_index.remove(&(2 * pair + 1)),
        ) else {
            *errors
                .entry("pair incomplete (a connect failed)".into())
                .or_default() += 1;
            continue;
        };
        let channel = match a
            .request(Request::CreateChannel(v1::CreateChannel {
                kind: ChannelKind::Direct as i32,
                member_ids: vec![b.welcome.user_id.clone()],
                ..Default::default()
            }))
            .await?
        {
            reply::Result::Channel(s) => s.channel.map(|c| c.channel_id).unwrap_or_default(),
            other => bail!("creating a direct channel: {other:?}"),
        };
        let heads = [a.subscribe(&channel).await?, b.subscribe(&channel).await?];
        for (conn, head) in [a, b].into_iter().zip(heads) {
            let id = u32::try_from(actors.len()).unwrap_or(u32::MAX);
            actors.push((
                conn,
                Plan {
                    id,
                    publish_to: vec![(channel.clone(), 1.0)],
                    pace: Pace::Rate(per_conn),
                    body: args.body,
                    subscriptions: vec![(channel.clone(), head)],
                    typing_every: 0,
                    mark_read_every: 0,
                },
            ));
        }
    }
    report.connections = actors.len() as u64;
    connect.fill(&mut report);
    report.errors = errors;
    eprintln!(
        "{} pairs exchanging {} msg/s for {} s...",
        actors.len() / 2,
        args.rate,
        args.duration
    );
    orchestrate::measure(
        setup,
        actors,
        Duration::from_secs(args.duration),
        &mut report,
    )
    .await;
    Ok(report)
}
