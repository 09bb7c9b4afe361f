//! Counters of the cluster endpoint, kept for `chorusctl cluster status` and exported through
//! the `metrics` facade (the server installs the Prometheus recorder).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Which way a datagram went.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    In,
    Out,
}

/// The endpoint's counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagram bytes received.
    pub bytes_in: u64,
    /// Datagram bytes sent.
    pub bytes_out: u64,
    /// Datagrams dropped (no connection yet, membership busy, unknown kind).
    pub datagrams_dropped: u64,
    /// Peers refused (certificate, identity, cluster, version, too many handshakes).
    pub refused_peers: u64,
    /// Requests answered.
    pub requests_ok: u64,
    /// Requests that failed or timed out.
    pub requests_failed: u64,
}

impl Stats {
    pub(crate) fn datagram(&self, direction: Direction, len: usize) {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        let (count, bytes, label) = match direction {
            Direction::In => (&self.datagrams_in, &self.bytes_in, "in"),
            Direction::Out => (&self.datagrams_out, &self.bytes_out, "out"),
        };
        count.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(len, Ordering::Relaxed);
        metrics::counter!("chorus_cluster_datagrams_total", "direction" => label).increment(1);
        metrics::counter!("chorus_cluster_datagram_bytes_total", "direction" => label)
            .increment(len);
    }

    pub(crate) fn dropped(&self, reason: &'static str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(reason, "cluster datagram dropped");
        metrics::counter!("chorus_cluster_datagrams_dropped_total").increment(1);
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("chorus_cluster_refused_peers_total", "reason" => reason).increment(1);
    }

    pub(crate) fn request(&self, ok: bool) {
        let (counter, outcome) = if ok {
            (&self.requests_ok, "ok")
        } else {
            (&self.requests_failed, "error")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("chorus_cluster_requests_total", "outcome" => outcome).increment(1);
    }

    pub(crate) fn set_connections(&self, n: usize) {
        metrics::gauge!("chorus_cluster_peer_connections").set(n as f64);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            datagrams_in: get(&self.datagrams_in),
            datagrams_out: get(&self.datagrams_out),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            datagrams_dropped: get(&self.dropped),
            refused_peers: get(&self.refused),
            requests_ok: get(&self.requests_ok),
            requests_failed: get(&self.requests_failed),
        }
    }
}
