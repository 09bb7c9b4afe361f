//! Live node figures for `chorusctl status`: connections per transport, and the rates
//! [`crate::background::status`] samples once a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::Transport;

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
    stats: Arc<NodeStats>,
    transport: Transport,
}

impl ConnectionGauge {
    /// Counts a connection.
    pub fn new(stats: Arc<NodeStats>, transport: Transport) -> Self {
        stats.counter(transport).fetch_add(1, Ordering::Relaxed);
        Self { stats, transport }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.stats
            .counter(self.transport)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeStats {
    fn counter(&self, transport: Transport) -> &AtomicU64 {
        match transport {
            Transport::Quic => &self.quic_connections,
            Transport::Ws => &self.ws_connections,
        }
    }
}
