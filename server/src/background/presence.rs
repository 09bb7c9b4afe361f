//! The presence pump: pushes the presence of users whose state changed to their watchers,
//! at most once per user per [`PUSH_INTERVAL`] (the latest state wins), until the node stops.

use std::sync::Weak;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// The shortest time between two pushes of one user's presence.
pub const PUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the pump looks for changes.
const TICK: Duration = Duration::from_millis(200);

/// Runs the pump until `stop`.
pub async fn run(node: Weak<Node>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = stop.cancelled() => return,
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        let due = node
            .hub()
            .presence()
            .take_due(tokio::time::Instant::now(), PUSH_INTERVAL);
        for user in due {
            crate::chat::presence::push_presence(&node, &user);
        }
    }
}
