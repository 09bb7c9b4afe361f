//! The HTTP listener: `/metrics` (Prometheus text of [`crate::metrics`]), `/healthz` and
//! `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::{recorder, store_metrics};
use crate::node::Node;
use crate::transport::quic::SocketInfo;

/// What the HTTP handlers read.
#[derive(Clone)]
struct Http {
    node: Arc<Node>,
    /// The QUIC socket, when QUIC is on (its drops go into `/metrics`).
    quic_socket: Option<Arc<SocketInfo>>,
}

/// The routes, over `node`.
pub fn router(node: Arc<Node>, quic_socket: Option<Arc<SocketInfo>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Http { node, quic_socket })
}

async fn metrics_text(State(http): State<Http>) -> impl IntoResponse {
    let store = http.node.store();
    store_metrics(store.commit_stats());
    http.node.search().export_metrics();
    crate::cluster::export_metrics(http.node.cluster().map(|c| c.as_ref()));
    metrics::counter!("chorus_store_memtables_freed_total").absolute(store.memtables_freed());
    if let Some(socket) = &http.quic_socket {
        quic_socket_metrics(socket);
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        recorder().render(),
    )
}

/// The QUIC socket's kernel counters, read at scrape time: what the kernel granted and what it
/// dropped for a full receive buffer (each drop costs the sender a retransmission and a smaller
/// congestion window; steady growth means `net.core.rmem_max` is too small for the load).
fn quic_socket_metrics(socket: &SocketInfo) {
    metrics::gauge!("chorus_quic_socket_receive_buffer_bytes")
        .set(socket.receive_buffer_bytes as f64);
    if let Some(drops) = socket.receive_drops() {
        metrics::counter!("chorus_quic_receive_drops_total").absolute(drops);
    }
}

/// Ready when the store accepts writes, the node is not shutting down and, in a cluster, it
/// has joined (another member is alive, or it is the first node and has no seed).
async fn ready(State(http): State<Http>) -> impl IntoResponse {
    if http.node.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned());
    }
    if let Some(cluster) = http.node.cluster()
        && !cluster.joined()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster: not joined (no other member reachable)\n".to_owned(),
        );
    }
    match http.node.store().health() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

/// Binds the HTTP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
