//! The writer: drains the outbound queue into the transport, many frames per write, and
//! closes with the queued close.

use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::codec::encode_frame_to_bytes;
use chorus_protocol::v1::{CloseCode, ServerEnvelope};

use super::{FrameSink, MAX_BATCH_BYTES, close};
use crate::ids::Transport;
use crate::outbound::{Batch, Outbound};

/// Drains the outbound queue into the transport, many frames per write, then closes with the
/// queued close: a `Disconnect` push, then the transport's close (WebSocket 4000 + code, QUIC
/// application code).
pub(super) async fn write_loop<Snk: FrameSink>(
    mut sink: Snk,
    outbound: Arc<Outbound>,
    transport: Transport,
    write_timeout: Duration,
) {
    let bytes_out = metrics::counter!("chorus_bytes_out_total", "transport" => transport.as_str());
    loop {
        let (bytes, raw) = match outbound.next(MAX_BATCH_BYTES).await {
            Batch::Frames(bytes) => (bytes, false),
            Batch::Raw(bytes) => (bytes, true),
            Batch::Close(c) => {
                if c.code == CloseCode::SlowConsumer {
                    metrics::counter!("chorus_slow_consumer_closes_total").increment(1);
                }
                let mut disconnect = c.code.disconnect(c.reason.clone());
                disconnect.reconnect_after_ms = c.reconnect_after_ms;
                let frame = encode_frame_to_bytes(&ServerEnvelope::disconnect(disconnect));
                let _ = tokio::time::timeout(write_timeout, sink.close(&c, frame)).await;
                return;
            }
        };
        bytes_out.increment(bytes.len() as u64);
        // A peer that stops reading but keeps its socket open must not hold the
        // connection forever: a write that cannot finish in the idle timeout ends it.
        // The deadline is armed only when the write has to wait: most writes finish at
        // once, and a timer per write cost 8 % of this loop.
        let mut send = std::pin::pin!(async {
            if raw {
                sink.send_raw(bytes).await
            } else {
                sink.send(bytes).await
            }
        });
        let sent = match futures_util::poll!(send.as_mut()) {
            std::task::Poll::Ready(done) => Ok(done),
            std::task::Poll::Pending => tokio::time::timeout(write_timeout, send).await,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(())) => {
                outbound.close(close(CloseCode::Normal, "write failed"));
                return;
            }
            Err(_) => {
                metrics::counter!("chorus_slow_consumer_closes_total").increment(1);
                outbound.close(close(CloseCode::SlowConsumer, "write timed out"));
                return;
            }
        }
    }
}
