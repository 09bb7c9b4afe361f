//! Crash test: a child process appends while the parent records every acknowledgement; the
//! parent SIGKILLs the child at random moments, reopens the store and checks that every
//! acknowledged entry is present exactly once, in order, with no gap. Entries sent but not
//! acknowledged before a kill are retried by the next child with the same idempotency key, so
//! "exactly once" also covers retries across a crash.
//!
//! `CHORUS_CRASH_ROUNDS` (default 20 per engine) makes it run longer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chorus_protocol::ids::Seq;
use chorus_protocol::v1::channel_event::Body;
use chorus_storage::{Anchor, EngineKind, LogQuery, Store, StoreConfig, StoreError};
use common::{cid, create, entry};

const CHANNELS: usize = 4;
const WRITERS: usize = 8;
/// A child stops by itself after this long, in case the parent died.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn engine_from_env() -> EngineKind {
    EngineKind::parse(&std::env::var("CHORUS_CRASH_ENGINE").unwrap_or_default())
        .unwrap_or(EngineKind::Fjall)
}

fn config(dir: &Path, engine: EngineKind) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.engine = engine;
    config.engine_cache_bytes = 8 * 1024 * 1024;
    config
}

/// The child: not a test of its own (it returns at once without the env var).
#[test]
#[ignore = "run by crash_* tests as a child process"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("CHORUS_CRASH_DIR") else {
        return;
    };
    let run: u64 = std::env::var("CHORUS_CRASH_RUN").unwrap().parse().unwrap();
    let retries: Vec<String> = std::env::var("CHORUS_CRASH_RETRY")
        .map(|s| {
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Store::open(config(Path::new(&dir), engine_from_env())).unwrap();
        for ch in 0..CHANNELS {
            let id = format!("c{ch}");
            if store.channel(&cid(&id)).unwrap().is_none() {
                create(&store, &id, "writer", &[]).await;
            }
        }
        // The test harness printed "test crash_child_writer ... " without a newline.
        println!();
        let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let say = move |out: &std::sync::Mutex<std::io::Stdout>, line: String| {
            let mut o = out.lock().unwrap();
            writeln!(o, "{line}").unwrap();
            o.flush().unwrap();
        };
        // Payloads name their channel: "<channel>/<run>-<writer>-<n>".
        for payload in retries {
            let ch = payload.split('/').next().unwrap().to_owned();
            let a = store
                .append(&cid(&ch), entry("writer", &payload, Some(&payload)))
                .await
                .unwrap();
            say(&out, format!("ACK {ch} {} {payload}", a.entry.seq));
        }
        say(&out, "READY".into());
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            let out = out.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while started.elapsed() < CHILD_LIFETIME {
                    n += 1;
                    let ch = format!("c{}", (w + n as usize) % CHANNELS);
                    let payload = format!("{ch}/{run}-{w}-{n}");
                    say(&out, format!("SEND {payload}"));
                    match store
                        .append(&cid(&ch), entry("writer", &payload, Some(&payload)))
                        .await
                    {
                        Ok(a) => say(&out, format!("ACK {ch} {} {payload}", a.entry.seq)),
                        Err(StoreError::Closed) => return,
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Runs one child for a random time, kills it, and returns (acks, sent-but-unacked payloads).
fn run_child(
    dir: &Path,
    engine: EngineKind,
    run: u64,
    retry: &[String],
    kill_after: Duration,
) -> (Vec<(String, u64, String)>, Vec<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CHORUS_CRASH_DIR", dir)
        .env("CHORUS_CRASH_ENGINE", engine.as_str())
        .env("CHORUS_CRASH_RUN", run.to_string())
        .env("CHORUS_CRASH_RETRY", retry.join(","))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    // Wait for READY (the retries are done), then let it write for `kill_after`.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(deadline - Instant::now())
            .expect("child reports READY");
        let ready = line == "READY";
        lines.push(line);
        if ready {
            break;
        }
    }
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());

    let mut acks = Vec::new();
    let mut sent = BTreeSet::new();
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[..] {
            ["ACK", ch, seq, payload] => {
                acks.push((ch.to_owned(), seq.parse().unwrap(), payload.to_owned()));
            }
            ["SEND", payload] => {
                sent.insert(payload.to_owned());
            }
            _ => {}
        }
    }
    for (_, _, p) in &acks {
        sent.remove(p);
    }
    (acks, sent.into_iter().collect())
}

fn verify(dir: &Path, engine: EngineKind, acked: &HashMap<String, (String, u64)>) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(config(dir, engine)).unwrap();
        let mut total = 0;
        for ch in 0..CHANNELS {
            let c = cid(&format!("c{ch}"));
            let Some(info) = store.channel(&c).unwrap() else {
                continue;
            };
            let head = info.position.head.get();
            let page = store
                .read(
                    &c,
                    &LogQuery {
                        anchor: Anchor::After(Seq(0)),
                        limit: head as usize + 1,
                        thread: None,
                    },
                )
                .unwrap();
            let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq.get()).collect();
            assert_eq!(
                seqs,
                (1..=head).collect::<Vec<_>>(),
                "{engine:?} c{ch}: gapless, in order"
            );
            let mut by_payload: BTreeMap<String, u64> = BTreeMap::new();
            for e in &page.entries {
                let Some(Body::Message(m)) = &e.event.body else {
                    panic!("only messages")
                };
                let previous = by_payload.insert(m.text.clone(), e.seq.get());
                assert!(previous.is_none(), "{engine:?}: {} stored twice", m.text);
            }
            for (payload, (pch, seq)) in acked {
                if *pch == format!("c{ch}") {
                    assert_eq!(
                        by_payload.get(payload),
                        Some(seq),
                        "{engine:?}: acked {payload} lost or moved"
                    );
                }
            }
            total += page.entries.len();
        }
        total
    })
}

fn crash_rounds(engine: EngineKind) {
    let rounds: u64 = std::env::var("CHORUS_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("{engine:?}: {rounds} rounds, seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<String, (String, u64)> = HashMap::new();
    let mut retry: Vec<String> = Vec::new();
    for run in 0..rounds {
        let kill_after = Duration::from_millis(20 + next() % 200);
        let (acks, unacked) = run_child(dir.path(), engine, run, &retry, kill_after);
        for (ch, seq, payload) in acks {
            if let Some(prev) = acked.insert(payload.clone(), (ch, seq)) {
                assert_eq!(
                    prev.1, seq,
                    "{engine:?}: a retry of {payload} got another seq"
                );
            }
        }
        // Retry at most a few unacked payloads, like a client's outbox would.
        retry = unacked.into_iter().take(16).collect();
        let stored = verify(dir.path(), engine, &acked);
        assert!(stored >= acked.len());
    }
    println!(
        "{engine:?}: {} acknowledged entries verified after {rounds} kills",
        acked.len()
    );
    assert!(acked.len() as u64 > rounds, "the children made progress");
}

#[test]
fn crash_fjall() {
    crash_rounds(EngineKind::Fjall);
}

#[test]
fn crash_sled() {
    crash_rounds(EngineKind::Sled);
}
