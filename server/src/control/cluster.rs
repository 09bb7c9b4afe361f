//! `cluster.status` and `cluster.ping`.

use std::time::Duration;

use chorus_cluster::NodeId;
use serde_json::{Value, json};

use super::wire::ControlError;
use crate::node::Node;

fn cluster(node: &Node) -> Result<&chorus_cluster::Cluster, ControlError> {
    node.cluster().map(|c| c.as_ref()).ok_or_else(|| {
        ControlError::new(
            "unimplemented",
            "this node is not in a cluster (no [cluster] section)",
        )
    })
}

/// Members, their state, connection, RTT, last heard and version; the endpoint's counters.
pub(crate) async fn status(node: &Node) -> Result<Value, ControlError> {
    let status = cluster(node)?.status().await;
    serde_json::to_value(status).map_err(ControlError::failed)
}

/// A request/response round trip to another node.
pub(crate) async fn ping(node: &Node, target: &str) -> Result<Value, ControlError> {
    let c = cluster(node)?;
    let target = NodeId::new(target).map_err(|e| ControlError::new("invalid", e.to_string()))?;
    let rtt = c
        .endpoint()
        .ping(&target, Some(Duration::from_secs(5)))
        .await
        .map_err(|e| ControlError::new("unavailable", e.to_string()))?;
    Ok(json!({ "node": target.as_str(), "rtt_ms": rtt.as_secs_f64() * 1000.0 }))
}
