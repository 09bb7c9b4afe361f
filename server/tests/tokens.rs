//! Token keys other than HS256, expiry during a session, in-band refresh, idle timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chorus_protocol::v1::{self, CloseCode, ErrorCode, client_envelope::Request, reply};
use chorus_server::auth::Claims;
use chorus_server::config::TokenKey;
use common::{Client, Node, error_code};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn now() -> u64 {
    chorus_server::clock::unix_ms() / 1000
}

fn sign(alg: Algorithm, key: &EncodingKey, user: &str, exp: u64) -> String {
    let claims = Claims {
        sub: user.into(),
        exp,
        nbf: None,
        iat: Some(now()),
        aud: None,
        iss: None,
    };
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_and_rs256_keys_verify_their_own_algorithm_only() {
    let ed_private = EncodingKey::from_ed_pem(&fixture("ed25519-private.pem")).unwrap();
    let rsa_private = EncodingKey::from_rsa_pem(&fixture("rs256-private.pem")).unwrap();
    let hs = EncodingKey::from_secret(common::SECRET);

    let node =
        Node::start_with(|c| c.token_key = TokenKey::Ed25519Pem(fixture("ed25519-public.pem")))
            .await;
    Client::connect(
        node.addr(),
        &sign(Algorithm::EdDSA, &ed_private, "alice", now() + 60),
    )
    .await;
    for wrong in [
        sign(Algorithm::RS256, &rsa_private, "alice", now() + 60),
        sign(Algorithm::HS256, &hs, "alice", now() + 60),
    ] {
        let mut c = Client::raw(node.addr()).await;
        assert_eq!(
            error_code(&c.hello(&wrong, None).await),
            ErrorCode::Unauthenticated
        );
    }

    let node =
        Node::start_with(|c| c.token_key = TokenKey::Rs256Pem(fixture("rs256-public.pem"))).await;
    Client::connect(
        node.addr(),
        &sign(Algorithm::RS256, &rsa_private, "alice", now() + 60),
    )
    .await;
    let mut c = Client::raw(node.addr()).await;
    let forged = sign(Algorithm::EdDSA, &ed_private, "alice", now() + 60);
    assert_eq!(
        error_code(&c.hello(&forged, None).await),
        ErrorCode::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_closes_the_session_unless_refreshed() {
    let node = Node::start().await;
    let hs = EncodingKey::from_secret(common::SECRET);
    // Expired 29 s ago: inside the 30 s clock-skew leeway, so accepted, and closed with
    // AUTH_EXPIRED when the leeway runs out about a second later.
    let leeway = chorus_server::auth::LEEWAY_SECS;
    let mut short = Client::connect(
        node.addr(),
        &sign(Algorithm::HS256, &hs, "alice", now() + 1 - leeway),
    )
    .await;
    let d = short.until_closed().await.expect("a Disconnect push");
    assert_eq!(d.code, CloseCode::AuthExpired as i32);

    // Refreshed in time: the session outlives the first token.
    let mut refreshed = Client::connect(
        node.addr(),
        &sign(Algorithm::HS256, &hs, "bob", now() + 1 - leeway),
    )
    .await;
    let r = refreshed
        .request(Request::RefreshToken(v1::RefreshToken {
            token: sign(Algorithm::HS256, &hs, "bob", now() + 3600),
        }))
        .await;
    assert!(
        matches!(r, reply::Result::TokenRefreshed(t) if t.token_expires_at_ms > chorus_server::clock::unix_ms() + 3_000_000)
    );
    // Another user's token is refused and changes nothing.
    let r = refreshed
        .request(Request::RefreshToken(v1::RefreshToken {
            token: common::token("carol"),
        }))
        .await;
    assert_eq!(error_code(&r), ErrorCode::Forbidden);
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    assert!(matches!(
        refreshed.request(Request::Ping(v1::Ping::default())).await,
        reply::Result::Pong(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let node = Node::start_with(|c| c.limits.idle_timeout_ms = 300).await;
    let mut quiet = node.connect("alice").await;
    let d = quiet.until_closed().await.expect("a Disconnect push");
    assert_eq!(d.code, CloseCode::IdleTimeout as i32);
    // Traffic keeps a connection open well past the timeout (the node's timer, armed for the
    // first 300 ms, finds traffic when it fires and waits again), and it closes once the
    // traffic stops.
    let mut busy = node.connect("bob").await;
    let started = std::time::Instant::now();
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        assert!(matches!(
            busy.request(Request::Ping(v1::Ping::default())).await,
            reply::Result::Pong(_)
        ));
    }
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    let d = busy.until_closed().await.expect("a Disconnect push");
    assert_eq!(d.code, CloseCode::IdleTimeout as i32);
    // No Hello at all: the handshake deadline.
    let node = Node::start_with(|c| c.limits.handshake_timeout_ms = 200).await;
    let mut silent = Client::raw(node.addr()).await;
    assert_eq!(
        silent.until_closed().await.map(|d| d.code),
        Some(CloseCode::HandshakeTimeout as i32)
    );
}
