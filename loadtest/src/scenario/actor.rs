//! One simulated user on a lean connection: publishes to its channels (at a fixed rate or with a
//! bounded window of unacknowledged publishes), checks every entry of its subscriptions, and
//! records latency. Phases come from the coordinator: run, drain (stop publishing, wait for
//! acks), settle (read until every subscription reached the channel's last acknowledged seq).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_client::raw::RawIncoming;
use chorus_protocol::v1::{self, client_envelope::Request};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::check::StreamCheck;
use crate::lean::Lean;
use crate::payload::Payload;
use crate::{received, report};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Publish and receive.
    Run,
    /// Stop publishing; wait for outstanding acknowledgements.
    Drain,
    /// Read until caught up with the channels' last acknowledged seqs.
    Settle,
    /// Stop now.
    Stop,
}

/// How an actor publishes.
#[derive(Debug, Clone)]
pub enum Pace {
    /// Never.
    Silent,
    /// This many messages per second, spread evenly.
    Rate(f64),
    /// Keep this many publishes unacknowledged at all times (maximum throughput).
    Window(usize),
}

/// What an actor does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its id (the payload's sender).
    pub id: u32,
    /// Channels it publishes to, with weights (chosen at random by weight per message).
    pub publish_to: Vec<(String, f64)>,
    /// How fast.
    pub pace: Pace,
    /// Bytes of text per message.
    pub body: usize,
    /// Channels it is subscribed to, with their heads when the subscriptions started.
    pub subscriptions: Vec<(String, u64)>,
    /// Send `Typing` every this many publishes (0: never).
    pub typing_every: u64,
    /// Mark read every this many received entries (0: never).
    pub mark_read_every: u64,
}

/// The channels' last acknowledged seqs, filled during the drain.
#[derive(Debug, Default)]
pub struct Finals {
    seqs: Mutex<HashMap<String, u64>>,
}

impl Finals {
    fn raise(&self, channel: &str, seq: u64) {
        let mut seqs = self.seqs.lock().unwrap_or_else(|p| p.into_inner());
        let e = seqs.entry(channel.to_owned()).or_default();
        *e = (*e).max(seq);
    }

    /// Every channel's last acknowledged seq.
    pub fn snapshot(&self) -> HashMap<String, u64> {
        self.seqs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last acknowledged seq of a channel.
    pub fn get(&self, channel: &str) -> u64 {
        self.seqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(channel)
            .copied()
            .unwrap_or(0)
    }
}

/// What an actor measured.
#[derive(Debug)]
pub struct Outcome {
    /// Publishes acknowledged.
    pub acked: u64,
    /// Its subscriptions' checks.
    pub checks: HashMap<String, StreamCheck>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// When its last entry arrived.
    pub last_delivery: Option<Instant>,
    /// Whether it drained (all acks in) before the deadline.
    pub drained: bool,
    /// Test messages received (entries of other kinds, such as joins, are checked but not
    /// counted as deliveries).
    pub delivered: u64,
}

/// How long an actor may take to stop once told to.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(10);

impl Outcome {
    /// The outcome of an actor whose own was lost: one error, nothing else.
    pub(super) fn failed(error: &str) -> Self {
        Self {
            acked: 0,
            checks: HashMap::new(),
            errors: BTreeMap::from([(error.to_owned(), 1)]),
            last_delivery: None,
            // Its failure is the error; "not drained" would count it twice.
            drained: true,
            delivered: 0,
        }
    }
}

enum Sent {
    Publish(usize),
    Other,
}

/// What an actor owes the coordinator however it ends (drained, closed, failed to send,
/// panicked): its channels' last acknowledged seqs, so that subscribers are checked against
/// every acknowledged publish, and its drain permit, so that the drain does not wait for an
/// actor that is gone.
struct Reporting<'a> {
    publish_to: &'a [(String, f64)],
    finals: &'a Finals,
    drained: &'a tokio::sync::Semaphore,
    /// Per channel of `publish_to`: the highest seq acknowledged.
    acked_max: Vec<u64>,
    reported: bool,
}

impl Reporting<'_> {
    fn report(&mut self) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        for ((channel, _), seq) in self.publish_to.iter().zip(&self.acked_max) {
            if *seq > 0 {
                self.finals.raise(channel, *seq);
            }
        }
        self.drained.add_permits(1);
    }
}

impl Drop for Reporting<'_> {
    fn drop(&mut self) {
        self.report();
    }
}

/// The next phase change (`None`: the coordinator is gone), handing the receiver back.
type PhaseWait =
    std::pin::Pin<Box<dyn Future<Output = (watch::Receiver<Phase>, Option<Phase>)> + Send>>;

fn wait_phase(mut rx: watch::Receiver<Phase>) -> PhaseWait {
    Box::pin(async move {
        let changed = rx.changed().await.ok().map(|()| *rx.borrow_and_update());
        (rx, changed)
    })
}

/// Runs an actor until the coordinator says stop (or its connection ends).
pub async fn run(
    mut conn: Lean,
    plan: Plan,
    phase: watch::Receiver<Phase>,
    finals: Arc<Finals>,
    drained: Arc<tokio::sync::Semaphore>,
    latency: Arc<report::Latencies>,
    send_lag: Arc<report::Latencies>,
) -> Outcome {
    let mut out = Outcome {
        acked: 0,
        checks: plan
            .subscriptions
            .iter()
            .map(|(c, head)| (c.clone(), StreamCheck::after(*head)))
            .collect(),
        errors: BTreeMap::new(),
        last_delivery: None,
        drained: false,
        delivered: 0,
    };
    let max_in_flight = conn
        .welcome
        .limits
        .map_or(256, |l| l.max_in_flight_requests as usize)
        .max(1);
    let window = match plan.pace {
        Pace::Window(w) => w.min(max_in_flight),
        _ => max_in_flight,
    };
    let total_weight: f64 = plan.publish_to.iter().map(|(_, w)| w).sum();
    let text = "x".repeat(plan.body);
    let mut in_flight: HashMap<u64, Sent> = HashMap::new();
    let mut reporting = Reporting {
        publish_to: &plan.publish_to,
        finals: &finals,
        drained: &drained,
        acked_max: vec![0; plan.publish_to.len()],
        reported: false,
    };
    let mut sent: u64 = 0;
    let mut received_since_mark: u64 = 0;
    let start = Instant::now();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    // Where in its period this actor's sends fall. Without it every actor of a fixed-rate run
    // sent at the same instants (2,000 pairs at 15/s each: 2,000 publishes at once every
    // 66 ms), which measured the harness's bursts rather than the node.
    let offset: f64 = rng.random();
    // The phase is read at the top of every turn: the watch below is polled only when no frame
    // is ready, so a saturated actor could otherwise miss the end of the run; the watch is what
    // wakes an idle one.
    let phase_now = phase.clone();
    // One timer and one phase watch for the actor's life, not one each per read: per-read
    // registrations were a tenth of a subscriber's CPU at 50,000 deliveries/s.
    let mut phase_wait = wait_phase(phase);
    let next_publish = tokio::time::sleep_until(Instant::now() + Duration::from_secs(3600));
    tokio::pin!(next_publish);
    // Entries that arrived with the subscribe replies.
    let mut backlog: Vec<received::Envelope> = conn
        .pending
        .drain(..)
        .map(|e| received::from_full(&e))
        .collect();
    loop {
        let current = *phase_now.borrow();
        // Publish what is due.
        if current == Phase::Run && !plan.publish_to.is_empty() {
            // Fixed rate: seconds since the start, against which each send is scheduled.
            let mut now_secs = 0.0;
            let due = match plan.pace {
                Pace::Silent => 0,
                Pace::Rate(r) => {
                    now_secs = start.elapsed().as_secs_f64();
                    let should = (now_secs * r + offset) as u64;
                    should.saturating_sub(sent)
                }
                Pace::Window(_) => u64::MAX,
            };
            let room = window.saturating_sub(in_flight.len()) as u64;
            let n = due.min(room).min(256);
            if n > 0 {
                let mut batch = Vec::with_capacity(n as usize + 1);
                for _ in 0..n {
                    let target = if plan.publish_to.len() == 1 {
                        0
                    } else {
                        let mut pick = rng.random::<f64>() * total_weight;
                        plan.publish_to
                            .iter()
                            .position(|(_, w)| {
                                pick -= w;
                                pick <= 0.0
                            })
                            .unwrap_or(0)
                    };
                    if let Pace::Rate(r) = plan.pace {
                        // Message `sent` fell due when `now_secs * r + offset` reached
                        // `sent + 1` (the `should` above).
                        let due_at = ((sent + 1) as f64 - offset).max(0.0) / r;
                        let lag = Duration::from_secs_f64((now_secs - due_at).max(0.0));
                        send_lag.record_at(lag, now_secs as u64);
                    }
                    let id = conn.next_id();
                    let payload = Payload::now(plan.id, sent);
                    sent += 1;
                    batch.push((
                        id,
                        Request::Publish(v1::Publish {
                            channel_id: plan.publish_to[target].0.clone(),
                            message: Some(v1::Message {
                                client_msg_id: format!("{}-{}", plan.id, sent),
                                text: text.clone(),
                                custom: payload.encode(),
                                ..Default::default()
                            }),
                        }),
                    ));
                    in_flight.insert(id, Sent::Publish(target));
                    if plan.typing_every > 0 && sent.is_multiple_of(plan.typing_every) {
                        let id = conn.next_id();
                        batch.push((
                            id,
                            Request::Typing(v1::Typing {
                                channel_id: plan.publish_to[target].0.clone(),
                                typing: true,
                                thread_parent_seq: 0,
                            }),
                        ));
                        in_flight.insert(id, Sent::Other);
                    }
                }
                if let Err(e) = conn.send(batch).await {
                    *out.errors.entry(format!("send: {e}")).or_default() += 1;
                    return out;
                }
            }
        }
        if current == Phase::Drain
            && !out.drained
            && !in_flight.values().any(|s| matches!(s, Sent::Publish(_)))
        {
            reporting.report();
            out.drained = true;
        }
        if current == Phase::Settle
            && out
                .checks
                .iter()
                .all(|(c, check)| check.last() >= finals.get(c))
        {
            return out;
        }
        if current == Phase::Stop {
            return out;
        }
        // Wait for frames, the next publish, or a phase change.
        // A full window waits for replies, not for the clock: a send time already past would
        // fire at once on every turn and spin.
        let next_due = match plan.pace {
            Pace::Rate(r)
                if current == Phase::Run
                    && !plan.publish_to.is_empty()
                    && in_flight.len() < window =>
            {
                Some(start + Duration::from_secs_f64(((sent + 1) as f64 - offset).max(0.0) / r))
            }
            _ => None,
        };
        if let Some(due) = next_due
            && next_publish.deadline() != due
        {
            next_publish.as_mut().reset(due);
        }
        let frames = if !backlog.is_empty() {
            Some(std::mem::take(&mut backlog))
        } else {
            tokio::select! {
                // Frames first: while they keep coming, the timer and the phase watch are not
                // polled at all.
                biased;
                incoming = conn.reader.next_as::<received::Envelope>() => match incoming {
                    RawIncoming::Frames(f) => Some(f),
                    RawIncoming::Closed { code, reason } => {
                        let kind = code.map_or_else(|| format!("closed: {reason}"), |c| format!("closed: {}", c.as_str_name()));
                        *out.errors.entry(kind).or_default() += 1;
                        return out;
                    }
                },
                () = &mut next_publish, if next_due.is_some() => None,
                (rx, changed) = &mut phase_wait => {
                    if changed.is_none() {
                        return out;
                    }
                    phase_wait = wait_phase(rx);
                    None
                }
            }
        };
        let Some(frames) = frames else {
            continue;
        };
        let mut marks = Vec::new();
        // One clock read for the batch: its frames arrived together.
        let now = std::time::Instant::now();
        for env in frames {
            match env.kind {
                Some(received::Kind::Reply(r)) => match in_flight.remove(&r.request_id) {
                    Some(Sent::Publish(target)) => match r.result {
                        Some(received::ReplyResult::Appended(a)) => {
                            out.acked += 1;
                            let max = &mut reporting.acked_max[target];
                            *max = (*max).max(a.seq);
                        }
                        Some(received::ReplyResult::Error(e)) => {
                            *out.errors
                                .entry(format!("publish: {}", e.code_name()))
                                .or_default() += 1;
                        }
                        None => {
                            *out.errors
                                .entry("publish: unexpected reply".into())
                                .or_default() += 1
                        }
                    },
                    Some(Sent::Other) => {
                        if let Some(received::ReplyResult::Error(e)) = r.result {
                            *out.errors
                                .entry(format!("request: {}", e.code_name()))
                                .or_default() += 1;
                        }
                    }
                    None => {}
                },
                Some(received::Kind::Push(received::Push {
                    push: Some(received::PushKind::Event(e)),
                })) => {
                    let Some(channel) = e.channel() else {
                        *out.errors
                            .entry("event: channel id not UTF-8".into())
                            .or_default() += 1;
                        continue;
                    };
                    let Some(check) = out.checks.get_mut(channel) else {
                        continue;
                    };
                    out.last_delivery = Some(now.into());
                    let payload = match &e.body {
                        Some(received::Body::Message(m)) => Payload::decode(&m.custom),
                        _ => None,
                    };
                    match payload {
                        // A duplicate is neither a delivery nor a latency sample.
                        Some(p) => {
                            if check.observe_message(e.seq, p.sender, p.number) {
                                out.delivered += 1;
                                if p.sender != plan.id {
                                    latency.record_ending(p.age_at(now), now);
                                }
                            }
                        }
                        None => {
                            check.observe(e.seq);
                        }
                    }
                    received_since_mark += 1;
                    if plan.mark_read_every > 0 && received_since_mark >= plan.mark_read_every {
                        received_since_mark = 0;
                        marks.push((channel.to_owned(), e.seq));
                    }
                }
                _ => {}
            }
        }
        if !marks.is_empty() && current == Phase::Run {
            let batch: Vec<(u64, Request)> = marks
                .into_iter()
                .map(|(channel_id, seq)| {
                    let id = conn.next_id();
                    in_flight.insert(id, Sent::Other);
                    (id, Request::MarkRead(v1::MarkRead { channel_id, seq }))
                })
                .collect();
            if let Err(e) = conn.send(batch).await {
                *out.errors.entry(format!("send: {e}")).or_default() += 1;
                return out;
            }
        }
    }
}
