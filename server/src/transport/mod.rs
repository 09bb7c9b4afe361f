//! The transports a client connects over, each feeding frames to [`crate::connection`]:
//! - [`tcp`]: the TCP listener (admission, TLS, then WebSocket);
//! - [`ws`]: WebSocket framing over TCP or TLS;
//! - [`quic`]: the QUIC endpoint, one bidirectional stream per connection;
//! - [`tls`], [`tls_stream`]: certificates and the TLS stream.

pub mod quic;
pub mod tcp;
pub mod tls;
pub mod tls_stream;
pub mod ws;

use std::net::SocketAddr;

/// The outcome of one transport handshake step (TLS, WebSocket upgrade, QUIC) run under the
/// handshake deadline. A failure is the peer's business, not the node's: logged at debug level,
/// and the caller drops the connection.
pub(crate) fn handshake_step<T, E: std::fmt::Display>(
    outcome: Result<Result<T, E>, tokio::time::error::Elapsed>,
    peer: SocketAddr,
    step: &str,
) -> Option<T> {
    match outcome {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "{step} failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "{step} timed out");
            None
        }
    }
}
