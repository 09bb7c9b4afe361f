//! The durability promise end to end: a real `chorusd` process acknowledges publishes, is
//! SIGKILLed, restarts on the same data directory, and every acknowledged message is there,
//! once, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chorus_protocol::v1::ChannelKind;
use common::{Client, appended, text};

/// Held by each test for its whole run. A port from `free_port` is free only until someone
/// binds it: run side by side, one test's node (or a client's source port) could take the
/// port the other test's node is about to bind, and that test would then talk to, and see
/// reset, a node the other test kills (a `ConnectionReset` in the handshake, seen once in CI,
/// fits this).
static ONE_NODE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A data directory, a token secret and a config file for a plain-WebSocket node on a free
/// loopback port.
fn node_files() -> (tempfile::TempDir, std::path::PathBuf, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, common::SECRET).unwrap();
    let port = free_port();
    let config = dir.path().join("chorusd.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nws_listen = \"127.0.0.1:{port}\"\nws_plain = true\nhttp_disabled = true\ntoken_secret_file = {:?}\n",
            dir.path().join("data"),
            secret
        ),
    )
    .unwrap();
    (dir, config, format!("127.0.0.1:{port}").parse().unwrap())
}

fn spawn(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chorusd"))
        .arg("--config")
        .arg(config)
        .arg("--log")
        .arg("warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn connect(addr: std::net::SocketAddr, user: &str) -> Client {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Client::connect(addr, &common::token(user)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chorusd did not start on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9() {
    let _one = ONE_NODE_AT_A_TIME.lock().await;
    let (_dir, config, addr) = node_files();

    let mut node = spawn(&config);
    let mut alice = connect(addr, "alice").await;
    let epoch = alice
        .create_group("room", ChannelKind::Group, &[])
        .await
        .channel
        .unwrap()
        .epoch;
    let mut acked = Vec::new();
    for i in 0..50 {
        let a = appended(
            alice
                .publish("room", &format!("k{i}"), &format!("m{i}"))
                .await,
        );
        acked.push((a.seq, format!("m{i}")));
    }
    node.kill().unwrap(); // SIGKILL: no shutdown, no final sync.
    node.wait().unwrap();
    drop(alice);

    let mut node = spawn(&config);
    let mut alice = connect(addr, "alice").await;
    let sub = alice.subscribe("room", Some((epoch, 0))).await;
    assert!(sub.recovered);
    assert!(sub.head_seq >= acked.last().unwrap().0);
    let mut seen = Vec::new();
    for _ in 0..sub.head_seq {
        let e = alice.next_event().await;
        seen.push((e.seq, text(&e).to_owned()));
    }
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=sub.head_seq).collect::<Vec<_>>()
    );
    for (seq, body) in &acked {
        assert!(
            seen.contains(&(*seq, body.clone())),
            "acknowledged m{seq} lost"
        );
    }
    // A retry of an acknowledged publish is still recognised after the crash.
    let retry = appended(alice.publish("room", "k7", "m7").await);
    assert!(retry.duplicate);
    node.kill().unwrap();
    node.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let _one = ONE_NODE_AT_A_TIME.lock().await;
    let (_dir, config, addr) = node_files();
    let mut node = spawn(&config);
    let mut alice = connect(addr, "alice").await;
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(node.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let d = alice.until_closed().await.expect("a Disconnect push");
    assert_eq!(d.code, chorus_protocol::v1::CloseCode::GoingAway as i32);
    let exit = tokio::task::spawn_blocking(move || node.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}
