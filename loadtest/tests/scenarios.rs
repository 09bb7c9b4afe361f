//! Each scenario, small, against a real node on 127.0.0.1:0: it runs, connects what it says,
//! delivers everything once and in order, and fills the report.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chorus_client::TlsTrust;
use chorus_loadtest::scenario::{self, Setup};
use chorus_loadtest::server_metrics::MetricsUrl;
use chorus_loadtest::token::Minter;
use chorus_server::config::Config;

const SECRET: &[u8] = b"loadtest-integration-secret-0123456789abcdef";

/// One node and its load at a time: the rate floors below assume a tester that is not
/// sharing two cores with another test's node and tester.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn node(dir: &std::path::Path) -> chorus_server::Server {
    let mut config = Config::for_tests(dir, SECRET);
    config.limits.publish_rate_per_sec = 100_000;
    config.limits.publish_burst = 100_000;
    config.control_socket = Some(dir.join("control.sock"));
    config.http_listen = Some("127.0.0.1:0".parse().unwrap());
    chorus_server::Server::start(config).await.unwrap()
}

/// Everything delivered once, in order, and nothing went wrong.
fn assert_clean(r: &chorus_loadtest::report::Report) {
    assert_eq!(
        (r.lost, r.duplicates, r.reordered, r.undelivered),
        (0, 0, 0, 0),
        "{}",
        r.table()
    );
    assert!(r.errors.is_empty(), "{:?}\n{}", r.errors, r.table());
}

fn setup(server: &chorus_server::Server) -> Setup {
    Setup::new(
        &[format!("ws://{}/", server.ws_addr())],
        false,
        TlsTrust::WebPkiRoots,
        Minter::new(SECRET),
        4,
        500,
        Some(std::process::id()),
    )
    .unwrap()
    .with_server_metrics(
        server
            .http_addr()
            .map(|a| MetricsUrl::parse(&format!("http://{a}/metrics")).unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_delivers_everything_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = node(dir.path()).await;
    let setup = setup(&server);

    let r = scenario::fanout::run(
        &setup,
        &scenario::fanout::Args {
            subscribers: 20,
            publishers: 2,
            rate: Some(400.0),
            window: None,
            duration: 1,
            body: 64,
        },
    )
    .await
    .unwrap();
    assert_clean(&r);
    assert!(r.published >= 300, "{}", r.table());
    // Each subscriber sees every publish (and the joins after its own).
    assert!(r.delivered >= r.published * 20, "{}", r.table());
    assert_eq!(r.connections, 22);
    assert!(r.latency_us.count > 0 && r.connect_us.count == 22);
    assert_eq!(
        r.connect_lag_us.count, 22,
        "every connect timed against its schedule"
    );
    // Every fixed-rate publish was timed against its schedule; a lightly loaded tester keeps it.
    assert_eq!(r.send_lag_us.count, r.published, "{}", r.table());
    assert!(r.send_lag_us.p50 < 50_000, "{}", r.table());
    // Every latency is in the timeline's second it arrived in.
    assert_eq!(
        r.latency_timeline.iter().map(|s| s.count).sum::<u64>(),
        r.latency_us.count
    );
    assert!(
        r.latency_timeline
            .iter()
            .enumerate()
            .all(|(i, s)| s.second == i as u64 && s.max_us <= r.latency_us.max)
    );
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "scenario",
        "delivered_per_sec",
        "lost",
        "latency_us",
        "latency_timeline",
        "connect_us",
        "connect_lag_us",
        "errors",
        "server",
        "server_threads",
        "host_cpu",
        "server_commit",
    ] {
        assert!(json.get(key).is_some(), "{key} in the report");
    }
    // The node's own commit latency over the phase: its publishes, durable within a bucket.
    let commit = r
        .server_commit
        .clone()
        .expect("scraped from the node's metrics");
    assert!(
        commit.count > 0 && commit.count <= r.published + 50,
        "{commit:?} for {} published",
        r.published
    );
    assert!(
        commit.p50_at_most_us.is_some() && commit.syncs_per_sec > 0.0,
        "{commit:?}"
    );
    // Linux: the host's CPU over the phase adds up to roughly its CPUs (ticks are 10 ms).
    let host = r.host_cpu.clone().unwrap();
    let sum = host.busy_cores + host.idle_cores + host.steal_cores;
    assert!(host.cpus >= 1 && sum > 0.0, "{host:?}");
    assert!(sum <= f64::from(host.cpus) * 1.5, "{host:?}");
    // The node's CPU by thread name (the node runs in this process here): its store writer
    // is one thread of its own.
    assert!(
        r.server_threads
            .iter()
            .any(|g| g.name == "chorus-store-wr" && g.threads == 1),
        "{:?}",
        r.server_threads
    );

    let r = scenario::fanout::run(
        &setup,
        &scenario::fanout::Args {
            subscribers: 10,
            publishers: 1,
            rate: None,
            window: Some(16),
            duration: 1,
            body: 64,
        },
    )
    .await
    .unwrap();
    assert_clean(&r);
    assert_eq!(r.send_lag_us.count, 0, "a window run has no schedule");
    assert!(r.published > 0);

    let r = scenario::pairs::run(
        &setup,
        &scenario::pairs::Args {
            connections: 20,
            rate: 400.0,
            duration: 1,
            body: 64,
        },
    )
    .await
    .unwrap();
    assert_clean(&r);
    assert_eq!(r.connections, 20);
    assert!(
        r.delivered >= r.published * 2 - 20,
        "both ends see each message: {}",
        r.table()
    );

    let r = scenario::rooms::run(
        &setup,
        &scenario::rooms::Args {
            users: 30,
            channels: 6,
            rooms_per_user: 2,
            zipf: 1.1,
            rate: 200.0,
            duration: 1,
            body: 64,
            typing_every: 5,
            mark_read_every: 3,
        },
    )
    .await
    .unwrap();
    assert_clean(&r);
    assert!(r.published > 100, "{}", r.table());

    let r = scenario::connect::run(
        &setup,
        &scenario::connect::Args {
            connections: 50,
            hold: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!(r.connections, 50);
    assert!(r.extra["connects_per_sec"].as_f64().unwrap() > 0.0);
    // 50 connects at the default rate, far below what the tester and node can take: none
    // waits long for its turn.
    assert_eq!(r.connect_lag_us.count, 50, "{}", r.table());
    assert!(r.connect_lag_us.p50 < 50_000, "{}", r.table());
    assert_eq!(r.extra["connections_alive_at_end"], 50, "{}", r.table());
    assert!(r.errors.is_empty(), "{:?}", r.errors);

    let r = scenario::storm::run(
        &setup,
        &scenario::storm::Args {
            clients: 30,
            channels: 3,
            rate: 50.0,
            control_socket: vec![dir.path().join("control.sock")],
            restart_command: None,
            before: 1,
            timeout: 30,
        },
    )
    .await
    .unwrap();
    assert_clean(&r);
    assert_eq!(r.extra["clients_reconnected"], 30, "{}", r.table());
    assert_eq!(r.extra["clients_not_caught_up"], 0, "{}", r.table());
    // Every publish acknowledged, each delivered to the 10 clients of its channel, timed.
    assert_eq!(r.extra["publishes_attempted"], r.published, "{}", r.table());
    assert!(r.published > 50, "{}", r.table());
    assert_eq!(r.latency_us.count, r.published * 10, "{}", r.table());
    assert_eq!(r.extra["reconnect_us"]["count"], 30, "{}", r.table());
    // Published at about the asked 50/s through the storm.
    assert!(
        (10.0..100.0).contains(&r.published_per_sec) && r.delivered_per_sec > 0.0,
        "{}",
        r.table()
    );
    server.shutdown().await;
}

#[test]
fn targets_outside_loopback_are_refused() {
    let refused = Setup::new(
        &["ws://10.0.0.1:8443/".to_owned()],
        false,
        TlsTrust::WebPkiRoots,
        Minter::new(SECRET),
        1,
        1,
        None,
    );
    assert!(refused.is_err());
    let quic = Setup::new(
        &["wss://localhost:8443/".to_owned()],
        true,
        TlsTrust::WebPkiRoots,
        Minter::new(SECRET),
        1,
        1,
        None,
    )
    .unwrap();
    assert_eq!(quic.targets, ["quic://localhost:8443"]);
}

/// The same checks over QUIC: a TLS node with its dev certificate pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_and_pairs_over_quic() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let dev = chorus_server::dev::ensure(dir.path()).unwrap();
    let mut config = Config::for_tests(dir.path(), SECRET);
    config.limits.publish_rate_per_sec = 100_000;
    config.limits.publish_burst = 100_000;
    config.tls = Some((dev.cert.clone(), dev.key.clone()));
    config.quic_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = chorus_server::Server::start(config).await.unwrap();
    let quic = server.quic_addr().unwrap();
    let setup = Setup::new(
        &[format!("wss://{quic}/")],
        true,
        TlsTrust::PinnedCertFile(dev.cert.clone()),
        Minter::new(SECRET),
        4,
        500,
        None,
    )
    .unwrap();
    assert_eq!(setup.targets, [format!("quic://{quic}")]);

    let r = scenario::fanout::run(
        &setup,
        &scenario::fanout::Args {
            subscribers: 20,
            publishers: 2,
            rate: Some(200.0),
            window: None,
            duration: 1,
            body: 64,
        },
    )
    .await
    .unwrap();
    assert_eq!(r.transport, "quic");
    assert_clean(&r);
    assert_eq!(r.connections, 22);
    assert!(r.published >= 100, "{}", r.table());
    assert!(r.delivered >= r.published * 20, "{}", r.table());
    assert!(r.latency_us.count >= r.published * 20, "{}", r.table());

    let r = scenario::pairs::run(
        &setup,
        &scenario::pairs::Args {
            connections: 20,
            rate: 200.0,
            duration: 1,
            body: 64,
        },
    )
    .await
    .unwrap();
    assert_clean(&r);
    assert!(r.published >= 100, "{}", r.table());
    server.shutdown().await;
}
