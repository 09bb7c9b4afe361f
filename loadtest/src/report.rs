//! The report: a JSON document (`--json FILE`) and a human table on stderr; server and client
//! CPU and memory read from `/proc`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// A histogram for microsecond latencies up to an hour.
#[allow(clippy::expect_used)] // Constant, valid bounds: this cannot fail.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records a duration in microseconds (clamped into range); returns the value recorded.
pub fn record(h: &mut Histogram<u64>, d: Duration) -> u64 {
    let us = u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 3_600_000_000);
    let _ = h.record(us);
    us
}

/// How many histograms a [`Latencies`] keeps: more than the tester's worker threads, so that
/// each thread usually has one to itself.
const LATENCY_SHARDS: usize = 16;

thread_local! {
    /// This thread's shard of every [`Latencies`].
    static LATENCY_SHARD: usize = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % LATENCY_SHARDS
    };
}

/// A latency above this counts as slow in the [`Second`] it arrived in.
pub const SLOW_US: u64 = 10_000;

/// The timeline covers at most this many seconds from the start (a day); later arrivals are in
/// the histogram only. Bounds its memory whatever the duration asked for.
const MAX_TIMELINE_SECONDS: u64 = 86_400;

/// One second of a run's deliveries: where in time a tail happened (a store stall, a flush, a
/// neighbour's burst), which the percentiles of the whole run cannot say.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Second {
    /// Whole seconds since the actors started.
    pub second: u64,
    /// Latencies recorded in it.
    pub count: u64,
    /// The largest, microseconds.
    pub max_us: u64,
    /// How many were above [`SLOW_US`].
    pub slow: u64,
}

impl Second {
    /// Adds another record of the same second.
    fn add(&mut self, other: &Second) {
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
        self.slow += other.slow;
    }
}

/// The entry of `second` in a timeline indexed by second, adding empty seconds up to it.
fn second_mut(timeline: &mut Vec<Second>, second: u64) -> &mut Second {
    let i = second as usize;
    if timeline.len() <= i {
        let from = timeline.len() as u64;
        timeline.extend((from..=second).map(|second| Second {
            second,
            ..Second::default()
        }));
    }
    &mut timeline[i]
}

/// One thread's share: its histogram and its timeline.
#[derive(Debug)]
struct Shard {
    histogram: Histogram<u64>,
    timeline: Vec<Second>,
}

/// Latency histograms shared by all actors, one per thread. A histogram per actor (188 KiB
/// each) was most of the tester's memory: ~190 MiB of 233 at 1,000 subscribers (its CPU per
/// delivery did not measurably change). A thread's own histogram is uncontended.
#[derive(Debug)]
pub struct Latencies {
    start: Instant,
    shards: Box<[std::sync::Mutex<Shard>]>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::starting(Instant::now())
    }
}

impl Latencies {
    /// Empty; the timeline counts seconds from `start`.
    pub fn starting(start: Instant) -> Self {
        Self {
            start,
            shards: (0..LATENCY_SHARDS)
                .map(|_| {
                    std::sync::Mutex::new(Shard {
                        histogram: histogram(),
                        timeline: Vec::new(),
                    })
                })
                .collect(),
        }
    }

    /// Records a latency that ended now.
    pub fn record(&self, d: Duration) {
        self.record_ending(d, Instant::now());
    }

    /// Records a latency that ended at `at` (a clock read the caller already made).
    pub fn record_ending(&self, d: Duration, at: Instant) {
        self.record_at(d, at.saturating_duration_since(self.start).as_secs());
    }

    /// Records a latency that ended in the given second of the run, into the calling thread's
    /// shard.
    pub fn record_at(&self, d: Duration, second: u64) {
        let shard = LATENCY_SHARD.with(|s| *s);
        let mut shard = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        let us = record(&mut shard.histogram, d);
        if second < MAX_TIMELINE_SECONDS {
            second_mut(&mut shard.timeline, second).add(&Second {
                second,
                count: 1,
                max_us: us,
                slow: u64::from(us > SLOW_US),
            });
        }
    }

    /// Everything recorded so far, in one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            // Same bounds everywhere: adding cannot fail.
            let _ = all.add(&shard.histogram);
        }
        all
    }

    /// Every thread's timeline added up, one entry per second up to the last with a record.
    pub fn timeline(&self) -> Vec<Second> {
        let mut all: Vec<Second> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for s in &shard.timeline {
                second_mut(&mut all, s.second).add(s);
            }
        }
        all
    }
}

/// CPU time (user + system) and resident memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProcSample {
    /// CPU seconds so far.
    pub cpu_secs: f64,
    /// Resident set, KiB.
    pub rss_kib: u64,
}

/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every mainstream architecture.
const USER_HZ: f64 = 100.0;

/// Reads `/proc/<pid>` (`self` for this process).
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcSample {
        cpu_secs: stat_cpu_secs(&stat)?,
        rss_kib: status_number(&status, "VmRSS:").unwrap_or(0),
    })
}

/// User + system CPU seconds from a `stat` line (of a process or of one of its threads).
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// The number after `key` in a `status` file (`VmRSS:`, `voluntary_ctxt_switches:`, ...).
fn status_number(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// One thread's counters so far, from `/proc/<pid>/task/<tid>/`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadSample {
    /// The thread id.
    pub tid: u32,
    /// Its name (`comm`: at most 15 bytes, e.g. `chorus-store-wr` for `chorus-store-writer`).
    pub name: String,
    /// CPU seconds so far.
    pub cpu_secs: f64,
    /// Times it gave up the CPU to wait (for a lock, I/O, a wake-up).
    pub voluntary_switches: u64,
    /// Times the scheduler took the CPU from it.
    pub involuntary_switches: u64,
}

impl ThreadSample {
    fn parse(tid: u32, comm: &str, stat: &str, status: &str) -> Option<Self> {
        Some(Self {
            tid,
            name: comm.trim_end().to_owned(),
            cpu_secs: stat_cpu_secs(stat)?,
            voluntary_switches: status_number(status, "voluntary_ctxt_switches:")?,
            involuntary_switches: status_number(status, "nonvoluntary_ctxt_switches:")?,
        })
    }
}

/// Every thread of a process; `None` where `/proc` is not there. A thread that ends while it is
/// read is left out.
pub fn thread_samples(pid: &str) -> Option<Vec<ThreadSample>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for task in dir.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = task.path();
        let read = |f: &str| std::fs::read_to_string(path.join(f)).ok();
        if let (Some(comm), Some(stat), Some(status)) = (read("comm"), read("stat"), read("status"))
            && let Some(t) = ThreadSample::parse(tid, &comm, &stat, &status)
        {
            out.push(t);
        }
    }
    Some(out)
}

/// A process's threads of one name over the measured phase: which of the node's stages (tokio
/// workers, the store's writer and syncer, the engine's flush workers) took its CPU, and how
/// often each waited or was preempted. Threads that ended during the phase are not counted;
/// threads that started during it count from zero.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ThreadGroup {
    /// The threads' name.
    pub name: String,
    /// How many threads have it at the end of the phase.
    pub threads: u32,
    /// Average cores used over the phase, all of them together.
    pub cpu_cores: f64,
    /// Voluntary context switches per second (waits), all of them together.
    pub voluntary_switches_per_sec: f64,
    /// Involuntary context switches per second (preemptions).
    pub involuntary_switches_per_sec: f64,
}

impl ThreadGroup {
    /// From two samples `wall` apart, the busiest group first.
    pub fn between(start: &[ThreadSample], end: &[ThreadSample], wall: Duration) -> Vec<Self> {
        let secs = wall.as_secs_f64().max(1e-9);
        let mut groups: BTreeMap<&str, Self> = BTreeMap::new();
        for t in end {
            let before = start.iter().find(|s| s.tid == t.tid && s.name == t.name);
            let g = groups.entry(&t.name).or_insert_with(|| Self {
                name: t.name.clone(),
                ..Self::default()
            });
            g.threads += 1;
            g.cpu_cores += (t.cpu_secs - before.map_or(0.0, |b| b.cpu_secs)).max(0.0) / secs;
            g.voluntary_switches_per_sec += t
                .voluntary_switches
                .saturating_sub(before.map_or(0, |b| b.voluntary_switches))
                as f64
                / secs;
            g.involuntary_switches_per_sec += t
                .involuntary_switches
                .saturating_sub(before.map_or(0, |b| b.involuntary_switches))
                as f64
                / secs;
        }
        let mut out: Vec<Self> = groups.into_values().collect();
        out.sort_by(|a, b| {
            b.cpu_cores
                .total_cmp(&a.cpu_cores)
                .then(a.name.cmp(&b.name))
        });
        out
    }
}

/// A process's usage over the measured phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Usage {
    /// Average cores used over the phase.
    pub cpu_cores: f64,
    /// Resident set at the start, KiB.
    pub rss_start_kib: u64,
    /// Resident set at the end, KiB.
    pub rss_end_kib: u64,
}

/// The whole host's CPU time so far, from the first line of `/proc/stat` (clock ticks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCpuSample {
    /// user + nice + system + irq + softirq (guest time is already inside user and nice).
    busy: u64,
    /// idle + iowait.
    idle: u64,
    /// Time the hypervisor ran someone else while this VM had work.
    steal: u64,
    /// Logical CPUs (`cpuN` lines).
    cpus: u32,
}

/// Reads `/proc/stat`; `None` where it is not there (not Linux).
pub fn host_cpu() -> Option<HostCpuSample> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_proc_stat(stat: &str) -> Option<HostCpuSample> {
    let mut fields = stat.lines().next()?.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal guest guest_nice; older kernels print fewer.
    let mut ticks = [0u64; 8];
    for (slot, field) in ticks.iter_mut().zip(fields) {
        *slot = field.parse().ok()?;
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks;
    let cpus = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Some(HostCpuSample {
        busy: user + nice + system + irq + softirq,
        idle: idle + iowait,
        steal,
        cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
    })
}

/// Where the host's CPUs went during the measured phase. On a VM, `steal_cores` is time the
/// hypervisor gave to other guests while this one wanted to run: latency and throughput
/// measured then are the neighbours' as much as the node's, so compare runs only at similar
/// steal.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HostCpu {
    /// Logical CPUs.
    pub cpus: u32,
    /// Cores busy with any process or interrupt (node, load tester, everything else).
    pub busy_cores: f64,
    /// Cores idle (including waiting for I/O).
    pub idle_cores: f64,
    /// Cores stolen by the hypervisor.
    pub steal_cores: f64,
    /// Stolen share of all CPU time, percent.
    pub steal_percent: f64,
}

impl HostCpu {
    /// From two samples `wall` apart.
    pub fn between(start: HostCpuSample, end: HostCpuSample, wall: Duration) -> Self {
        let cores =
            |a: u64, b: u64| b.saturating_sub(a) as f64 / USER_HZ / wall.as_secs_f64().max(1e-9);
        let steal = end.steal.saturating_sub(start.steal);
        let total =
            end.busy.saturating_sub(start.busy) + end.idle.saturating_sub(start.idle) + steal;
        Self {
            cpus: end.cpus,
            busy_cores: cores(start.busy, end.busy),
            idle_cores: cores(start.idle, end.idle),
            steal_cores: cores(start.steal, end.steal),
            steal_percent: if total == 0 {
                0.0
            } else {
                steal as f64 * 100.0 / total as f64
            },
        }
    }
}

/// Steal at or above this share of the host's CPU is flagged in the table.
pub const STEAL_WARNING_PERCENT: f64 = 5.0;

/// The host's UDP receive-buffer drops so far (IPv4 and IPv6), from `/proc/net`; `None` where
/// the files are not there.
pub fn udp_receive_drops() -> Option<u64> {
    let v4 = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let v6 = std::fs::read_to_string("/proc/net/snmp6").unwrap_or_default();
    Some(rcvbuf_errors_v4(&v4)? + rcvbuf_errors_v6(&v6).unwrap_or(0))
}

/// `RcvbufErrors` from `/proc/net/snmp`: a `Udp:` header line of names, then one of values.
fn rcvbuf_errors_v4(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

/// `Udp6RcvbufErrors` from `/proc/net/snmp6`: one `name value` pair a line.
fn rcvbuf_errors_v6(snmp6: &str) -> Option<u64> {
    snmp6.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == "Udp6RcvbufErrors").then(|| f.next()?.parse().ok())?
    })
}

impl Usage {
    /// From two samples `wall` apart.
    pub fn between(start: ProcSample, end: ProcSample, wall: Duration) -> Self {
        Self {
            cpu_cores: (end.cpu_secs - start.cpu_secs) / wall.as_secs_f64().max(1e-9),
            rss_start_kib: start.rss_kib,
            rss_end_kib: end.rss_kib,
        }
    }
}

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
