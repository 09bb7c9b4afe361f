//! The per-second timeline of a run's deliveries.

use serde::Serialize;

/// The timeline covers at most this many seconds from the start (a day); later arrivals are in
/// the histogram only. Bounds its memory whatever the duration asked for.
pub(crate) const MAX_TIMELINE_SECONDS: u64 = 86_400;

/// One second of a run's deliveries: where in time a tail happened (a store stall, a flush, a
/// neighbour's burst), which the percentiles of the whole run cannot say.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Second {
    /// Whole seconds since the actors started.
    pub second: u64,
    /// Latencies recorded in it.
    pub count: u64,
    /// The largest, microseconds.
    pub max_us: u64,
    /// How many were above [`SLOW_US`](super::SLOW_US).
    pub slow: u64,
}

impl Second {
    /// Adds another record of the same second.
    pub(crate) fn add(&mut self, other: &Second) {
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
        self.slow += other.slow;
    }
}

/// The entry of `second` in a timeline indexed by second, adding empty seconds up to it.
pub(crate) fn second_mut(timeline: &mut Vec<Second>, second: u64) -> &mut Second {
    let i = second as usize;
    if timeline.len() <= i {
        let from = timeline.len() as u64;
        timeline.extend((from..=second).map(|second| Second {
            second,
            ..Second::default()
        }));
    }
    &mut timeline[i]
}
