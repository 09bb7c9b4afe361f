//! Opening a connection: dialling a peer, or accepting one, and the Hello exchange that checks
//! the versions, the cluster and that the node is the one its certificate names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use chorus_protocol::peer::{
    self, Hello, HelloReply, PeerError, PeerErrorCode, Welcome, hello_reply,
};

use crate::error::ClusterError;
use crate::id::NodeId;
use crate::tls::{SERVER_NAME, certificate_names};
use crate::wire::{read_one, write_one};

use crate::peers::{Inner, MAX_KNOWN, Peer, REDIAL_AFTER, close, lock};
use crate::serve::serve;

pub(crate) fn dial_in_background(inner: &Arc<Inner>, addr: SocketAddr) {
    {
        let mut dials = lock(&inner.dials);
        if dials.len() >= MAX_KNOWN && !dials.contains_key(&addr) {
            return;
        }
        let state = dials.entry(addr).or_default();
        if state.retry_after.is_some_and(|t| Instant::now() < t) || state.lock.try_lock().is_err() {
            return;
        }
        state.retry_after = Some(Instant::now() + REDIAL_AFTER);
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        if let Err(e) = connect(&inner, addr).await {
            tracing::debug!(%addr, error = %e, "background dial failed");
        }
    });
}

pub(crate) async fn connect(
    inner: &Arc<Inner>,
    addr: SocketAddr,
) -> Result<Arc<Peer>, ClusterError> {
    if inner.stop.is_cancelled() {
        return Err(ClusterError::Closed);
    }
    let dial = inner.dial_lock(addr);
    let _dialing = dial.lock().await;
    if let Some(p) = inner.connected_at(addr) {
        return Ok(p);
    }
    let unreachable = |reason: String| ClusterError::Unreachable { addr, reason };
    let connecting = inner
        .quinn
        .connect_with(inner.client.clone(), addr, SERVER_NAME)
        .map_err(|e| unreachable(e.to_string()))?;
    let handshake = async {
        let conn = connecting.await.map_err(|e| {
            if matches!(e, quinn::ConnectionError::TransportError(_)) {
                inner.stats.refused("tls");
            }
            unreachable(e.to_string())
        })?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let hello = Hello {
            min_version: peer::MIN_VERSION,
            max_version: peer::MAX_VERSION,
            cluster_id: inner.me.cluster_id.clone(),
            node: Some(inner.me.info.clone()),
        };
        let at = addr.to_string();
        write_one(&mut send, &hello, &at).await?;
        let reply: HelloReply = read_one(&mut recv, inner.limits.max_frame_bytes, &at).await?;
        Ok::<_, ClusterError>((conn, reply))
    };
    let (conn, reply) = tokio::time::timeout(inner.limits.handshake_timeout, handshake)
        .await
        .map_err(|_| unreachable("handshake timed out".into()))??;
    let welcome = match reply.result {
        Some(hello_reply::Result::Welcome(w)) => w,
        Some(hello_reply::Result::Refused(e)) => {
            conn.close(close::REFUSED, b"refused");
            return Err(ClusterError::Refused {
                addr,
                code: e.code(),
                message: e.message,
            });
        }
        None => {
            conn.close(close::REFUSED, b"empty reply");
            return Err(ClusterError::BadFrame("empty hello reply".into()));
        }
    };
    let info = welcome.node.unwrap_or_default();
    let id = match NodeId::new(info.node_id.clone()) {
        Ok(id) if id != inner.me.id && certificate_names(&conn, &id) => id,
        _ => {
            inner.refuse(
                &conn,
                "the node id does not match the certificate",
                "identity",
            );
            return Err(unreachable(format!(
                "the node at {addr} calls itself {:?}, which its certificate does not name (or is us)",
                info.node_id
            )));
        }
    };
    let peer = Arc::new(Peer {
        id,
        info,
        version: welcome.version,
        conn,
        dialled: true,
        last_heard_ms: AtomicU64::new(inner.now_ms()),
    });
    let kept = inner.register(peer.clone());
    if Arc::ptr_eq(&kept, &peer) {
        tokio::spawn(serve(inner.clone(), peer));
    }
    lock(&inner.dials).entry(addr).or_default().retry_after = None;
    Ok(kept)
}

pub(crate) async fn accept_loop(inner: Arc<Inner>) {
    loop {
        let incoming = tokio::select! {
            _ = inner.stop.cancelled() => return,
            i = inner.quinn.accept() => match i {
                Some(i) => i,
                None => return,
            },
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            // The permit covers the handshake only, not the connection's life.
            let Ok(permit) = inner.handshakes.try_acquire() else {
                inner.stats.refused("handshakes");
                incoming.refuse();
                return;
            };
            let limit = inner.limits.handshake_timeout;
            let accepted = tokio::time::timeout(limit, accept(&inner, incoming)).await;
            drop(permit);
            match accepted {
                Ok(Ok(peer)) => serve(inner, peer).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "cluster handshake failed"),
                Err(_) => inner.stats.refused("handshake timeout"),
            }
        });
    }
}

async fn accept(inner: &Arc<Inner>, incoming: quinn::Incoming) -> Result<Arc<Peer>, ClusterError> {
    let remote = incoming.remote_address();
    let conn = incoming.await.map_err(|e| {
        // A certificate the cluster CA did not sign ends here, inside the TLS handshake.
        inner.stats.refused("tls");
        tracing::warn!(%remote, error = %e, "refused a cluster connection");
        ClusterError::Unreachable {
            addr: remote,
            reason: e.to_string(),
        }
    })?;
    let at = remote.to_string();
    let (mut send, mut recv) =
        conn.accept_bi()
            .await
            .map_err(|e| ClusterError::ConnectionLost {
                peer: at.clone(),
                reason: e.to_string(),
            })?;
    let hello: Hello = match read_one(&mut recv, inner.limits.max_frame_bytes, &at).await {
        Ok(h) => h,
        Err(e) => {
            inner.refuse(&conn, "bad hello", "bad frame");
            return Err(e);
        }
    };
    let info = hello.node.clone().unwrap_or_default();
    let checked = if hello.max_version < peer::MIN_VERSION || hello.min_version > peer::MAX_VERSION
    {
        Err((
            PeerErrorCode::Version,
            format!(
                "versions {}..={} and {}..={} do not meet",
                hello.min_version,
                hello.max_version,
                peer::MIN_VERSION,
                peer::MAX_VERSION
            ),
        ))
    } else if hello.cluster_id != inner.me.cluster_id {
        Err((
            PeerErrorCode::ClusterMismatch,
            format!("this is cluster {:?}", inner.me.cluster_id),
        ))
    } else {
        match NodeId::new(info.node_id.clone()) {
            Ok(id) if id != inner.me.id && certificate_names(&conn, &id) => Ok(id),
            _ => Err((
                PeerErrorCode::IdentityMismatch,
                "the node id is not the one the certificate names".into(),
            )),
        }
    };
    let id = match checked {
        Ok(id) => id,
        Err((code, message)) => {
            let reply = HelloReply {
                result: Some(hello_reply::Result::Refused(PeerError {
                    code: code.into(),
                    message: message.clone(),
                })),
            };
            let _ = write_one(&mut send, &reply, &at).await;
            let _ = tokio::time::timeout(Duration::from_millis(200), send.stopped()).await;
            let reason = match code {
                PeerErrorCode::Version => "version",
                PeerErrorCode::ClusterMismatch => "cluster",
                _ => "identity",
            };
            inner.refuse(&conn, &message, reason);
            return Err(ClusterError::Refused {
                addr: remote,
                code,
                message,
            });
        }
    };
    let reply = HelloReply {
        result: Some(hello_reply::Result::Welcome(Welcome {
            version: hello.max_version.min(peer::MAX_VERSION),
            node: Some(inner.me.info.clone()),
        })),
    };
    write_one(&mut send, &reply, &at).await?;
    let peer = Arc::new(Peer {
        id,
        version: hello.max_version.min(peer::MAX_VERSION),
        info,
        conn,
        dialled: false,
        last_heard_ms: AtomicU64::new(inner.now_ms()),
    });
    let kept = inner.register(peer.clone());
    if Arc::ptr_eq(&kept, &peer) {
        Ok(peer)
    } else {
        Err(ClusterError::ConnectionLost {
            peer: peer.id.to_string(),
            reason: "duplicate connection".into(),
        })
    }
}
