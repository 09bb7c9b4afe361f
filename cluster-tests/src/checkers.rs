//! The invariants a run must keep, each a function over a [`History`] that names the first
//! violation it finds. Part 2 of the cluster adds workloads; these stay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::history::{Entry, History, Outcome};

/// What a checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

type Check = Result<(), Violation>;

fn fail<T>(what: String) -> Result<T, Violation> {
    Err(Violation(what))
}

fn final_log(h: &History) -> Result<&[Entry], Violation> {
    h.logs
        .first()
        .map(Vec::as_slice)
        .ok_or_else(|| Violation("no final log recorded".into()))
}

/// Every acknowledged publish is in the final log, at the position it was acknowledged with.
pub fn no_lost_acknowledged_write(h: &History) -> Check {
    let log = final_log(h)?;
    let at: HashMap<(&str, &str), (u64, u64)> = log
        .iter()
        .map(|e| ((e.channel.as_str(), e.key.as_str()), (e.epoch, e.seq)))
        .collect();
    for op in &h.ops {
        if let Outcome::Ok { epoch, seq } = op.outcome {
            match at.get(&(op.channel.as_str(), op.key.as_str())) {
                Some(&(e, s)) if (e, s) == (epoch, seq) => {}
                Some(&(e, s)) => {
                    return fail(format!(
                        "{} acknowledged at {epoch}/{seq} but stored at {e}/{s}",
                        op.key
                    ));
                }
                None => return fail(format!("{} acknowledged at {epoch}/{seq}, lost", op.key)),
            }
        }
    }
    Ok(())
}

/// No publish is stored twice (retries with the same key are one entry).
pub fn no_duplicate(h: &History) -> Check {
    for (r, log) in h.logs.iter().enumerate() {
        let mut seen = HashSet::new();
        for e in log {
            if !seen.insert((e.channel.as_str(), e.key.as_str())) {
                return fail(format!(
                    "replica {r}: {} stored twice in {}",
                    e.key, e.channel
                ));
            }
        }
    }
    Ok(())
}

/// Within each epoch of a channel the log's seqs run without a gap.
pub fn gapless_per_epoch(h: &History) -> Check {
    for (r, log) in h.logs.iter().enumerate() {
        let mut runs: BTreeMap<(&str, u64), Vec<u64>> = BTreeMap::new();
        for e in log {
            runs.entry((e.channel.as_str(), e.epoch))
                .or_default()
                .push(e.seq);
        }
        for ((channel, epoch), mut seqs) in runs {
            seqs.sort_unstable();
            for pair in seqs.windows(2) {
                if pair[1] != pair[0] + 1 {
                    return fail(format!(
                        "replica {r}: {channel} epoch {epoch} jumps from {} to {}",
                        pair[0], pair[1]
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every replica holds the same log.
pub fn replicas_identical(h: &History) -> Check {
    let Some(first) = h.logs.first() else {
        return fail("no replica logs recorded".into());
    };
    let mut a = first.clone();
    a.sort();
    for (r, log) in h.logs.iter().enumerate().skip(1) {
        let mut b = log.clone();
        b.sort();
        if a != b {
            let diff = a
                .iter()
                .find(|e| !b.contains(e))
                .or_else(|| b.iter().find(|e| !a.contains(e)));
            return fail(format!(
                "replica {r} differs from replica 0 (e.g. {diff:?})"
            ));
        }
    }
    Ok(())
}

/// A publish acknowledged before another was sent comes first in their channel. Operations
/// with the same key are one publish (retries, answered with the original position): it counts
/// as sent at its first invoke, which may be when it was stored, and as acknowledged at its
/// first acknowledgement.
pub fn real_time_order(h: &History) -> Check {
    struct Publish<'a> {
        key: &'a str,
        sent: u64,
        acked: Option<(u64, u64, u64)>,
    }
    let mut by_key: HashMap<(&str, &str), Publish<'_>> = HashMap::new();
    for op in &h.ops {
        let p = by_key
            .entry((op.channel.as_str(), op.key.as_str()))
            .or_insert(Publish {
                key: op.key.as_str(),
                sent: op.invoked_ms,
                acked: None,
            });
        p.sent = p.sent.min(op.invoked_ms);
        if let Outcome::Ok { epoch, seq } = op.outcome
            && p.acked.is_none_or(|(at, ..)| op.completed_ms < at)
        {
            p.acked = Some((op.completed_ms, epoch, seq));
        }
    }
    let mut channels: HashMap<&str, Vec<(&Publish<'_>, u64, u64, u64)>> = HashMap::new();
    for ((channel, _), p) in &by_key {
        if let Some((at, epoch, seq)) = p.acked {
            channels
                .entry(channel)
                .or_default()
                .push((p, at, epoch, seq));
        }
    }
    for ps in channels.values_mut() {
        ps.sort_by_key(|(_, at, ..)| *at);
        for (i, (a, a_at, ae, aseq)) in ps.iter().enumerate() {
            for (b, _, be, bseq) in &ps[i + 1..] {
                if *a_at < b.sent && ae == be && aseq >= bseq {
                    return fail(format!(
                        "{} was acknowledged (seq {aseq}) before {} was sent, which got seq {bseq}",
                        a.key, b.key
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Each subscriber got every channel in order and without a gap, except right after a resume
/// that said `recovered = false`; and nothing it got is missing from the final log.
pub fn subscribers_gapless_and_nothing_phantom(h: &History) -> Check {
    let log: HashSet<&Entry> = final_log(h)?.iter().collect();
    let mut last: HashMap<(usize, &str), (u64, u64)> = HashMap::new();
    for d in &h.deliveries {
        let e = &d.entry;
        if !log.contains(e) {
            return fail(format!(
                "subscriber {} got {e:?}, which is not in the log",
                d.subscriber
            ));
        }
        let key = (d.subscriber, e.channel.as_str());
        if let Some(&(epoch, seq)) = last.get(&key) {
            let next = epoch == e.epoch && e.seq == seq + 1;
            if !next && !d.after_reset {
                return fail(format!(
                    "subscriber {} went from {epoch}/{seq} to {}/{} in {} without recovered = false",
                    d.subscriber, e.epoch, e.seq, e.channel
                ));
            }
        }
        last.insert(key, (e.epoch, e.seq));
    }
    Ok(())
}

/// No publish sent to a node of `minority` between `from_ms` and `to_ms` was acknowledged.
pub fn minority_never_acks(h: &History, minority: &[usize], from_ms: u64, to_ms: u64) -> Check {
    for op in &h.ops {
        let inside = op.invoked_ms >= from_ms && op.completed_ms <= to_ms;
        if inside && minority.contains(&op.node) && matches!(op.outcome, Outcome::Ok { .. }) {
            return fail(format!(
                "{} was acknowledged by minority node {}",
                op.key, op.node
            ));
        }
    }
    Ok(())
}

/// After each fault ends (at the given ms), some publish is acknowledged within `bound`.
pub fn writes_resume_within(h: &History, fault_ends_ms: &[u64], bound: Duration) -> Check {
    let bound = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    for &end in fault_ends_ms {
        let resumed = h.ops.iter().any(|op| {
            matches!(op.outcome, Outcome::Ok { .. })
                && op.completed_ms >= end
                && op.completed_ms <= end.saturating_add(bound)
        });
        if !resumed {
            return fail(format!(
                "no write acknowledged within {bound} ms of the fault ending at {end} ms"
            ));
        }
    }
    Ok(())
}

/// Resident memory did not grow by more than `slack` (a fraction) from the sample after
/// warm-up to the last.
pub fn rss_flat(h: &History, warmup_ms: u64, slack: f64) -> Check {
    for (node, samples) in h.rss.iter().enumerate() {
        let Some(&(_, base)) = samples.iter().find(|(t, _)| *t >= warmup_ms) else {
            continue;
        };
        let Some(&(_, end)) = samples.last() else {
            continue;
        };
        if end as f64 > base as f64 * (1.0 + slack) {
            return fail(format!("node {node}: RSS grew from {base} to {end} bytes"));
        }
    }
    Ok(())
}

/// Every history-wide checker (the ones that need no fault timeline).
pub fn all(h: &History) -> Check {
    no_lost_acknowledged_write(h)?;
    no_duplicate(h)?;
    gapless_per_epoch(h)?;
    replicas_identical(h)?;
    real_time_order(h)?;
    subscribers_gapless_and_nothing_phantom(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Delivery, Op};

    fn entry(seq: u64, key: &str) -> Entry {
        Entry {
            channel: "c".into(),
            epoch: 1,
            seq,
            key: key.into(),
        }
    }

    fn op(key: &str, invoked: u64, completed: u64, outcome: Outcome) -> Op {
        Op {
            node: 0,
            channel: "c".into(),
            key: key.into(),
            invoked_ms: invoked,
            completed_ms: completed,
            outcome,
        }
    }

    fn ok(seq: u64) -> Outcome {
        Outcome::Ok { epoch: 1, seq }
    }

    /// Three publishes (one timed out but stored), two replicas, one subscriber.
    fn valid() -> History {
        let log = vec![entry(1, "a"), entry(2, "b"), entry(3, "c")];
        History {
            ops: vec![
                op("a", 0, 10, ok(1)),
                op("b", 20, 30, ok(2)),
                op("c", 40, 900, Outcome::Timeout),
                op("d", 50, 60, Outcome::Fail("rate limited".into())),
                // A retry of "a", answered with its original position.
                op("a", 70, 80, ok(1)),
            ],
            deliveries: log
                .iter()
                .map(|e| Delivery {
                    subscriber: 0,
                    entry: e.clone(),
                    after_reset: false,
                })
                .collect(),
            logs: vec![log.clone(), log],
            rss: vec![vec![(0, 100), (1000, 200), (2000, 210)]],
        }
    }

    #[test]
    fn a_valid_history_passes_every_checker() {
        let h = valid();
        assert_eq!(all(&h), Ok(()));
        assert_eq!(minority_never_acks(&h, &[1], 0, 1000), Ok(()));
        assert_eq!(
            writes_resume_within(&h, &[5], Duration::from_millis(50)),
            Ok(())
        );
        assert_eq!(rss_flat(&h, 1000, 0.1), Ok(()));
    }

    #[test]
    fn each_checker_fails_on_a_history_built_to_violate_it() {
        let mut lost = valid();
        lost.logs[0].retain(|e| e.key != "b");
        assert!(no_lost_acknowledged_write(&lost).is_err());

        let mut moved = valid();
        moved.ops[1].outcome = ok(3);
        assert!(no_lost_acknowledged_write(&moved).is_err());

        let mut dup = valid();
        dup.logs[1].push(entry(4, "a"));
        assert!(no_duplicate(&dup).is_err());

        let mut gap = valid();
        gap.logs[0][2].seq = 5;
        assert!(gapless_per_epoch(&gap).is_err());

        let mut diverged = valid();
        diverged.logs[1][2].key = "x".into();
        assert!(replicas_identical(&diverged).is_err());

        let mut reordered = valid();
        reordered.ops[0].outcome = ok(2);
        reordered.ops[1].outcome = ok(1);
        assert!(real_time_order(&reordered).is_err());

        let mut skipped = valid();
        skipped.deliveries.remove(1);
        assert!(subscribers_gapless_and_nothing_phantom(&skipped).is_err());
        skipped.deliveries[1].after_reset = true;
        assert_eq!(
            subscribers_gapless_and_nothing_phantom(&skipped),
            Ok(()),
            "an announced gap is fine"
        );

        let mut phantom = valid();
        phantom.deliveries.push(Delivery {
            subscriber: 0,
            entry: entry(4, "ghost"),
            after_reset: false,
        });
        assert!(subscribers_gapless_and_nothing_phantom(&phantom).is_err());

        assert!(minority_never_acks(&valid(), &[0], 0, 1000).is_err());
        assert!(writes_resume_within(&valid(), &[100], Duration::from_millis(50)).is_err());

        let mut leak = valid();
        leak.rss[0].push((3000, 400));
        assert!(rss_flat(&leak, 1000, 0.1).is_err());
    }
}
