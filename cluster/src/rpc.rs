//! A request from this node: one stream, one Request frame out, one Response frame back, within
//! a deadline.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chorus_protocol::peer::{Request, Response, request, response};

use crate::error::ClusterError;
use crate::id::NodeId;
use crate::wire::{read_one, write_one};

use crate::handshake::connect;
use crate::peers::{Inner, lock};

pub(crate) async fn request(
    inner: &Arc<Inner>,
    node: &NodeId,
    body: request::Body,
    deadline: Duration,
) -> Result<response::Body, ClusterError> {
    let at = node.to_string();
    let (peer, mut send, mut recv) = loop {
        let peer = match inner.connected(node) {
            Some(p) => p,
            None => {
                let addr = lock(&inner.known)
                    .get(node)
                    .copied()
                    .ok_or_else(|| ClusterError::UnknownNode(at.clone()))?;
                match connect(inner, addr).await {
                    Ok(p) => p,
                    Err(ClusterError::Closed) => return Err(ClusterError::Closed),
                    Err(e) => {
                        tracing::debug!(peer = %node, error = %e, "dial failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        match peer.conn.open_bi().await {
            Ok((s, r)) => break (peer, s, r),
            Err(_) => {
                inner.unregister(&peer);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let id = inner.next_request.fetch_add(1, Ordering::Relaxed);
    let req = Request {
        id,
        deadline_ms: u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX),
        body: Some(body),
    };
    write_one(&mut send, &req, &at).await?;
    let resp: Response = read_one(&mut recv, inner.limits.max_frame_bytes, &at).await?;
    inner.heard(&peer);
    match resp.body {
        _ if resp.id != id && resp.id != 0 => Err(ClusterError::BadFrame(format!(
            "response {} to request {id}",
            resp.id
        ))),
        Some(response::Body::Error(e)) => Err(ClusterError::Remote {
            peer: at,
            code: e.code(),
            message: e.message,
        }),
        Some(b) => Ok(b),
        None => Err(ClusterError::BadFrame("empty response".into())),
    }
}
