//! Opens many connections at a given rate, holds them idle, and reports connect latency,
//! failures, connections per second, and the node's memory per idle connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use chorus_protocol::v1::{self, client_envelope::Request};
use serde_json::json;

use super::{ConnectTiming, Setup};
use crate::report::{self, Report};

/// `connect` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Connections to open.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Seconds to hold them open. (Connections are pinged from the end of the connect phase
    /// on: keep the phase, connections / `--connect-rate`, under the node's idle timeout.)
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
}

/// The longest wait between a held connection's pings.
const MAX_PING_EVERY: Duration = Duration::from_secs(20);

/// How long a ping may wait for the socket to take it.
const SEND_LIMIT: Duration = Duration::from_secs(5);

/// How often to ping: the node's heartbeat interval, or half its idle timeout, whichever is
/// shorter, at most [`MAX_PING_EVERY`].
fn heartbeat(welcome: &v1::Welcome) -> Duration {
    [welcome.heartbeat_interval_ms, welcome.idle_timeout_ms / 2]
        .into_iter()
        .filter(|ms| *ms > 0)
        .map(|ms| Duration::from_millis(ms.into()))
        .fold(MAX_PING_EVERY, Duration::min)
}

/// Sends every connection a ping, without waiting for the pongs.
async fn ping_all(conns: &mut [(usize, crate::lean::Lean)]) {
    for (_, c) in conns {
        let id = c.next_id();
        // A socket that takes no bytes is found out by the liveness check at the end.
        let _ = tokio::time::timeout(
            SEND_LIMIT,
            c.send(vec![(id, Request::Ping(v1::Ping { client_time_ms: 0 }))]),
        )
        .await;
    }
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
    let mut timing = ConnectTiming::default();
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
            &mut timing,
            &mut errors,
        )
        .await;
    let took = start.elapsed();
    let opened = conns.len();
    report.connections = opened as u64;
    timing.fill(&mut report);
    report.errors = errors;
    report.duration_secs = took.as_secs_f64();
    // Hold: idle, apart from a ping per connection each heartbeat interval the node announced
    // (so that its idle timeout never closes them), starting now: the first connections have
    // been idle since the connect phase began.
    let hold_until = Instant::now() + Duration::from_secs(args.hold);
    ping_all(&mut conns).await;
    let settle = Duration::from_secs(2).min(Duration::from_secs(args.hold));
    tokio::time::sleep(settle).await;
    let held = setup
        .server_pid
        .and_then(|p| report::sample(&p.to_string()));
    let every = conns
        .iter()
        .map(|(_, c)| heartbeat(&c.welcome))
        .min()
        .unwrap_or(MAX_PING_EVERY);
    while Instant::now() < hold_until {
        let wait = hold_until
            .saturating_duration_since(Instant::now())
            .min(every);
        tokio::time::sleep(wait).await;
        if Instant::now() < hold_until {
            ping_all(&mut conns).await;
        }
    }
    meter.finish(&mut report);
    // Whether each connection is still open: a held connection the node dropped must not
    // count as held.
    let mut checks = tokio::task::JoinSet::new();
    for (_, mut c) in conns.drain(..) {
        checks.spawn(async move {
            let alive = c
                .request(Request::Ping(v1::Ping { client_time_ms: 0 }))
                .await;
            let _ = tokio::time::timeout(SEND_LIMIT, c.writer.close()).await;
            alive.map(|_| ())
        });
    }
    let mut alive = 0u64;
    while let Some(done) = checks.join_next().await {
        match done {
            Ok(Ok(())) => alive += 1,
            Ok(Err(e)) => {
                *report
                    .errors
                    .entry(format!("lost while held: {e}"))
                    .or_default() += 1
            }
            Err(e) => *report.errors.entry(format!("check task: {e}")).or_default() += 1,
        }
    }
    let per_conn = match (before, held) {
        (Some(b), Some(h)) if opened > 0 => {
            Some(h.rss_kib.saturating_sub(b.rss_kib) as f64 / opened as f64)
        }
        _ => None,
    };
    report.extra = json!({
        "connects_per_sec": opened as f64 / took.as_secs_f64().max(1e-9),
        "connections_alive_at_end": alive,
        "server_rss_per_connection_kib": per_conn,
        "server_rss_before_kib": before.map(|b| b.rss_kib),
        "server_rss_held_kib": held.map(|h| h.rss_kib),
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_follow_the_node_heartbeat() {
        let w = |heartbeat_interval_ms, idle_timeout_ms| v1::Welcome {
            heartbeat_interval_ms,
            idle_timeout_ms,
            ..Default::default()
        };
        assert_eq!(heartbeat(&w(0, 0)), MAX_PING_EVERY);
        assert_eq!(heartbeat(&w(15_000, 60_000)), Duration::from_secs(15));
        assert_eq!(heartbeat(&w(30_000, 10_000)), Duration::from_secs(5));
        assert_eq!(heartbeat(&w(0, 90_000)), MAX_PING_EVERY);
    }
}
