//! `chorusctl`: the admin CLI of a running node, over its control socket.
//!
//! Tables for people by default, `--json` for scripts. Exit status: 0 on success, 1 when the
//! node refused the command, 2 when the node could not be reached.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chorus_server::control::wire::{Command, Response};
use clap::Parser;
use serde_json::Value;

mod args;
mod render;

use args::{Cli, ClusterCmd, SearchCmd, Top, Users, command};
use render::render;

/// A connection to the node.
struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Control {
    fn connect(path: &std::path::Path, timeout: Option<Duration>) -> anyhow::Result<Self> {
        let stream = connect_within(path, timeout)
            .with_context(|| format!("cannot reach the node at {}", path.display()))?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 1,
        })
    }

    fn call(&mut self, command: &Command) -> anyhow::Result<Response> {
        let id = self.next_id;
        self.next_id += 1;
        // A node that refuses the connection (all admin slots taken) has answered and closed
        // already: the write then fails, and the answer waiting to be read says why.
        let written = self.writer.write_all(command.to_line(id).as_bytes());
        let mut line = String::new();
        if let Err(e) = written {
            if self.reader.read_line(&mut line).unwrap_or(0) > 0 {
                return serde_json::from_str(&line).context("unreadable response");
            }
            return Err(e.into());
        }
        match self.reader.read_line(&mut line) {
            Ok(0) => bail!("the node closed the control connection"),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("no reply from the node within the timeout (--timeout)")
            }
            Err(e) => return Err(e.into()),
        }
        serde_json::from_str(&line).context("unreadable response")
    }
}

/// Connects to a Unix socket, giving up after `timeout` (std has no connect timeout for Unix
/// sockets, and a connect blocks while the listener's accept queue is full).
fn connect_within(
    path: &std::path::Path,
    timeout: Option<Duration>,
) -> std::io::Result<UnixStream> {
    let Some(timeout) = timeout else {
        return UnixStream::connect(path);
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    // Left behind if it never returns; the process exits soon after.
    std::thread::spawn(move || {
        let _ = tx.send(UnixStream::connect(path));
    });
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the node did not accept the connection within the timeout (--timeout)",
        ))
    })
}

fn socket_path(cli: &Cli) -> PathBuf {
    if let Some(s) = &cli.socket {
        return s.clone();
    }
    let dir = cli.data_dir.clone().unwrap_or_else(|| {
        let dev = PathBuf::from("./chorus-data");
        if dev.exists() {
            dev
        } else {
            PathBuf::from("/var/lib/chorus")
        }
    });
    dir.join("control.sock")
}

/// `cluster init` and `cluster add-node`: certificates, made here, no node involved.
fn cluster_certs(cmd: &ClusterCmd) -> anyhow::Result<bool> {
    use chorus_cluster::{ClusterCa, NodeId};
    let issue = |ca: &ClusterCa, dir: &std::path::Path, node: &str| -> anyhow::Result<()> {
        let id = NodeId::new(node)?;
        let out = dir.join(id.as_str());
        ca.write_node(&id, &out)?;
        println!("{}: {}", id, out.display());
        Ok(())
    };
    match cmd {
        ClusterCmd::Init {
            dir,
            cluster_id,
            nodes,
        } => {
            let ca = ClusterCa::generate(cluster_id)?;
            ca.save(dir)?;
            println!("cluster {cluster_id}: CA in {}", dir.display());
            for node in nodes {
                issue(&ca, dir, node)?;
            }
        }
        ClusterCmd::AddNode { dir, node } => {
            let ca = ClusterCa::load(dir)?;
            issue(&ca, dir, node)?;
        }
        ClusterCmd::Status | ClusterCmd::Ping { .. } => return Ok(false),
    }
    Ok(true)
}

fn run(cli: &Cli) -> anyhow::Result<bool> {
    if let Top::Cluster(cmd @ (ClusterCmd::Init { .. } | ClusterCmd::AddNode { .. })) = &cli.command
    {
        return cluster_certs(cmd);
    }
    let request = command(&cli.command)?;
    let path = socket_path(cli);
    let timeout = (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout));
    let mut control = Control::connect(&path, timeout)?;
    let response = control.call(&request)?;
    if !response.ok {
        let e = response
            .error
            .unwrap_or_else(|| chorus_server::control::wire::ErrorBody {
                code: "failed".into(),
                message: "no error given".into(),
            });
        if cli.json {
            println!("{}", serde_json::json!({"error": e}));
        }
        eprintln!("error: {}: {}", e.code, e.message);
        return Ok(false);
    }
    let result = response.result.unwrap_or(Value::Null);
    if let Top::Users(Users::Export { out, .. }) = &cli.command {
        std::fs::write(out, format!("{result:#}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
        return Ok(true);
    }
    if cli.json {
        println!("{result:#}");
    } else {
        render(&result);
    }
    if let Top::Search(SearchCmd::Reindex { wait: true }) = &cli.command {
        let target = result["generation"].as_u64().unwrap_or(0);
        return wait_for_rebuild(&mut control, target);
    }
    if let Top::Drain { wait_secs, .. } = &cli.command {
        let deadline = Instant::now() + Duration::from_secs(*wait_secs);
        loop {
            let status = control.call(&Command::Status)?;
            let sessions = status
                .result
                .as_ref()
                .and_then(|r| r["sessions"].as_u64())
                .unwrap_or(0);
            eprintln!("sessions left: {sessions}");
            if sessions == 0 {
                eprintln!("drained");
                break;
            }
            if Instant::now() >= deadline {
                eprintln!("{sessions} sessions still open after {wait_secs} s");
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(true)
}

/// Prints a rebuild's progress until generation `target` serves.
fn wait_for_rebuild(control: &mut Control, target: u64) -> anyhow::Result<bool> {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let status = control.call(&Command::SearchStatus)?;
        let Some(s) = status.result else {
            bail!("search.status failed");
        };
        if s["generation"].as_u64() == Some(target) {
            eprintln!(
                "rebuilt: generation {target} serves, {} documents",
                s["docs"]
            );
            return Ok(true);
        }
        if let Some(failed) = s["failed"].as_str() {
            eprintln!("the indexer failed: {failed}");
            return Ok(false);
        }
        let r = &s["rebuild"];
        eprintln!(
            "rebuilding generation {}: {} channels done, {} s",
            r["generation"],
            r["channels_done"],
            r["elapsed_ms"].as_u64().unwrap_or(0) / 1000
        );
    }
}

fn main() {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chorusctl: {e:#}");
            std::process::exit(2);
        }
    }
}
