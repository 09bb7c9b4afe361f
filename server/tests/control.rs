//! The admin control socket against a running node, over the real socket: every command,
//! permissions, bad input, concurrent admins, drain, backup under load then restore, and the
//! export/erase round trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_protocol::v1::{
    self, ChannelKind, CloseCode, channel_event::Body, client_envelope::Request, reply,
};
use chorus_server::config::{Config, LogFilterHandle};
use common::{Client, Node, appended, text, token};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

static LOG_FILTERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn with_control(c: &mut Config) {
    c.control_socket = Some(c.data_dir.join("control.sock"));
    c.config_file = Some(c.data_dir.join("chorusd.toml"));
    c.log_filter = Some(LogFilterHandle(Arc::new(|spec: &str| {
        if spec.contains('[') {
            return Err(format!("invalid filter {spec:?}"));
        }
        LOG_FILTERS.lock().unwrap().push(spec.to_owned());
        Ok(())
    })));
}

fn socket(node: &Node) -> PathBuf {
    node.dir.path().join("control.sock")
}

/// One admin connection.
struct Admin {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Admin {
    async fn connect(path: &Path) -> Self {
        let (r, w) = UnixStream::connect(path).await.unwrap().into_split();
        Self {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    async fn raw(&mut self, line: &str) -> Value {
        self.writer.write_all(line.as_bytes()).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            self.reader.read_line(&mut response),
        )
        .await
        .expect("no response")
        .unwrap();
        serde_json::from_str(&response).unwrap()
    }

    /// Sends a command; returns the result, panicking on an error response.
    async fn ok(&mut self, mut request: Value) -> Value {
        request["v"] = 1.into();
        let r = self.raw(&request.to_string()).await;
        assert_eq!(r["ok"], true, "{request} -> {r}");
        r["result"].clone()
    }

    /// Sends a command that must fail; returns the error code.
    async fn err(&mut self, mut request: Value) -> String {
        request["v"] = 1.into();
        let r = self.raw(&request.to_string()).await;
        assert_eq!(r["ok"], false, "{request} -> {r}");
        r["error"]["code"].as_str().unwrap().to_owned()
    }
}

/// Whether a fresh connection with `user`'s token is welcomed.
async fn admitted(node: &Node, token: &str) -> bool {
    let mut c = Client::raw(node.addr()).await;
    matches!(c.hello(token, None).await, reply::Result::Welcome(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_and_survives_bad_input() {
    let node = Node::start_with(with_control).await;
    let path = socket(&node);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    assert!(
        !std::fs::read_dir(node.dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".control-")),
        "no staging directory left behind"
    );

    let mut admin = Admin::connect(&path).await;
    let code = |r: Value| r["error"]["code"].as_str().unwrap().to_owned();
    assert_eq!(code(admin.raw("{not json").await), "parse_error");
    assert_eq!(
        code(admin.raw(r#"{"v":1,"id":5,"cmd":"reboot"}"#).await),
        "unknown_command"
    );
    let r = admin.raw(r#"{"v":1,"id":"x","cmd":"users.ban"}"#).await;
    assert_eq!(
        (code(r.clone()), &r["id"]),
        ("bad_request".into(), &json!("x"))
    );
    assert_eq!(
        code(admin.raw(r#"{"v":9,"cmd":"status"}"#).await),
        "unsupported_version"
    );
    assert_eq!(
        admin
            .err(json!({"cmd": "users.ban", "user": "has space"}))
            .await,
        "bad_request"
    );
    // Still serving on the same connection.
    let status = admin.ok(json!({"cmd": "status", "id": 1})).await;
    assert_eq!(status["node_id"], "test-node");

    // An oversized line closes that connection only.
    let mut big = Admin::connect(&path).await;
    let huge = format!(
        r#"{{"v":1,"cmd":"status","pad":"{}"}}"#,
        "x".repeat(100_000)
    );
    assert_eq!(code(big.raw(&huge).await), "too_large");
    let mut rest = String::new();
    assert_eq!(big.reader.read_line(&mut rest).await.unwrap(), 0, "closed");

    // Several admins at once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut a = Admin::connect(&path).await;
            for _ in 0..20 {
                a.ok(json!({"cmd": "status"})).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    admin.ok(json!({"cmd": "status"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_against_a_running_node() {
    let node = Node::start_with(with_control).await;
    let mut admin = Admin::connect(&socket(&node)).await;

    // Channels.
    let created = admin
        .ok(json!({"cmd": "channels.create", "channel": "ops", "kind": "group", "owner": "alice", "members": ["bob"]}))
        .await;
    assert_eq!(
        (created["members"].as_u64(), created["kind"].as_str()),
        (Some(2), Some("CHANNEL_KIND_GROUP"))
    );
    assert_eq!(admin.err(json!({"cmd": "channels.create", "channel": "ops", "kind": "group", "owner": "alice"})).await, "conflict");
    assert_eq!(admin.err(json!({"cmd": "channels.create", "channel": "x", "kind": "direct", "owner": "alice"})).await, "bad_request");
    admin
        .ok(json!({"cmd": "channels.members.add", "channel": "ops", "users": ["carol", "dave"]}))
        .await;
    admin.ok(json!({"cmd": "channels.members.role", "channel": "ops", "user": "carol", "role": "moderator"})).await;
    admin
        .ok(json!({"cmd": "channels.members.remove", "channel": "ops", "user": "dave"}))
        .await;
    assert_eq!(
        admin
            .err(json!({"cmd": "channels.members.remove", "channel": "ops", "user": "dave"}))
            .await,
        "not_found"
    );
    let shown = admin
        .ok(json!({"cmd": "channels.show", "channel": "ops"}))
        .await;
    let members: Vec<(String, String)> = shown["member_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().into(),
                m["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut members = members;
    members.sort();
    assert_eq!(
        members,
        [
            ("alice".into(), "ROLE_OWNER".into()),
            ("bob".into(), "ROLE_MEMBER".into()),
            ("carol".into(), "ROLE_MODERATOR".into())
        ]
    );
    assert_eq!(
        admin
            .err(json!({"cmd": "channels.show", "channel": "nope"}))
            .await,
        "not_found"
    );
    let listed = admin.ok(json!({"cmd": "channels.list"})).await;
    assert_eq!(listed["channels"][0]["channel"], "ops");

    // Sessions: list and kick.
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    let sessions = admin
        .ok(json!({"cmd": "connections.list", "user": "bob"}))
        .await;
    let bob_session = sessions["sessions"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(sessions["sessions"][0]["transport"], "websocket");
    let all = admin.ok(json!({"cmd": "status"})).await;
    assert_eq!(
        (all["sessions"].as_u64(), all["connections"]["ws"].as_u64()),
        (Some(2), Some(2))
    );
    admin
        .ok(json!({"cmd": "connections.kick", "session": bob_session, "reason": "test"}))
        .await;
    let d = bob.until_closed().await.unwrap();
    assert_eq!(d.code(), CloseCode::Kicked);
    assert_eq!(
        admin
            .err(json!({"cmd": "connections.kick", "session": "s-none"}))
            .await,
        "not_found"
    );

    // The members' view: admin membership changes are log events.
    alice.subscribe("ops", Some((1, 0))).await;
    // Messages: delete by an admin leaves a tombstone and keeps the log gapless.
    let m = appended(alice.publish("ops", "k1", "to be removed").await);
    let deleted = admin
        .ok(json!({"cmd": "messages.delete", "channel": "ops", "seq": m.seq}))
        .await;
    assert_eq!(deleted["seq"], m.seq);
    assert_eq!(
        admin
            .err(json!({"cmd": "messages.delete", "channel": "ops", "seq": m.seq}))
            .await,
        "bad_request"
    );
    assert_eq!(
        admin
            .err(json!({"cmd": "messages.delete", "channel": "ops", "seq": 999}))
            .await,
        "not_found"
    );
    let page = match alice
        .request(Request::History(v1::History {
            channel_id: "ops".into(),
            limit: 100,
            ..Default::default()
        }))
        .await
    {
        reply::Result::HistoryPage(p) => p,
        other => panic!("{other:?}"),
    };
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=page.head_seq).collect::<Vec<_>>(), "gapless");
    let removed = page.events.iter().find(|e| e.seq == m.seq).unwrap();
    assert!(
        matches!(&removed.body, Some(Body::Tombstone(t)) if t.reason == v1::tombstone::Reason::AdminRemoved as i32)
    );

    admin
        .ok(json!({"cmd": "channels.archive", "channel": "ops"}))
        .await;
    assert!(matches!(
        alice.publish("ops", "k2", "archived?").await,
        reply::Result::Error(_)
    ));
    admin
        .ok(json!({"cmd": "channels.archive", "channel": "ops", "archived": false}))
        .await;
    assert!(matches!(
        alice.publish("ops", "k3", "back").await,
        reply::Result::Appended(_)
    ));

    // Users: ban closes sessions and refuses new ones; unban lets them back.
    admin
        .ok(json!({"cmd": "users.ban", "user": "alice", "reason": "spam"}))
        .await;
    assert_eq!(
        alice.until_closed().await.unwrap().code(),
        CloseCode::Banned
    );
    assert!(!admitted(&node, &token("alice")).await);
    admin
        .ok(json!({"cmd": "users.unban", "user": "alice"}))
        .await;
    assert!(admitted(&node, &token("alice")).await);
    assert_eq!(
        admin
            .err(json!({"cmd": "users.unban", "user": "alice"}))
            .await,
        "not_found"
    );

    // Revoke: the old token is refused, one issued afterwards works.
    let old = token("carol");
    let mut carol = Client::connect(node.addr(), &old).await;
    // Token issue times are whole seconds: revocation cuts at the second it happens.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    admin
        .ok(json!({"cmd": "users.revoke", "user": "carol"}))
        .await;
    assert_eq!(
        carol.until_closed().await.unwrap().code(),
        CloseCode::AuthExpired
    );
    assert!(!admitted(&node, &old).await);
    tokio::time::sleep(Duration::from_millis(1_100)).await; // token times are in seconds
    assert!(admitted(&node, &token("carol")).await);

    // Config: show, reload from the file, log level.
    let shown = admin.ok(json!({"cmd": "config.show"})).await;
    assert_eq!(shown["token_key"], "hs256 (secret redacted)");
    assert!(!shown.to_string().contains("integration-test-secret"));
    std::fs::write(
        node.dir.path().join("chorusd.toml"),
        "log = \"debug\"\n[limits]\npublish_rate_per_sec = 7\npublish_burst = 9\n",
    )
    .unwrap();
    let reloaded = admin.ok(json!({"cmd": "config.reload"})).await;
    assert_eq!(reloaded["limits"]["publish_burst"], 9);
    let mut late = node.connect("erin").await;
    assert_eq!(
        late.welcome.as_ref().unwrap().limits.unwrap().publish_burst,
        9,
        "new sessions see it"
    );
    std::fs::write(
        node.dir.path().join("chorusd.toml"),
        "[limits]\nmax_frame_bytes = 0\n",
    )
    .unwrap();
    assert_eq!(
        admin.err(json!({"cmd": "config.reload"})).await,
        "bad_request"
    );
    std::fs::write(node.dir.path().join("chorusd.toml"), "not = [toml").unwrap();
    assert_eq!(
        admin.err(json!({"cmd": "config.reload"})).await,
        "bad_request"
    );
    admin
        .ok(json!({"cmd": "log_level.set", "level": "warn,chorus_server=trace"}))
        .await;
    assert_eq!(
        admin
            .err(json!({"cmd": "log_level.set", "level": "bad["}))
            .await,
        "bad_request"
    );
    assert_eq!(
        *LOG_FILTERS.lock().unwrap(),
        ["debug".to_owned(), "warn,chorus_server=trace".to_owned()]
    );
    let _ = late
        .request(Request::Ping(v1::Ping { client_time_ms: 0 }))
        .await;

    // Audit: the actions above, with this process's uid, durable across a new connection.
    let mut other = Admin::connect(&socket(&node)).await;
    let audit = other.ok(json!({"cmd": "audit.list", "limit": 1000})).await;
    let records = audit["records"].as_array().unwrap();
    let cmds: Vec<&str> = records.iter().map(|r| r["cmd"].as_str().unwrap()).collect();
    for expected in [
        "channels.create",
        "connections.kick",
        "messages.delete",
        "users.ban",
        "users.unban",
        "users.revoke",
        "config.reload",
        "log_level.set",
    ] {
        assert!(cmds.contains(&expected), "{expected} audited: {cmds:?}");
    }
    assert!(
        !cmds.contains(&"status") && !cmds.contains(&"channels.show"),
        "reads are not audited"
    );
    let my_uid = std::process::Command::new("id").arg("-u").output().unwrap();
    let my_uid: u64 = String::from_utf8_lossy(&my_uid.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(records.iter().all(|r| r["uid"].as_u64() == Some(my_uid)));
    assert!(
        records.iter().any(|r| r["ok"] == false),
        "failures are audited too"
    );
    let since = records.last().unwrap()["time_ms"].as_u64().unwrap();
    let recent = other
        .ok(json!({"cmd": "audit.list", "since_ms": since}))
        .await;
    assert!(!recent["records"].as_array().unwrap().is_empty());
    let on_disk = std::fs::read_to_string(node.dir.path().join("audit.ndjson")).unwrap();
    assert_eq!(on_disk.lines().count(), records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_sends_every_client_elsewhere() {
    let node = Node::start_with(with_control).await;
    let mut clients = Vec::new();
    for u in ["a", "b", "c"] {
        clients.push(node.connect(u).await);
    }
    let mut admin = Admin::connect(&socket(&node)).await;
    let r = admin
        .ok(json!({"cmd": "drain", "reconnect_after_ms": 250}))
        .await;
    assert_eq!(r["sessions_closing"], 3);
    for c in &mut clients {
        let d = c.until_closed().await.unwrap();
        assert_eq!(
            (d.code(), d.reconnect_after_ms),
            (CloseCode::GoingAway, 250)
        );
    }
    for _ in 0..100 {
        let s = admin.ok(json!({"cmd": "status"})).await;
        if s["sessions"] == 0 {
            assert_eq!(s["draining"], true);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(admin.ok(json!({"cmd": "status"})).await["sessions"], 0);
    // No new connections; the control socket keeps serving.
    assert!(
        tokio::net::TcpStream::connect(node.addr()).await.is_err()
            || !admitted(&node, &token("d")).await
    );
    admin.ok(json!({"cmd": "channels.list"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_write_load_restores_into_a_fresh_node() {
    let node = Node::start_with(|c| {
        with_control(c);
        c.limits.publish_rate_per_sec = 100_000;
        c.limits.publish_burst = 100_000;
    })
    .await;
    let mut alice = node.connect("alice").await;
    alice.create_group("room", ChannelKind::Group, &[]).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let a = appended(
                    alice
                        .publish("room", &format!("k{i}"), &format!("m{i}"))
                        .await,
                );
                acked.lock().unwrap().push((a.seq, format!("m{i}")));
                i += 1;
            }
        })
    };
    let writing = common::process::wait_until(Duration::from_secs(10), || async {
        !acked.lock().unwrap().is_empty()
    })
    .await;
    assert!(writing);
    let before = acked.lock().unwrap().clone();
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("b1");
    let mut admin = Admin::connect(&socket(&node)).await;
    let report = admin
        .ok(json!({"cmd": "store.backup", "dir": target.to_string_lossy()}))
        .await;
    assert_eq!(report["paused_writes"], false);
    let went_on = common::process::wait_until(Duration::from_secs(10), || async {
        acked.lock().unwrap().len() > before.len()
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    assert!(went_on, "writes went on");
    assert_eq!(
        admin
            .err(json!({"cmd": "store.backup", "dir": target.to_string_lossy()}))
            .await,
        "bad_request"
    );
    assert_eq!(
        admin
            .err(json!({"cmd": "store.backup", "dir": "relative/dir"}))
            .await,
        "bad_request"
    );
    assert!(target.join("BACKUP.json").exists());

    // Restore: a fresh node whose data directory is the backup.
    let mut config = Config::for_tests(&target, common::SECRET);
    config.store = chorus_storage::StoreConfig::new(target.join("store"));
    let restored = chorus_server::Server::start(config).await.unwrap();
    let mut reader = Client::connect(restored.ws_addr(), &token("alice")).await;
    let page = match reader
        .request(Request::History(v1::History {
            channel_id: "room".into(),
            limit: 200,
            anchor: Some(v1::history::Anchor::AfterSeq(0)),
            ..Default::default()
        }))
        .await
    {
        reply::Result::HistoryPage(p) => p,
        other => panic!("{other:?}"),
    };
    let mut stored: Vec<(u64, String)> = page
        .events
        .iter()
        .map(|e| (e.seq, text(e).to_owned()))
        .collect();
    let mut after = stored.last().map_or(0, |s| s.0);
    let mut more = page.has_more_after;
    while more {
        let page = match reader
            .request(Request::History(v1::History {
                channel_id: "room".into(),
                limit: 200,
                anchor: Some(v1::history::Anchor::AfterSeq(after)),
                ..Default::default()
            }))
            .await
        {
            reply::Result::HistoryPage(p) => p,
            other => panic!("{other:?}"),
        };
        stored.extend(page.events.iter().map(|e| (e.seq, text(e).to_owned())));
        after = stored.last().map_or(0, |s| s.0);
        more = page.has_more_after;
    }
    let seqs: Vec<u64> = stored.iter().map(|s| s.0).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gapless");
    for (seq, text) in &before {
        assert!(
            stored.contains(&(*seq, text.clone())),
            "acknowledged message {seq} restored"
        );
    }
    restored.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_erase_leaves_nothing_of_the_user() {
    let node = Node::start_with(with_control).await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice
        .create_group("pair", ChannelKind::Group, &["bob"])
        .await;
    // A direct channel: its pair index entry names alice.
    alice.create_group("", ChannelKind::Direct, &["bob"]).await;
    let a1 = appended(alice.publish("pair", "a1", "alice secret one").await);
    let b1 = appended(bob.publish("pair", "b1", "bob reply").await);
    let a2 = appended(alice.publish("pair", "a2", "alice secret two").await);
    let reacted = alice
        .request(Request::React(v1::React {
            channel_id: "pair".into(),
            target_seq: b1.seq,
            emoji: "👍".into(),
            client_msg_id: String::new(),
        }))
        .await;
    assert!(matches!(reacted, reply::Result::Appended(_)), "{reacted:?}");
    // A reply in bob's thread and a pin of his message: derived records naming her.
    let reply = alice
        .request(Request::Publish(v1::Publish {
            channel_id: "pair".into(),
            message: Some(v1::Message {
                client_msg_id: "a3".into(),
                text: "alice in a thread".into(),
                thread_parent_seq: b1.seq,
                ..Default::default()
            }),
        }))
        .await;
    appended(reply);
    let pinned = alice
        .request(Request::PinMessage(v1::PinMessage {
            channel_id: "pair".into(),
            target_seq: b1.seq,
            client_msg_id: String::new(),
        }))
        .await;
    assert!(matches!(pinned, reply::Result::Appended(_)), "{pinned:?}");
    alice
        .request(Request::MarkRead(v1::MarkRead {
            channel_id: "pair".into(),
            seq: b1.seq,
        }))
        .await;

    let mut admin = Admin::connect(&socket(&node)).await;
    let export = admin
        .ok(json!({"cmd": "users.export", "user": "alice"}))
        .await;
    let authored: Vec<&str> = export["authored"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["body"]["text"].as_str())
        .collect();
    assert_eq!(
        authored,
        ["alice secret one", "alice secret two", "alice in a thread"]
    );
    assert_eq!(export["memberships"][0]["channel"], "pair");
    assert!(
        export["memberships"][0]["read_marker"]["last_read_seq"]
            .as_u64()
            .unwrap()
            >= b1.seq
    );
    assert!(export["profile"]["created_at_ms"].as_u64().unwrap() > 0);

    let report = admin
        .ok(json!({"cmd": "users.erase", "user": "alice"}))
        .await;
    assert_eq!(
        report["entries_erased"], 5,
        "her three messages, her reaction and its removal"
    );
    assert_eq!(
        report["direct_pairs_removed"], 1,
        "her direct channel with bob"
    );
    assert!(
        report["entries_anonymised"].as_u64().unwrap() >= 1,
        "the events naming her"
    );
    let anonymous = report["anonymous_id"].as_str().unwrap().to_owned();
    assert_eq!(
        alice.until_closed().await.unwrap().code(),
        CloseCode::AuthInvalid
    );
    assert!(
        !admitted(&node, &token("alice")).await,
        "her old tokens are refused"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(
        !admitted(&node, &token("alice")).await,
        "new ones too: the account is erased"
    );

    // Bob's history: gapless, his message intact, nothing of alice readable.
    let page = match bob
        .request(Request::History(v1::History {
            channel_id: "pair".into(),
            limit: 100,
            anchor: Some(v1::history::Anchor::AfterSeq(0)),
            ..Default::default()
        }))
        .await
    {
        reply::Result::HistoryPage(p) => p,
        other => panic!("{other:?}"),
    };
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=page.head_seq).collect::<Vec<_>>(), "gapless");
    let dump = format!("{:?} {:?}", page.events, page.summaries);
    assert!(!dump.contains("alice"), "no trace of alice: {dump}");
    let b1_summary = page.summaries.iter().find(|s| s.seq == b1.seq).unwrap();
    assert!(
        b1_summary.reactions.is_empty(),
        "her reaction no longer counts"
    );
    assert!(dump.contains("bob reply"));
    for seq in [a1.seq, a2.seq] {
        let e = page.events.iter().find(|e| e.seq == seq).unwrap();
        assert_eq!(e.author_id, anonymous);
        assert!(
            matches!(&e.body, Some(Body::Tombstone(t)) if t.reason == v1::tombstone::Reason::UserErased as i32)
        );
    }
    let after = admin
        .ok(json!({"cmd": "users.export", "user": "alice"}))
        .await;
    assert_eq!(after["authored"].as_array().unwrap().len(), 0);
    assert_eq!(after["memberships"].as_array().unwrap().len(), 0);
    assert_eq!(after["profile"]["erased"], true);
    let shown = admin
        .ok(json!({"cmd": "channels.show", "channel": "pair"}))
        .await;
    assert_eq!(shown["member_list"].as_array().unwrap().len(), 1);
}

/// Runs `chorusctl` against the node; returns (exit code, stdout, stderr).
async fn chorusctl(node: &Node, args: &[&str]) -> (i32, String, String) {
    let socket = socket(node);
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_chorusctl"))
            .arg("--socket")
            .arg(&socket)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorusctl_prints_tables_json_and_exit_codes() {
    let node = Node::start_with(with_control).await;
    let _alice = node.connect("alice").await;
    let (code, out, _) = chorusctl(&node, &["status"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("node_id: test-node") && out.contains("sessions: 1"),
        "{out}"
    );
    let (code, out, _) = chorusctl(
        &node,
        &[
            "channels", "create", "team", "--owner", "alice", "--member", "bob",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let (_, out, _) = chorusctl(&node, &["channels", "list"]).await;
    assert!(
        out.contains("CHANNEL") && out.contains("team"),
        "a table: {out}"
    );
    let (_, out, _) = chorusctl(&node, &["--json", "connections", "list"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sessions"][0]["user"], "alice");
    let file = node.dir.path().join("alice.json");
    let (code, _, _) = chorusctl(
        &node,
        &["users", "export", "alice", "--out", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0);
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(exported["user"], "alice");
    let (code, out, _) = chorusctl(&node, &["--json", "connections", "kick", "--all"]).await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["kicked"], 1);
    let (code, _, err) = chorusctl(&node, &["channels", "show", "missing"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("not_found"), "{err}");
    let (code, _, err) = chorusctl(&node, &["users", "erase", "alice"]).await;
    assert_eq!(code, 2, "erase needs --yes: {err}");
    let unreachable = std::process::Command::new(env!("CARGO_BIN_EXE_chorusctl"))
        .args(["--socket", "/nonexistent/control.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach the node"));
}

/// With every admin slot taken, a further admin was left in the accept queue and `chorusctl`
/// hung with no answer for as long as the others stayed connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_past_the_slots_is_told_and_chorusctl_never_hangs() {
    let node = Node::start_with(with_control).await;
    let mut held = Vec::new();
    for _ in 0..chorus_server::control::MAX_CONNECTIONS {
        let mut admin = Admin::connect(&socket(&node)).await;
        // Answered: the connection holds a slot.
        admin.ok(json!({"cmd": "status"})).await;
        held.push(admin);
    }
    let mut extra = Admin::connect(&socket(&node)).await;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), extra.reader.read_line(&mut line))
        .await
        .expect("the extra admin is answered at once")
        .unwrap();
    let busy: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(busy["ok"], false);
    assert_eq!(busy["error"]["code"], "busy", "{busy}");
    let started = std::time::Instant::now();
    let (code, _, err) = chorusctl(&node, &["status"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("busy"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A slot given back is usable again.
    held.pop();
    let mut ok = false;
    for _ in 0..100 {
        let (code, _, _) = chorusctl(&node, &["status"]).await;
        if code == 0 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a freed slot serves the next admin");
    drop(held);
    // A listener that never answers: the reply timeout ends chorusctl with exit status 2.
    let mute = node.dir.path().join("mute.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&mute).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_chorusctl"))
            .args(["--timeout", "1", "--socket"])
            .arg(&mute)
            .arg("status")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timeout"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
