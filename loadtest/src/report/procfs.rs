//! Process, thread and host figures read from `/proc`: CPU, memory, steal, UDP drops.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// CPU time (user + system) and resident memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProcSample {
    /// CPU seconds so far.
    pub cpu_secs: f64,
    /// Resident set, KiB.
    pub rss_kib: u64,
}

/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every mainstream architecture.
pub(crate) const USER_HZ: f64 = 100.0;

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
pub(crate) fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// The number after `key` in a `status` file (`VmRSS:`, `voluntary_ctxt_switches:`, ...).
pub(crate) fn status_number(status: &str, key: &str) -> Option<u64> {
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
    pub(crate) fn parse(tid: u32, comm: &str, stat: &str, status: &str) -> Option<Self> {
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
    pub(crate) busy: u64,
    /// idle + iowait.
    pub(crate) idle: u64,
    /// Time the hypervisor ran someone else while this VM had work.
    pub(crate) steal: u64,
    /// Logical CPUs (`cpuN` lines).
    pub(crate) cpus: u32,
}

/// Reads `/proc/stat`; `None` where it is not there (not Linux).
pub fn host_cpu() -> Option<HostCpuSample> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

pub(crate) fn parse_proc_stat(stat: &str) -> Option<HostCpuSample> {
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
pub(crate) fn rcvbuf_errors_v4(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

/// `Udp6RcvbufErrors` from `/proc/net/snmp6`: one `name value` pair a line.
pub(crate) fn rcvbuf_errors_v6(snmp6: &str) -> Option<u64> {
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
