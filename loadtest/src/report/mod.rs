//! The report: a JSON document (`--json FILE`) and a human table on stderr; server and client
//! CPU and memory read from `/proc`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

mod latency;
mod procfs;
mod timeline;

pub use latency::*;
pub use procfs::*;
pub use timeline::*;

/// Everything a run measured (the documented JSON report).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// connect, fanout, pairs, rooms or reconnect-storm.
    pub scenario: String,
    /// The scenario's parameters as given.
    pub parameters: Value,
    /// ws or quic.
    pub transport: String,
    /// The node URLs.
    pub targets: Vec<String>,
    /// Connections opened.
    pub connections: u64,
    /// Publishes acknowledged.
    pub published: u64,
    /// Entries received by subscribers (each subscriber counts).
    pub delivered: u64,
    /// Seconds of the measured phase.
    pub duration_secs: f64,
    /// Acknowledged publishes per second.
    pub published_per_sec: f64,
    /// Deliveries per second.
    pub delivered_per_sec: f64,
    /// Entries a subscriber skipped: a later entry of the channel arrived, this one never did.
    pub lost: u64,
    /// Entries acknowledged to their publisher that a subscriber had not received when the run
    /// ended (after the settle phase): the node did not catch it up in time, or lost its tail.
    pub undelivered: u64,
    /// Entries received twice.
    pub duplicates: u64,
    /// Entries received after a later one.
    pub reordered: u64,
    /// Publish to receipt, microseconds (same process).
    pub latency_us: Percentiles,
    /// The same latencies second by second (empty for scenarios without them).
    pub latency_timeline: Vec<Second>,
    /// Connect to `Welcome`, microseconds.
    pub connect_us: Percentiles,
    /// How late each connect (failed ones included) began against the `--connect-rate`
    /// schedule, microseconds (at least 1): the pacing loop's lateness, the wait for a free
    /// connect slot (256 handshakes in flight at most) and for a tester thread.
    /// `connect_us` starts after that, once the token is signed.
    pub connect_lag_us: Percentiles,
    /// Fixed-rate runs: how late each publish left against its schedule, microseconds. The
    /// latency is timed from the actual send, so a tester that fell behind (busy reading, a
    /// full window) hides its delay there; it shows here (empty for window runs).
    pub send_lag_us: Percentiles,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// The node's CPU and memory (with `--server-pid`).
    pub server: Option<Usage>,
    /// The node's CPU and context switches by thread name, busiest first (with `--server-pid`,
    /// on Linux; empty otherwise).
    pub server_threads: Vec<ThreadGroup>,
    /// This process's CPU and memory.
    pub client: Option<Usage>,
    /// Client CPU nanoseconds per delivery (how much of the machine the load tester took).
    pub client_cpu_ns_per_delivery: Option<f64>,
    /// UDP datagrams the host dropped for full socket receive buffers during the run
    /// (`RcvbufErrors` of `/proc/net/snmp` and `snmp6`, all sockets, so the node's and the
    /// tester's). QUIC recovers each drop by retransmission and a smaller congestion window: a
    /// QUIC run with drops measured the sockets' buffers as much as the node.
    pub host_udp_receive_drops: Option<u64>,
    /// The host's CPU over the measured phase, including time stolen by a hypervisor.
    pub host_cpu: Option<HostCpu>,
    /// The node's commit latency and syncs over the measured phase (with `--server-metrics`).
    pub server_commit: Option<crate::server_metrics::ServerCommit>,
    /// Scenario-specific figures.
    pub extra: Value,
}

impl Report {
    /// The human summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<28} {v}\n"));
        row(
            "scenario",
            format!("{} over {}", self.scenario, self.transport),
        );
        row("targets", self.targets.join(", "));
        row("connections", self.connections.to_string());
        row("duration", format!("{:.1} s", self.duration_secs));
        row(
            "published",
            format!("{} ({:.0}/s)", self.published, self.published_per_sec),
        );
        row(
            "delivered",
            format!("{} ({:.0}/s)", self.delivered, self.delivered_per_sec),
        );
        row(
            "lost / dup / reordered / undelivered",
            format!(
                "{} / {} / {} / {}",
                self.lost, self.duplicates, self.reordered, self.undelivered
            ),
        );
        if let Some(drops) = self.host_udp_receive_drops
            && self.transport == "quic"
        {
            row("UDP receive drops (host)", drops.to_string());
        }
        let p = |p: &Percentiles| {
            format!(
                "p50 {} p90 {} p99 {} p99.9 {} max {} us (n={})",
                p.p50, p.p90, p.p99, p.p999, p.max, p.count
            )
        };
        if self.latency_us.count > 0 {
            row("latency", p(&self.latency_us));
        }
        for s in worst_seconds(&self.latency_timeline, 3) {
            row(
                "slow second",
                format!(
                    "at {} s: max {} us, {} of {} over {} us",
                    s.second, s.max_us, s.slow, s.count, SLOW_US
                ),
            );
        }
        if self.connect_us.count > 0 {
            row("connect", p(&self.connect_us));
        }
        if self.connect_lag_us.count > 0 {
            row("connect lag (vs schedule)", p(&self.connect_lag_us));
        }
        if self.send_lag_us.count > 0 {
            row("send lag (vs schedule)", p(&self.send_lag_us));
        }
        if let Some(s) = &self.server {
            row(
                "server",
                format!(
                    "{:.2} cores, RSS {} -> {} KiB",
                    s.cpu_cores, s.rss_start_kib, s.rss_end_kib
                ),
            );
        }
        if let Some(c) = &self.server_commit {
            let ms = |us: Option<f64>| {
                us.map_or("beyond the last bucket".into(), |us| {
                    format!("<= {:.2} ms", us / 1000.0)
                })
            };
            row(
                "server commit",
                format!(
                    "{} durable, mean {:.2} ms, p50 {}, p99 {}, p99.9 {}; {:.0} syncs/s of {:.0} µs",
                    c.count,
                    c.mean_us / 1000.0,
                    ms(c.p50_at_most_us),
                    ms(c.p99_at_most_us),
                    ms(c.p999_at_most_us),
                    c.syncs_per_sec,
                    c.sync_mean_us
                ),
            );
        }
        for g in self.server_threads.iter().filter(|g| g.cpu_cores >= 0.01) {
            row(
                "server thread",
                format!(
                    "{} x{}: {:.2} cores, {:.0} waits/s, {:.0} preemptions/s",
                    g.name,
                    g.threads,
                    g.cpu_cores,
                    g.voluntary_switches_per_sec,
                    g.involuntary_switches_per_sec
                ),
            );
        }
        if let Some(c) = &self.client {
            row(
                "load tester",
                format!("{:.2} cores, RSS {} KiB", c.cpu_cores, c.rss_end_kib),
            );
        }
        if let Some(ns) = self.client_cpu_ns_per_delivery {
            row("load tester CPU/delivery", format!("{ns:.0} ns"));
        }
        if let Some(h) = &self.host_cpu {
            row(
                "host CPU",
                format!(
                    "{} cpus: busy {:.2}, idle {:.2}, stolen {:.2} cores ({:.0} %)",
                    h.cpus, h.busy_cores, h.idle_cores, h.steal_cores, h.steal_percent
                ),
            );
            if h.steal_percent >= STEAL_WARNING_PERCENT {
                row(
                    "warning",
                    "the hypervisor took CPU from this VM: figures are not comparable".into(),
                );
            }
        }
        for (k, v) in &self.errors {
            row(&format!("error {k}"), v.to_string());
        }
        if let Value::Object(extra) = &self.extra {
            for (k, v) in extra {
                row(k, v.to_string());
            }
        }
        out
    }
}

/// Up to `n` seconds with a latency above [`SLOW_US`], the one with the largest maximum first.
pub fn worst_seconds(timeline: &[Second], n: usize) -> Vec<Second> {
    let mut slow: Vec<Second> = timeline.iter().filter(|s| s.slow > 0).copied().collect();
    slow.sort_by(|a, b| b.max_us.cmp(&a.max_us).then(a.second.cmp(&b.second)));
    slow.truncate(n);
    slow
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The counters as Linux prints them: columns looked up by name, IPv6 by its line.
    #[test]
    fn udp_receive_drops_are_read_from_the_snmp_tables() {
        let v4 = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                  Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                  Udp: 41044731 238179 366641 41671387 366640 0\n\
                  UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                  UdpLite: 0 0 0 0 7 0\n";
        assert_eq!(rcvbuf_errors_v4(v4), Some(366_640));
        let v6 = "Udp6InDatagrams                 \t12\nUdp6RcvbufErrors                \t3\n";
        assert_eq!(rcvbuf_errors_v6(v6), Some(3));
        assert_eq!(rcvbuf_errors_v4("Ip: 1 64\n"), None);
        assert_eq!(rcvbuf_errors_v6(""), None);
    }

    /// The first line of `/proc/stat` as Linux prints it, and as older kernels print it.
    #[test]
    fn host_cpu_splits_busy_idle_and_stolen_time() {
        let at = |user, steal| {
            format!(
                "cpu  {user} 5 300 1000 40 0 60 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n\
                 cpu1 1 2 3 4 5 6 7 8 0 0\nintr 123 4\nctxt 99\n"
            )
        };
        let a = parse_proc_stat(&at(1_000, 100)).unwrap_or_default();
        assert_eq!(a.cpus, 2);
        assert_eq!((a.busy, a.idle, a.steal), (1_365, 1_040, 100));
        // 10 s later: 1,400 more ticks busy, 600 stolen, none idle (2 cpus x 1,000 ticks).
        let b = parse_proc_stat(&at(2_400, 700)).unwrap_or_default();
        let h = HostCpu::between(a, b, Duration::from_secs(10));
        assert_eq!(h.cpus, 2);
        assert!((h.busy_cores - 1.4).abs() < 1e-9, "{h:?}");
        assert!((h.steal_cores - 0.6).abs() < 1e-9, "{h:?}");
        assert_eq!(h.idle_cores, 0.0);
        assert!((h.steal_percent - 30.0).abs() < 1e-9, "{h:?}");
        let old = parse_proc_stat("cpu  10 0 20 30\ncpu0 10 0 20 30\n").unwrap_or_default();
        assert_eq!((old.busy, old.idle, old.steal, old.cpus), (30, 30, 0, 1));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 x 3\n"), None);
    }

    /// The i-th sample of thread t: spread over 1 µs to 0.5 s.
    fn sample(t: u64, i: u64) -> Duration {
        Duration::from_micros(1 + (t * 7_919 + i * 104_729) % 500_000)
    }

    /// Records from many threads end up in one histogram exactly as if recorded in one place.
    #[test]
    fn latencies_from_many_threads_merge_into_one_histogram() {
        let shared = std::sync::Arc::new(Latencies::default());
        let mut reference = histogram();
        let threads: Vec<_> = (0..24u64)
            .map(|t| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000u64 {
                        shared.record(sample(t, i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join()
                .unwrap_or_else(|_| panic!("a recording thread panicked"));
        }
        for t in 0..24u64 {
            for i in 0..1_000u64 {
                record(&mut reference, sample(t, i));
            }
        }
        let merged = shared.merged();
        assert_eq!(merged.len(), 24_000);
        let timeline = shared.timeline();
        assert_eq!(timeline.iter().map(|s| s.count).sum::<u64>(), 24_000);
        assert_eq!(Percentiles::of(&merged), Percentiles::of(&reference));
        assert_eq!(merged.min(), reference.min());
    }

    /// Seconds add up across threads, gaps are filled with empty seconds, and the slow ones
    /// come out worst first.
    #[test]
    fn the_timeline_places_slow_latencies_in_their_second() {
        let shared = std::sync::Arc::new(Latencies::default());
        let ms = Duration::from_millis;
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    shared.record_at(ms(1), 0);
                    shared.record_at(ms(20 + t), 3);
                    shared.record_at(ms(2), 3);
                    if t == 0 {
                        shared.record_at(ms(150), 5);
                    }
                    shared.record_at(ms(1), MAX_TIMELINE_SECONDS);
                })
            })
            .collect();
        for t in threads {
            t.join()
                .unwrap_or_else(|_| panic!("a recording thread panicked"));
        }
        let timeline = shared.timeline();
        let at = |second: u64, count, max_us, slow| Second {
            second,
            count,
            max_us,
            slow,
        };
        assert_eq!(
            timeline,
            vec![
                at(0, 4, 1_000, 0),
                at(1, 0, 0, 0),
                at(2, 0, 0, 0),
                at(3, 8, 23_000, 4),
                at(4, 0, 0, 0),
                at(5, 1, 150_000, 1),
            ]
        );
        // Past the timeline's end a latency is still in the histogram.
        assert_eq!(shared.merged().len(), 17);
        let worst = worst_seconds(&timeline, 3);
        assert_eq!(
            worst.iter().map(|s| s.second).collect::<Vec<_>>(),
            vec![5, 3]
        );
    }

    #[test]
    fn thread_groups_add_up_each_name_over_the_phase() {
        // A `stat` line as Linux prints it for a thread (name with a space and a parenthesis),
        // utime 150 and stime 50 ticks, and the two switch counters of its `status` file.
        let stat = |utime: u64, stime: u64| {
            format!(
                "4242 (tokio-rt (w)) S 1 4242 4242 0 -1 4194368 4031 0 0 0 {utime} {stime} 0 0 20 0 9 0"
            )
        };
        let status = |vol: u64, invol: u64| {
            format!(
                "Name:\ttokio\nVmRSS:\t100 kB\nvoluntary_ctxt_switches:\t{vol}\nnonvoluntary_ctxt_switches:\t{invol}\n"
            )
        };
        let t = |tid, name: &str, cpu: (u64, u64), sw: (u64, u64)| {
            ThreadSample::parse(
                tid,
                &format!("{name}\n"),
                &stat(cpu.0, cpu.1),
                &status(sw.0, sw.1),
            )
            .unwrap()
        };
        let first = t(1, "worker", (150, 50), (10, 1));
        assert_eq!(first.name, "worker");
        assert!((first.cpu_secs - 2.0).abs() < 1e-9, "{first:?}");
        assert_eq!(
            (first.voluntary_switches, first.involuntary_switches),
            (10, 1)
        );

        let start = vec![
            first,
            t(2, "worker", (100, 0), (0, 0)),
            t(3, "writer", (10, 0), (5, 5)),
            // Ends during the phase: not counted.
            t(4, "gone", (500, 0), (0, 0)),
        ];
        let end = vec![
            t(1, "worker", (250, 50), (30, 1)),
            t(2, "worker", (200, 0), (10, 3)),
            t(3, "writer", (60, 0), (25, 5)),
            // Starts during the phase: counted from zero.
            t(5, "flush", (20, 0), (2, 0)),
        ];
        let groups = ThreadGroup::between(&start, &end, Duration::from_secs(2));
        let g = |name, threads, cores, vol, invol| ThreadGroup {
            name: String::from(name),
            threads,
            cpu_cores: cores,
            voluntary_switches_per_sec: vol,
            involuntary_switches_per_sec: invol,
        };
        assert_eq!(
            groups,
            vec![
                g("worker", 2, 1.0, 15.0, 1.5),
                g("writer", 1, 0.25, 10.0, 0.0),
                g("flush", 1, 0.1, 1.0, 0.0),
            ]
        );
        assert!(ThreadSample::parse(9, "x", "no parenthesis", "").is_none());
    }

    #[test]
    fn this_process_has_threads_to_sample() {
        let me = thread_samples("self").unwrap();
        assert!(!me.is_empty());
        assert!(me.iter().all(|t| t.cpu_secs >= 0.0 && !t.name.is_empty()));
    }
}
