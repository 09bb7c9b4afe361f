//! The status sampler: entries and deliveries per second, and the commit p99 over the last ten
//! seconds, for `chorusctl status`.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// How often rates are sampled.
const SAMPLE: Duration = Duration::from_secs(1);
/// The window of the commit-latency quantile.
const LATENCY_WINDOW: u32 = 10;

/// Samples the rates until `stop`.
pub async fn sample(node: Weak<Node>, stop: CancellationToken) {
    let (mut entries, mut deliveries) = (None::<u64>, None::<u64>);
    let mut window_start = None;
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            () = tokio::time::sleep(SAMPLE) => {}
            () = stop.cancelled() => return,
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        let (e, d) = (node.hub().commits(), node.hub().deliveries());
        if let (Some(pe), Some(pd)) = (entries, deliveries) {
            node.stats()
                .entries_per_sec
                .store(e.saturating_sub(pe), Ordering::Relaxed);
            node.stats()
                .deliveries_per_sec
                .store(d.saturating_sub(pd), Ordering::Relaxed);
        }
        (entries, deliveries) = (Some(e), Some(d));
        let now = node.store().commit_stats().latency.snapshot();
        let start = window_start.get_or_insert_with(|| now.clone());
        ticks += 1;
        if ticks >= LATENCY_WINDOW {
            let p99 = now
                .since(start)
                .quantile(0.99)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
            node.stats().commit_p99_us.store(p99, Ordering::Relaxed);
            *start = now;
            ticks = 0;
        }
    }
}
