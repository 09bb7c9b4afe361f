//! What a Raft group costs: three nodes in this process (real QUIC on 127.0.0.1, a fjall engine
//! each), with 1, 8, 64 and 256 groups of three voters. For each count: the time until every
//! group has a leader, tokio tasks, the resident memory the groups add, heartbeats per second
//! and CPU while idle, then commit latency of one proposer on one group, and throughput and
//! latency with one proposer per group (at most 64) for a few seconds.
//!
//! `cargo run --release -p chorus-cluster --example raft_groups [-- 1,8,64,256 [seconds]]`
//!
//! The three nodes share this process and its two cores, so per-node figures are the totals
//! divided by three.

#![allow(clippy::print_stdout)] // A report: the table is its output.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chorus_cluster::consensus::{
    Consensus, ConsensusConfig, ConsensusError, GroupId, Machine, RaftTiming,
};
use chorus_cluster::{Cluster, ClusterCa, ClusterConfig, NodeId};
use chorus_storage::engine::Engine;
use chorus_storage::engine::fjall::FjallEngine;

/// Counts commands; the cost measured is Raft's, not the machine's.
struct Counter(u64);

impl Machine for Counter {
    fn apply(&mut self, _index: u64, _command: &[u8]) -> Vec<u8> {
        self.0 += 1;
        Vec::new()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn restore(&mut self, s: &[u8]) -> Result<(), String> {
        self.0 = u64::from_be_bytes(s.try_into().map_err(|_| "bad snapshot")?);
        Ok(())
    }
}

struct Node {
    cluster: Cluster,
    consensus: Consensus,
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

async fn start(
    ca: &ClusterCa,
    name: &str,
    dir: &Path,
    seeds: Vec<SocketAddr>,
    groups: u32,
) -> Node {
    let tls = ca.tls_for(&id(name)).unwrap_or_else(|e| panic!("{e}"));
    let config = ClusterConfig::loopback(id(name), ca.cluster_id(), seeds);
    let cluster = Cluster::start_with(&config, &tls, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let engine: Arc<dyn Engine> =
        Arc::new(FjallEngine::open(dir, 32 << 20, 512).unwrap_or_else(|e| panic!("{e}")));
    let consensus = Consensus::start(
        cluster.endpoint(),
        engine,
        ConsensusConfig {
            groups: (0..groups).map(GroupId).collect(),
            voters: ["n0", "n1", "n2"]
                .into_iter()
                .map(id)
                .collect::<BTreeSet<_>>(),
            timing: RaftTiming::default(),
            keep_behind_snapshot: 1000,
            snapshot_every: 10_000,
        },
        |_| Box::new(Counter(0)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    Node { cluster, consensus }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds this process used so far (user + system).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is 0, utime 11, stime 12; 100 ticks a second here.
    (ticks(11) + ticks(12)) / 100.0
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Proposes through the group's leader, following hints.
async fn propose(nodes: &[Node], g: GroupId, at: &mut usize) -> Duration {
    loop {
        let t = Instant::now();
        match nodes[*at].consensus.propose(g, vec![0u8; 64]).await {
            Ok(_) => return t.elapsed(),
            Err(ConsensusError::NotLeader { leader, .. }) => {
                *at = leader
                    .and_then(|l| {
                        nodes
                            .iter()
                            .position(|n| n.cluster.endpoint().local().id == l)
                    })
                    .unwrap_or((*at + 1) % nodes.len());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("propose: {e}"),
        }
    }
}

async fn measure(groups: u32, seconds: u64) {
    let ca = ClusterCa::generate("bench").unwrap_or_else(|e| panic!("{e}"));
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let base_rss = rss_kib();
    let base_tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let t0 = Instant::now();
    let n0 = start(&ca, "n0", dirs[0].path(), vec![], groups).await;
    let seed = n0
        .cluster
        .endpoint()
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"));
    let n1 = start(&ca, "n1", dirs[1].path(), vec![seed], groups).await;
    let n2 = start(&ca, "n2", dirs[2].path(), vec![seed], groups).await;
    let nodes = vec![n0, n1, n2];
    loop {
        let led: usize = nodes.iter().map(|n| n.consensus.leading()).sum();
        if led >= groups as usize {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "groups without a leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elected = t0.elapsed();
    // Idle: heartbeats only.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hb = |ns: &[Node]| -> u64 {
        ns.iter()
            .map(|n| n.consensus.stats().heartbeats.load(Ordering::Relaxed))
            .sum()
    };
    let (h0, c0, i0) = (hb(&nodes), cpu_secs(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let idle = i0.elapsed().as_secs_f64();
    let heartbeats = (hb(&nodes) - h0) as f64 / idle;
    let idle_cpu = (cpu_secs() - c0) / idle * 100.0;
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
        - base_tasks;
    let rss = rss_kib().saturating_sub(base_rss);

    // One proposer on one group.
    let mut at = 0;
    let mut one = Vec::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(seconds) {
        one.push(propose(&nodes, GroupId(0), &mut at).await);
    }
    one.sort();

    // One proposer per group, at most 64.
    let nodes = Arc::new(nodes);
    let syncs = |ns: &[Node]| -> u64 {
        ns.iter()
            .map(|n| n.consensus.sync_stats().syncs.load(Ordering::Relaxed))
            .sum()
    };
    let (s0, c1) = (syncs(&nodes), cpu_secs());
    let t = Instant::now();
    let mut tasks_h = Vec::new();
    for g in 0..groups.min(64) {
        let nodes = nodes.clone();
        tasks_h.push(tokio::spawn(async move {
            let mut at = (g as usize) % 3;
            let mut lat = Vec::new();
            while t.elapsed() < Duration::from_secs(seconds) {
                lat.push(propose(&nodes, GroupId(g), &mut at).await);
            }
            lat
        }));
    }
    let mut many = Vec::new();
    for h in tasks_h {
        many.extend(h.await.unwrap_or_default());
    }
    let took = t.elapsed().as_secs_f64();
    let busy_cpu = (cpu_secs() - c1) / took * 100.0;
    many.sort();
    let commits = many.len() as f64 / took;
    let syncs_per_s = (syncs(&nodes) - s0) as f64 / took;

    println!(
        "| {groups} | {:.2} | {tasks} | {:.1} | {heartbeats:.0} | {idle_cpu:.1} | {:.2} / {:.2} | {commits:.0} | {:.1} / {:.1} | {:.0} | {busy_cpu:.0} |",
        elected.as_secs_f64(),
        rss as f64 / 1024.0,
        pct(&one, 0.5),
        pct(&one, 0.99),
        pct(&many, 0.5),
        pct(&many, 0.99),
        syncs_per_s / 3.0,
    );
    for n in nodes.iter() {
        n.consensus.shutdown().await;
        n.cluster.shutdown().await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let counts: Vec<u32> = args
        .get(1)
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 64, 256]);
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "| groups | all led after, s | tasks (3 nodes) | RSS added, MiB (3 nodes) | heartbeats/s (3 nodes) | idle CPU % | 1 proposer p50 / p99 ms | commits/s, 1 proposer per group (≤ 64) | p50 / p99 ms | syncs/s per node | busy CPU % |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for g in counts {
        runtime.block_on(measure(g, seconds));
    }
}
