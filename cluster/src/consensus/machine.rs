//! The state machine seam: a group applies committed commands to a [`Machine`] (the channel
//! store, for shards), in log order, deterministically. Snapshots are the machine's bytes, kept
//! in the engine beside the log; after a restart openraft installs the last snapshot and
//! re-applies the log from there.

use std::io::{self, Cursor};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use chorus_storage::engine::{Direction, Engine, Op};
use futures_util::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use crate::consensus::store::{SNAPSHOT, decode, encode, io_err, key};
use crate::consensus::types::{
    GroupId, LogId, Reply, Snapshot, SnapshotMeta, StoredMembership, TypeConfig,
};

/// What a group replicates into. Must be deterministic: `apply` reads only its own state and
/// the command (no clock, no randomness, no local configuration).
pub trait Machine: Send + 'static {
    /// Applies the command at log `index`, answering the proposer.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;
    /// The whole state, for a snapshot.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with a snapshot's.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}

/// Snapshot bytes go into the engine in chunks below its value cap.
const CHUNK: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct StoredSnapshotHead {
    meta: SnapshotMeta,
    chunks: u64,
}

struct State {
    applied: Option<LogId>,
    membership: StoredMembership,
    machine: Box<dyn Machine>,
}

/// openraft's state machine over a [`Machine`], with snapshots in the engine. Cheap to clone.
#[derive(Clone)]
pub(crate) struct MachineStore {
    group: GroupId,
    engine: Arc<dyn Engine>,
    state: Arc<Mutex<State>>,
}

impl MachineStore {
    /// `machine` for `group`, snapshots kept in `engine`.
    pub(crate) fn new(group: GroupId, engine: Arc<dyn Engine>, machine: Box<dyn Machine>) -> Self {
        Self {
            group,
            engine,
            state: Arc::new(Mutex::new(State {
                applied: None,
                membership: StoredMembership::default(),
                machine,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the machine (reads of replicated state).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&dyn Machine) -> T) -> T {
        f(self.lock().machine.as_ref())
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let chunks: Vec<&[u8]> = data.chunks(CHUNK).collect();
        let mut ops = vec![Op::Put(
            key(self.group, SNAPSHOT, None),
            encode(&StoredSnapshotHead {
                meta: meta.clone(),
                chunks: u64::try_from(chunks.len()).unwrap_or(u64::MAX),
            })?,
        )];
        for (i, c) in chunks.iter().enumerate() {
            let i = u64::try_from(i).unwrap_or(u64::MAX);
            ops.push(Op::Put(key(self.group, SNAPSHOT, Some(i)), c.to_vec()));
        }
        // Chunks of an older, larger snapshot past the new count are never read: the head says
        // how many belong to it.
        self.engine.write(&ops).map_err(io_err)?;
        self.engine.sync().map_err(io_err)
    }

    fn load_snapshot(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let Some(head) = self
            .engine
            .get(&key(self.group, SNAPSHOT, None))
            .map_err(io_err)?
        else {
            return Ok(None);
        };
        let head: StoredSnapshotHead = decode(&head)?;
        let start = key(self.group, SNAPSHOT, Some(0));
        let end = key(self.group, SNAPSHOT, Some(head.chunks));
        let rows = self
            .engine
            .scan(
                Bound::Included(&start),
                Bound::Excluded(&end),
                Direction::Forward,
                usize::try_from(head.chunks).unwrap_or(usize::MAX),
            )
            .map_err(io_err)?;
        if u64::try_from(rows.len()).ok() != Some(head.chunks) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a snapshot chunk is missing",
            ));
        }
        Ok(Some((
            head.meta,
            rows.into_iter().flat_map(|(_, v)| v).collect(),
        )))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MachineStore {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let (meta, data) = {
            let s = self.lock();
            let meta = SnapshotMeta {
                last_log_id: s.applied.clone(),
                last_membership: s.membership.clone(),
            };
            (meta, s.machine.snapshot())
        };
        self.save_snapshot(&meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MachineStore {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let s = self.lock();
        Ok((s.applied.clone(), s.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: futures_util::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let reply = {
                let mut s = self.lock();
                s.applied = Some(entry.log_id.clone());
                match &entry.payload {
                    EntryPayload::Blank => Reply::default(),
                    EntryPayload::Normal(c) => Reply(s.machine.apply(entry.log_id.index(), &c.0)),
                    EntryPayload::Membership(m) => {
                        s.membership = StoredMembership::new(Some(entry.log_id.clone()), m.clone());
                        Reply::default()
                    }
                }
            };
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> io::Result<()> {
        let data = snapshot.into_inner();
        {
            let mut s = self.lock();
            s.machine
                .restore(&data)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            s.applied = meta.last_log_id.clone();
            s.membership = meta.last_membership.clone();
        }
        self.save_snapshot(meta, &data)
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        Ok(self.load_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Cursor::new(data),
        }))
    }
}
