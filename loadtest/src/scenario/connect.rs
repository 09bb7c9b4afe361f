//! Opens many connections at a given rate, holds them idle, and reports connect latency,
//! failures, connections per second, and the node's memory per idle connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use chorus_protocol::v1::{self, client_envelope::Request};
use serde_json::json;

use super::Setup;
use crate::report::{self, Percentiles, Report};

/// `connect` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Connections to open.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Seconds to hold them open.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
}

/// Runs `connect`.
pub async fn run(setup: &Setup, args: &Args) -> anyhow::Result<Report> {
    if args.connections == 0 {
        bail!("connect needs --connections > 0");
    }
    let mut report = setup.report(
        "connect",
        json!({
            "connections": args.connections, "rate": setup.connect_rate, "hold_secs": args.hold,
        }),
    );
    let mut hist = report::histogram();
    let mut errors = BTreeMap::new();
    let before = setup
        .server_pid
        .and_then(|p| report::sample(&p.to_string()));
    let meter = setup.meter();
    let start = Instant::now();
    eprintln!(
        "opening {} connections at {}/s...",
        args.connections, setup.connect_rate
    );
    let mut conns = setup
        .connect_many(
            args.connections,
            |i| setup.user("idle", i),
            &mut hist,
            &mut errors,
        )
        .await;
    let took = start.elapsed();
    report.connections = conns.len() as u64;
    report.connect_us = Percentiles::of(&hist);
    report.errors = errors;
    report.duration_secs = took.as_secs_f64();
    // Hold: idle, apart from a ping per connection every 20 s to stay under the idle timeout.
    let hold_until = Instant::now() + Duration::from_secs(args.hold);
    let settle = Duration::from_secs(2).min(Duration::from_secs(args.hold));
    tokio::time::sleep(settle).await;
    let held = setup
        .server_pid
        .and_then(|p| report::sample(&p.to_string()));
    while Instant::now() < hold_until {
        let wait = hold_until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(20));
        tokio::time::sleep(wait).await;
        if Instant::now() < hold_until {
            for (_, c) in &mut conns {
                let id = c.next_id();
                let _ = c
                    .send(vec![(id, Request::Ping(v1::Ping { client_time_ms: 0 }))])
                    .await;
            }
        }
    }
    meter.finish(&mut report);
    let per_conn = match (before, held) {
        (Some(b), Some(h)) if !conns.is_empty() => {
            Some(h.rss_kib.saturating_sub(b.rss_kib) as f64 / conns.len() as f64)
        }
        _ => None,
    };
    report.extra = json!({
        "connects_per_sec": conns.len() as f64 / took.as_secs_f64().max(1e-9),
        "server_rss_per_connection_kib": per_conn,
        "server_rss_before_kib": before.map(|b| b.rss_kib),
        "server_rss_held_kib": held.map(|h| h.rss_kib),
    });
    for (_, c) in &mut conns {
        c.writer.close().await;
    }
    Ok(report)
}
