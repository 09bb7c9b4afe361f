//! Live node figures for `chorusctl status`: connections per transport, and rates sampled once
//! a second (entries and deliveries per second, the commit p99 over the last ten seconds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::session::Shared;

/// How often rates are sampled.
const SAMPLE: Duration = Duration::from_secs(1);
/// The window of the commit-latency quantile.
const LATENCY_WINDOW: u32 = 10;

/// Counters and sampled rates.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Open WebSocket connections (after the upgrade).
    pub ws_connections: AtomicU64,
    /// Open QUIC connections.
    pub quic_connections: AtomicU64,
    /// Durable entries per second over the last second.
    pub entries_per_sec: AtomicU64,
    /// Deliveries to subscribers per second over the last second.
    pub deliveries_per_sec: AtomicU64,
    /// p99 of commit latency (queue to durable) over the last window, microseconds (0: none).
    pub commit_p99_us: AtomicU64,
}

/// Counts one open connection of a transport until dropped.
pub struct ConnectionGauge {
    shared: Arc<Shared>,
    quic: bool,
}

impl ConnectionGauge {
    /// Counts a connection.
    pub fn new(shared: Arc<Shared>, transport: &str) -> Self {
        let quic = transport == "quic";
        shared.stats.counter(quic).fetch_add(1, Ordering::Relaxed);
        Self { shared, quic }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.shared
            .stats
            .counter(self.quic)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeStats {
    fn counter(&self, quic: bool) -> &AtomicU64 {
        if quic {
            &self.quic_connections
        } else {
            &self.ws_connections
        }
    }
}

/// Samples the rates until `stop`.
pub async fn sample(shared: std::sync::Weak<Shared>, stop: CancellationToken) {
    let (mut entries, mut deliveries) = (None::<u64>, None::<u64>);
    let mut window_start = None;
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            () = tokio::time::sleep(SAMPLE) => {}
            () = stop.cancelled() => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (e, d) = (shared.hub.commits(), shared.hub.deliveries());
        if let (Some(pe), Some(pd)) = (entries, deliveries) {
            shared
                .stats
                .entries_per_sec
                .store(e.saturating_sub(pe), Ordering::Relaxed);
            shared
                .stats
                .deliveries_per_sec
                .store(d.saturating_sub(pd), Ordering::Relaxed);
        }
        (entries, deliveries) = (Some(e), Some(d));
        let now = shared.store.commit_stats().latency.snapshot();
        let start = window_start.get_or_insert_with(|| now.clone());
        ticks += 1;
        if ticks >= LATENCY_WINDOW {
            let p99 = now
                .since(start)
                .quantile(0.99)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
            shared.stats.commit_p99_us.store(p99, Ordering::Relaxed);
            *start = now;
            ticks = 0;
        }
    }
}
