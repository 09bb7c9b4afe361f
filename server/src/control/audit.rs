//! The audit log: every admin action, who did it (the peer's uid and pid from SO_PEERCRED),
//! its arguments and its outcome, appended to `<data-dir>/audit.ndjson` and fsynced before the
//! admin gets the answer.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, unix ms.
    pub time_ms: u64,
    /// The admin's uid.
    pub uid: u32,
    /// The admin process's pid, when known.
    pub pid: Option<i32>,
    /// The command name.
    pub cmd: String,
    /// The full request (arguments).
    pub request: Value,
    /// Whether it succeeded.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The audit file. Appends are serialized; readers see whole lines.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl Audit {
    /// The audit log at `path` (created on first append).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Appends a record durably.
    pub async fn append(&self, record: &AuditRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let _g = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            file.write_all(&line)?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// The newest `limit` records at or after `since_ms`, oldest first.
    pub async fn list(&self, since_ms: u64, limit: usize) -> std::io::Result<Vec<AuditRecord>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut out = std::collections::VecDeque::new();
            for line in std::io::BufReader::new(file).lines() {
                let line = line?;
                // A line cut by a crash mid-append is skipped, not fatal.
                let Ok(record) = serde_json::from_str::<AuditRecord>(&line) else {
                    continue;
                };
                if record.time_ms >= since_ms {
                    out.push_back(record);
                    if out.len() > limit {
                        out.pop_front();
                    }
                }
            }
            Ok(out.into_iter().collect())
        })
        .await
        .map_err(std::io::Error::other)?
    }
}
