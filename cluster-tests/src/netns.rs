//! A network namespace of the test's own, with loopback up: nodes bind 127.0.0.1-.5 in it and
//! nothing leaves it. Partitions and loss are `iptables` rules inside it. Needs root (CI runs
//! as root) and `ip` and `iptables` (`.ci/run` installs them).

use std::net::Ipv4Addr;
use std::process::{Command, Output};

/// A namespace, deleted on drop.
pub struct Netns {
    name: String,
}

/// Why the namespace could not be used.
#[derive(Debug)]
pub struct NetnsError(pub String);

impl std::fmt::Display for NetnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn run(cmd: &mut Command) -> Result<Output, NetnsError> {
    let out = cmd
        .output()
        .map_err(|e| NetnsError(format!("{cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(NetnsError(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Netns {
    /// Creates `chorus-<tag>-<pid>` with loopback up.
    pub fn create(tag: &str) -> Result<Self, NetnsError> {
        let name = format!("chorus-{tag}-{}", std::process::id());
        // A namespace left by a crashed run of the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self { name };
        run(&mut ns.command("ip", &["link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }

    /// Starts `f` on a thread of this process moved into the namespace, so every socket it
    /// opens (and those of a current-thread runtime it builds) lives there. Needs
    /// `CAP_SYS_ADMIN`.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<Result<T, NetnsError>> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| NetnsError(format!("{path}: {e}")))?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| NetnsError(format!("setns {path}: {e}")))?;
            Ok(f())
        })
    }

    fn iptables(&self, args: &[&str]) -> Result<(), NetnsError> {
        run(&mut self.command("iptables", args)).map(|_| ())
    }

    /// Drops every packet between `a` and `b`, both ways.
    pub fn partition(&self, a: Ipv4Addr, b: Ipv4Addr) -> Result<(), NetnsError> {
        let (a, b) = (a.to_string(), b.to_string());
        self.iptables(&["-A", "INPUT", "-s", &a, "-d", &b, "-j", "DROP"])?;
        self.iptables(&["-A", "INPUT", "-s", &b, "-d", &a, "-j", "DROP"])
    }

    /// Cuts `side` off from `rest`.
    pub fn isolate(&self, side: &[Ipv4Addr], rest: &[Ipv4Addr]) -> Result<(), NetnsError> {
        for a in side {
            for b in rest {
                self.partition(*a, *b)?;
            }
        }
        Ok(())
    }

    /// Drops each packet to `dst` with probability `p`.
    pub fn loss(&self, dst: Ipv4Addr, p: f64) -> Result<(), NetnsError> {
        self.iptables(&[
            "-A",
            "INPUT",
            "-d",
            &dst.to_string(),
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &format!("{p:.3}"),
            "-j",
            "DROP",
        ])
    }

    /// Removes every rule: the network is whole again.
    pub fn heal(&self) -> Result<(), NetnsError> {
        self.iptables(&["-F", "INPUT"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The address of node `i` (0-based): 127.0.0.1, .2, ...
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, u8::try_from(i + 1).unwrap_or(u8::MAX))
}
