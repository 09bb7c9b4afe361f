//! Consensus groups on three nodes of one process, over real QUIC on 127.0.0.1 and fjall
//! engines in temporary directories: every group elects a leader, commands are applied in the
//! same order on every replica, a leader's loss elects another that keeps every applied
//! command, and a node restarted on its directory gets its state back from its own log.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_cluster::consensus::{
    Consensus, ConsensusConfig, ConsensusError, GroupId, Machine, RaftTiming,
};
use chorus_cluster::{Cluster, ClusterCa, ClusterConfig, ClusterError, NodeId};
use chorus_protocol::peer::{self, PeerErrorCode, RaftKind, request};
use chorus_storage::engine::Engine;
use chorus_storage::engine::fjall::FjallEngine;

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

/// Every command applied, with its index, in order.
type Applied = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// A machine that keeps every command in order: replicas are equal when their lists are.
#[derive(Default)]
struct Journal {
    applied: Applied,
}

impl Machine for Journal {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let mut a = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        a.push((index, command.to_vec()));
        u64::try_from(a.len()).unwrap_or(0).to_be_bytes().to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        let a = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        postcard_like_encode(&a)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = postcard_like_decode(snapshot)?;
        Ok(())
    }
}

/// A length-prefixed encoding of the journal (the test needs no serde of its own).
fn postcard_like_encode(a: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in a {
        out.extend_from_slice(&i.to_be_bytes());
        out.extend_from_slice(&u32::try_from(c.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

fn postcard_like_decode(mut b: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 12 {
            return Err("truncated".into());
        }
        let i = u64::from_be_bytes(b[..8].try_into().map_err(|_| "index")?);
        let n = u32::from_be_bytes(b[8..12].try_into().map_err(|_| "length")?) as usize;
        if b.len() < 12 + n {
            return Err("truncated".into());
        }
        out.push((i, b[12..12 + n].to_vec()));
        b = &b[12 + n..];
    }
    Ok(out)
}

type Journals = Arc<Mutex<Vec<(GroupId, Applied)>>>;

struct Node {
    cluster: Cluster,
    consensus: Consensus,
    journals: Journals,
}

const GROUPS: u32 = 4;

fn voters() -> BTreeSet<NodeId> {
    ["n0", "n1", "n2"].into_iter().map(id).collect()
}

async fn start(ca: &ClusterCa, name: &str, dir: &Path, seeds: Vec<SocketAddr>) -> Node {
    let tls = ca.tls_for(&id(name)).unwrap_or_else(|e| panic!("{e}"));
    let config = ClusterConfig::loopback(id(name), ca.cluster_id(), seeds);
    let cluster = Cluster::start_with(&config, &tls, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let engine: Arc<dyn Engine> =
        Arc::new(FjallEngine::open(dir, 8 << 20, 512).unwrap_or_else(|e| panic!("{e}")));
    let journals: Journals = Arc::default();
    let j = journals.clone();
    let consensus = Consensus::start(
        cluster.endpoint(),
        engine,
        ConsensusConfig {
            groups: (0..GROUPS).map(GroupId).collect(),
            voters: voters(),
            timing: RaftTiming {
                heartbeat: Duration::from_millis(100),
                election_min: Duration::from_millis(400),
                election_max: Duration::from_millis(800),
            },
            keep_behind_snapshot: 100,
            snapshot_every: 1000,
        },
        move |g| {
            let journal = Journal::default();
            j.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((g, journal.applied.clone()));
            Box::new(journal)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    Node {
        cluster,
        consensus,
        journals,
    }
}

fn journal(node: &Node, g: GroupId) -> Vec<(u64, Vec<u8>)> {
    let js = node.journals.lock().unwrap_or_else(|e| e.into_inner());
    let (_, j) = js
        .iter()
        .find(|(id, _)| *id == g)
        .unwrap_or_else(|| panic!("no group {g}"));
    j.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Proposes through whichever node leads, following leader hints, for up to `limit`.
async fn propose(nodes: &[&Node], g: GroupId, command: Vec<u8>, limit: Duration) -> u64 {
    let start = Instant::now();
    let mut at = 0;
    loop {
        match nodes[at].consensus.propose(g, command.clone()).await {
            Ok(a) => return a.index,
            Err(ConsensusError::NotLeader { leader, .. }) => {
                at = leader
                    .and_then(|l| {
                        nodes
                            .iter()
                            .position(|n| n.cluster.endpoint().local().id == l)
                    })
                    .unwrap_or((at + 1) % nodes.len());
            }
            Err(e) => panic!("propose: {e}"),
        }
        assert!(
            start.elapsed() < limit,
            "no leader for {g} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_equal(nodes: &[&Node], g: GroupId, len: usize) {
    let start = Instant::now();
    loop {
        let js: Vec<_> = nodes.iter().map(|n| journal(n, g)).collect();
        if js.iter().all(|j| j.len() == len) {
            assert!(
                js.windows(2).all(|w| w[0] == w[1]),
                "replicas differ in {g}"
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "replicas of {g} did not converge: {:?}",
            js.iter().map(Vec::len).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_replicate_fail_over_and_recover_from_their_own_logs() {
    let ca = ClusterCa::generate("consensus-test").unwrap_or_else(|e| panic!("{e}"));
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let n0 = start(&ca, "n0", dirs[0].path(), vec![]).await;
    let seed = n0
        .cluster
        .endpoint()
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"));
    let n1 = start(&ca, "n1", dirs[1].path(), vec![seed]).await;
    let n2 = start(&ca, "n2", dirs[2].path(), vec![seed]).await;

    // Every group takes commands, applied in the same order everywhere.
    for g in (0..GROUPS).map(GroupId) {
        for k in 0..20u32 {
            propose(
                &[&n0, &n1, &n2],
                g,
                k.to_be_bytes().to_vec(),
                Duration::from_secs(10),
            )
            .await;
        }
        wait_equal(&[&n0, &n1, &n2], g, 20).await;
    }

    // Bad Raft requests get typed refusals and change nothing.
    let ep = n0.cluster.endpoint();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    for k in 0..200u32 {
        let mut payload = Vec::new();
        for _ in 0..(k % 64) {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            payload.push(rng_state as u8);
        }
        let kind = [
            RaftKind::Append,
            RaftKind::Vote,
            RaftKind::PreVote,
            RaftKind::Snapshot,
            RaftKind::TransferLeader,
            RaftKind::Unspecified,
        ][k as usize % 6];
        let body = request::Body::Raft(peer::Raft {
            group: 0,
            kind: kind.into(),
            payload: payload.into(),
        });
        match ep.request(&id("n1"), body, None).await {
            Err(ClusterError::Remote { code, .. }) => assert!(
                matches!(
                    code,
                    PeerErrorCode::BadFrame | PeerErrorCode::UnknownRequest
                ),
                "{code:?}"
            ),
            // Some byte strings are valid messages (an empty vote, say): answered, not a panic.
            Ok(_) => {}
            Err(e) => panic!("bad request {k}: {e}"),
        }
    }
    let unknown = request::Body::Raft(peer::Raft {
        group: 999,
        kind: RaftKind::Vote.into(),
        payload: Vec::new().into(),
    });
    assert!(matches!(
        ep.request(&id("n1"), unknown, None).await,
        Err(ClusterError::Remote {
            code: PeerErrorCode::NoSuchGroup,
            ..
        })
    ));
    for g in (0..GROUPS).map(GroupId) {
        propose(
            &[&n0, &n1, &n2],
            g,
            b"still".to_vec(),
            Duration::from_secs(10),
        )
        .await;
        wait_equal(&[&n0, &n1, &n2], g, 21).await;
    }

    // Stop the leader of group 0: the other two elect a leader and go on with everything.
    let g = GroupId(0);
    let leader = n0
        .consensus
        .leader(g)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no leader"));
    let mut nodes = vec![n0, n1, n2];
    let at = nodes
        .iter()
        .position(|n| n.cluster.endpoint().local().id == leader)
        .unwrap_or_else(|| panic!("leader {leader} is not a node"));
    let gone = nodes.remove(at);
    gone.consensus.shutdown().await;
    gone.cluster.shutdown().await;
    let name = gone.cluster.endpoint().local().id.to_string();
    let before = journal(&gone, g);
    drop(gone);
    let stopped = Instant::now();
    let rest: Vec<&Node> = nodes.iter().collect();
    propose(&rest, g, b"after".to_vec(), Duration::from_secs(10)).await;
    eprintln!(
        "a new leader committed {:?} after the old one stopped",
        stopped.elapsed()
    );
    wait_equal(&rest, g, 22).await;
    assert_eq!(
        journal(rest[0], g)[..21],
        before[..],
        "nothing applied was lost"
    );

    // The stopped node comes back on its directory: its own log gives its state back, and it
    // catches up with what it missed.
    let back = start(
        &ca,
        &name,
        dirs[at].path(),
        vec![
            nodes[0]
                .cluster
                .endpoint()
                .local_addr()
                .unwrap_or_else(|e| panic!("{e}")),
        ],
    )
    .await;
    nodes.push(back);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_equal(&all, g, 22).await;
    for n in &nodes {
        n.consensus.shutdown().await;
        n.cluster.shutdown().await;
    }
}
