//! Reconnect storm: C SDK clients, each subscribed to a channel, lose their connections at once
//! (the node kicks every session, through its control socket); a publisher keeps publishing.
//! Measures the time until every client has reconnected and caught up, and checks that each
//! client's stream stayed gapless and duplicate-free through it. Every step that waits on the
//! node has a time limit, so a node that never comes back ends the run with errors instead of
//! hanging it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chorus_client::{ChannelId, Client, EntryBody, Event};
use chorus_protocol::v1;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use super::{ConnectTiming, Setup};
use crate::check::StreamCheck;
use crate::payload::Payload;
use crate::report::{self, Percentiles, Report};

/// How long one publish may take, reconnects included.
const PUBLISH_LIMIT: Duration = Duration::from_secs(30);

/// How long the control socket may take to answer the kick.
const KICK_LIMIT: Duration = Duration::from_secs(30);

/// How long the restart command may run.
const RESTART_LIMIT: Duration = Duration::from_secs(120);

/// How long joining and subscribing may take, per client and for all of them.
const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(60);

/// How long a client may take to close.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// How long clients told to give up may take to hand in their results (more than a close).
const GIVE_UP_GRACE: Duration = Duration::from_secs(10);

/// `reconnect-storm` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// SDK clients.
    #[arg(long, default_value_t = 1_000)]
    pub clients: usize,
    /// Channels the clients are spread over.
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// Publishes per second (all channels) before, during and after the storm.
    #[arg(long, default_value_t = 100.0, value_parser = super::positive_rate)]
    pub rate: f64,
    /// A node's control socket: the storm kicks every session at once through it. Repeat it
    /// for every node of a run with several `--target`s (all are kicked together).
    #[arg(
        long,
        required_unless_present = "restart_command",
        conflicts_with = "restart_command"
    )]
    pub control_socket: Vec<PathBuf>,
    /// Instead of kicking: a shell command that restarts the node (for example `kill -9` and
    /// start it again); run with `sh -c` (at most 120 s). The storm's clock starts when the
    /// command starts, so the restart's own time counts.
    #[arg(long)]
    pub restart_command: Option<String>,
    /// Seconds of steady state before the storm.
    #[arg(long, default_value_t = 3)]
    pub before: u64,
    /// Seconds allowed for everyone to catch up, after publishing stopped; clients still
    /// behind then are counted (with what they missed) and the run reports an error.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

struct ClientResult {
    /// Which of the channels this client follows (its index in `channels`).
    channel: usize,
    check: StreamCheck,
    reconnected_at: Option<Instant>,
    caught_up_at: Option<Instant>,
    reloads: u64,
    /// Test messages received for the first time.
    delivered: u64,
    /// Told to give up at the deadline while still behind.
    gave_up: bool,
}

/// Runs `reconnect-storm`.
pub async fn run(setup: &Setup, args: &Args) -> anyhow::Result<Report> {
    if args.clients == 0 || args.channels == 0 {
        bail!("reconnect-storm needs clients and channels");
    }
    super::check_rate(args.rate)?;
    if args.restart_command.is_none() && args.control_socket.is_empty() {
        bail!("give --control-socket or --restart-command");
    }
    let mut report = setup.report(
        "reconnect-storm",
        json!({
            "clients": args.clients, "channels": args.channels, "rate": args.rate,
            "before_secs": args.before,
        }),
    );
    let tag = rand::random::<u16>();
    let channels: Vec<String> = (0..args.channels)
        .map(|i| format!("lt{}-{tag:04x}-storm-{i}", setup.run_id))
        .collect();
    // The publisher: a lean connection (the control socket's kick spares no one, so it
    // reconnects too).
    let mut errors = BTreeMap::new();
    let mut connect = ConnectTiming::default();
    let mut owner = setup
        .connect_many(1, |i| setup.user("storm-pub", i), &mut connect, &mut errors)
        .await;
    let Some((_, mut owner)) = owner.pop() else {
        bail!("the publisher could not connect: {errors:?}");
    };
    for c in &channels {
        owner.create_public(c).await?;
    }
    drop(owner);

    eprintln!("connecting {} SDK clients...", args.clients);
    let interval = Duration::from_secs_f64(1.0 / f64::from(setup.connect_rate));
    // Each channel's last acknowledged seq when the storm hit: a client has caught up once it
    // reconnected and holds everything up to there.
    let storm_heads = Arc::new(tokio::sync::OnceCell::<Vec<u64>>::new());
    let acked = Arc::new(tokio::sync::watch::channel(vec![0u64; args.channels]).0);
    // Each channel's last acknowledged seq once publishing stopped (`None` until then).
    let last_published = Arc::new(tokio::sync::watch::channel(None::<Vec<u64>>).0);
    // Tells clients still catching up at the deadline to hand in what they have.
    let give_up = Arc::new(tokio::sync::watch::channel(false).0);
    // Set when publishing starts, so that the timeline counts from there (connecting and
    // subscribing thousands of clients takes a while).
    let latency = Arc::new(std::sync::OnceLock::<report::Latencies>::new());
    let mut tasks = Vec::new();
    let subscribed = Arc::new(tokio::sync::Semaphore::new(0));
    let start_connect = Instant::now();
    for i in 0..args.clients {
        let scheduled = start_connect + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        let user = setup.user("storm", i);
        let token = setup.minter.token(&user)?;
        let mut config = setup
            .config(i, &token)?
            .backoff(Duration::from_millis(500), Duration::from_secs(10))
            .event_capacity(1_024);
        // QUIC: one socket per source address for all clients, not one each.
        if let Some(endpoint) = setup.quic_endpoint(i) {
            config = config.quic_endpoint(&endpoint);
        }
        let channel = ChannelId::new(channels[i % args.channels].as_str())?;
        let index = i % args.channels;
        let (storm_heads, mut finals) = (storm_heads.clone(), last_published.subscribe());
        let (mut give_up, latency) = (give_up.subscribe(), latency.clone());
        let begun = std::time::Instant::now();
        connect.started(scheduled.into_std(), begun);
        let (client, mut events) = match Client::connect(config).await {
            Ok(c) => c,
            Err(e) => {
                *errors.entry(format!("connect: {e}")).or_default() += 1;
                continue;
            }
        };
        connect.connected(begun.elapsed());
        let subscribed = subscribed.clone();
        tasks.push(tokio::spawn(async move {
            // Joined and subscribed here, not in the pacing loop: one after the other they
            // took ~9 ms each, 90 s for 10,000 clients.
            let sub = async {
                client.join_channel(&channel).await?;
                client.subscribe(&channel).await
            };
            let sub = tokio::time::timeout(SUBSCRIBE_LIMIT, sub).await;
            subscribed.add_permits(1);
            let sub = match sub {
                Ok(Ok(sub)) => sub,
                Ok(Err(e)) => return Err(format!("subscribe: {e}")),
                Err(_) => return Err(format!("subscribe: over {SUBSCRIBE_LIMIT:?}")),
            };
            let mut r = ClientResult {
                channel: index,
                // The publisher's sends are concurrent tasks, resent across reconnects: their
                // numbers need not reach the node in order.
                check: StreamCheck::after(sub.head.get()).remembering_numbers(),
                reconnected_at: None,
                caught_up_at: None,
                reloads: 0,
                delivered: 0,
                gave_up: false,
            };
            // Done once publishing stopped and this client holds its channel's last
            // acknowledged seq (nothing to wait for if none was acknowledged).
            let done = |r: &ClientResult, finals: &Option<Vec<u64>>| {
                finals.as_ref().is_some_and(|f| r.check.last() >= f[index])
            };
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    changed = finals.changed() => {
                        if changed.is_err() || done(&r, &finals.borrow()) { break; }
                        continue;
                    }
                    _ = give_up.changed() => {
                        r.gave_up = true;
                        break;
                    }
                };
                match event {
                    Some(Event::Entry(e)) => {
                        let payload = match &e.body {
                            EntryBody::Message(m) => Payload::decode(&m.custom),
                            _ => None,
                        };
                        match payload {
                            Some(p) => {
                                if r.check.observe_message(e.seq.get(), p.sender, p.number) {
                                    r.delivered += 1;
                                    if let Some(latency) = latency.get() {
                                        let now = std::time::Instant::now();
                                        latency.record_ending(p.age_at(now), now);
                                    }
                                }
                            }
                            None => {
                                r.check.observe(e.seq.get());
                            }
                        }
                        if done(&r, &finals.borrow()) {
                            mark_caught_up(&mut r, storm_heads.get(), index);
                            break;
                        }
                    }
                    // The first reconnect once the storm began: an earlier one is not the
                    // storm's, a later one would hide how long the first took.
                    Some(Event::Connected {
                        reconnect: true, ..
                    }) if r.reconnected_at.is_none() && storm_heads.get().is_some() => {
                        r.reconnected_at = Some(Instant::now());
                    }
                    Some(Event::Reload { .. }) => r.reloads += 1,
                    Some(Event::Closed { .. }) | None => break,
                    Some(_) => {}
                }
                mark_caught_up(&mut r, storm_heads.get(), index);
            }
            // Unread events would hold the close up (it flushes them into this queue first).
            drop(events);
            let _ = tokio::time::timeout(CLOSE_LIMIT, client.close()).await;
            Ok(r)
        }));
    }
    report.connections = tasks.len() as u64;
    connect.fill(&mut report);
    // Every client subscribed (or failed to) before the steady state begins.
    let all = u32::try_from(tasks.len()).unwrap_or(u32::MAX);
    if tokio::time::timeout(SUBSCRIBE_LIMIT, subscribed.acquire_many(all))
        .await
        .is_err()
    {
        bail!("clients still subscribing after {SUBSCRIBE_LIMIT:?}");
    }

    // Publisher: SDK client too, so that it survives the storm by itself.
    let pub_token = setup.minter.token(&setup.user("storm-pub", 0))?;
    let (publisher, _pub_events) = Client::connect(setup.config(0, &pub_token)?).await?;
    let meter = setup.meter();
    let publishing_started = Instant::now();
    let _ = latency.set(report::Latencies::starting(std::time::Instant::now()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let publishing = {
        let (publisher, channels, stop, acked) = (
            publisher.clone(),
            channels.clone(),
            stop.clone(),
            acked.clone(),
        );
        let rate = args.rate;
        tokio::spawn(async move {
            let mut last = vec![0u64; channels.len()];
            let mut outcome = Publishing::default();
            let mut n = 0u64;
            let start = Instant::now();
            let mut pending = tokio::task::JoinSet::new();
            loop {
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = stop.notified() => break,
                }
                let idx = (n as usize) % channels.len();
                let (p, c) = (publisher.clone(), channels[idx].clone());
                pending.spawn(async move {
                    let c = ChannelId::new(c.as_str()).map_err(|e| format!("publish: {e}"))?;
                    let message = v1::Message {
                        text: format!("storm {n}"),
                        custom: Payload::now(0, n).encode(),
                        ..Default::default()
                    };
                    match tokio::time::timeout(PUBLISH_LIMIT, p.publish(&c, message)).await {
                        Ok(Ok(a)) => Ok((idx, a.seq.get())),
                        Ok(Err(e)) => Err(format!("publish: {e}")),
                        Err(_) => Err(format!("publish: no ack within {PUBLISH_LIMIT:?}")),
                    }
                });
                n += 1;
                while let Some(done) = pending.try_join_next() {
                    if tally(done, &mut last, &mut outcome) {
                        // `send_replace`: `send` stores nothing while no receiver exists.
                        acked.send_replace(last.clone());
                    }
                }
            }
            while let Some(done) = pending.join_next().await {
                tally(done, &mut last, &mut outcome);
            }
            outcome.attempted = n;
            (outcome, last)
        })
    };
    tokio::time::sleep(Duration::from_secs(args.before)).await;
    // The clock starts before the kick or restart: their own time is part of the storm, and
    // what was acknowledged before it is what every client must get back.
    let storm = Instant::now();
    let _ = storm_heads.set(acked.borrow().clone());
    let kicked = match (&args.restart_command, args.control_socket.as_slice()) {
        (Some(command), _) => {
            eprintln!("restarting the node: {command}");
            tokio::time::timeout(RESTART_LIMIT, restart(command))
                .await
                .map_err(|_| anyhow::anyhow!("the restart command ran over {RESTART_LIMIT:?}"))??;
            None
        }
        // At least one socket: checked before connecting anyone.
        (None, sockets) => {
            eprintln!("kicking every session of {} node(s)...", sockets.len());
            let mut kicks = tokio::task::JoinSet::new();
            for socket in sockets {
                let socket = socket.clone();
                kicks.spawn(async move { kick_all(&socket).await });
            }
            let all = async {
                let mut kicked = 0;
                while let Some(k) = kicks.join_next().await {
                    kicked += k??;
                }
                anyhow::Ok(kicked)
            };
            Some(
                tokio::time::timeout(KICK_LIMIT, all)
                    .await
                    .map_err(|_| anyhow::anyhow!("the kick took over {KICK_LIMIT:?}"))??,
            )
        }
    };
    // Keep publishing through the storm for a few seconds, then stop and wait for catch-up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.notify_one();
    let (publishing, last) = publishing.await?;
    let publishing_ended = Instant::now();
    for (kind, count) in publishing.errors {
        *errors.entry(kind).or_default() += count;
    }
    let _ = last_published.send(Some(last.clone()));
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut results = Vec::new();
    let mut collector = super::Collector::new(deadline, GIVE_UP_GRACE);
    for mut t in tasks {
        // Behind at the deadline: its result still counts, with what it missed.
        let Some(ended) = collector
            .join(&mut t, || {
                let _ = give_up.send(true);
            })
            .await
        else {
            *errors.entry("client did not stop".into()).or_default() += 1;
            continue;
        };
        let kind = match ended {
            Ok(Ok(r)) => {
                results.push(r);
                continue;
            }
            Ok(Err(kind)) => kind,
            Err(e) => format!("client task: {e}"),
        };
        *errors.entry(kind).or_default() += 1;
    }
    let late = results.iter().filter(|r| r.gave_up).count() as u64;
    if late > 0 {
        *errors
            .entry("not caught up before the timeout".into())
            .or_default() += late;
    }
    let _ = tokio::time::timeout(CLOSE_LIMIT, publisher.close()).await;
    let mut reconnect_times = report::histogram();
    let mut caught_up_last = storm;
    let mut reconnected = 0u64;
    let mut reloads = 0;
    let mut not_caught_up = 0u64;
    // By the channel each client followed: clients that failed to connect left no result, so
    // a result's position says nothing about its channel.
    for r in &results {
        let idx = r.channel;
        report.delivered += r.delivered;
        report.duplicates += r.check.duplicates;
        report.reordered += r.check.reordered;
        report.lost = report.lost.saturating_add(r.check.gaps(last[idx]));
        report.undelivered = report.undelivered.saturating_add(r.check.tail(last[idx]));
        reloads += r.reloads;
        if let Some(t) = r.reconnected_at {
            reconnected += 1;
            report::record(&mut reconnect_times, t.saturating_duration_since(storm));
        }
        match r.caught_up_at {
            Some(t) => caught_up_last = caught_up_last.max(t),
            None => not_caught_up += 1,
        }
    }
    // Clients that never handed in a result (failed tasks) did not catch up either.
    not_caught_up += report.connections.saturating_sub(results.len() as u64);
    report.published = publishing.acked;
    // Rates over the publishing, and for deliveries until the last client caught up.
    let secs = |end: Instant| {
        end.saturating_duration_since(publishing_started)
            .as_secs_f64()
            .max(1e-9)
    };
    report.published_per_sec = report.published as f64 / secs(publishing_ended);
    report.delivered_per_sec = report.delivered as f64 / secs(caught_up_last.max(publishing_ended));
    report.errors = errors;
    report.duration_secs = caught_up_last
        .saturating_duration_since(storm)
        .as_secs_f64();
    if let Some(latency) = latency.get() {
        report.latency_us = Percentiles::of(&latency.merged());
        report.latency_timeline = latency.timeline();
    }
    meter.finish(&mut report);
    report.extra = json!({
        "storm": if kicked.is_some() { "kick" } else { "restart" },
        "sessions_kicked": kicked,
        "publishes_attempted": publishing.attempted,
        "clients_reconnected": reconnected,
        "clients_not_caught_up": not_caught_up,
        "all_caught_up_secs": report.duration_secs,
        "reconnect_us": Percentiles::of(&reconnect_times),
        "reload_events": reloads,
    });
    Ok(report)
}

/// The publisher's tally.
#[derive(Debug, Default)]
struct Publishing {
    /// Publishes sent.
    attempted: u64,
    /// Publishes acknowledged.
    acked: u64,
    /// Failed publishes by kind.
    errors: BTreeMap<String, u64>,
}

/// Folds one finished publish into the tally; `true` if it raised a channel's last seq.
fn tally(
    done: Result<Result<(usize, u64), String>, tokio::task::JoinError>,
    last: &mut [u64],
    outcome: &mut Publishing,
) -> bool {
    let kind = match done {
        Ok(Ok((channel, seq))) => {
            outcome.acked += 1;
            let raised = seq > last[channel];
            last[channel] = last[channel].max(seq);
            return raised;
        }
        Ok(Err(kind)) => kind,
        Err(e) => format!("publish task: {e}"),
    };
    *outcome.errors.entry(kind).or_default() += 1;
    false
}

/// Records when a reconnected client first holds everything published before the storm.
fn mark_caught_up(r: &mut ClientResult, heads: Option<&Vec<u64>>, index: usize) {
    if r.caught_up_at.is_none()
        && r.reconnected_at.is_some()
        && let Some(heads) = heads
        && r.check.last() >= heads[index]
    {
        r.caught_up_at = Some(Instant::now());
    }
}

/// Runs the operator's restart command; fails the run if it fails.
async fn restart(command: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .context("running the restart command")?;
    if !status.success() {
        bail!("the restart command failed: {status}");
    }
    Ok(())
}

/// Kicks every session of the node through its control socket.
async fn kick_all(path: &std::path::Path) -> anyhow::Result<u64> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .with_context(|| format!("control socket {}", path.display()))?;
    let (r, mut w) = stream.into_split();
    w.write_all(
        b"{\"v\":1,\"cmd\":\"connections.kick\",\"all\":true,\"reason\":\"load test storm\"}\n",
    )
    .await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    if v["ok"] != true {
        bail!("kick refused: {line}");
    }
    Ok(v["result"]["kicked"].as_u64().unwrap_or(0))
}
