//! Fault schedules drawn from a seed: every run prints its seed, and `CHORUS_SEED=<n>` replays
//! the same schedule.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// kill -9 the node, restart it when the fault ends.
    Kill(usize),
    /// SIGSTOP the node, SIGCONT when the fault ends.
    Pause(usize),
    /// Cut these nodes off from the rest.
    Partition(Vec<usize>),
    /// Drop this fraction of every node's incoming packets.
    Loss(f64),
}

/// A fault at a time, for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When it starts, from the run's start.
    pub at: Duration,
    /// How long it lasts.
    pub lasts: Duration,
    /// What it is.
    pub fault: Fault,
}

/// The run's seed: `CHORUS_SEED` if set, else a random one. Printed either way.
pub fn seed() -> u64 {
    let seed = std::env::var("CHORUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fault schedule seed {seed} (replay: CHORUS_SEED={seed})");
    seed
}

/// A schedule of one fault after another over `nodes` nodes for `total`: each fault lasts 1-3 s
/// and is followed by 1-2 s of calm, so that the cluster can be seen to recover.
pub fn generate(seed: u64, nodes: usize, total: Duration) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = Duration::from_secs(1);
    let mut steps = Vec::new();
    while at < total && nodes > 0 {
        let lasts = Duration::from_millis(rng.random_range(1_000..3_000));
        let node = rng.random_range(0..nodes);
        let fault = match rng.random_range(0..4) {
            0 => Fault::Kill(node),
            1 => Fault::Pause(node),
            2 => Fault::Partition(vec![node]),
            _ => Fault::Loss(0.2),
        };
        steps.push(Step { at, lasts, fault });
        at += lasts + Duration::from_millis(rng.random_range(1_000..2_000));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_schedule() {
        let a = generate(42, 3, Duration::from_secs(30));
        assert_eq!(a, generate(42, 3, Duration::from_secs(30)));
        assert_ne!(a, generate(43, 3, Duration::from_secs(30)));
        assert!(a.len() >= 5);
        assert!(
            a.windows(2).all(|w| w[0].at + w[0].lasts < w[1].at),
            "faults do not overlap"
        );
    }
}
