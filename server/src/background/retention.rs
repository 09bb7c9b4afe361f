//! Retention passes, and the sweep of idle per-address and per-user budgets, periodically.

use std::sync::Weak;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::unix_ms;
use crate::node::Node;

/// Applies retention policies, and forgets idle budgets, every `interval` until `stop`.
pub async fn run(node: Weak<Node>, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        node.sweep_idle_budgets();
        match node.store().run_retention(unix_ms()).await {
            Ok(report) if report.entries_removed > 0 => {
                node.search().rescan();
                tracing::info!(
                    channels = report.channels,
                    removed = report.entries_removed,
                    "retention pass"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}
