//! Nodes for the SDK's integration tests: in-process `chorus-server` nodes on 127.0.0.1:0, and a
//! real `chorusd` process for the kill -9 tests.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chorus_testkit::process::{NodeFiles, ONE_NODE_AT_A_TIME, Process};

use chorus_client::{ChannelId, Client, ClientConfig, Entry, Event, Events};
use chorus_server::Server;
use chorus_server::config::Config;

pub use chorus_testkit::process::free_port;
pub use chorus_testkit::token::{SECRET, token, token_ttl};
pub use chorus_testkit::wait::wait_for_listener as wait_listening;

pub fn channel(id: &str) -> ChannelId {
    ChannelId::new(id).unwrap()
}

/// Limits high enough that tests publishing quickly are not rate limited.
pub fn fast_limits(config: &mut Config) {
    config.limits.publish_rate_per_sec = 100_000;
    config.limits.publish_burst = 100_000;
}

/// An in-process node in a temporary directory, plain WebSocket (optionally TLS and QUIC).
pub struct Node {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_tests(dir.path(), SECRET);
        tweak(&mut config);
        let server = Server::start(config).await.unwrap();
        Self { server, dir }
    }

    /// With TLS (the dev certificate) on WebSocket and QUIC.
    pub async fn start_tls() -> (Self, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let dev = chorus_server::dev::ensure(dir.path()).unwrap();
        let mut config = Config::for_tests(dir.path(), SECRET);
        config.tls = Some((dev.cert.clone(), dev.key.clone()));
        config.quic_listen = Some("127.0.0.1:0".parse().unwrap());
        let server = Server::start(config).await.unwrap();
        (Self { server, dir }, dev.cert)
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.server.ws_addr())
    }

    pub async fn client(&self, user: &str) -> (Client, Events) {
        connect(&self.url(), user).await
    }
}

pub async fn connect(url: &str, user: &str) -> (Client, Events) {
    Client::connect(
        ClientConfig::new(url, token(user))
            .unwrap()
            .backoff(Duration::from_millis(20), Duration::from_millis(200)),
    )
    .await
    .unwrap()
}

/// The next event that is not connection bookkeeping, within 10 s.
pub async fn next_event(events: &mut Events) -> Event {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("no event within 10 s")
            .expect("event stream ended");
        match e {
            Event::Connected { .. } | Event::Disconnected { .. } => {}
            e => return e,
        }
    }
}

/// The next channel entry, within 10 s.
pub async fn next_entry(events: &mut Events) -> Entry {
    loop {
        if let Event::Entry(e) = next_event(events).await {
            return e;
        }
    }
}

pub fn text(e: &Entry) -> &str {
    e.text().unwrap_or("")
}

/// A `chorusd` process on a fixed loopback port (plain WebSocket), restartable on the same
/// data directory and port.
pub struct Chorusd {
    pub files: NodeFiles,
    pub addr: SocketAddr,
    pub child: Option<Process>,
    /// One process node at a time across the kit's users (see `ONE_NODE_AT_A_TIME`): a node
    /// restarted on its port must not find another test's node there.
    _one: tokio::sync::MutexGuard<'static, ()>,
}

impl Chorusd {
    pub async fn start() -> Self {
        let one = ONE_NODE_AT_A_TIME.lock().await;
        let files = NodeFiles::new(
            "quic_disabled = true\n[limits]\npublish_rate_per_sec = 100000\npublish_burst = 100000",
        );
        let mut node = Self {
            addr: files.addr,
            files,
            child: None,
            _one: one,
        };
        node.spawn().await;
        node
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub async fn spawn(&mut self) {
        self.child = Some(self.files.spawn());
        wait_listening(self.addr).await;
    }

    pub fn kill9(&mut self) {
        drop(self.child.take());
    }

    pub fn data(&self) -> PathBuf {
        self.files.data()
    }
}
