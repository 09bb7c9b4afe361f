//! Latencies: HDR histograms per shard, percentiles, the slow threshold.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::timeline::*;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// A histogram for microsecond latencies up to an hour.
#[allow(clippy::expect_used)] // Constant, valid bounds: this cannot fail.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records a duration in microseconds (clamped into range); returns the value recorded.
pub fn record(h: &mut Histogram<u64>, d: Duration) -> u64 {
    let us = u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 3_600_000_000);
    let _ = h.record(us);
    us
}

/// How many histograms a [`Latencies`] keeps: more than the tester's worker threads, so that
/// each thread usually has one to itself.
pub(crate) const LATENCY_SHARDS: usize = 16;

thread_local! {
    /// This thread's shard of every [`Latencies`].
    static LATENCY_SHARD: usize = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % LATENCY_SHARDS
    };
}

/// A latency above this counts as slow in the [`Second`] it arrived in.
pub const SLOW_US: u64 = 10_000;

/// One thread's share: its histogram and its timeline.
#[derive(Debug)]
pub(crate) struct Shard {
    histogram: Histogram<u64>,
    timeline: Vec<Second>,
}

/// Latency histograms shared by all actors, one per thread. A histogram per actor (188 KiB
/// each) was most of the tester's memory: ~190 MiB of 233 at 1,000 subscribers (its CPU per
/// delivery did not measurably change). A thread's own histogram is uncontended.
#[derive(Debug)]
pub struct Latencies {
    start: Instant,
    shards: Box<[std::sync::Mutex<Shard>]>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::starting(Instant::now())
    }
}

impl Latencies {
    /// Empty; the timeline counts seconds from `start`.
    pub fn starting(start: Instant) -> Self {
        Self {
            start,
            shards: (0..LATENCY_SHARDS)
                .map(|_| {
                    std::sync::Mutex::new(Shard {
                        histogram: histogram(),
                        timeline: Vec::new(),
                    })
                })
                .collect(),
        }
    }

    /// Records a latency that ended now.
    pub fn record(&self, d: Duration) {
        self.record_ending(d, Instant::now());
    }

    /// Records a latency that ended at `at` (a clock read the caller already made).
    pub fn record_ending(&self, d: Duration, at: Instant) {
        self.record_at(d, at.saturating_duration_since(self.start).as_secs());
    }

    /// Records a latency that ended in the given second of the run, into the calling thread's
    /// shard.
    pub fn record_at(&self, d: Duration, second: u64) {
        let shard = LATENCY_SHARD.with(|s| *s);
        let mut shard = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let us = record(&mut shard.histogram, d);
        if second < MAX_TIMELINE_SECONDS {
            second_mut(&mut shard.timeline, second).add(&Second {
                second,
                count: 1,
                max_us: us,
                slow: u64::from(us > SLOW_US),
            });
        }
    }

    /// Everything recorded so far, in one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            // Same bounds everywhere: adding cannot fail.
            let _ = all.add(&shard.histogram);
        }
        all
    }

    /// Every thread's timeline added up, one entry per second up to the last with a record.
    pub fn timeline(&self) -> Vec<Second> {
        let mut all: Vec<Second> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for s in &shard.timeline {
                second_mut(&mut all, s.second).add(s);
            }
        }
        all
    }
}
