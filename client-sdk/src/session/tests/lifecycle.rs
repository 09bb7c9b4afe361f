//! Tokens, connection attempts, liveness and closing.

use super::*;

#[test]
fn the_token_is_refreshed_in_band_before_it_expires() {
    let mut h = Harness::new(config());
    h.connect(v1::Welcome {
        token_expires_at_ms: SERVER_TIME_MS + 100_000,
        ..welcome()
    });
    let start = h.now;
    // Heartbeats come first; the refresh when a fifth of the 100 s is left.
    loop {
        h.until_timeout();
        if h.actions().iter().any(|a| matches!(a, Action::FetchToken)) {
            break;
        }
        for (id, r) in h.requests() {
            assert!(matches!(r, Request::Ping(_)));
            h.reply(id, reply::Result::Pong(v1::Pong::default()));
        }
    }
    assert_eq!(h.now - start, Duration::from_secs(80));
    h.s.token_fetched(h.now, Ok("token-2".into()));
    let [(id, Request::RefreshToken(r))] = &h.requests()[..] else {
        panic!("expected RefreshToken");
    };
    assert_eq!(r.token, "token-2");
    // Refused: the old token stays; asked again 10 s later.
    h.server(ServerEnvelope::error(
        *id,
        v1::Error::new(ErrorCode::Unavailable, "busy"),
    ));
    assert_eq!(h.until_timeout(), Duration::from_secs(10));
    assert!(h.actions().iter().any(|a| matches!(a, Action::FetchToken)));
    h.s.token_fetched(h.now, Ok("token-3".into()));
    let [(id, Request::RefreshToken(_))] = h.requests()[..] else {
        panic!("expected RefreshToken");
    };
    h.reply(
        id,
        reply::Result::TokenRefreshed(v1::TokenRefreshed {
            token_expires_at_ms: 0,
        }),
    );
    // The next connection uses the new token.
    h.s.disconnected(h.now, None, "network".into());
    h.until_timeout();
    assert_eq!(h.connect(welcome()).token, "token-3");
}

#[test]
fn auth_expired_refreshes_before_reconnecting_and_retries_a_failed_refresh() {
    let mut h = Harness::up();
    h.s.disconnected(h.now, Some(CloseCode::AuthExpired), "expired".into());
    assert!(matches!(
        h.events().as_slice(),
        [Event::Disconnected {
            code: Some(CloseCode::AuthExpired),
            retry_in: Duration::ZERO,
            ..
        }]
    ));
    assert!(matches!(h.actions().as_slice(), [Action::FetchToken]));
    assert_eq!(h.s.poll_timeout(), None, "nothing until the token comes");
    // The app's backend fails once: asked again after a backoff delay.
    h.s.token_fetched(h.now, Err("backend down".into()));
    let waited = h.until_timeout();
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    assert!(matches!(h.actions().as_slice(), [Action::FetchToken]));
    h.s.token_fetched(h.now, Ok("token-2".into()));
    let waited = h.until_timeout();
    assert!(
        waited < Duration::from_secs(2),
        "backoff still applies: {waited:?}"
    );
    assert_eq!(h.connect(welcome()).token, "token-2");

    // Without a refresher an expired token ends the client.
    let mut h = Harness::new(SessionConfig {
        has_refresher: false,
        ..config()
    });
    h.connect(welcome());
    h.events();
    h.s.disconnected(h.now, Some(CloseCode::AuthExpired), "expired".into());
    assert!(matches!(
        h.events().as_slice(),
        [Event::Closed {
            code: Some(CloseCode::AuthExpired),
            ..
        }]
    ));
    assert!(
        h.actions()
            .iter()
            .any(|a| matches!(a, Action::Stopped(Error::Closed { .. })))
    );
}

#[test]
fn the_first_attempt_decides_and_a_silent_server_is_left() {
    // A refused first Hello: the close code is the error, and nothing is retried.
    let mut h = Harness::new(config());
    h.actions();
    h.s.connected(h.now);
    let [(id, Request::Hello(_))] = h.requests()[..] else {
        panic!("Hello");
    };
    h.server(ServerEnvelope::error(
        id,
        v1::Error::new(ErrorCode::Unauthenticated, "bad token"),
    ));
    h.s.disconnected(h.now, Some(CloseCode::AuthInvalid), "bad token".into());
    assert!(matches!(
        h.actions().as_slice(),
        [Action::Stopped(Error::Closed {
            code: CloseCode::AuthInvalid,
            ..
        })]
    ));
    assert_eq!(h.s.poll_timeout(), None);

    // An unanswered Hello times out with the connect timeout.
    let mut h = Harness::new(config());
    h.actions();
    h.s.connected(h.now);
    h.sent();
    assert_eq!(h.until_timeout(), Duration::from_secs(10));
    assert!(matches!(
        h.actions().as_slice(),
        [
            Action::Close { normal: false },
            Action::Stopped(Error::Timeout)
        ]
    ));

    // Heartbeats every interval; after the idle timeout without a byte, the connection is
    // dropped and the client backs off.
    let mut h = Harness::new(config());
    h.connect(v1::Welcome {
        heartbeat_interval_ms: 10_000,
        idle_timeout_ms: 30_000,
        ..welcome()
    });
    h.actions();
    h.events();
    assert_eq!(h.until_timeout(), Duration::from_secs(10));
    assert!(matches!(h.requests().as_slice(), [(_, Request::Ping(_))]));
    assert_eq!(h.until_timeout(), Duration::from_secs(10));
    h.sent();
    assert_eq!(h.until_timeout(), Duration::from_secs(10));
    assert!(matches!(
        h.actions().as_slice(),
        [Action::Close { normal: false }]
    ));
    assert!(matches!(
        h.events().as_slice(),
        [Event::Disconnected { code: None, .. }]
    ));
}

#[test]
fn closing_fails_what_waits_and_ends_with_closed() {
    let mut h = Harness::up();
    let publish = h.s.publish(h.now, v1::Publish::default());
    let ping = h.s.request(
        h.now,
        Request::Ping(v1::Ping::default()),
        RequestKind::Plain,
        h.now + Duration::from_secs(15),
    );
    h.sent();
    h.s.close(h.now);
    let replies = h.replies();
    assert!(
        replies
            .iter()
            .any(|(c, r)| *c == ping && matches!(r, Err(Error::ConnectionLost)))
    );
    assert!(
        replies
            .iter()
            .any(|(c, r)| *c == publish && matches!(r, Err(Error::Shutdown)))
    );
    assert!(matches!(
        h.actions().as_slice(),
        [
            Action::Close { normal: true },
            Action::Stopped(Error::Shutdown)
        ]
    ));
    assert!(matches!(
        h.events().as_slice(),
        [Event::Closed { code: None, .. }]
    ));
    let later = h.s.publish(h.now, v1::Publish::default());
    assert!(matches!(h.replies().as_slice(), [(c, Err(Error::Shutdown))] if *c == later));
}
