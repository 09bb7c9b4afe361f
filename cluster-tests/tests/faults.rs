//! The harness proves its faults on real processes: a partitioned pair cannot talk, an isolated
//! node is seen down from both sides and the partition heals, a paused node stops answering, a
//! killed node is down and comes back from a restart without a ghost, requests get through 20 %
//! loss. Needs root, `ip` and `iptables`, and chorusd built; `.ci/run` runs it in the cluster
//! profile.

use std::time::{Duration, Instant};

use chorus_cluster_tests::netns::{Netns, node_ip};
use chorus_cluster_tests::nodes::{Nodes, bin_dir, wait_until};

const NEEDS: &str = "cluster profile: needs root, ip, iptables and chorusd built; run by .ci/run";

fn cluster(tag: &str, n: usize) -> Nodes {
    let ns = Netns::create(tag).unwrap_or_else(|e| panic!("{e}"));
    Nodes::start(ns, n, &bin_dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn must(r: Result<(), chorus_cluster_tests::netns::NetnsError>) {
    r.unwrap_or_else(|e| panic!("{e}"));
}

#[test]
#[ignore = "cluster profile: needs root, ip, iptables and chorusd built; run by .ci/run"]
fn five_processes_converge_from_two_seeds() {
    let _ = NEEDS;
    let start = Instant::now();
    let nodes = cluster("five", 5);
    let took = wait_until(Duration::from_secs(15), || nodes.all_see("alive"));
    eprintln!(
        "5 processes: all alive {took:?} after the spawns ({:?} in all)",
        start.elapsed()
    );
    assert!(took.is_some(), "5 nodes converged");
}

#[test]
#[ignore = "cluster profile: needs root, ip, iptables and chorusd built; run by .ci/run"]
fn each_fault_does_what_it_says_on_real_nodes() {
    let mut nodes = cluster("faults", 3);
    let up = wait_until(Duration::from_secs(15), || nodes.all_see("alive"));
    assert!(up.is_some(), "3 nodes converged");
    assert!(nodes.ping(0, 1) && nodes.ping(1, 2) && nodes.ping(2, 0));
    let ns_ip = |i| node_ip(i);

    // A partitioned pair cannot talk (membership may still see both alive through the third
    // node's indirect probes: that is SWIM working, and why it decides nothing safe).
    must(nodes.netns().partition(ns_ip(0), ns_ip(1)));
    assert!(!nodes.ping(0, 1), "a partitioned pair cannot talk");
    assert!(nodes.ping(0, 2), "the rest of the network still works");
    must(nodes.netns().heal());
    assert!(
        wait_until(Duration::from_secs(10), || nodes.ping(0, 1)).is_some(),
        "the pair talks again after the heal"
    );

    // An isolated node: both sides see it, and it heals.
    must(nodes.netns().isolate(&[ns_ip(2)], &[ns_ip(0), ns_ip(1)]));
    let seen = wait_until(Duration::from_secs(10), || {
        nodes.state_of(0, 2).is_some_and(|s| s.0 == "down")
            && nodes.state_of(2, 0).is_some_and(|s| s.0 == "down")
    });
    eprintln!("isolation seen from both sides after {seen:?}");
    assert!(seen.is_some(), "both sides of the partition see it");
    must(nodes.netns().heal());
    let healed = wait_until(Duration::from_secs(15), || nodes.all_see("alive"));
    eprintln!("partition healed after {healed:?}");
    assert!(healed.is_some(), "the partition heals");

    // A paused node stops answering and is marked down in under 3 s.
    must(nodes.pause(2));
    let paused = Instant::now();
    let down = wait_until(Duration::from_secs(10), || {
        nodes.state_of(0, 2).is_some_and(|s| s.0 == "down")
    });
    let down = down.map(|_| paused.elapsed());
    eprintln!("paused node down after {down:?}");
    assert!(
        down.is_some_and(|d| d < Duration::from_secs(3)),
        "paused node down after {down:?}"
    );
    assert!(!nodes.ping(0, 2), "a paused node does not answer");
    must(nodes.resume(2));
    assert!(
        wait_until(Duration::from_secs(15), || nodes.all_see("alive")).is_some(),
        "a resumed node is alive again"
    );

    // kill -9: down in under 3 s; a restart is one new member, no ghost.
    let before = nodes.state_of(0, 2).map(|s| s.2).unwrap_or(0);
    must(nodes.kill9(2));
    let killed = Instant::now();
    let down = wait_until(Duration::from_secs(10), || {
        nodes.state_of(0, 2).is_some_and(|s| s.0 == "down")
    })
    .map(|_| killed.elapsed());
    eprintln!("killed node down after {down:?}");
    assert!(
        down.is_some_and(|d| d < Duration::from_secs(3)),
        "killed node down after {down:?}"
    );
    must(nodes.restart(2));
    let back = wait_until(Duration::from_secs(15), || {
        nodes.all_see("alive")
            && nodes
                .state_of(0, 2)
                .is_some_and(|s| s.1 == 1 && s.2 > before)
    });
    assert!(
        back.is_some(),
        "the restarted node is back, once, as its new incarnation"
    );

    // 20 % random loss on every node: requests still complete.
    for i in 0..3 {
        must(nodes.netns().loss(ns_ip(i), 0.2));
    }
    let mut answered = 0;
    for k in 0..10 {
        if nodes.ping(k % 3, (k + 1) % 3) {
            answered += 1;
        }
    }
    eprintln!("{answered}/10 requests answered under 20 % loss");
    assert_eq!(answered, 10, "requests complete under 20 % loss");
    must(nodes.netns().heal());
}
