//! What reaches the app and the server while connections come and go.

use super::*;

#[test]
fn a_request_unanswered_by_its_deadline_times_out_and_its_late_reply_still_counts() {
    let mut h = Harness::up();
    let deadline = h.now + Duration::from_secs(15);
    let call = h.s.request(
        h.now,
        Request::Subscribe(v1::Subscribe::default()),
        RequestKind::Subscribe(room()),
        deadline,
    );
    let [(id, Request::Subscribe(_))] = h.requests()[..] else {
        panic!("the Subscribe goes out");
    };
    assert!(h.s.poll_timeout().is_some_and(|t| t <= deadline));
    h.advance(Duration::from_secs(14));
    assert!(h.replies().is_empty());
    h.advance(Duration::from_secs(1));
    assert!(matches!(h.replies().as_slice(), [(c, Err(Error::Timeout))] if *c == call));

    // The server did subscribe: its entries are delivered, though the caller gave up.
    h.reply(id, subscribed(3, 5, false, RecoveryFailure::NoCursor));
    assert!(h.replies().is_empty(), "answered once");
    h.server(entry(6, 3));
    assert_eq!(h.entries(), [6]);

    // A request waiting for a connection times out there too, and is never sent.
    h.s.disconnected(h.now, None, "lost".into());
    let call = h.s.request(
        h.now,
        Request::Ping(v1::Ping::default()),
        RequestKind::Plain,
        h.now + Duration::from_millis(300),
    );
    h.advance(Duration::from_millis(300));
    assert!(matches!(h.replies().as_slice(), [(c, Err(Error::Timeout))] if *c == call));
}

#[test]
fn duplicates_are_dropped_and_only_the_next_seq_is_delivered() {
    let mut h = Harness::up();
    h.subscribe();
    for seq in [5, 6, 6, 7, 5, 8] {
        h.server(entry(seq, 3));
    }
    let events = h.events();
    assert_eq!(events.len(), 3);
    let Event::Entry(first) = &events[0] else {
        panic!("an entry");
    };
    assert_eq!(
        (first.channel.as_str(), first.seq, first.text()),
        ("room", Seq(6), Some("m6"))
    );
    assert!(matches!(&first.body, EntryBody::Message(_)));
}

#[test]
fn a_gap_resubscribes_from_the_cursor_and_an_epoch_change_ends_in_a_reload() {
    let mut h = Harness::up();
    h.subscribe();
    h.server(entry(6, 3));
    h.server(entry(8, 3)); // 7 is missing
    h.server(entry(9, 3)); // dropped while the channel is repaired
    assert_eq!(h.entries(), [6]);
    let sent = h.requests();
    let [(_, Request::Unsubscribe(u)), (resub, Request::Subscribe(s))] = &sent[..] else {
        panic!("expected Unsubscribe + Subscribe, got {sent:?}");
    };
    assert_eq!(u.channel_id, "room");
    assert_eq!(s.since, Some(v1::Cursor { epoch: 3, seq: 6 }));
    h.reply(*resub, subscribed(3, 9, true, RecoveryFailure::Unspecified));
    for seq in [7, 8, 9] {
        h.server(entry(seq, 3));
    }
    assert_eq!(h.entries(), [7, 8, 9], "replayed from the cursor");

    // Another epoch: the same repair, and the server says history was cut.
    h.server(entry(1, 4));
    let sent = h.requests();
    let Some((resub, Request::Subscribe(s))) = sent.last() else {
        panic!("expected a Subscribe, got {sent:?}");
    };
    assert_eq!(s.since, Some(v1::Cursor { epoch: 3, seq: 9 }));
    h.reply(
        *resub,
        subscribed(4, 12, false, RecoveryFailure::EpochChanged),
    );
    h.server(entry(13, 4));
    let events = h.events();
    assert!(
        matches!(
            &events[..],
            [
                Event::Reload { channel, reason: RecoveryFailure::EpochChanged, head: Seq(12) },
                Event::Entry(e),
            ] if *channel == room() && e.seq == Seq(13)
        ),
        "{events:?}"
    );
}

#[test]
fn a_full_event_queue_lags_the_channel_until_the_app_makes_room() {
    let mut h = Harness::up();
    h.subscribe();
    h.s.set_event_room(2);
    for seq in 6..=10 {
        h.server(entry(seq, 3));
    }
    assert_eq!(h.s.wants_event_room(), Some(1), "two entries wait");
    assert!(
        h.requests().is_empty(),
        "no resync while the app has no room"
    );
    assert_eq!(h.entries(), [6, 7]);
    assert_eq!(h.s.wants_event_room(), Some(8), "half the queue");
    h.s.set_event_room(8);
    assert_eq!(h.s.wants_event_room(), None);
    let sent = h.requests();
    let Some((resub, Request::Subscribe(s))) = sent.last() else {
        panic!("expected a Subscribe, got {sent:?}");
    };
    assert_eq!(s.since, Some(v1::Cursor { epoch: 3, seq: 7 }));
    h.reply(
        *resub,
        subscribed(3, 10, true, RecoveryFailure::Unspecified),
    );
    for seq in 8..=10 {
        h.server(entry(seq, 3));
    }
    assert_eq!(h.entries(), [8, 9, 10]);
}

#[test]
fn the_outbox_resends_with_the_same_id_after_a_reconnect() {
    let mut h = Harness::up();
    let publish = |id: &str| v1::Publish {
        channel_id: "room".into(),
        message: Some(v1::Message {
            client_msg_id: id.into(),
            ..Default::default()
        }),
    };
    let a = h.s.publish(h.now, publish("a"));
    let [(first_id, Request::Publish(_))] = h.requests()[..] else {
        panic!("the publish goes out");
    };
    assert_eq!(h.s.status().outbox_len, 1);

    // Lost before the ack; another publish is made while offline.
    h.s.disconnected(h.now, None, "network".into());
    let b = h.s.publish(h.now, publish("b"));
    assert!(h.replies().is_empty(), "publishes wait, they do not fail");
    assert!(h.sent().is_empty());
    let retry_in = h.until_timeout();
    assert!(retry_in < Duration::from_secs(1), "{retry_in:?}");
    let hello = h.connect(v1::Welcome {
        session_id: "s2".into(),
        ..welcome()
    });
    assert_eq!(hello.token, "token-1");
    let sent = h.requests();
    let ids: Vec<(u64, String)> = sent
        .iter()
        .filter_map(|(id, r)| match r {
            Request::Publish(p) => Some((*id, p.message.as_ref()?.client_msg_id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ids.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "resent in call order"
    );
    assert!(ids[0].0 != first_id, "under a new request id");

    // A stale ack of the first attempt is not mistaken for the resend's.
    h.reply(first_id, reply::Result::Appended(v1::Appended::default()));
    assert!(h.replies().is_empty());
    // RATE_LIMITED puts "a" back and pauses publishing for the advised time.
    h.server(ServerEnvelope::error(
        ids[0].0,
        v1::Error::new(ErrorCode::RateLimited, "slow down").with_retry_after_ms(500),
    ));
    h.reply(
        ids[1].0,
        reply::Result::Appended(v1::Appended {
            seq: 11,
            ..Default::default()
        }),
    );
    assert!(matches!(h.replies().as_slice(), [(c, Ok(_))] if *c == b));
    assert!(h.sent().is_empty(), "paused");
    h.advance(Duration::from_millis(500));
    let [(again, Request::Publish(p))] = &h.requests()[..] else {
        panic!("the publish goes out again");
    };
    assert_eq!(
        p.message.as_ref().map(|m| m.client_msg_id.as_str()),
        Some("a")
    );
    h.reply(
        *again,
        reply::Result::Appended(v1::Appended {
            seq: 12,
            duplicate: true,
            ..Default::default()
        }),
    );
    assert!(matches!(h.replies().as_slice(), [(c, Ok(_))] if *c == a));
    assert_eq!(h.s.status().outbox_len, 0);
}

#[test]
fn resume_sends_cursors_and_reports_what_the_welcome_could_not_restore() {
    let mut h = Harness::up();
    h.subscribe();
    h.server(entry(6, 3));
    h.entries();
    h.s.disconnected(h.now, Some(CloseCode::SlowConsumer), "slow".into());
    assert!(matches!(
        h.events().as_slice(),
        [Event::Disconnected {
            code: Some(CloseCode::SlowConsumer),
            retry_in: Duration::ZERO,
            ..
        }]
    ));
    assert_eq!(
        h.until_timeout(),
        Duration::ZERO,
        "a slow consumer reconnects at once"
    );
    let hello = h.connect(v1::Welcome {
        resumed: vec![v1::Subscribed {
            channel_id: "room".into(),
            error: Some(v1::Error::new(ErrorCode::Forbidden, "removed")),
            ..Default::default()
        }],
        ..welcome()
    });
    let resume = hello.resume.unwrap_or_else(|| panic!("resume data"));
    assert_eq!(resume.previous_session_id, "s1");
    assert_eq!(
        resume.subscriptions[0].since,
        Some(v1::Cursor { epoch: 3, seq: 6 })
    );
    let events = h.events();
    assert!(
        matches!(
            &events[..],
            [Event::SubscriptionEnded { reason: Some(r), .. }, Event::Connected { reconnect: true, .. }]
                if r.code == ErrorCode::Forbidden
        ),
        "{events:?}"
    );
    h.server(entry(7, 3));
    assert!(h.entries().is_empty(), "no longer subscribed");
}
