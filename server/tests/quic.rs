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
    async fn connect(addr: std::net::SocketAddr, cert: &std::path::Path) -> Self {
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
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
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
    let dev = chorus_server::dev::ensure(dir.path()).unwrap();
    let mut config = Config::for_tests(dir.path(), common::SECRET);
    config.tls = Some((dev.cert.clone(), dev.key.clone()));
    config.quic_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = chorus_server::Server::start(config).await.unwrap();
    let quic_addr = server.quic_addr().unwrap();

    let mut q = QuicClient::connect(quic_addr, &dev.cert).await;
    let welcome = q
        .request(Request::Hello(v1::Hello {
            protocol_version: 1,
            token: common::token("bob"),
            client: None,
            resume: None,
        }))
        .await;
    assert!(matches!(welcome, reply::Result::Welcome(w) if w.user_id == "bob"));

    // A WebSocket client (TLS) creates the channel and publishes; the QUIC client receives.
    let dev_cert = dev.cert.clone();
    let ws_addr = server.ws_addr();
    let mut alice = tls_ws_client(ws_addr, &dev_cert, "alice").await;
    alice
        .create_group("mixed", ChannelKind::Group, &["bob"])
        .await;
    let sub = q
        .request(Request::Subscribe(v1::Subscribe {
            channel_id: "mixed".into(),
            since: None,
        }))
        .await;
    assert!(matches!(sub, reply::Result::Subscribed(_)));
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
