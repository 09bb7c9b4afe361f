//! The HTTP listener: Prometheus metrics that move with traffic, liveness and readiness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chorus_protocol::v1::{self, ChannelKind, client_envelope::Request};
use common::{Node, appended, http_get as get};

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health() {
    let node = Node::start_with(|c| c.http_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let http = node.server.as_ref().unwrap().http_addr().unwrap();
    let (status, body) = get(http, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = get(http, "/readyz").await;
    assert_eq!(status, 200);

    let (_, before) = get(http, "/metrics").await;
    let published_before = counter(&before, "chorus_publishes_total");
    let receipts_before = counter(&before, "chorus_read_receipts_total");
    let mut alice = node.connect("alice").await;
    alice
        .create_group("room", ChannelKind::Group, &["bob"])
        .await;
    alice.subscribe("room", None).await;
    for i in 0..3 {
        appended(alice.publish("room", &format!("k{i}"), "x").await);
    }
    // A member's mark that moves the marker is one read receipt.
    let mut bob = node.connect("bob").await;
    bob.subscribe("room", None).await;
    bob.request(Request::MarkRead(v1::MarkRead {
        channel_id: "room".into(),
        seq: 2,
    }))
    .await;
    let (status, after) = get(http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(after.contains("text/plain"), "{after}");
    assert!(
        counter(&after, "chorus_publishes_total") >= published_before + 3.0,
        "{after}"
    );
    assert_eq!(
        counter(&after, "chorus_read_receipts_total"),
        receipts_before + 1.0,
        "{after}"
    );
    // The store's group commit: every publish above went through a batch and a sync.
    let requests = counter(&after, "chorus_store_requests_total");
    let batches = counter(&after, "chorus_store_batches_total");
    let syncs = counter(&after, "chorus_store_syncs_total");
    assert!(requests >= 3.0 && batches >= 1.0 && syncs >= 1.0, "{after}");
    assert!(requests >= batches, "{after}");
    assert!(
        counter(&after, "chorus_store_sync_microseconds_total") > 0.0,
        "{after}"
    );
    for name in [
        "chorus_store_sync_max_seconds",
        "chorus_store_write_max_seconds",
        "chorus_deliveries_total",
        "chorus_connections{transport=\"websocket\"}",
        "chorus_sessions",
        "chorus_subscriptions",
        "chorus_commit_seconds_bucket",
        "chorus_publish_to_delivery_seconds_bucket",
        "chorus_bytes_in_total{transport=\"websocket\"}",
        "chorus_bytes_out_total{transport=\"websocket\"}",
    ] {
        assert!(after.contains(name), "missing {name} in\n{after}");
    }
    let (status, _) = get(http, "/nope").await;
    assert_eq!(status, 404);
}
