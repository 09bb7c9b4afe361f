//! A connection's life after its handshake: answering the peer's requests (one stream each)
//! and forwarding its membership datagrams.

use std::sync::Arc;

use chorus_protocol::peer::{
    self, PeerError, PeerErrorCode, Pong, Request, Response, request, response,
};

use crate::stats::Direction;
use crate::wire::{read_one, write_one};

use crate::peers::{Inner, Peer};

/// Answers the peer's requests and forwards its datagrams until the connection ends.
pub(crate) async fn serve(inner: Arc<Inner>, peer: Arc<Peer>) {
    let requests = async {
        while let Ok((send, recv)) = peer.conn.accept_bi().await {
            inner.heard(&peer);
            tokio::spawn(answer(inner.clone(), peer.clone(), send, recv));
        }
    };
    let datagrams = async {
        while let Ok(d) = peer.conn.read_datagram().await {
            inner.heard(&peer);
            inner.stats.datagram(Direction::In, d.len());
            match d.first() {
                Some(&peer::DATAGRAM_MEMBERSHIP) => {
                    if inner.membership.try_send(d.slice(1..)).is_err() {
                        inner.stats.dropped("membership busy");
                    }
                }
                _ => inner.stats.dropped("unknown datagram kind"),
            }
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = datagrams => {}
        _ = inner.stop.cancelled() => {}
    }
    tracing::debug!(peer = %peer.id, reason = ?peer.conn.close_reason(), "cluster connection ended");
    inner.unregister(&peer);
}

async fn answer(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let at = peer.id.to_string();
    let read = tokio::time::timeout(
        inner.limits.request_timeout,
        read_one::<Request>(&mut recv, inner.limits.max_frame_bytes, &at),
    )
    .await;
    let error = |code: PeerErrorCode, message: String| {
        response::Body::Error(PeerError {
            code: code.into(),
            message,
        })
    };
    let (id, body) = match read {
        Ok(Ok(req)) => {
            let body = match req.body {
                Some(request::Body::Ping(p)) => response::Body::Pong(Pong {
                    payload: p.payload,
                    node: Some(inner.me.info.clone()),
                }),
                Some(request::Body::Raft(r)) => match inner.raft.get() {
                    // Bounded by the caller's deadline as well as ours: past it nobody waits.
                    Some(service) => match tokio::time::timeout(
                        inner
                            .limits
                            .request_timeout
                            .min(std::time::Duration::from_millis(u64::from(req.deadline_ms))),
                        service.call(peer.id.clone(), r),
                    )
                    .await
                    {
                        Ok(Ok(reply)) => response::Body::Raft(reply),
                        Ok(Err(e)) => response::Body::Error(e),
                        Err(_) => error(
                            PeerErrorCode::DeadlineExceeded,
                            "not answered within the request's deadline".into(),
                        ),
                    },
                    None => error(
                        PeerErrorCode::NoSuchGroup,
                        "consensus does not run on this node".into(),
                    ),
                },
                None => error(PeerErrorCode::UnknownRequest, "unknown request".into()),
            };
            (req.id, body)
        }
        Ok(Err(e)) => (0, error(PeerErrorCode::BadFrame, e.to_string())),
        Err(_) => (
            0,
            error(
                PeerErrorCode::DeadlineExceeded,
                "request not received in time".into(),
            ),
        ),
    };
    let _ = write_one(
        &mut send,
        &Response {
            id,
            body: Some(body),
        },
        &at,
    )
    .await;
}
