//! The node's own view of its commit path, from its Prometheus endpoint: how long publishes
//! took to become durable (`chorus_commit_seconds`) and how many syncs made them so, over the
//! measured phase. Beside the end-to-end latency it says how much of a tail is the store's
//! (a slow disk) and how much the network and the scheduler's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

/// How long a scrape may take; it runs between phases, never during one.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The largest metrics page read (a node's is ~30 KB).
const MAX_PAGE: u64 = 4 << 20;

/// Where the node's metrics are: a loopback address and a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    addr: SocketAddr,
    path: String,
}

impl MetricsUrl {
    /// Parses `http://127.0.0.1:9091/metrics`; only loopback addresses are accepted, as for
    /// the targets.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: the metrics URL must start with http://"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        let addr: SocketAddr = host
            .parse()
            .map_err(|_| format!("{url}: expected an IP address and port, e.g. 127.0.0.1:9091"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{url}: only loopback addresses are scraped"));
        }
        Ok(Self {
            addr,
            path: path.to_owned(),
        })
    }

    /// Fetches the page (HTTP/1.0, so that the node closes the connection when done).
    pub fn fetch(&self) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let request = format!("GET {} HTTP/1.0\r\nHost: {}\r\n\r\n", self.path, self.addr);
        stream.write_all(request.as_bytes())?;
        let mut page = String::new();
        stream.take(MAX_PAGE).read_to_string(&mut page)?;
        match page.split_once("\r\n\r\n") {
            Some((head, body))
                if head.starts_with("HTTP/1.")
                    && head.get(9..).is_some_and(|s| s.starts_with("200")) =>
            {
                Ok(body.to_owned())
            }
            _ => Err(std::io::Error::other(format!(
                "unexpected answer: {}",
                page.lines().next().unwrap_or("")
            ))),
        }
    }

    /// A sample, or `None` if the node cannot be scraped.
    pub fn sample(&self) -> Option<CommitSample> {
        CommitSample::parse(&self.fetch().ok()?)
    }
}

/// The commit counters at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitSample {
    /// `(le, cumulative count)` of `chorus_commit_seconds`, in the page's order.
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum_secs: f64,
    syncs: u64,
    sync_us: u64,
}

impl CommitSample {
    /// Reads the counters from a Prometheus text page. A page without them counts as zeros
    /// (the node registers its commit histogram at its first publish); `None` if a value is
    /// malformed.
    pub fn parse(page: &str) -> Option<Self> {
        let mut sample = Self {
            buckets: Vec::new(),
            count: 0,
            sum_secs: 0.0,
            syncs: 0,
            sync_us: 0,
        };
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let number = || value.parse::<f64>().ok();
            if let Some(le) = name
                .strip_prefix("chorus_commit_seconds_bucket{le=\"")
                .and_then(|r| r.strip_suffix("\"}"))
            {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                sample.buckets.push((le, number()? as u64));
            } else if name == "chorus_commit_seconds_count" {
                sample.count = number()? as u64;
            } else if name == "chorus_commit_seconds_sum" {
                sample.sum_secs = number()?;
            } else if name == "chorus_store_syncs_total" {
                sample.syncs = number()? as u64;
            } else if name == "chorus_store_sync_microseconds_total" {
                sample.sync_us = number()? as u64;
            }
        }
        Some(sample)
    }
}

/// The node's commit path over the measured phase (`server_commit` in the report).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerCommit {
    /// Publishes made durable.
    pub count: u64,
    /// Their mean time from the node's receipt to durable, microseconds.
    pub mean_us: f64,
    /// Upper bounds of the histogram buckets holding the 50th, 99th and 99.9th percentiles,
    /// microseconds (the node's buckets are coarse: "at most this"); `None` past the last
    /// finite bucket.
    pub p50_at_most_us: Option<f64>,
    /// As `p50_at_most_us`, for the 99th percentile.
    pub p99_at_most_us: Option<f64>,
    /// As `p50_at_most_us`, for the 99.9th percentile.
    pub p999_at_most_us: Option<f64>,
    /// Store syncs per second.
    pub syncs_per_sec: f64,
    /// Their mean duration, microseconds.
    pub sync_mean_us: f64,
}

impl ServerCommit {
    /// What happened between two samples taken `wall` apart; `None` if nothing was committed
    /// or the node restarted in between (its counters went back).
    pub fn between(a: &CommitSample, b: &CommitSample, wall: Duration) -> Option<Self> {
        let count = b.count.checked_sub(a.count).filter(|n| *n > 0)?;
        let syncs = b.syncs.checked_sub(a.syncs)?;
        let deltas: Vec<(f64, u64)> = b
            .buckets
            .iter()
            .map(|(le, n)| {
                let before = a
                    .buckets
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0, |(_, n)| *n);
                (*le, n.saturating_sub(before))
            })
            .collect();
        let at_most = |q: f64| {
            let need = (q * count as f64).ceil() as u64;
            deltas
                .iter()
                .find(|(_, n)| *n >= need)
                .map(|(le, _)| *le * 1e6)
                .filter(|us| us.is_finite())
        };
        Some(Self {
            count,
            mean_us: (b.sum_secs - a.sum_secs).max(0.0) * 1e6 / count as f64,
            p50_at_most_us: at_most(0.5),
            p99_at_most_us: at_most(0.99),
            p999_at_most_us: at_most(0.999),
            syncs_per_sec: syncs as f64 / wall.as_secs_f64().max(1e-9),
            sync_mean_us: if syncs == 0 {
                0.0
            } else {
                b.sync_us.saturating_sub(a.sync_us) as f64 / syncs as f64
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::TcpListener;

    use super::*;

    fn page(counts: [u64; 4], sum: f64, syncs: u64, sync_us: u64) -> String {
        format!(
            "# TYPE chorus_commit_seconds histogram\n\
             chorus_commit_seconds_bucket{{le=\"0.0005\"}} {}\n\
             chorus_commit_seconds_bucket{{le=\"0.001\"}} {}\n\
             chorus_commit_seconds_bucket{{le=\"0.025\"}} {}\n\
             chorus_commit_seconds_bucket{{le=\"+Inf\"}} {}\n\
             chorus_commit_seconds_sum {sum}\n\
             chorus_commit_seconds_count {}\n\
             chorus_store_syncs_total {syncs}\n\
             chorus_store_sync_microseconds_total {sync_us}\n\
             chorus_connections 3\n",
            counts[0], counts[1], counts[2], counts[3], counts[3]
        )
    }

    #[test]
    fn the_phase_is_the_difference_of_two_pages() {
        let a = CommitSample::parse(&page([10, 20, 30, 30], 0.5, 10, 3_000)).unwrap();
        // 1,000 more: 500 under 0.5 ms, 490 more under 1 ms, 9 under 25 ms, 1 beyond.
        let b = CommitSample::parse(&page([510, 1010, 1029, 1030], 1.5, 110, 33_000)).unwrap();
        let c = ServerCommit::between(&a, &b, Duration::from_secs(2)).unwrap();
        assert_eq!(c.count, 1000);
        assert!((c.mean_us - 1000.0).abs() < 1e-6);
        assert_eq!(c.p50_at_most_us, Some(500.0));
        assert_eq!(c.p99_at_most_us, Some(1000.0));
        assert_eq!(c.p999_at_most_us, Some(25_000.0));
        assert!((c.syncs_per_sec - 50.0).abs() < 1e-9);
        assert!((c.sync_mean_us - 300.0).abs() < 1e-9);
        // A tail past the last finite bucket has no bound.
        let d = CommitSample::parse(&page([510, 1010, 1020, 1030], 1.5, 110, 33_000)).unwrap();
        let c = ServerCommit::between(&a, &d, Duration::from_secs(2)).unwrap();
        assert_eq!(c.p999_at_most_us, None);
        // Nothing committed, or counters that went back (a restart): no figures.
        assert_eq!(ServerCommit::between(&a, &a, Duration::from_secs(1)), None);
        assert_eq!(ServerCommit::between(&b, &a, Duration::from_secs(1)), None);
    }

    #[test]
    fn a_page_without_the_histogram_counts_as_zeros() {
        let none = CommitSample::parse("chorus_connections 3\n").unwrap();
        assert_eq!((none.count, none.buckets.len()), (0, 0));
        // Before the first publish, then after: the phase is all of it.
        let b = CommitSample::parse(&page([4, 8, 10, 10], 0.01, 5, 1_000)).unwrap();
        let c = ServerCommit::between(&none, &b, Duration::from_secs(1)).unwrap();
        assert_eq!((c.count, c.p50_at_most_us), (10, Some(1000.0)));
        assert_eq!(
            CommitSample::parse("chorus_commit_seconds_bucket{le=\"x\"} 1\n"),
            None
        );
    }

    #[test]
    fn only_loopback_http_urls_are_accepted() {
        let u = MetricsUrl::parse("http://127.0.0.1:9091/metrics").unwrap();
        assert_eq!(u.path, "/metrics");
        assert_eq!(
            MetricsUrl::parse("http://[::1]:9091").unwrap().path,
            "/metrics"
        );
        assert!(MetricsUrl::parse("https://127.0.0.1:9091/metrics").is_err());
        assert!(MetricsUrl::parse("http://10.0.0.1:9091/metrics").is_err());
        assert!(MetricsUrl::parse("http://localhost/metrics").is_err());
    }

    /// A real socket: the page is fetched and parsed; an error status is an error.
    #[test]
    fn a_scrape_reads_the_body_of_a_200() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let body = page([1, 2, 3, 3], 0.001, 1, 100);
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "500 Internal Server Error"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") {
                    s.read_exact(&mut byte).unwrap();
                    request.push(byte[0]);
                }
                assert!(request.starts_with(b"GET /metrics HTTP/1.0\r\n"));
                write!(
                    s,
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\n\r\n{body}"
                )
                .unwrap();
            }
        });
        let url = MetricsUrl::parse(&format!("http://{addr}/metrics")).unwrap();
        let sample = url.sample().unwrap();
        assert_eq!(sample.count, 3);
        assert_eq!(sample.buckets.len(), 4);
        assert!(url.fetch().is_err());
        server.join().unwrap();
    }
}
