//! QUIC: the same protocol over one bidirectional stream (ALPN chorus/1), with frames cut
//! anywhere; a message published over WebSocket reaches a QUIC subscriber and back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::BytesMut;
use chorus_protocol::codec::{FrameDecoder, encode_frame};
use chorus_protocol::limits::{MAX_SERVER_FRAME_BYTES, QUIC_ALPN};
use chorus_protocol::v1::{
    self, ChannelKind, ClientEnvelope, CloseCode, ServerEnvelope, client_envelope::Request, push,
    reply, server_envelope,
};
use chorus_server::config::Config;
use rustls_pki_types::pem::PemObject;

struct QuicClient {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    next_id: u64,
    connection: quinn::Connection,
}

impl QuicClient {
    /// Connects from an endpoint that accepts UDP payloads up to `max_udp_payload` bytes
    /// (advertised to the node, which caps its MTU discovery with it; quinn's default is 1,472).
    async fn connect_with(
        addr: std::net::SocketAddr,
        cert: &std::path::Path,
        max_udp_payload: u16,
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![QUIC_ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(max_udp_payload)
            .unwrap();
        let mut endpoint = quinn::Endpoint::new(
            endpoint_config,
            None,
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            quinn::default_runtime().unwrap(),
        )
        .unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connection = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
        let (send, recv) = connection.open_bi().await.unwrap();
        Self {
            send,
            recv,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(MAX_SERVER_FRAME_BYTES as usize),
            next_id: 1,
            connection,
        }
    }

    /// Sends a request, written one byte at a time to exercise reassembly.
    async fn send(&mut self, request: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = BytesMut::new();
        encode_frame(&ClientEnvelope::new(id, request), &mut buf);
        for byte in buf.iter() {
            self.send.write_all(&[*byte]).await.unwrap();
        }
        id
    }

    async fn next(&mut self) -> Option<ServerEnvelope> {
        loop {
            if let Some(env) = self
                .decoder
                .decode::<ServerEnvelope>(&mut self.buf)
                .unwrap()
            {
                return Some(env);
            }
            let chunk = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.recv.read_chunk(65536, true),
            )
            .await
            .expect("no data within 10 s");
            match chunk {
                Ok(Some(c)) => self.buf.extend_from_slice(&c.bytes),
                _ => return None,
            }
        }
    }

    async fn request(&mut self, request: Request) -> reply::Result {
        let id = self.send(request).await;
        loop {
            let env = self.next().await.expect("stream ended before the reply");
            if let Some(server_envelope::Kind::Reply(r)) = env.kind
                && r.request_id == id
            {
                return r.result.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_and_websocket_clients_share_channels() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut q, mut alice) = bob_on_quic_alice_on_wss(dir.path(), "mixed", 1472).await;
    let ack = common::appended(alice.publish("mixed", "k1", "over websocket").await);
    let event = loop {
        match q.next().await.unwrap().kind {
            Some(server_envelope::Kind::Push(v1::Push {
                push: Some(push::Push::Event(e)),
            })) => break e,
            _ => continue,
        }
    };
    assert_eq!(
        (event.seq, common::text(&event)),
        (ack.seq, "over websocket")
    );
    // And back: QUIC publishes, WebSocket subscriber receives.
    alice.subscribe("mixed", Some((ack.epoch, ack.seq))).await;
    let r = q
        .request(Request::Publish(v1::Publish {
            channel_id: "mixed".into(),
            message: Some(v1::Message {
                client_msg_id: "q1".into(),
                text: "over quic".into(),
                ..Default::default()
            }),
        }))
        .await;
    let quic_ack = common::appended(r);
    let e = alice.next_event().await;
    assert_eq!((e.seq, common::text(&e)), (quic_ack.seq, "over quic"));

    // Shutdown closes the QUIC connection with GOING_AWAY as its application code.
    let conn = q.connection.clone();
    server.shutdown().await;
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                u64::from(c.error_code),
                u64::from(CloseCode::GoingAway.quic_code())
            );
        }
        other => panic!("unexpected close {other:?}"),
    }
}

/// A client that accepts 16 KiB datagrams gets them from the node once MTU discovery has run
/// (loopback carries them), and `/metrics` shows the QUIC socket's buffer and its drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_datagram_clients_get_large_packets_and_metrics_show_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut q, mut alice) = bob_on_quic_alice_on_wss(dir.path(), "big", 16 * 1024).await;
    // MTU discovery probes on its own after the handshake (one round trip per step). It is
    // the node's, and nothing a client can observe tells when it has run: a fixed wait.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let before = q.connection.stats().udp_rx;
    let body = "x".repeat(15_000);
    for i in 0..6 {
        common::appended(alice.publish("big", &format!("k{i}"), &body).await);
    }
    let mut received = 0;
    while received < 6 {
        if let Some(server_envelope::Kind::Push(v1::Push {
            push: Some(push::Push::Event(e)),
        })) = q.next().await.unwrap().kind
        {
            assert_eq!(common::text(&e).len(), body.len());
            received += 1;
        }
    }
    let after = q.connection.stats().udp_rx;
    let (bytes, datagrams) = (
        after.bytes - before.bytes,
        after.datagrams - before.datagrams,
    );
    assert!(
        bytes / datagrams.max(1) > 1472,
        "{bytes} bytes in {datagrams} datagrams: the node kept to Ethernet-sized packets"
    );

    let (status, metrics) = common::http_get(server.http_addr().unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert!(
        value("chorus_quic_socket_receive_buffer_bytes").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );
    if cfg!(target_os = "linux") {
        assert!(
            value("chorus_quic_receive_drops_total").is_some(),
            "{metrics}"
        );
    }
    server.shutdown().await;
}

/// A node in `dir` serving WebSocket over TLS, QUIC and metrics; bob on QUIC (his endpoint
/// accepting `max_udp_payload`-byte datagrams) subscribed to `channel`, a group alice (on
/// WebSocket over TLS) created with him.
async fn bob_on_quic_alice_on_wss(
    dir: &std::path::Path,
    channel: &str,
    max_udp_payload: u16,
) -> (chorus_server::Server, QuicClient, common::Client) {
    let dev = chorus_server::dev::ensure(dir).unwrap();
    let mut config = Config::for_tests(dir, common::SECRET);
    config.tls = Some((dev.cert.clone(), dev.key.clone()));
    config.quic_listen = Some("127.0.0.1:0".parse().unwrap());
    config.http_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = chorus_server::Server::start(config).await.unwrap();
    let mut q =
        QuicClient::connect_with(server.quic_addr().unwrap(), &dev.cert, max_udp_payload).await;
    let welcome = q
        .request(Request::Hello(v1::Hello {
            protocol_version: 1,
            token: common::token("bob"),
            client: None,
            resume: None,
        }))
        .await;
    assert!(matches!(welcome, reply::Result::Welcome(w) if w.user_id == "bob"));
    let mut alice = tls_ws_client(server.ws_addr(), &dev.cert, "alice").await;
    alice
        .create_group(channel, ChannelKind::Group, &["bob"])
        .await;
    let sub = q
        .request(Request::Subscribe(v1::Subscribe {
            channel_id: channel.into(),
            since: None,
        }))
        .await;
    assert!(matches!(sub, reply::Result::Subscribed(_)));
    (server, q, alice)
}

async fn tls_ws_client(
    addr: std::net::SocketAddr,
    cert: &std::path::Path,
    user: &str,
) -> common::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_tungstenite::Connector::Rustls(Arc::new(tls));
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("wss://localhost:{}/", addr.port()),
        None,
        false,
        Some(connector),
    )
    .await
    .unwrap();
    common::Client::from_ws(ws, &common::token(user)).await
}
