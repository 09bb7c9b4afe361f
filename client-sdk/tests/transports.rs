//! The SDK over each transport and trust mode: `wss://` and `quic://` with a CA file or a
//! pinned certificate, and a wrong pin refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chorus_client::{Client, ClientConfig, Error, TlsTrust, TransportError};
use common::{Node, channel, next_entry, text, token};

async fn tls_client(
    url: &str,
    user: &str,
    trust: TlsTrust,
) -> Result<(Client, chorus_client::Events), Error> {
    Client::connect(ClientConfig::new(url, token(user))?.trust(trust)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tls_and_quic_carry_the_same_session_protocol() {
    let (node, cert) = Node::start_tls().await;
    let ws_port = node.server.ws_addr().port();
    let quic_port = node.server.quic_addr().unwrap().port();

    // wss with the certificate as a CA (the name "localhost" is checked).
    let (alice, _a) = tls_client(
        &format!("wss://localhost:{ws_port}/"),
        "alice",
        TlsTrust::CaFile(cert.clone()),
    )
    .await
    .unwrap();
    // QUIC with the certificate pinned, by IP address (no name check with a pin).
    let (bob, mut bob_events) = tls_client(
        &format!("quic://127.0.0.1:{quic_port}"),
        "bob",
        TlsTrust::PinnedCertFile(cert.clone()),
    )
    .await
    .unwrap();
    // QUIC with the CA and an explicit server name; wss pinned.
    let (carol, mut carol_events) = Client::connect(
        ClientConfig::new(&format!("quic://127.0.0.1:{quic_port}"), token("carol"))
            .unwrap()
            .trust(TlsTrust::CaFile(cert.clone()))
            .server_name("localhost"),
    )
    .await
    .unwrap();
    let (dave, mut dave_events) = tls_client(
        &format!("wss://127.0.0.1:{ws_port}/"),
        "dave",
        TlsTrust::PinnedCertFile(cert.clone()),
    )
    .await
    .unwrap();

    let room = channel("mixed");
    let members: Vec<_> = ["bob", "carol", "dave"]
        .iter()
        .map(|u| chorus_client::UserId::new(*u).unwrap())
        .collect();
    alice.create_group(&room, "Mixed", &members).await.unwrap();
    for c in [&bob, &carol, &dave] {
        c.subscribe(&room).await.unwrap();
    }
    let sent = alice.send_text(&room, "over wss").await.unwrap();
    let over_quic = bob.send_text(&room, "over quic").await.unwrap();
    for events in [&mut bob_events, &mut carol_events, &mut dave_events] {
        let a = next_entry(events).await;
        let b = next_entry(events).await;
        assert_eq!((a.seq, text(&a)), (sent.seq, "over wss"));
        assert_eq!((b.seq, text(&b)), (over_quic.seq, "over quic"));
    }
    assert!(bob.ping().await.is_ok());

    // The webpki roots do not trust a self-signed certificate; a wrong pin is refused too.
    let untrusted = tls_client(
        &format!("wss://localhost:{ws_port}/"),
        "eve",
        TlsTrust::WebPkiRoots,
    )
    .await;
    assert!(
        matches!(
            &untrusted,
            Err(Error::Transport(TransportError::TlsHandshake(_)))
        ),
        "{untrusted:?}"
    );
    let other = tempfile::tempdir().unwrap();
    let other_cert = chorus_server::dev::ensure(other.path()).unwrap().cert;
    for url in [
        format!("wss://localhost:{ws_port}/"),
        format!("quic://127.0.0.1:{quic_port}"),
    ] {
        let wrong_pin = tls_client(&url, "eve", TlsTrust::PinnedCertFile(other_cert.clone())).await;
        assert!(
            matches!(wrong_pin, Err(Error::Transport(_))),
            "{url}: {wrong_pin:?}"
        );
    }
    let missing = tls_client(
        &format!("wss://localhost:{ws_port}/"),
        "eve",
        TlsTrust::CaFile(other.path().join("none.pem")),
    )
    .await;
    assert!(matches!(missing, Err(Error::Tls(_))), "{missing:?}");
}

/// Tools that open thousands of bare QUIC connections share one endpoint (one UDP socket)
/// between them: each connection still gets its own session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_quic_connections_share_one_endpoint() {
    use bytes::BytesMut;
    use chorus_client::raw::{self, QuicEndpoint, RawIncoming};
    use chorus_protocol::codec::encode_frame;
    use chorus_protocol::limits::PROTOCOL_VERSION;
    use chorus_protocol::v1::{self, ClientEnvelope, client_envelope::Request, reply};

    let (node, cert) = Node::start_tls().await;
    let quic_port = node.server.quic_addr().unwrap().port();
    let endpoint = QuicEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut open = Vec::new();
    let mut sessions = std::collections::HashSet::new();
    for user in ["ann", "ben", "cat"] {
        let config = ClientConfig::new(&format!("quic://127.0.0.1:{quic_port}"), token(user))
            .unwrap()
            .trust(TlsTrust::PinnedCertFile(cert.clone()));
        let (mut reader, mut writer) = raw::connect_via(&config, Some(&endpoint)).await.unwrap();
        let hello = Request::Hello(v1::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token(user),
            ..Default::default()
        });
        let mut buf = BytesMut::new();
        encode_frame(&ClientEnvelope::new(1, hello), &mut buf);
        writer.send(buf.freeze()).await.unwrap();
        let RawIncoming::Frames(frames) = reader.next().await else {
            panic!("{user}: closed before Welcome");
        };
        let welcome = frames
            .into_iter()
            .find_map(|env| match env.kind {
                Some(v1::server_envelope::Kind::Reply(r)) => match r.result {
                    Some(reply::Result::Welcome(w)) => Some(w),
                    _ => None,
                },
                _ => None,
            })
            .expect("a Welcome");
        assert_eq!(welcome.user_id, user);
        sessions.insert(welcome.session_id);
        // Kept open: the three connections live on the one endpoint at the same time.
        open.push((reader, writer));
    }
    assert_eq!(sessions.len(), 3);
}

/// Tools can decode frames as a message holding only the fields they read (the rest skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_frames_decode_into_a_subset_of_the_envelope() {
    use bytes::BytesMut;
    use chorus_client::raw::{self, RawIncoming};
    use chorus_protocol::codec::encode_frame;
    use chorus_protocol::limits::PROTOCOL_VERSION;
    use chorus_protocol::v1::{self, ClientEnvelope, client_envelope::Request};

    /// `ServerEnvelope` with only `reply.request_id`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Envelope {
        #[prost(message, optional, tag = "1")]
        reply: Option<Reply>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Reply {
        #[prost(uint64, tag = "1")]
        request_id: u64,
    }

    let (node, cert) = Node::start_tls().await;
    let quic_port = node.server.quic_addr().unwrap().port();
    let ws_port = node.server.ws_addr().port();
    for url in [
        format!("quic://127.0.0.1:{quic_port}"),
        format!("wss://127.0.0.1:{ws_port}/"),
    ] {
        let config = ClientConfig::new(&url, token("dee"))
            .unwrap()
            .trust(TlsTrust::PinnedCertFile(cert.clone()));
        let (mut reader, mut writer) = raw::connect(&config).await.unwrap();
        let hello = Request::Hello(v1::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token("dee"),
            ..Default::default()
        });
        let mut buf = BytesMut::new();
        encode_frame(&ClientEnvelope::new(41, hello), &mut buf);
        writer.send(buf.freeze()).await.unwrap();
        let RawIncoming::Frames(frames) = reader.next_as::<Envelope>().await else {
            panic!("{url}: closed before Welcome");
        };
        assert!(
            frames
                .iter()
                .any(|e| e.reply.as_ref().is_some_and(|r| r.request_id == 41)),
            "{url}: {frames:?}"
        );
    }
}

/// SDK clients given one endpoint share its socket, and keep it across a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_share_a_quic_endpoint_across_reconnects() {
    use chorus_client::raw::QuicEndpoint;
    use chorus_protocol::v1::CloseCode;

    let (node, cert) = Node::start_tls().await;
    let quic_port = node.server.quic_addr().unwrap().port();
    let endpoint = QuicEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let local = endpoint.local_addr().unwrap().to_string();
    let peers = |node: &Node| -> Vec<String> {
        let mut p: Vec<String> = node
            .server
            .hub()
            .sessions(None)
            .into_iter()
            .map(|(info, _)| info.peer)
            .collect();
        p.sort();
        p
    };
    let mut clients = Vec::new();
    for user in ["dan", "eve"] {
        let config = ClientConfig::new(&format!("quic://127.0.0.1:{quic_port}"), token(user))
            .unwrap()
            .trust(TlsTrust::PinnedCertFile(cert.clone()))
            .quic_endpoint(&endpoint);
        let (client, events) = Client::connect(config).await.unwrap();
        client.ping().await.unwrap();
        clients.push((client, events));
    }
    assert_eq!(peers(&node), vec![local.clone(), local.clone()]);

    let before: Vec<String> = clients.iter().map(|(c, _)| c.status().session_id).collect();
    node.server
        .hub()
        .close_all(&chorus_server::outbound::Close {
            code: CloseCode::GoingAway,
            reason: "test".into(),
            reconnect_after_ms: 10,
        });
    for ((client, _), old) in clients.iter().zip(&before) {
        let mut status = client.watch_status();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            status.wait_for(|s| s.connected && s.session_id != *old),
        )
        .await
        .expect("reconnected")
        .unwrap();
        client.ping().await.unwrap();
    }
    assert_eq!(peers(&node), vec![local.clone(), local]);
}

/// An endpoint that accepts 16 KiB datagrams (loopback allows them): the node may send it
/// packets up to that size once MTU discovery has found the path allows them; messages of any
/// size still arrive whole and in order. A limit outside QUIC's range is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_datagram_endpoint_carries_messages_whole_and_in_order() {
    use chorus_client::raw::QuicEndpoint;

    let local: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let refused = QuicEndpoint::bind_with_max_udp_payload(local, 1199).unwrap_err();
    assert!(
        matches!(
            refused,
            Error::Transport(TransportError::Quic {
                step: "endpoint",
                ..
            })
        ),
        "{refused:?}"
    );

    let (node, cert) = Node::start_tls().await;
    let quic_port = node.server.quic_addr().unwrap().port();
    let endpoint = QuicEndpoint::bind_with_max_udp_payload(local, 16 * 1024).unwrap();
    let connect = |user: &str| {
        ClientConfig::new(&format!("quic://127.0.0.1:{quic_port}"), token(user))
            .unwrap()
            .trust(TlsTrust::PinnedCertFile(cert.clone()))
            .quic_endpoint(&endpoint)
    };
    let (ann, _ann_events) = Client::connect(connect("ann")).await.unwrap();
    let (ben, mut ben_events) = Client::connect(connect("ben")).await.unwrap();
    let room = channel("big-datagrams");
    ann.create_group(&room, "big", &[chorus_client::UserId::new("ben").unwrap()])
        .await
        .unwrap();
    ben.subscribe(&room).await.unwrap();
    // Sizes around and across one 16 KiB datagram (the message limit is 16 KiB of content).
    let sizes = [1, 1_000, 1_400, 1_500, 9_000, 15_000, 16_000, 16_384];
    for (i, size) in sizes.iter().enumerate() {
        let body: String = std::iter::repeat_n(char::from(b'a' + i as u8), *size).collect();
        ann.send_text(&room, body).await.unwrap();
    }
    for (i, size) in sizes.iter().enumerate() {
        let entry = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            next_entry(&mut ben_events),
        )
        .await
        .expect("entry delivered");
        let body = text(&entry);
        assert_eq!(body.len(), *size, "message {i}");
        assert!(
            body.bytes().all(|b| b == b'a' + i as u8),
            "message {i} intact"
        );
    }
}
