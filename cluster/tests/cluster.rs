//! Nodes of one process on real UDP sockets on 127.0.0.1, through the packet-mangling socket:
//! convergence, failure detection, restart without ghosts, clean leave, requests under loss,
//! delay and duplication and across a heal, refused certificates, broadcasts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_cluster::endpoint::udp_socket;
use chorus_cluster::fault::{FaultHandle, FaultSocket, Faults};
use chorus_cluster::{
    CertPaths, Cluster, ClusterCa, ClusterConfig, ClusterError, NodeId, TlsConfigs,
};

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn tls_for(ca: &ClusterCa, node: &str) -> TlsConfigs {
    ca.tls_for(&id(node)).unwrap_or_else(|e| panic!("{e}"))
}

struct Node {
    cluster: Cluster,
    faults: FaultHandle,
    addr: SocketAddr,
}

async fn start_as(
    name: &str,
    tls: &TlsConfigs,
    cluster_id: &str,
    seeds: Vec<SocketAddr>,
    seed: u64,
) -> Result<Node, ClusterError> {
    let config = ClusterConfig::loopback(id(name), cluster_id, seeds);
    let (socket, faults) = FaultSocket::wrap(udp_socket(config.listen)?, seed);
    let cluster = Cluster::start_with(&config, tls, Some(socket)).await?;
    let addr = cluster.endpoint().local_addr()?;
    Ok(Node {
        cluster,
        faults,
        addr,
    })
}

async fn start(ca: &ClusterCa, name: &str, seeds: Vec<SocketAddr>) -> Node {
    start_as(name, &tls_for(ca, name), ca.cluster_id(), seeds, 7)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The states `node` sees the others in, by id.
async fn states(node: &Node) -> Vec<(String, String, u64)> {
    node.cluster
        .membership()
        .view()
        .await
        .into_iter()
        .map(|v| {
            (
                v.member.node.to_string(),
                v.state.to_owned(),
                v.member.started_at_ms,
            )
        })
        .collect()
}

/// Waits until `check` holds, at most `limit`; returns how long it took.
async fn until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn all_alive(nodes: &[Node]) -> bool {
    for n in nodes {
        let s = states(n).await;
        if s.len() != nodes.len() - 1 || s.iter().any(|(_, st, _)| st != "alive") {
            return false;
        }
    }
    true
}

async fn cluster_of(ca: &ClusterCa, n: usize) -> Vec<Node> {
    let first = start(ca, "n0", vec![]).await;
    let seed = first.addr;
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(start(ca, &format!("n{i}"), vec![seed]).await);
    }
    nodes
}

async fn stop_all(nodes: &[Node]) {
    for node in nodes {
        node.cluster.shutdown().await;
    }
}

fn ca() -> ClusterCa {
    ClusterCa::generate("test").unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_and_five_nodes_converge_from_one_seed_in_under_two_seconds() {
    let ca = ca();
    for n in [3, 5] {
        let start = Instant::now();
        let nodes = cluster_of(&ca, n).await;
        let took = until(Duration::from_secs(5), || all_alive(&nodes)).await;
        let took = took.map(|_| start.elapsed());
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(2)),
            "{n} nodes converged after {took:?}"
        );
        // Probes reach every member, so every pair ends up connected.
        let meshed = until(Duration::from_secs(5), || async {
            for node in &nodes {
                let status = node.cluster.status().await;
                let connected = status.members[1..].iter().all(|m| {
                    m.connected && m.version.as_deref() == Some(env!("CARGO_PKG_VERSION"))
                });
                if !status.joined || status.members.len() != n || !connected {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(meshed.is_some(), "{n} nodes connected pairwise");
        stop_all(&nodes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_down_in_under_three_seconds_and_its_restart_leaves_no_ghost() {
    let ca = ca();
    let mut nodes = cluster_of(&ca, 3).await;
    assert!(
        until(Duration::from_secs(5), || all_alive(&nodes))
            .await
            .is_some()
    );

    // Killed (or paused): nothing it sends or receives arrives.
    nodes[2].faults.set(Faults {
        black_hole: true,
        ..Faults::default()
    });
    let down = until(Duration::from_secs(5), || async {
        for n in &nodes[..2] {
            let s = states(n).await;
            if !s.iter().any(|(node, st, _)| node == "n2" && st == "down") {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        down.is_some_and(|t| t < Duration::from_secs(3)),
        "marked down after {down:?}"
    );

    // Restarted: a new process with the same id and a later start time.
    let old = nodes.pop().unwrap_or_else(|| panic!("three nodes"));
    let old_started = states(&nodes[0])
        .await
        .into_iter()
        .find(|(n, ..)| n == "n2")
        .map(|s| s.2);
    old.cluster.endpoint().close().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let seed = nodes[0].addr;
    nodes.push(start(&ca, "n2", vec![seed]).await);
    let back = until(Duration::from_secs(5), || all_alive(&nodes)).await;
    assert!(back.is_some(), "the restarted node rejoined");
    for n in &nodes[..2] {
        let s = states(n).await;
        let n2: Vec<_> = s.iter().filter(|(node, ..)| node == "n2").collect();
        assert_eq!(n2.len(), 1, "one n2, no ghost: {s:?}");
        assert!(Some(n2[0].2) > old_started, "the new incarnation: {s:?}");
    }
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_leave_is_seen_at_once_and_a_partition_heals() {
    let ca = ca();
    let nodes = cluster_of(&ca, 3).await;
    assert!(
        until(Duration::from_secs(5), || all_alive(&nodes))
            .await
            .is_some()
    );

    // Cut n1 off, both ways, then heal: both sides see it and come back.
    nodes[1].faults.set(Faults {
        black_hole: true,
        ..Faults::default()
    });
    let seen = until(Duration::from_secs(5), || async {
        states(&nodes[0])
            .await
            .iter()
            .any(|(n, st, _)| n == "n1" && st == "down")
            && states(&nodes[1])
                .await
                .iter()
                .all(|(_, st, _)| st == "down")
    })
    .await;
    assert!(seen.is_some(), "both sides of the partition see it");
    nodes[1].faults.set(Faults::default());
    let healed = until(Duration::from_secs(8), || all_alive(&nodes)).await;
    assert!(healed.is_some(), "the partition healed");

    let start = Instant::now();
    nodes[2].cluster.shutdown().await;
    let gone = until(Duration::from_secs(3), || async {
        states(&nodes[0])
            .await
            .iter()
            .any(|(n, st, _)| n == "n2" && st == "down")
    })
    .await;
    assert!(
        gone.is_some() && start.elapsed() < Duration::from_millis(1500),
        "a node that leaves is down at once, not after suspicion: {:?}",
        start.elapsed()
    );
    stop_all(&nodes[..2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_complete_under_loss_delay_and_duplication_and_across_a_heal() {
    let ca = ca();
    let nodes = cluster_of(&ca, 2).await;
    assert!(
        until(Duration::from_secs(5), || all_alive(&nodes))
            .await
            .is_some()
    );
    let lossy = Faults {
        loss: 0.2,
        duplicate: 0.1,
        max_delay: Duration::from_millis(20),
        black_hole: false,
    };
    for n in &nodes {
        n.faults.set(lossy.clone());
    }
    for i in 0..40 {
        let (from, to) = if i % 2 == 0 {
            (&nodes[0], "n1")
        } else {
            (&nodes[1], "n0")
        };
        let rtt = from
            .cluster
            .endpoint()
            .ping(&id(to), Some(Duration::from_secs(5)))
            .await;
        assert!(rtt.is_ok(), "ping {i} under 20 % loss: {rtt:?}");
    }

    // A cut long enough for the connection to die, then a heal: the next request redials.
    for n in &nodes {
        n.faults.set(Faults {
            black_hole: true,
            ..Faults::default()
        });
    }
    let during = nodes[0]
        .cluster
        .endpoint()
        .ping(&id("n1"), Some(Duration::from_millis(500)))
        .await;
    assert!(
        matches!(during, Err(ClusterError::Timeout { .. })),
        "{during:?}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        nodes[0].cluster.endpoint().links().is_empty(),
        "the connection idled out"
    );
    let healer = {
        let faults: Vec<FaultHandle> = nodes.iter().map(|n| n.faults.clone()).collect();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for f in faults {
                f.set(Faults::default());
            }
        })
    };
    let after = nodes[0]
        .cluster
        .endpoint()
        .ping(&id("n1"), Some(Duration::from_secs(10)))
        .await;
    assert!(after.is_ok(), "a request across the heal: {after:?}");
    let _ = healer.await;
    stop_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_certificates_other_clusters_and_false_names_are_refused_and_counted() {
    let ca = ca();
    let good = start(&ca, "n0", vec![]).await;

    // A node whose certificate another CA signed.
    let other = ClusterCa::generate("test").unwrap_or_else(|e| panic!("{e}"));
    let stranger = start_as("n1", &tls_for(&other, "n1"), "test", vec![], 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = stranger.cluster.endpoint().connect(good.addr).await;
    assert!(r.is_err(), "a foreign certificate is refused: {r:?}");

    // A node of this CA that calls itself by another node's name.
    let liar = start_as("n2", &tls_for(&ca, "n3"), "test", vec![], 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = liar.cluster.endpoint().connect(good.addr).await;
    assert!(
        matches!(r, Err(ClusterError::Refused { .. })),
        "a false name is refused: {r:?}"
    );

    // A node of another cluster id.
    let elsewhere = start_as("n4", &tls_for(&ca, "n4"), "another", vec![], 3)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = elsewhere.cluster.endpoint().connect(good.addr).await;
    assert!(
        matches!(r, Err(ClusterError::Refused { .. })),
        "another cluster is refused: {r:?}"
    );

    let refused = until(Duration::from_secs(2), || async {
        good.cluster.status().await.stats.refused_peers >= 3
    })
    .await;
    assert!(refused.is_some(), "{:?}", good.cluster.status().await.stats);
    assert!(good.cluster.endpoint().links().is_empty());
    for n in [good, stranger, liar, elsewhere] {
        n.cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_broadcasts_reach_every_other_member() {
    let ca = ca();
    let nodes = cluster_of(&ca, 3).await;
    assert!(
        until(Duration::from_secs(5), || all_alive(&nodes))
            .await
            .is_some()
    );
    let mut subs: Vec<_> = nodes[1..]
        .iter()
        .map(|n| n.cluster.membership().subscribe())
        .collect();
    nodes[0]
        .cluster
        .membership()
        .broadcast("typing", b"u1 in c1".to_vec())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for sub in &mut subs {
        let got = tokio::time::timeout(Duration::from_secs(2), sub.recv()).await;
        let got = got
            .unwrap_or_else(|_| panic!("no broadcast"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                got.origin.as_str(),
                got.topic.as_str(),
                got.payload.as_slice()
            ),
            ("n0", "typing", &b"u1 in c1"[..])
        );
    }
    let too_big = nodes[0]
        .cluster
        .membership()
        .broadcast("typing", vec![0; 4096])
        .await;
    assert!(too_big.is_err());
    stop_all(&nodes).await;
}

#[test]
fn a_ca_saved_and_loaded_issues_certificates_nodes_accept() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca = ClusterCa::generate("prod").unwrap_or_else(|e| panic!("{e}"));
    ca.save(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(ca.save(dir.path()).is_err(), "a CA is never overwritten");
    let loaded = ClusterCa::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.cluster_id(), "prod");
    let node_dir = dir.path().join("n1");
    loaded
        .write_node(&id("n1"), &node_dir)
        .unwrap_or_else(|e| panic!("{e}"));
    TlsConfigs::load(&CertPaths::in_dir(&node_dir)).unwrap_or_else(|e| panic!("{e}"));
}
