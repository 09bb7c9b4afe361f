//! `chorusd` processes inside a [`Netns`], one per address 127.0.0.1-.N, in a cluster made by
//! [`chorus_cluster::ClusterCa`]: start, kill -9, pause, resume, restart, and what each says
//! of the cluster through its control socket (a file, so reachable from outside the namespace).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_cluster::{ClusterCa, NodeId};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

use crate::netns::{Netns, NetnsError, node_ip};

/// The cluster endpoint's port on every node (each node has its own address).
pub const CLUSTER_PORT: u16 = 7400;
/// The WebSocket port.
pub const WS_PORT: u16 = 9100;

/// One node.
pub struct Node {
    /// Its id, `n1` ... `nN`.
    pub id: String,
    data: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    started: Instant,
}

/// The nodes of one cluster in one namespace.
pub struct Nodes {
    ns: Netns,
    _root: tempfile::TempDir,
    nodes: Vec<Node>,
    chorusd: PathBuf,
    chorusctl: PathBuf,
}

fn err(e: impl std::fmt::Display) -> NetnsError {
    NetnsError(e.to_string())
}

impl Nodes {
    /// Makes a CA and `n` nodes that all seed from the first two, and starts them.
    pub fn start(ns: Netns, n: usize, bin_dir: &Path) -> Result<Self, NetnsError> {
        let root = tempfile::tempdir().map_err(err)?;
        let ca = ClusterCa::generate("harness").map_err(err)?;
        let secret = root.path().join("secret");
        std::fs::write(&secret, chorus_testkit::token::SECRET).map_err(err)?;
        let seeds: Vec<String> = (0..n.min(2))
            .map(|i| format!("\"{}:{CLUSTER_PORT}\"", node_ip(i)))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = format!("n{}", i + 1);
            let data = root.path().join(&id);
            ca.write_node(
                &NodeId::new(id.clone()).map_err(err)?,
                &data.join("cluster"),
            )
            .map_err(err)?;
            let ip = node_ip(i);
            let config = root.path().join(format!("{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "node_id = \"{id}\"\ndata_dir = \"{}\"\nws_listen = \"{ip}:{WS_PORT}\"\n\
                     ws_plain = true\nquic_disabled = true\nhttp_disabled = true\n\
                     token_secret_file = \"{}\"\nshutdown_drain_ms = 500\n\n[cluster]\n\
                     listen = \"{ip}:{CLUSTER_PORT}\"\nseeds = [{}]\n",
                    data.display(),
                    secret.display(),
                    seeds.join(", ")
                ),
            )
            .map_err(err)?;
            nodes.push(Node {
                id,
                data,
                config,
                child: None,
                started: Instant::now(),
            });
        }
        let mut all = Self {
            ns,
            _root: root,
            nodes,
            chorusd: bin_dir.join("chorusd"),
            chorusctl: bin_dir.join("chorusctl"),
        };
        for i in 0..n {
            all.spawn(i)?;
        }
        Ok(all)
    }

    /// The namespace (for partitions and loss).
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn spawn(&mut self, i: usize) -> Result<(), NetnsError> {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(node.data.with_extension("log")).map_err(err)?;
        let mut cmd: Command = self.ns.command(
            &self.chorusd.to_string_lossy(),
            &["--config", &node.config.to_string_lossy()],
        );
        cmd.stdout(Stdio::null()).stderr(log);
        node.started = Instant::now();
        node.child = Some(
            cmd.spawn()
                .map_err(|e| err(format!("{}: {e}", self.chorusd.display())))?,
        );
        Ok(())
    }

    fn signal(&self, i: usize, signal: Signal) -> Result<(), NetnsError> {
        let child = self.nodes[i]
            .child
            .as_ref()
            .ok_or_else(|| err("not running"))?;
        let pid =
            Pid::from_raw(i32::try_from(child.id()).map_err(err)?).ok_or_else(|| err("no pid"))?;
        kill_process(pid, signal).map_err(err)
    }

    /// kill -9.
    pub fn kill9(&mut self, i: usize) -> Result<(), NetnsError> {
        self.signal(i, Signal::KILL)?;
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.wait();
        }
        Ok(())
    }

    /// The WebSocket URL of node `i` (reachable from inside the namespace).
    pub fn url(&self, i: usize) -> String {
        format!("ws://{}:{WS_PORT}/", node_ip(i))
    }

    /// Node `i`'s resident memory in bytes, once it has run for two seconds (before, the pid
    /// may still be `ip netns exec`'s, and a starting node's memory says nothing of growth).
    pub fn rss(&self, i: usize) -> Option<u64> {
        if self.nodes[i].started.elapsed() < Duration::from_secs(2) {
            return None;
        }
        let pid = self.nodes[i].child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// Whether node `i`'s process is running (not killed or stopped by the harness).
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// SIGTERM, and waits for the process to end (a clean stop: it leaves the cluster).
    pub fn stop(&mut self, i: usize) -> Result<(), NetnsError> {
        self.signal(i, Signal::TERM)?;
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGSTOP: the process stops answering anything.
    pub fn pause(&self, i: usize) -> Result<(), NetnsError> {
        self.signal(i, Signal::STOP)
    }

    /// SIGCONT.
    pub fn resume(&self, i: usize) -> Result<(), NetnsError> {
        self.signal(i, Signal::CONT)
    }

    /// Starts a node again on its data directory (after kill -9 or stop).
    pub fn restart(&mut self, i: usize) -> Result<(), NetnsError> {
        self.spawn(i)
    }

    /// `chorusctl --json <args>` against node `i`; `None` when it fails or times out.
    pub fn chorusctl(&self, i: usize, args: &[&str]) -> Option<Value> {
        let out = Command::new(&self.chorusctl)
            .arg("--data-dir")
            .arg(&self.nodes[i].data)
            .args(["--json", "--timeout", "3"])
            .args(args)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The state node `i` sees node `j` in (`self`, `alive`, `suspect`, `down`), and how many
    /// entries it has for `j` (more than one would be a ghost).
    pub fn state_of(&self, i: usize, j: usize) -> Option<(String, usize, u64)> {
        let status = self.chorusctl(i, &["cluster", "status"])?;
        let members = status["members"].as_array()?;
        let id = &self.nodes[j].id;
        let entries: Vec<&Value> = members
            .iter()
            .filter(|m| m["node_id"] == id.as_str())
            .collect();
        let first = entries.first()?;
        Some((
            first["state"].as_str()?.to_owned(),
            entries.len(),
            first["started_at_ms"].as_u64().unwrap_or(0),
        ))
    }

    /// Whether node `i`'s request to node `j` is answered.
    pub fn ping(&self, i: usize, j: usize) -> bool {
        self.chorusctl(i, &["cluster", "ping", &self.nodes[j].id])
            .is_some_and(|v| v["rtt_ms"].is_number())
    }

    /// Whether every running node sees every other in `state`.
    pub fn all_see(&self, state: &str) -> bool {
        (0..self.len()).all(|i| {
            (0..self.len()).filter(|j| *j != i).all(|j| {
                self.state_of(i, j)
                    .is_some_and(|(s, n, _)| s == state && n == 1)
            })
        })
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.resume(i);
            let _ = self.kill9(i);
        }
    }
}

/// The directory that holds the chorusd and chorusctl this test build uses (building them
/// when they are missing).
pub fn bin_dir() -> PathBuf {
    let chorusd = chorus_testkit::process::workspace_bin("chorusd");
    chorusd
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no directory for {}", chorusd.display()))
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns how long it took.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
