//! Metric names and the handles hot paths keep (a leaf: imports nothing of the node). The HTTP
//! listener ([`crate::http`]) renders them as Prometheus text.
//!
//! Metric names, all prefixed `chorus_`:
//! - gauges: `connections{transport}`, `sessions`, `subscriptions`;
//! - counters: `publishes_total`, `deliveries_total`, `bytes_in_total{transport}`,
//!   `bytes_out_total{transport}`, `slow_consumer_closes_total`, `rate_limited_total{kind}`,
//!   `auth_failures_total{reason}`;
//! - histograms (seconds): `commit_seconds` (publish accepted to durable),
//!   `publish_to_delivery_seconds` (server time of the event to its push into subscriber queues).
//! - the store's group commit, copied at each scrape: counters `store_batches_total`,
//!   `store_requests_total`, `store_syncs_total`, `store_sync_microseconds_total`,
//!   `store_write_microseconds_total`, `store_memtables_freed_total`; gauges
//!   `store_sync_max_seconds`, `store_write_max_seconds`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Seconds buckets for latency histograms: 50 µs to 5 s.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The process-wide Prometheus recorder (metrics are global; one node per process in
/// production, several in tests share it).
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder is installed; ours then renders nothing new.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Handles of the metrics updated per message, registered once. The `metrics` macros look a
/// metric up in the recorder's registry on every call (hashing its name and labels), which
/// per message shows in the node's CPU profile.
pub struct HotMetrics {
    /// `chorus_deliveries_total`.
    pub deliveries: metrics::Counter,
    /// `chorus_publish_to_delivery_seconds`.
    pub publish_to_delivery: metrics::Histogram,
    /// `chorus_commit_seconds`.
    pub commit: metrics::Histogram,
    /// `chorus_publishes_total`.
    pub publishes: metrics::Counter,
}

impl HotMetrics {
    /// The handles, bound to [`recorder`] (installed first, so that none is a no-op handle).
    pub fn get() -> &'static HotMetrics {
        static HOT: OnceLock<HotMetrics> = OnceLock::new();
        HOT.get_or_init(|| {
            recorder();
            HotMetrics {
                deliveries: metrics::counter!("chorus_deliveries_total"),
                publish_to_delivery: metrics::histogram!("chorus_publish_to_delivery_seconds"),
                commit: metrics::histogram!("chorus_commit_seconds"),
                publishes: metrics::counter!("chorus_publishes_total"),
            }
        })
    }
}

/// `/metrics`, `/healthz`, `/readyz`.
/// Copies the store's group-commit counters into the registry just before a scrape: the store
/// keeps them as plain atomics (it has no metrics dependency), and a scrape sees them exact.
pub fn store_metrics(stats: &chorus_storage::CommitStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let micros = |nanos: &std::sync::atomic::AtomicU64| nanos.load(Relaxed) / 1_000;
    metrics::counter!("chorus_store_batches_total").absolute(stats.batches.load(Relaxed));
    metrics::counter!("chorus_store_requests_total").absolute(stats.requests.load(Relaxed));
    metrics::counter!("chorus_store_syncs_total").absolute(stats.syncs.load(Relaxed));
    metrics::counter!("chorus_store_sync_microseconds_total").absolute(micros(&stats.sync_nanos));
    metrics::counter!("chorus_store_write_microseconds_total").absolute(micros(&stats.write_nanos));
    metrics::gauge!("chorus_store_sync_max_seconds")
        .set(stats.max_sync_nanos.load(Relaxed) as f64 / 1e9);
    metrics::gauge!("chorus_store_write_max_seconds")
        .set(stats.max_write_nanos.load(Relaxed) as f64 / 1e9);
}
