//! Nodes for the SDK's integration tests: in-process `chorus-server` nodes on 127.0.0.1:0, and a
//! real `chorusd` process for the kill -9 tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chorus_client::proto::{self, channel_event::Body};
use chorus_client::{ChannelId, Client, ClientConfig, Event, Events};
use chorus_server::config::Config;
use chorus_server::{Server, auth};

pub const SECRET: &[u8] = b"sdk-integration-secret-0123456789abcdef";

pub fn token(user: &str) -> String {
    token_ttl(user, 3600)
}

pub fn token_ttl(user: &str, ttl_secs: u64) -> String {
    auth::mint_hs256(
        SECRET,
        user,
        chorus_server::clock::unix_ms() / 1000,
        ttl_secs,
    )
    .unwrap()
}

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
pub async fn next_entry(events: &mut Events) -> proto::ChannelEvent {
    loop {
        if let Event::Entry(e) = next_event(events).await {
            return e;
        }
    }
}

pub fn text(e: &proto::ChannelEvent) -> &str {
    match &e.body {
        Some(Body::Message(m)) => &m.text,
        _ => "",
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `chorusd` binary of this workspace, built if the test run did not build it yet.
pub fn chorusd() -> PathBuf {
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join(format!("chorusd{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--offline",
                "-p",
                "chorus-server",
                "--bin",
                "chorusd",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "building chorusd failed");
    }
    bin
}

/// A `chorusd` process on a fixed loopback port (plain WebSocket), restartable on the same
/// data directory and port.
pub struct Chorusd {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub child: Option<Child>,
    /// One such node per test binary at a time: a port from `free_port` is free only until
    /// someone binds it, and a node restarted on its port must not find another test's node
    /// (or a client's source port) there.
    _one: tokio::sync::OwnedMutexGuard<()>,
}

static ONE_NODE_AT_A_TIME: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(Default::default);

impl Chorusd {
    pub async fn start() -> Self {
        let one = ONE_NODE_AT_A_TIME.clone().lock_owned().await;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let port = free_port();
        let config = dir.path().join("chorusd.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\nws_listen = \"127.0.0.1:{port}\"\nws_plain = true\nhttp_disabled = true\nquic_disabled = true\ntoken_secret_file = {:?}\n\n[limits]\npublish_rate_per_sec = 100000\npublish_burst = 100000\n",
                dir.path().join("data"),
                secret
            ),
        )
        .unwrap();
        let mut node = Self {
            dir,
            config,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
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
        let child = Command::new(chorusd())
            .arg("--config")
            .arg(&self.config)
            .arg("--log")
            .arg("warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_listening(self.addr).await;
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn data(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Chorusd {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn wait_listening(addr: SocketAddr) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}
