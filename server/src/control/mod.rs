//! The admin control socket: a Unix socket under the data directory (mode 0600), speaking
//! newline-delimited JSON ([`wire`]). `chorusctl` is its client; `socat` works too. Every
//! connection's peer uid and pid (SO_PEERCRED) are recorded with each action in the audit log.
//!
//! Bad input (malformed JSON, an unknown command, bad arguments) gets an error response and
//! the connection stays open; a line over the size limit closes that connection only.

pub mod audit;
mod cluster;
pub mod erasure;
mod exec;
mod search;
mod users;
pub mod wire;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::chat;
use crate::clock::unix_ms;
use crate::node::Node;
use audit::{Audit, AuditRecord};
use exec::Admin;
use wire::{MAX_REQUEST_BYTES, Response};

/// Admin connections served at once; a further one is answered `busy` and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// How long the `busy` answer may take to write before the connection is dropped anyway.
const BUSY_WRITE: Duration = Duration::from_millis(200);
/// A connection with no request for this long is closed.
const IDLE: Duration = Duration::from_secs(600);

/// Creates the socket at `path` with mode 0600. The socket is bound inside a fresh 0700
/// directory and renamed into place, so it is never reachable with looser permissions. A stale
/// socket file (no node behind it) is replaced; a live one is an error.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process serves this control socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(format!(".control-{:016x}", rand::random::<u64>()));
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let staged = staging.join("control.sock");
    let result = (|| {
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Serves admin connections until `stop`, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    node: Arc<Node>,
    erasures: erasure::Running,
    stop: CancellationToken,
) {
    let path: Option<PathBuf> = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let audit = Arc::new(Audit::new(node.config().data_dir.join("audit.ndjson")));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let connections = tokio_util::task::TaskTracker::new();
    tracing::info!(path = ?node.config().control_socket, "control socket ready");
    loop {
        let mut stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Accepted even when every slot is taken, to say so: left in the accept queue, a
        // client would wait with no answer for as long as the other admins stay connected.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let busy = wire::ControlError::new(
                "busy",
                format!(
                    "all {MAX_CONNECTIONS} admin connections are in use; close one or try again later"
                ),
            );
            let line = Response::line(None, Err(busy));
            let _ = tokio::time::timeout(BUSY_WRITE, stream.write_all(line.as_bytes())).await;
            continue;
        };
        let (node, erasures, audit, stop) =
            (node.clone(), erasures.clone(), audit.clone(), stop.clone());
        connections.spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = connection(stream, &node, &erasures, &audit) => {}
                () = stop.cancelled() => {}
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
    // The path is the staging one the listener was bound at; the public one is configured.
    drop(path);
    if let Some(p) = &node.config().control_socket {
        let _ = std::fs::remove_file(p);
    }
}

/// One admin connection: request lines in, response lines out, in order.
async fn connection(
    stream: UnixStream,
    node: &Arc<Node>,
    erasures: &erasure::Running,
    audit: &Audit,
) {
    let admin = match stream.peer_cred() {
        Ok(cred) => Admin {
            uid: cred.uid(),
            pid: cred.pid(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "control socket: no peer credentials; refusing");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = (MAX_REQUEST_BYTES + 1) as u64;
        let read =
            tokio::time::timeout(IDLE, (&mut reader).take(limit).read_until(b'\n', &mut line))
                .await;
        let n = match read {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(n)) => n,
        };
        if line.last() != Some(&b'\n') && n as u64 >= limit {
            let too_large = wire::ControlError::new(
                "too_large",
                format!("a request line is at most {MAX_REQUEST_BYTES} bytes"),
            );
            let _ = write
                .write_all(Response::line(None, Err(too_large)).as_bytes())
                .await;
            // Closing with unread input would reset the connection and could destroy the
            // response in flight: finish sending, then discard what is left (bounded).
            let _ = write.shutdown().await;
            let mut sink = tokio::io::sink();
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::io::copy(&mut (&mut reader).take(16 << 20), &mut sink),
            )
            .await;
            return;
        }
        let request = String::from_utf8_lossy(&line).trim().to_owned();
        if request.is_empty() {
            continue;
        }
        let (id, command) = wire::parse_request(request.as_bytes());
        let result = match command {
            Err(e) => Err(e),
            Ok(command) => {
                let audited = command.audited();
                let name = serde_json::to_value(&command)
                    .ok()
                    .and_then(|v| v.get("cmd").and_then(|c| c.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                let result = exec::execute(node, erasures, audit, admin, command).await;
                tracing::info!(uid = admin.uid, cmd = %name, ok = result.is_ok(), "admin command");
                if audited {
                    let record = AuditRecord {
                        time_ms: unix_ms(),
                        uid: admin.uid,
                        pid: admin.pid,
                        cmd: name,
                        request: serde_json::from_str(&request).unwrap_or_default(),
                        ok: result.is_ok(),
                        error: result.as_ref().err().map(ToString::to_string),
                    };
                    if let Err(e) = audit.append(&record).await {
                        tracing::error!(error = %e, "audit log write failed");
                        Err(wire::ControlError::failed(format!(
                            "the action ran (ok: {}) but the audit log could not be written: {e}",
                            record.ok
                        )))
                    } else {
                        result
                    }
                } else {
                    result
                }
            }
        };
        if write
            .write_all(Response::line(id, result).as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Chat errors as the control socket reports them (its codes in `docs/operations.md`).
impl From<chat::Error> for wire::ControlError {
    fn from(e: chat::Error) -> Self {
        use chat::Error as E;
        match e {
            E::NotFound(m) | E::NotFoundIn { message: m, .. } => Self::not_found(m),
            E::NotAMessage(seq) => Self::bad_request(format!("entry {seq} is not a live message")),
            E::Invalid { field, message } | E::Blocked { field, message } => {
                Self::bad_request(format!("{field}: {message}"))
            }
            E::Forbidden(m) | E::TooLarge { message: m, .. } => Self::bad_request(m),
            E::Conflict(m) => Self::new("conflict", m),
            E::LimitExceeded { message, .. } => Self::new("limit_exceeded", message),
            E::RateLimited { message, .. } => Self::failed(message),
            E::Unavailable { message, .. } => Self::failed(message),
            E::Unimplemented(m) => Self::new("unimplemented", m),
            E::Store(e) => exec::store_error(e),
        }
    }
}
