//! The TCP listener: accept with backoff, admission before any work, then TLS (when on) and
//! the WebSocket upgrade.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{handshake_step, tls_stream, ws};
use crate::admission::Admission;
use crate::node::Node;

/// Connections the kernel may hold for `accept` (capped by `net.core.somaxconn`). Tokio's
/// default of 1,024 overflowed during connect bursts: the dropped SYNs came back a second later
/// and put a second into the p99 connect time.
const LISTEN_BACKLOG: u32 = 8_192;

/// A TCP listener on `addr` with a deep accept backlog.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts TCP connections until `stop`; each admitted one becomes a WebSocket connection,
/// over TLS when `tls` is set.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    node: Arc<Node>,
    stop: CancellationToken,
    connections_stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(admission) = node.door().admit(peer, &node.limits()) else {
            // Over a limit: drop before any work (no TLS, no upgrade).
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let node = node.clone();
        let tls = tls.clone();
        let stop = connections_stop.clone();
        tracker.spawn(async move {
            // Each branch boxed: the task's own size is that of its largest branch (a TLS
            // stream alone is over a KiB), and an idle plain connection should not pay for it.
            match tls {
                None => Box::pin(ws::serve(node, tcp, peer, stop, admission)).await,
                Some(config) => Box::pin(serve_tls(node, config, tcp, peer, stop, admission)).await,
            }
        });
    }
}

/// The TLS handshake within the handshake deadline, then the WebSocket connection over it.
async fn serve_tls(
    node: Arc<Node>,
    config: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
    admission: Admission,
) {
    let deadline = Duration::from_millis(u64::from(node.limits().handshake_timeout_ms));
    // Boxed: the TLS handshake's state is freed once done instead of staying in this future;
    // and the stream is taken out of the result before the long await below, so that no
    // temporary keeps room for it here.
    let accepted = tokio::time::timeout(deadline, Box::pin(tls_stream::accept(config, tcp))).await;
    let Some(stream) = handshake_step(accepted, peer, "TLS handshake") else {
        return;
    };
    Box::pin(ws::serve(node, stream, peer, stop, admission)).await;
}
