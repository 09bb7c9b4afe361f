//! The scenarios and what they share: targets, trust, tokens, source addresses, paced
//! connecting, and the report's common parts.

pub mod actor;
pub mod connect;
pub mod fanout;
mod orchestrate;
pub mod pairs;
pub mod rooms;
pub mod storm;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chorus_client::raw::QuicEndpoint;
use chorus_client::{ClientConfig, Endpoint, Scheme, TlsTrust};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::lean::Lean;
use crate::report::{self, Report, Usage};
use crate::server_metrics::{CommitSample, MetricsUrl, ServerCommit};
use crate::token::Minter;

/// Longest wait for one connection's `Welcome`.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(15);
/// Handshakes in flight at once while connecting.
const CONNECT_CONCURRENCY: usize = 256;

/// How long connects took, and how late each began against the `--connect-rate` schedule.
#[derive(Debug)]
pub struct ConnectTiming {
    /// From the start of the connect to the node's `Welcome`.
    latency: Histogram<u64>,
    /// From a connect's scheduled start to its actual start: the pacing loop running late
    /// (tokio's timer ends sleeps on the next millisecond, so ~1 ms is its floor), every
    /// connect slot taken by handshakes the node has not answered yet, or the connecting task
    /// waiting for a worker. Failed connects count too. Without it a rate the tester or the
    /// node could not keep showed only in `connects_per_sec`.
    lag: Histogram<u64>,
}

impl Default for ConnectTiming {
    fn default() -> Self {
        Self {
            latency: report::histogram(),
            lag: report::histogram(),
        }
    }
}

impl ConnectTiming {
    /// A connect scheduled for `scheduled` began at `begun`.
    pub fn started(&mut self, scheduled: Instant, begun: Instant) {
        // Saturating: under a paused test clock the schedule can run ahead of the real one.
        report::record(&mut self.lag, begun.saturating_duration_since(scheduled));
    }

    /// A connect reached the node's `Welcome` after `took`.
    pub fn connected(&mut self, took: Duration) {
        report::record(&mut self.latency, took);
    }

    /// Writes both into the report (`connect_us`, `connect_lag_us`).
    pub fn fill(&self, report: &mut Report) {
        report.connect_us = report::Percentiles::of(&self.latency);
        report.connect_lag_us = report::Percentiles::of(&self.lag);
    }
}

/// What every scenario needs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Node URLs, with the transport's scheme.
    pub targets: Vec<String>,
    /// "ws" or "quic".
    pub transport: &'static str,
    /// TLS trust for wss and quic.
    pub trust: TlsTrust,
    /// Tokens for synthetic users.
    pub minter: Minter,
    /// Local addresses connections are spread over.
    pub source_ips: Vec<IpAddr>,
    /// New connections per second.
    pub connect_rate: u32,
    /// The node's pid, for its CPU and memory.
    pub server_pid: Option<u32>,
    /// The node's metrics endpoint, for its commit latency.
    pub server_metrics: Option<MetricsUrl>,
    /// A prefix making this run's users and channels unique.
    pub run_id: String,
    /// Largest UDP payload the shared QUIC endpoints accept.
    quic_max_udp_payload: u16,
    /// How many shared QUIC endpoints (UDP sockets) to spread connections over.
    quic_sockets: usize,
    /// QUIC endpoints shared by the connections, `quic_sockets` spread over the source addresses
    /// (bound on first use; `None` where binding failed).
    quic_endpoints: Arc<std::sync::OnceLock<Vec<Option<QuicEndpoint>>>>,
}

/// Shared QUIC sockets by default. A real client has a socket of its own; the tester shares
/// them to save descriptors and memory, but a socket's receive buffer (capped by
/// `net.core.rmem_max`) is shared too: at full fanout with 1,000 connections on 8 sockets the
/// tester's own sockets dropped ~2 % of the node's datagrams (`RcvbufErrors`), and every drop
/// made the node retransmit and halve its congestion window. 32 sockets dropped none.
pub const DEFAULT_QUIC_SOCKETS: usize = 32;

impl Setup {
    /// Checks the targets (loopback only) and rewrites their scheme for the transport.
    pub fn new(
        targets: &[String],
        quic: bool,
        trust: TlsTrust,
        minter: Minter,
        source_ips: usize,
        connect_rate: u32,
        server_pid: Option<u32>,
    ) -> anyhow::Result<Self> {
        if targets.is_empty() {
            bail!("give at least one --target");
        }
        let mut out = Vec::new();
        for t in targets {
            let e = Endpoint::parse(t).with_context(|| format!("target {t}"))?;
            let loopback = match e.host.parse::<IpAddr>() {
                Ok(ip) => ip.is_loopback(),
                Err(_) => e.host == "localhost",
            };
            if !loopback {
                bail!(
                    "target {t}: load is only sent to loopback addresses (127.0.0.0/8, ::1, localhost)"
                );
            }
            let host = if e.host.contains(':') {
                format!("[{}]", e.host)
            } else {
                e.host.clone()
            };
            let url = match (quic, e.scheme) {
                (true, _) => format!("quic://{host}:{}", e.port),
                (false, Scheme::Quic) => format!("wss://{host}:{}{}", e.port, e.path),
                (false, _) => t.clone(),
            };
            out.push(url);
        }
        let source_ips = (0..source_ips.max(1))
            .map(|i| IpAddr::from([127, 0, 0, 2 + (i % 250) as u8]))
            .collect();
        Ok(Self {
            targets: out,
            transport: if quic { "quic" } else { "ws" },
            trust,
            minter,
            source_ips,
            connect_rate: connect_rate.max(1),
            server_pid,
            server_metrics: None,
            run_id: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
            quic_max_udp_payload: chorus_client::raw::DEFAULT_MAX_UDP_PAYLOAD,
            quic_sockets: DEFAULT_QUIC_SOCKETS,
            quic_endpoints: Arc::default(),
        })
    }

    /// Sets how QUIC connections share UDP sockets: `sockets` endpoints (at least one per
    /// source address), each accepting UDP payloads up to `max_udp_payload` bytes.
    pub fn with_quic_sockets(mut self, sockets: usize, max_udp_payload: u16) -> Self {
        self.quic_sockets = sockets;
        self.quic_max_udp_payload = max_udp_payload;
        self
    }

    /// Scrapes the node's commit latency from `url` at the start and end of each measured
    /// phase.
    pub fn with_server_metrics(mut self, url: Option<MetricsUrl>) -> Self {
        self.server_metrics = url;
        self
    }

    /// The client config of connection `i`: targets and source addresses in turn.
    pub fn config(&self, i: usize, token: &str) -> anyhow::Result<ClientConfig> {
        let url = &self.targets[i % self.targets.len()];
        let mut config = ClientConfig::new(url, token)?
            .trust(self.trust.clone())
            .connect_timeout(Duration::from_secs(20));
        // Loopback targets can be reached from any 127/8 address; spreading avoids running out
        // of ephemeral ports with tens of thousands of connections.
        if url.contains("127.") || url.contains("localhost") {
            config = config.local_addr(self.source_ips[i % self.source_ips.len()]);
        }
        Ok(config)
    }

    /// The shared QUIC endpoint for connection `i` (QUIC runs only): a few UDP sockets per
    /// source address instead of one per connection. Endpoint `j` is bound to source address
    /// `j % source_ips`, so connection `i` gets one on its own source address. `None` when
    /// binding failed: the connection then binds an endpoint of its own.
    fn quic_endpoint(&self, i: usize) -> Option<QuicEndpoint> {
        if self.transport != "quic" {
            return None;
        }
        let endpoints = self.quic_endpoints.get_or_init(|| {
            let ips = self.source_ips.len();
            let per_ip = self.quic_sockets.div_ceil(ips).max(1);
            (0..ips * per_ip)
                .map(|j| {
                    let local = std::net::SocketAddr::new(self.source_ips[j % ips], 0);
                    QuicEndpoint::bind_with_max_udp_payload(local, self.quic_max_udp_payload).ok()
                })
                .collect()
        });
        endpoints.get(i % endpoints.len().max(1)).cloned().flatten()
    }

    /// A user name unique to this run.
    pub fn user(&self, role: &str, i: usize) -> String {
        format!("lt{}-{role}-{i}", self.run_id)
    }

    /// Opens `n` lean connections at the configured rate, up to `CONNECT_CONCURRENCY` (256)
    /// handshakes at once; their latency and lag go to `timing`. Failed connections are
    /// counted in `errors` and left out.
    pub async fn connect_many(
        &self,
        n: usize,
        name: impl Fn(usize) -> String,
        timing: &mut ConnectTiming,
        errors: &mut std::collections::BTreeMap<String, u64>,
    ) -> Vec<(usize, Lean)> {
        let slots = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let shared = Arc::new(self.clone());
        let interval = Duration::from_secs_f64(1.0 / f64::from(self.connect_rate));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let scheduled = start + interval.mul_f64(i as f64);
            tokio::time::sleep_until(scheduled).await;
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let user = name(i);
            let quic = self.quic_endpoint(i);
            let setup = shared.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let begun = Instant::now();
                let connected = async {
                    // Signed and configured here, not in the pacing loop: at 10,000+
                    // connects/s that loop was the tester's bottleneck.
                    let token = setup.minter.token(&user)?;
                    let config = setup.config(i, &token)?;
                    let connecting = Instant::now();
                    // A handshake that never completes must not stall the whole run.
                    let lean = tokio::time::timeout(
                        HANDSHAKE_LIMIT,
                        Lean::connect(&config, &token, quic.as_ref()),
                    )
                    .await
                    .map_err(|_| anyhow::anyhow!("no Welcome within {HANDSHAKE_LIMIT:?}"))??;
                    Ok::<_, anyhow::Error>((i, lean, connecting.elapsed()))
                };
                (scheduled.into_std(), begun, connected.await)
            }));
        }
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            match t.await {
                Ok((scheduled, begun, connected)) => {
                    timing.started(scheduled, begun);
                    match connected {
                        Ok((i, lean, took)) => {
                            timing.connected(took);
                            out.push((i, lean));
                        }
                        Err(e) => {
                            *errors.entry(format!("connect: {}", short(&e))).or_default() += 1;
                        }
                    }
                }
                Err(e) => *errors.entry(format!("connect task: {e}")).or_default() += 1,
            }
        }
        out
    }

    /// Starts measuring this process and the node.
    pub fn meter(&self) -> Meter {
        Meter {
            at: Instant::now(),
            client: report::sample("self"),
            server: self.server_pid.and_then(|p| report::sample(&p.to_string())),
            server_threads: self
                .server_pid
                .and_then(|p| report::thread_samples(&p.to_string())),
            pid: self.server_pid,
            udp_drops: report::udp_receive_drops(),
            host: report::host_cpu(),
            commit: self.server_metrics.as_ref().and_then(MetricsUrl::sample),
            metrics: self.server_metrics.clone(),
        }
    }

    /// A report with the common fields filled.
    pub fn report(&self, scenario: &str, parameters: serde_json::Value) -> Report {
        Report {
            scenario: scenario.to_owned(),
            parameters,
            transport: self.transport.to_owned(),
            targets: self.targets.clone(),
            ..Report::default()
        }
    }
}

/// CPU and memory at the start of a phase.
#[derive(Debug, Clone)]
pub struct Meter {
    at: Instant,
    client: Option<report::ProcSample>,
    server: Option<report::ProcSample>,
    server_threads: Option<Vec<report::ThreadSample>>,
    pid: Option<u32>,
    udp_drops: Option<u64>,
    host: Option<report::HostCpuSample>,
    commit: Option<CommitSample>,
    metrics: Option<MetricsUrl>,
}

impl Meter {
    /// Fills the report's usage fields for the phase since the meter started.
    pub fn finish(&self, report: &mut Report) {
        let wall = self.at.elapsed();
        if let (Some(a), Some(b)) = (self.client, report::sample("self")) {
            let usage = Usage::between(a, b, wall);
            if report.delivered > 0 {
                report.client_cpu_ns_per_delivery =
                    Some((b.cpu_secs - a.cpu_secs) * 1e9 / report.delivered as f64);
            }
            report.client = Some(usage);
        }
        if let (Some(a), Some(pid)) = (self.server, self.pid)
            && let Some(b) = report::sample(&pid.to_string())
        {
            report.server = Some(Usage::between(a, b, wall));
        }
        if let (Some(a), Some(pid)) = (&self.server_threads, self.pid)
            && let Some(b) = report::thread_samples(&pid.to_string())
        {
            report.server_threads = report::ThreadGroup::between(a, &b, wall);
        }
        if let (Some(a), Some(b)) = (self.udp_drops, report::udp_receive_drops()) {
            report.host_udp_receive_drops = Some(b.saturating_sub(a));
        }
        if let (Some(a), Some(b)) = (self.host, report::host_cpu()) {
            report.host_cpu = Some(report::HostCpu::between(a, b, wall));
        }
        if let (Some(a), Some(b)) = (
            &self.commit,
            self.metrics.as_ref().and_then(MetricsUrl::sample),
        ) {
            report.server_commit = ServerCommit::between(a, &b, wall);
        }
    }
}

/// Collects spawned tasks that must end by a deadline: past it, each is asked to stop and all
/// get one grace period together, from the first found still running (a grace each would let
/// thousands of stuck tasks hold a run for hours); a task still running then is aborted.
#[derive(Debug)]
pub struct Collector {
    deadline: tokio::time::Instant,
    grace: Duration,
    stop_by: Option<tokio::time::Instant>,
}

impl Collector {
    /// Tasks should end by `deadline`, and stop within `grace` once asked.
    pub fn new(deadline: tokio::time::Instant, grace: Duration) -> Self {
        Self {
            deadline,
            grace,
            stop_by: None,
        }
    }

    /// The task's end; `stop` asks it to stop if it runs past the deadline (it may be called
    /// once per late task). `None`: it did not stop and was aborted.
    pub async fn join<T>(
        &mut self,
        task: &mut tokio::task::JoinHandle<T>,
        stop: impl FnOnce(),
    ) -> Option<Result<T, tokio::task::JoinError>> {
        if let Ok(ended) = tokio::time::timeout_at(self.deadline, &mut *task).await {
            return Some(ended);
        }
        stop();
        let grace = self.grace;
        let by = *self
            .stop_by
            .get_or_insert_with(|| tokio::time::Instant::now() + grace);
        if let Ok(ended) = tokio::time::timeout_at(by, &mut *task).await {
            return Some(ended);
        }
        task.abort();
        let _ = task.await;
        None
    }
}

/// The first line of an error chain, for grouping errors by kind.
pub fn short(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    s.chars().take(120).collect()
}

/// Parses a messages-per-second rate: finite and above zero (a zero rate would divide the
/// send schedule by zero).
pub fn positive_rate(s: &str) -> Result<f64, String> {
    finite(s, is_rate, "a number above 0")
}

/// The same rule for a scenario's `Args` built in code rather than parsed.
pub fn check_rate(rate: f64) -> anyhow::Result<()> {
    if !(rate.is_finite() && is_rate(rate)) {
        anyhow::bail!("the rate must be a number above 0, not {rate}");
    }
    Ok(())
}

fn is_rate(r: f64) -> bool {
    r > 0.0
}

/// Parses a Zipf exponent: finite and not negative.
pub fn zipf_exponent(s: &str) -> Result<f64, String> {
    finite(s, |z| z >= 0.0, "a number of at least 0")
}

/// A finite number that `ok` accepts; `rule` says which.
fn finite(s: &str, ok: fn(f64) -> bool, rule: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && ok(x) => Ok(x),
        Ok(_) => Err(format!("must be {rule}")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn late_tasks_share_one_grace_and_the_stuck_are_aborted() {
        use tokio::time::{Instant, sleep};
        let start = Instant::now();
        let stop = Arc::new(tokio::sync::Notify::new());
        let stoppable = |stop: Arc<tokio::sync::Notify>| {
            tokio::spawn(async move {
                stop.notified().await;
                "stopped"
            })
        };
        let mut tasks = vec![
            tokio::spawn(async { "on time" }),
            tokio::spawn(async {
                sleep(Duration::from_secs(3600)).await;
                "stuck"
            }),
            tokio::spawn(async {
                sleep(Duration::from_secs(3600)).await;
                "stuck too"
            }),
            stoppable(stop.clone()),
        ];
        let mut collector = Collector::new(start + Duration::from_secs(5), Duration::from_secs(10));
        let mut ended = Vec::new();
        for t in &mut tasks {
            let stop = stop.clone();
            ended.push(
                collector
                    .join(t, move || stop.notify_waiters())
                    .await
                    .map(|r| r.unwrap_or("failed")),
            );
        }
        assert_eq!(ended, [Some("on time"), None, None, Some("stopped")]);
        // The deadline, then one grace for both stuck tasks, not one each.
        assert_eq!(start.elapsed(), Duration::from_secs(15));
    }

    #[test]
    fn connect_lag_is_counted_from_the_schedule() {
        let scheduled = Instant::now();
        let mut timing = ConnectTiming::default();
        timing.started(scheduled, scheduled + Duration::from_millis(30));
        timing.connected(Duration::from_millis(4));
        // Begun "before" its time (a paused test clock runs ahead of the real one): no lag,
        // and no underflow. This one failed: a lag, no latency.
        timing.started(scheduled + Duration::from_millis(5), scheduled);
        let mut report = Report::default();
        timing.fill(&mut report);
        assert_eq!(
            (report.connect_us.count, report.connect_lag_us.count),
            (1, 2)
        );
        assert!((29_000..=31_000).contains(&report.connect_lag_us.max));
        assert_eq!(
            report.connect_lag_us.p50, 1,
            "clamped to the histogram's 1 µs floor"
        );
        assert!((3_900..=4_100).contains(&report.connect_us.max));
    }

    #[test]
    fn rates_and_exponents_are_finite_numbers_in_range() {
        assert_eq!(positive_rate("2000"), Ok(2000.0));
        for bad in ["0", "-5", "NaN", "inf", "fast"] {
            assert!(positive_rate(bad).is_err(), "{bad}");
        }
        assert!(check_rate(0.5).is_ok());
        assert!(check_rate(0.0).is_err() && check_rate(f64::NAN).is_err());
        assert_eq!(zipf_exponent("0"), Ok(0.0));
        assert_eq!(zipf_exponent("1.1"), Ok(1.1));
        for bad in ["-1", "NaN", "inf"] {
            assert!(zipf_exponent(bad).is_err(), "{bad}");
        }
    }
}
