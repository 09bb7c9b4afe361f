//! Real `chorusd` processes for the process-level tests: a data directory, a token secret and
//! a config file for a plain-WebSocket node on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::raw::Client;
use crate::token::{SECRET, token};
use crate::wait::wait_for_listener;

/// A port free at the time of asking. Only until someone binds it: tests that start processes
/// hold [`ONE_NODE_AT_A_TIME`], so that one test's node (or a client's source port) cannot
/// take the port another test's node is about to bind (a `ConnectionReset` in a handshake,
/// seen once in CI, fitted this).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Held by each process test for its whole run (see [`free_port`]).
pub static ONE_NODE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The files of one node.
pub struct NodeFiles {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addr: std::net::SocketAddr,
    /// The `/metrics`, `/healthz`, `/readyz` listener, when asked for.
    pub http: Option<std::net::SocketAddr>,
}

impl NodeFiles {
    /// A node with `extra` appended to its config file (TOML; top-level keys first, then any
    /// `[limits]` table).
    pub fn new(extra: &str) -> Self {
        Self::build(None, false, extra)
    }

    /// As [`NodeFiles::new`], with the HTTP listener on a free loopback port.
    pub fn with_http(extra: &str) -> Self {
        Self::build(None, true, extra)
    }

    /// As [`NodeFiles::new`], with the data directory at `data` (e.g. on a small tmpfs).
    pub fn in_data_dir(data: &Path, extra: &str) -> Self {
        Self::build(Some(data), false, extra)
    }

    fn build(data: Option<&Path>, http: bool, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let port = free_port();
        let config = dir.path().join("chorusd.toml");
        let data = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        let http = http.then(|| std::net::SocketAddr::from(([127, 0, 0, 1], free_port())));
        let http_line = match http {
            Some(addr) => format!("http_listen = \"{addr}\""),
            None => "http_disabled = true".to_owned(),
        };
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\nws_listen = \"127.0.0.1:{port}\"\nws_plain = true\n{http_line}\ntoken_secret_file = {secret:?}\n{extra}\n",
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            http,
        }
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let line = text.lines().find(|l| l.starts_with("data_dir")).unwrap();
        PathBuf::from(line.split('"').nth(1).unwrap())
    }

    /// Starts `chorusd --config <file>` with warnings logged to the test's stderr.
    pub fn spawn(&self) -> Process {
        Process(self.command().spawn().unwrap())
    }

    /// The command [`NodeFiles::spawn`] runs, to add to.
    pub fn command(&self) -> Command {
        let mut c = Command::new(workspace_bin("chorusd"));
        c.arg("--config")
            .arg(&self.config)
            .arg("--log")
            .arg("warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        c
    }

    /// The node's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.data().join("control.sock")
    }

    /// Runs `chorusctl --socket <the node's> ARGS`: exit code, stdout, stderr.
    pub fn chorusctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(workspace_bin("chorusctl"))
            .arg("--socket")
            .arg(self.control_socket())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A session for `user` once the node listens (up to 10 s).
    pub async fn connect(&self, user: &str) -> Client {
        wait_for_listener(self.addr).await;
        Client::connect(self.addr, &token(user)).await
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, so that a failing test leaves no
/// node behind.
pub struct Process(pub Child);

impl std::ops::Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills (SIGKILL) and reaps a node.
pub fn kill(node: Process) {
    drop(node);
}

/// A binary of this workspace (`chorusd`, `chorusctl`) in the test run's target directory,
/// built there first if the run did not build it.
pub fn workspace_bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--offline", "-p", "chorus-server", "--bin", name])
            .status()
            .unwrap();
        assert!(status.success(), "building {name} failed");
    }
    bin
}
