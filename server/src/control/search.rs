//! `search.status` and `search.reindex`.

use serde_json::{Value, json};

use super::wire::ControlError;
use crate::node::Node;

/// The index as it stands.
pub(crate) fn status(node: &Node) -> Result<Value, ControlError> {
    #[cfg(feature = "search")]
    {
        let Some((index, _)) = node.search().index() else {
            return Err(off());
        };
        let s = index.status();
        Ok(json!({
            "generation": s.generation,
            "analyzer": s.analyzer,
            "docs": s.docs,
            "channels": s.channels,
            "disk_bytes": s.disk_bytes,
            "lag_entries": s.lag_entries,
            "lag_ms": u64::try_from(s.lag.as_millis()).unwrap_or(u64::MAX),
            "notified": s.notified,
            "indexed": s.indexed,
            "commits": s.commits,
            "rebuild": s.rebuild.map(|r| json!({
                "generation": r.generation,
                "channels_done": r.channels_done,
                "elapsed_ms": u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
            })),
            "failed": s.failed,
        }))
    }
    #[cfg(not(feature = "search"))]
    {
        let _ = node;
        Err(off())
    }
}

/// Starts a rebuild; returns at once with the generation being built.
pub(crate) async fn reindex(node: &Node) -> Result<Value, ControlError> {
    #[cfg(feature = "search")]
    {
        let Some((index, _)) = node.search().index() else {
            return Err(off());
        };
        match index.reindex().await {
            Ok(generation) => Ok(json!({ "generation": generation, "started": true })),
            Err(e @ chorus_search::SearchError::ReindexRunning) => {
                Err(ControlError::new("conflict", e.to_string()))
            }
            Err(e) => Err(ControlError::failed(e)),
        }
    }
    #[cfg(not(feature = "search"))]
    {
        let _ = node;
        Err(off())
    }
}

fn off() -> ControlError {
    ControlError::new("unimplemented", "search is off on this node")
}
