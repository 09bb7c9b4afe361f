//! What the writer counts: batches, requests, syncs, their times, and a histogram of the
//! time from queueing to durable.

use std::sync::atomic::Ordering;
use std::time::Duration;

/// Counters the writer keeps, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Batches made durable.
    pub batches: std::sync::atomic::AtomicU64,
    /// Requests made durable.
    pub requests: std::sync::atomic::AtomicU64,
    /// Syncs issued.
    pub syncs: std::sync::atomic::AtomicU64,
    /// Time spent in engine writes, in nanoseconds.
    pub write_nanos: std::sync::atomic::AtomicU64,
    /// Time spent in syncs, in nanoseconds.
    pub sync_nanos: std::sync::atomic::AtomicU64,
    /// The longest write, in nanoseconds.
    pub max_write_nanos: std::sync::atomic::AtomicU64,
    /// The longest sync, in nanoseconds.
    pub max_sync_nanos: std::sync::atomic::AtomicU64,
    /// Time from queueing to the durable answer, per request.
    pub latency: LatencyHistogram,
}

/// Buckets of a latency histogram: bucket `i` holds latencies in `[2^(i-1), 2^i)` microseconds
/// (bucket 0: under 1 µs), the last one everything longer.
const LATENCY_BUCKETS: usize = 40;

/// A lock-free histogram with power-of-two buckets: cheap enough for every commit, precise to a
/// factor of two, which is what an operator's p99 needs.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [std::sync::atomic::AtomicU64; LATENCY_BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    pub(crate) fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = (64 - micros.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far; subtract an earlier snapshot for a window.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// Counts of a [`LatencyHistogram`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencySnapshot {
    counts: [u64; LATENCY_BUCKETS],
}

impl LatencySnapshot {
    /// The counts recorded between `earlier` and this snapshot.
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
        }
    }

    /// Requests counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(1u64 << i.min(63)));
            }
        }
        None
    }
}

#[cfg(test)]
mod latency_tests {
    use super::*;

    #[test]
    fn quantiles_come_from_power_of_two_buckets() {
        let h = LatencyHistogram::default();
        let start = h.snapshot();
        assert_eq!(start.quantile(0.99), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(300)); // bucket [256, 512)
        }
        h.record(Duration::from_millis(3)); // [2048, 4096)
        h.record(Duration::from_secs(3600 * 24 * 365)); // the last bucket
        let window = h.snapshot().since(&start);
        assert_eq!(window.count(), 100);
        assert_eq!(window.quantile(0.5), Some(Duration::from_micros(512)));
        assert_eq!(window.quantile(0.99), Some(Duration::from_micros(4096)));
        assert_eq!(window.quantile(1.0), Some(Duration::from_micros(1 << 39)));
        assert_eq!(h.snapshot().since(&h.snapshot()).count(), 0);
    }
}
