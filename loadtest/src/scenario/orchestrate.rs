//! The coordinator's side of a run: starts the actors, moves them through the phases, waits
//! for them, and sums their outcomes into the report.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::time::Instant;

use super::actor::{Finals, Outcome, Phase, Plan, STOP_GRACE, run};
use crate::lean::Lean;
use crate::report;

/// A finished run.
#[derive(Debug)]
pub(super) struct Finished {
    /// Each actor's outcome.
    pub outcomes: Vec<Outcome>,
    /// When publishing started.
    pub started: Instant,
    /// When every actor had finished.
    pub ended: Instant,
    /// Each channel's last acknowledged seq when the settle phase began.
    pub finals: HashMap<String, u64>,
    /// Publish-to-receipt latency of others' messages, microseconds, over all actors.
    pub latency: Histogram<u64>,
    /// Fixed-rate publishes: actual send minus scheduled send, microseconds.
    pub send_lag: Histogram<u64>,
    /// The same latencies second by second.
    pub timeline: Vec<report::Second>,
}

/// Runs a set of actors through the phases: `run_for`, then drain (up to `drain_limit`), then
/// settle (up to `settle_limit`).
pub(super) async fn orchestrate(
    actors: Vec<(Lean, Plan)>,
    run_for: Duration,
    drain_limit: Duration,
    settle_limit: Duration,
) -> Finished {
    let (tx, rx) = watch::channel(Phase::Run);
    let finals = Arc::new(Finals::default());
    let drained = Arc::new(tokio::sync::Semaphore::new(0));
    let n = actors.len();
    let started = Instant::now();
    let latency = Arc::new(report::Latencies::starting(started.into_std()));
    let send_lag = Arc::new(report::Latencies::starting(started.into_std()));
    let tasks: Vec<_> = actors
        .into_iter()
        .map(|(conn, plan)| {
            tokio::spawn(run(
                conn,
                plan,
                rx.clone(),
                finals.clone(),
                drained.clone(),
                latency.clone(),
                send_lag.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(run_for).await;
    let _ = tx.send(Phase::Drain);
    let all = u32::try_from(n).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(drain_limit, drained.acquire_many(all)).await;
    // Subscribers are judged against what was acknowledged when the settle began: a publisher
    // that drains later (an error of its own) would otherwise add a tail that subscribers no
    // longer wait for, and count it undelivered.
    let judged = finals.snapshot();
    let _ = tx.send(Phase::Settle);
    let settle_deadline = Instant::now() + settle_limit;
    let mut collector = super::Collector::new(settle_deadline, STOP_GRACE);
    let mut outcomes = Vec::with_capacity(n);
    for mut t in tasks {
        let Some(ended) = collector
            .join(&mut t, || {
                let _ = tx.send(Phase::Stop);
            })
            .await
        else {
            // Blocked in a send the node does not take: its counts are lost with it, and the
            // run says so.
            outcomes.push(Outcome::failed("actor did not stop (blocked sending)"));
            continue;
        };
        match ended {
            Ok(o) => outcomes.push(o),
            Err(e) => outcomes.push(Outcome::failed(&format!("actor failed: {e}"))),
        }
    }
    Finished {
        outcomes,
        started,
        ended: Instant::now(),
        finals: judged,
        latency: latency.merged(),
        send_lag: send_lag.merged(),
        timeline: latency.timeline(),
    }
}

/// Runs the actors for `run_for` (then drains and settles) while metering, and folds the run
/// into the report.
pub(super) async fn measure(
    setup: &super::Setup,
    actors: Vec<(Lean, Plan)>,
    run_for: Duration,
    report: &mut crate::report::Report,
) {
    let meter = setup.meter();
    let run = orchestrate(
        actors,
        run_for,
        Duration::from_secs(10),
        Duration::from_secs(30),
    )
    .await;
    summarize(&run, report);
    meter.finish(report);
}

/// Folds a run into the report: delivery counts and checks against the final seqs, latency.
pub(super) fn summarize(run: &Finished, report: &mut crate::report::Report) {
    let (outcomes, started) = (&run.outcomes, run.started);
    let mut last = started;
    for o in outcomes {
        report.published += o.acked;
        report.delivered += o.delivered;
        for check in o.checks.values() {
            report.duplicates += check.duplicates;
            report.reordered += check.reordered;
        }
        for (k, v) in &o.errors {
            *report.errors.entry(k.clone()).or_default() += v;
        }
        if let Some(t) = o.last_delivery {
            last = last.max(t);
        }
        if !o.drained {
            *report
                .errors
                .entry("not drained in time".into())
                .or_default() += 1;
        }
    }
    report.latency_us = crate::report::Percentiles::of(&run.latency);
    report.send_lag_us = crate::report::Percentiles::of(&run.send_lag);
    report.latency_timeline = run.timeline.clone();
    // Rates over the time to the last delivery (the drain and settle are not load); a run
    // that delivered nothing is timed to its end.
    let end = if last > started { last } else { run.ended };
    let secs = end
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    report.duration_secs = secs;
    report.delivered_per_sec = report.delivered as f64 / secs;
    report.published_per_sec = report.published as f64 / secs;
    (report.lost, report.undelivered) = lost(run);
}

/// Entries lost and undelivered: for each subscription, what is missing up to the channel's
/// last acknowledged seq (or the highest any receiver saw, if higher), split into gaps and the
/// tail not received before the run ended.
pub(super) fn lost(run: &Finished) -> (u64, u64) {
    let outcomes = &run.outcomes;
    let mut finals: HashMap<&str, u64> = run.finals.iter().map(|(c, s)| (c.as_str(), *s)).collect();
    for o in outcomes {
        for (c, check) in &o.checks {
            let e = finals.entry(c.as_str()).or_default();
            *e = (*e).max(check.last());
        }
    }
    outcomes
        .iter()
        .flat_map(|o| o.checks.iter())
        .map(|(c, check)| {
            let last = finals.get(c.as_str()).copied().unwrap_or(0);
            (check.gaps(last), check.tail(last))
        })
        .fold((0u64, 0u64), |(g, t), (a, b)| {
            (g.saturating_add(a), t.saturating_add(b))
        })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::check::StreamCheck;

    /// What the checks found reaches the report: gaps as lost, the missing tail as
    /// undelivered, second copies as duplicates, a lost actor as an error.
    #[test]
    fn checks_and_failures_reach_the_report() {
        let mut seen = StreamCheck::after(0);
        for (seq, number) in [(1, 1), (2, 2), (2, 2), (4, 4), (5, 4)] {
            seen.observe_message(seq, 9, number);
        }
        let started = Instant::now();
        let run = Finished {
            outcomes: vec![
                Outcome {
                    acked: 0,
                    checks: HashMap::from([("c".to_owned(), seen)]),
                    errors: BTreeMap::new(),
                    last_delivery: Some(started + Duration::from_secs(2)),
                    drained: true,
                    delivered: 3,
                },
                Outcome {
                    acked: 7,
                    ..Outcome::failed("actor failed: boom")
                },
            ],
            started,
            ended: started + Duration::from_secs(3),
            finals: HashMap::from([("c".to_owned(), 7)]),
            latency: report::histogram(),
            send_lag: report::histogram(),
            timeline: Vec::new(),
        };
        let mut r = report::Report::default();
        summarize(&run, &mut r);
        assert_eq!(r.lost, 1, "3 was skipped");
        assert_eq!(r.undelivered, 2, "6 and 7 never came");
        assert_eq!(r.duplicates, 2, "seq 2 twice, and message 4 under seq 5");
        assert_eq!((r.published, r.delivered), (7, 3));
        assert_eq!(r.errors.get("actor failed: boom"), Some(&1));
        assert!(
            (r.duration_secs - 2.0).abs() < 1e-6,
            "timed to the last delivery"
        );
    }
}
