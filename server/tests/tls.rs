//! WebSocket over TLS with the dev certificate: the dev files are made once, the node serves
//! wss://, and a client that trusts the certificate speaks the protocol over it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::BytesMut;
use chorus_protocol::codec::{decode_frames, encode_frame};
use chorus_protocol::v1::{
    self, ClientEnvelope, ServerEnvelope, client_envelope::Request, reply, server_envelope,
};
use chorus_server::config::Config;
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_the_dev_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let dev = chorus_server::dev::ensure(dir.path()).unwrap();
    let first_cert = std::fs::read(&dev.cert).unwrap();
    // Made once: a second call keeps the files.
    let again = chorus_server::dev::ensure(dir.path()).unwrap();
    assert_eq!(std::fs::read(&again.cert).unwrap(), first_cert);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dev.key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let secret = chorus_server::dev::read_secret(&dev.secret).unwrap();
    let mut config = Config::for_tests(dir.path(), &secret);
    config.tls = Some((dev.cert.clone(), dev.key.clone()));
    let server = chorus_server::Server::start(config).await.unwrap();

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(&dev.cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(server.ws_addr())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{}/", server.ws_addr().port()),
        tls,
    )
    .await
    .unwrap();

    let token = chorus_server::auth::mint_hs256(
        &secret,
        "alice",
        chorus_server::clock::unix_ms() / 1000,
        60,
    )
    .unwrap();
    let mut buf = BytesMut::new();
    encode_frame(
        &ClientEnvelope::new(
            1,
            Request::Hello(v1::Hello {
                protocol_version: 1,
                token,
                client: None,
                resume: None,
            }),
        ),
        &mut buf,
    );
    ws.send(WsMessage::Binary(buf.freeze())).await.unwrap();
    let Some(Ok(WsMessage::Binary(bytes))) = ws.next().await else {
        panic!("no reply")
    };
    let env: ServerEnvelope = decode_frames(bytes, 1 << 20).next().unwrap().unwrap();
    let Some(server_envelope::Kind::Reply(r)) = env.kind else {
        panic!("not a reply")
    };
    assert!(matches!(r.result, Some(reply::Result::Welcome(w)) if w.user_id == "alice"));
    server.shutdown().await;
}
