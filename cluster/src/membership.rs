//! Membership: foca's SWIM over the endpoint's datagrams. One task owns the foca instance and
//! takes packets, timers and commands from channels; what foca wants sent goes out as
//! datagrams. It says who is alive, suspect or down, and carries ephemeral broadcasts. It is a
//! liveness hint only: nothing that must be safe is decided from it.

use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foca::{
    AccumulatingRuntime, Foca, OwnedNotification, PeriodicParams, PostcardCodec, State, Timer,
};
use rand_foca::SeedableRng;
use rand_foca::rngs::StdRng;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::MembershipTiming;
use crate::endpoint::Endpoint;
use crate::ephemeral::{self, Ephemeral, Handler};
use crate::error::ClusterError;
use crate::id::NodeId;
use crate::member::Member;

/// Commands and timers waiting for the membership task.
const EVENTS: usize = 1024;
/// Broadcasts a subscriber may lag behind before it misses some.
const BROADCAST_BUFFER: usize = 1024;
/// Broadcasts waiting to be disseminated at most; more are refused.
const MAX_BROADCAST_BACKLOG: usize = 256;

type Swim = Foca<Member, PostcardCodec, StdRng, Handler>;

enum Event {
    Timer(Timer<Member>),
    Announce(Member),
    Broadcast(String, Vec<u8>, oneshot::Sender<Result<(), ClusterError>>),
    View(oneshot::Sender<Vec<MemberView>>),
    Leave(oneshot::Sender<()>),
}

/// A member as this node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    /// Its identity.
    #[serde(flatten)]
    pub member: Member,
    /// alive, suspect or down.
    pub state: &'static str,
    /// SWIM's incarnation number (bumped when it refutes a suspicion).
    pub incarnation: u16,
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Alive => "alive",
        State::Suspect => "suspect",
        State::Down => "down",
    }
}

/// The handle on the membership task.
#[derive(Clone)]
pub struct Membership {
    events: mpsc::Sender<Event>,
    broadcasts: broadcast::Sender<Ephemeral>,
    active: Arc<AtomicUsize>,
}

fn config(timing: &MembershipTiming, max_packet: usize) -> foca::Config {
    let mut c = foca::Config::new_lan(std::num::NonZeroU32::MIN.saturating_add(4));
    c.probe_period = timing.probe_period;
    c.probe_rtt = timing.probe_rtt;
    c.suspect_to_down_after = timing.suspect_to_down_after;
    c.remove_down_after = Some(timing.remove_down_after);
    c.max_packet_size = NonZeroUsize::new(max_packet).unwrap_or(NonZeroUsize::MIN);
    c.max_transmissions = NonZeroU8::new(6).unwrap_or(NonZeroU8::MIN);
    c.notify_down_members = true;
    c.periodic_announce = Some(PeriodicParams {
        frequency: timing.announce_interval.saturating_mul(5),
        num_members: NonZeroUsize::MIN,
    });
    // Announcing to down members is how the two sides of a healed partition find each other.
    c.periodic_announce_to_down_members = Some(PeriodicParams {
        frequency: timing.announce_interval,
        num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
    });
    c.periodic_gossip = Some(PeriodicParams {
        frequency: Duration::from_millis(200),
        num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    });
    c
}

impl Membership {
    /// Starts the membership task for `me` on `endpoint`; `packets` are the membership
    /// datagrams the endpoint receives.
    pub(crate) fn start(
        me: Member,
        timing: &MembershipTiming,
        endpoint: Endpoint,
        packets: mpsc::Receiver<Bytes>,
    ) -> Self {
        let (events_tx, events) = mpsc::channel(EVENTS);
        let (broadcasts, _) = broadcast::channel(BROADCAST_BUFFER);
        let active = Arc::new(AtomicUsize::new(0));
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        let swim = Foca::with_custom_broadcast(
            me.clone(),
            config(timing, endpoint.max_packet()),
            StdRng::from_seed(seed),
            PostcardCodec,
            Handler::new(me.node.clone(), broadcasts.clone()),
        );
        let task = Task {
            swim,
            runtime: AccumulatingRuntime::new(),
            endpoint,
            events_tx: events_tx.clone(),
            active: active.clone(),
            next_seq: 0,
            me: me.node,
        };
        tokio::spawn(task.run(events, packets));
        Self {
            events: events_tx,
            broadcasts,
            active,
        }
    }

    /// Asks foca to join the cluster `member` belongs to.
    pub(crate) async fn announce(&self, member: Member) {
        let _ = self.events.send(Event::Announce(member)).await;
    }

    /// Members this node knows of other than itself that are alive or suspect.
    pub fn active_members(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Every member known, down ones included until they are forgotten.
    pub async fn view(&self) -> Vec<MemberView> {
        let (tx, rx) = oneshot::channel();
        if self.events.send(Event::View(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Sends an ephemeral broadcast to every member, best effort.
    pub async fn broadcast(&self, topic: &str, payload: Vec<u8>) -> Result<(), ClusterError> {
        if topic.len() > ephemeral::MAX_TOPIC_BYTES
            || payload.len() > ephemeral::MAX_BROADCAST_BYTES
        {
            return Err(ClusterError::Config(format!(
                "a broadcast has a topic of at most {} bytes and a payload of at most {}",
                ephemeral::MAX_TOPIC_BYTES,
                ephemeral::MAX_BROADCAST_BYTES
            )));
        }
        let (tx, rx) = oneshot::channel();
        self.events
            .send(Event::Broadcast(topic.to_owned(), payload, tx))
            .await
            .map_err(|_| ClusterError::Closed)?;
        rx.await.map_err(|_| ClusterError::Closed)?
    }

    /// Broadcasts other nodes send, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Ephemeral> {
        self.broadcasts.subscribe()
    }

    /// Tells the cluster this node leaves (so it is down at once, not after suspicion).
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.events.send(Event::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Task {
    swim: Swim,
    runtime: AccumulatingRuntime<Member>,
    endpoint: Endpoint,
    events_tx: mpsc::Sender<Event>,
    active: Arc<AtomicUsize>,
    next_seq: u64,
    me: NodeId,
}

impl Task {
    async fn run(mut self, mut events: mpsc::Receiver<Event>, mut packets: mpsc::Receiver<Bytes>) {
        let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
        // foca schedules its probes itself once it has a member (after the first announce).
        loop {
            tokio::select! {
                p = packets.recv() => {
                    let Some(p) = p else { return };
                    if let Err(e) = self.swim.handle_data(&p, &mut self.runtime) {
                        tracing::debug!(error = %e, "membership packet refused");
                    }
                }
                e = events.recv() => {
                    let Some(e) = e else { return };
                    if self.handle(e) {
                        return;
                    }
                }
                _ = metrics_tick.tick() => self.export_metrics(),
            }
            self.drain();
        }
    }

    /// Returns whether the task should end.
    fn handle(&mut self, event: Event) -> bool {
        let result = match event {
            Event::Timer(t) => self.swim.handle_timer(t, &mut self.runtime),
            Event::Announce(m) => self.swim.announce(m, &mut self.runtime),
            Event::Broadcast(topic, payload, reply) => {
                let answer = if self.swim.custom_broadcast_backlog() >= MAX_BROADCAST_BACKLOG {
                    Err(ClusterError::Busy("too many broadcasts waiting"))
                } else {
                    self.next_seq += 1;
                    let b = Ephemeral {
                        origin: self.me.clone(),
                        topic,
                        seq: self.next_seq,
                        payload,
                    };
                    ephemeral::encode(&b)
                        .map_err(|e| ClusterError::Config(e.to_string()))
                        .and_then(|data| {
                            self.swim
                                .add_broadcast(&data)
                                .map(|_| ())
                                .map_err(|e| ClusterError::Config(e.to_string()))
                        })
                };
                let _ = reply.send(answer);
                // Send it now rather than waiting for the next probe to carry it.
                self.swim.broadcast(&mut self.runtime)
            }
            Event::View(reply) => {
                let _ = reply.send(self.view());
                Ok(())
            }
            Event::Leave(reply) => {
                let r = self.swim.leave_cluster(&mut self.runtime);
                self.drain();
                let _ = reply.send(());
                if let Err(e) = r {
                    tracing::debug!(error = %e, "leaving the cluster");
                }
                return true;
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "membership");
        }
        false
    }

    fn view(&self) -> Vec<MemberView> {
        let mut v: Vec<MemberView> = self
            .swim
            .iter_membership_state()
            .map(|m| MemberView {
                member: m.id().clone(),
                state: state_name(m.state()),
                incarnation: m.incarnation(),
            })
            .collect();
        v.sort_by(|a, b| a.member.node.cmp(&b.member.node));
        v
    }

    fn export_metrics(&self) {
        let mut counts = [0usize; 3];
        for m in self.swim.iter_membership_state() {
            counts[match m.state() {
                State::Alive => 0,
                State::Suspect => 1,
                State::Down => 2,
            }] += 1;
        }
        for (i, state) in ["alive", "suspect", "down"].into_iter().enumerate() {
            metrics::gauge!("chorus_cluster_members", "state" => state).set(counts[i] as f64);
        }
    }

    fn schedule(&self, timer: Timer<Member>, after: Duration) {
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            // Every timer must reach foca; the channel only closes when the task has ended.
            let _ = tx.send(Event::Timer(timer)).await;
        });
    }

    /// Carries out what foca asked for.
    fn drain(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.endpoint
                .send_membership(&to.node, to.cluster_addr, &data);
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.schedule(timer, after);
        }
        let mut changed = false;
        while let Some(n) = self.runtime.to_notify() {
            changed = true;
            match n {
                OwnedNotification::MemberUp(m) => {
                    self.endpoint.learn(&m.node, m.cluster_addr);
                    tracing::info!(node = %m.node, addr = %m.cluster_addr, "cluster member up");
                }
                OwnedNotification::MemberDown(m) => {
                    tracing::info!(node = %m.node, "cluster member down");
                }
                OwnedNotification::Rename(old, new) => {
                    self.endpoint.learn(&new.node, new.cluster_addr);
                    tracing::info!(node = %new.node, old = old.started_at_ms, new = new.started_at_ms, "cluster member restarted");
                }
                OwnedNotification::Active => tracing::info!("joined the cluster"),
                OwnedNotification::Idle => tracing::warn!("no other cluster member is reachable"),
                OwnedNotification::Defunct => {
                    tracing::warn!("declared down by the cluster; rejoining as a renewed identity");
                }
                OwnedNotification::Rejoin(m) => {
                    tracing::info!(renewed = m.renewed, "rejoined the cluster");
                }
            }
        }
        if changed {
            let active = self
                .swim
                .iter_membership_state()
                .filter(|m| m.state() != State::Down)
                .count();
            self.active.store(active, Ordering::Relaxed);
            self.export_metrics();
        }
    }
}

/// Dials the seeds (other nodes' addresses only) until this node has an active member, then
/// keeps quiet (foca's own announces to down members heal partitions).
pub(crate) async fn join_through_seeds(
    endpoint: Endpoint,
    membership: Membership,
    seeds: Vec<std::net::SocketAddr>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let started = Instant::now();
    loop {
        if membership.active_members() == 0 {
            for seed in &seeds {
                match endpoint.connect_info(*seed).await {
                    Ok(info) => {
                        if let Some(m) = Member::from_info(&info) {
                            membership.announce(m).await;
                        }
                    }
                    Err(e) => {
                        if started.elapsed() > Duration::from_secs(10) {
                            tracing::debug!(%seed, error = %e, "seed unreachable");
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
