//! Raft logs of every group on one storage engine, with one group commit: appends of all groups
//! are written at once and made durable by a shared sync, after which openraft hears of each
//! (storage v2's `append` returns at once and reports durability through its callback).
//!
//! Keys: `raft/` + group (u32, big-endian) + a kind byte (+ a big-endian index for entries),
//! so one group's log is one ordered range.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use chorus_storage::engine::{Direction, Engine, Op};
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::consensus::types::{Entry, GroupId, LogId, TypeConfig, Vote};

const VOTE: u8 = 1;
const COMMITTED: u8 = 2;
const PURGED: u8 = 3;
const ENTRY: u8 = 0x10;
pub(crate) const SNAPSHOT: u8 = 0x20;

pub(crate) fn key(group: GroupId, kind: u8, index: Option<u64>) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(b"raft/");
    k.extend_from_slice(&group.0.to_be_bytes());
    k.push(kind);
    if let Some(i) = index {
        k.extend_from_slice(&i.to_be_bytes());
    }
    k
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

pub(crate) fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(io_err)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

enum Job {
    Flushed(IOFlushed<TypeConfig>),
    Wait(oneshot::Sender<io::Result<()>>),
}

/// The shared sync: one thread that makes every write before it durable with one engine sync
/// per round, however many groups wrote.
#[derive(Clone)]
pub struct Syncer {
    jobs: std_mpsc::Sender<Job>,
    stats: Arc<SyncStats>,
}

/// How many syncs covered how many appends.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Engine syncs.
    pub syncs: std::sync::atomic::AtomicU64,
    /// Appends and votes they made durable.
    pub jobs: std::sync::atomic::AtomicU64,
}

impl Syncer {
    /// Starts the sync thread on `engine`. It ends when every handle is dropped.
    pub fn start(engine: Arc<dyn Engine>) -> io::Result<Self> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        let stats = Arc::new(SyncStats::default());
        let counts = stats.clone();
        std::thread::Builder::new()
            .name("chorus-raft-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut round = vec![first];
                    round.extend(rx.try_iter());
                    let synced = engine.sync().map_err(io_err);
                    counts
                        .syncs
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    counts.jobs.fetch_add(
                        u64::try_from(round.len()).unwrap_or(u64::MAX),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    for job in round {
                        let r = match &synced {
                            Ok(()) => Ok(()),
                            Err(e) => Err(io_err(e)),
                        };
                        match job {
                            Job::Flushed(cb) => cb.io_completed(r),
                            Job::Wait(tx) => {
                                let _ = tx.send(r);
                            }
                        }
                    }
                }
            })?;
        Ok(Self { jobs, stats })
    }

    /// The sync counters.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    fn flushed(&self, cb: IOFlushed<TypeConfig>) -> io::Result<()> {
        self.jobs
            .send(Job::Flushed(cb))
            .map_err(|_| io_err("the sync thread has stopped"))
    }

    async fn wait(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Wait(tx))
            .map_err(|_| io_err("the sync thread has stopped"))?;
        rx.await
            .map_err(|_| io_err("the sync thread has stopped"))?
    }
}

/// One group's log on the shared engine.
#[derive(Clone)]
pub(crate) struct LogStore {
    group: GroupId,
    engine: Arc<dyn Engine>,
    syncer: Syncer,
}

impl LogStore {
    /// The log of `group`.
    pub(crate) fn new(group: GroupId, engine: Arc<dyn Engine>, syncer: Syncer) -> Self {
        Self {
            group,
            engine,
            syncer,
        }
    }

    fn get<T: DeserializeOwned>(&self, kind: u8) -> io::Result<Option<T>> {
        match self
            .engine
            .get(&key(self.group, kind, None))
            .map_err(io_err)?
        {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    fn entry_keys(&self, from: u64) -> (Vec<u8>, Vec<u8>) {
        (
            key(self.group, ENTRY, Some(from)),
            key(self.group, ENTRY, Some(u64::MAX)),
        )
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        let (start, end) = self.entry_keys(0);
        let last = self
            .engine
            .scan(
                Bound::Included(&start),
                Bound::Included(&end),
                Direction::Reverse,
                1,
            )
            .map_err(io_err)?;
        last.first().map(|(_, v)| decode(v)).transpose()
    }

    /// Deletes the entries with index in `[from, to)`, a bounded page at a time.
    fn delete_range(&self, from: u64, to: u64) -> io::Result<()> {
        let start = key(self.group, ENTRY, Some(from));
        let end = key(self.group, ENTRY, Some(to));
        loop {
            let page = self
                .engine
                .scan(
                    Bound::Included(&start),
                    Bound::Excluded(&end),
                    Direction::Forward,
                    1024,
                )
                .map_err(io_err)?;
            if page.is_empty() {
                return Ok(());
            }
            let ops: Vec<Op> = page.into_iter().map(|(k, _)| Op::Delete(k)).collect();
            self.engine.write(&ops).map_err(io_err)?;
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(key(self.group, ENTRY, Some(*i))),
            Bound::Excluded(i) => Bound::Excluded(key(self.group, ENTRY, Some(*i))),
            Bound::Unbounded => Bound::Included(key(self.group, ENTRY, Some(u64::MAX))),
        };
        let start = key(self.group, ENTRY, Some(start));
        let end_ref = match &end {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        // openraft asks for bounded ranges (its replication batch), so the scan is bounded by
        // the range; the limit is a backstop.
        let rows = self
            .engine
            .scan(
                Bound::Included(&start),
                end_ref,
                Direction::Forward,
                1 << 16,
            )
            .map_err(io_err)?;
        rows.iter().map(|(_, v)| decode(v)).collect()
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let purged: Option<LogId> = self.get(PURGED)?;
        let last = match self.last_entry()? {
            Some(e) => Some(e.log_id),
            None => purged.clone(),
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.engine
            .write(&[Op::Put(key(self.group, VOTE, None), encode(vote)?)])
            .map_err(io_err)?;
        // A vote must be durable before it is answered.
        self.syncer.wait().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not synced: a lost committed id only means re-applying from the snapshot.
        let k = key(self.group, COMMITTED, None);
        let op = match committed {
            Some(c) => Op::Put(k, encode(&c)?),
            None => Op::Delete(k),
        };
        self.engine.write(&[op]).map_err(io_err)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        self.get(COMMITTED)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
    {
        let mut ops = Vec::new();
        for e in entries {
            ops.push(Op::Put(
                key(self.group, ENTRY, Some(e.log_id.index())),
                encode(&e)?,
            ));
        }
        self.engine.write(&ops).map_err(io_err)?;
        self.syncer.flushed(callback)
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        // Durable with the next append's sync, which is what must not see the removed entries.
        let from = last.map_or(0, |l| l.index() + 1);
        self.delete_range(from, u64::MAX)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        self.engine
            .write(&[Op::Put(key(self.group, PURGED, None), encode(&log_id)?)])
            .map_err(io_err)?;
        self.delete_range(0, log_id.index() + 1)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chorus_storage::engine::memory::MemoryEngine;
    use openraft::async_runtime::Oneshot;
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderIdExt;
    use proptest::prelude::*;

    use super::*;
    use crate::consensus::types::Command;

    fn log_id(term: u64, index: u64) -> LogId {
        let node = crate::id::NodeId::new("n1").unwrap_or_else(|e| panic!("{e}"));
        LogId::new(
            <openraft::alias::LeaderIdOf<TypeConfig> as RaftLeaderIdExt>::new_committed(term, node),
            index,
        )
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry::new_normal(log_id(term, index), Command(index.to_be_bytes().to_vec()))
    }

    #[derive(Debug, Clone)]
    enum Step {
        Append(u8),
        Truncate(u8),
        Purge(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u8..8).prop_map(Step::Append),
            any::<u8>().prop_map(Step::Truncate),
            any::<u8>().prop_map(Step::Purge),
        ]
    }

    /// Runs `f` on a current-thread runtime with a fresh memory engine and its sync thread.
    fn on_fresh_engine(f: impl AsyncFnOnce(Arc<dyn Engine>, Syncer)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let syncer = Syncer::start(engine.clone()).unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(f(engine, syncer));
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = openraft::alias::OneshotOf::<TypeConfig>::channel();
        store
            .append(entries, IOFlushed::signal(tx))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        rx.await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The log store against a map: after any run of appends, truncations and purges (as
    /// openraft issues them: appends continue the log, truncation keeps what is not purged),
    /// the log state and every read agree, and a second store on the same engine sees the
    /// same (what a restart reads).
    fn run(steps: Vec<Step>) {
        on_fresh_engine(async |engine, syncer| {
            let mut store = LogStore::new(GroupId(3), engine.clone(), syncer.clone());
            // Another group on the same engine must never be touched.
            let mut other = LogStore::new(GroupId(4), engine.clone(), syncer.clone());
            append(&mut other, vec![entry(1, 1), entry(1, 2)]).await;
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            let mut purged: Option<u64> = None;
            let mut term = 1;
            for s in steps {
                let next = model
                    .keys()
                    .next_back()
                    .copied()
                    .or(purged)
                    .map_or(1, |l| l + 1);
                match s {
                    Step::Append(n) => {
                        let entries: Vec<Entry> = (next..next + u64::from(n))
                            .map(|i| entry(term, i))
                            .collect();
                        for e in &entries {
                            model.insert(e.log_id.index(), term);
                        }
                        append(&mut store, entries).await;
                    }
                    Step::Truncate(at) => {
                        let at = u64::from(at).max(purged.unwrap_or(0));
                        let last = model.get(&at).map(|t| log_id(*t, at));
                        if last.is_none() && at > 0 && at != purged.unwrap_or(0) {
                            continue;
                        }
                        store
                            .truncate_after(last)
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                        model.retain(|i, _| *i <= at);
                        term += 1;
                    }
                    Step::Purge(at) => {
                        let Some(t) = model.get(&u64::from(at)).copied() else {
                            continue;
                        };
                        let at = u64::from(at);
                        store
                            .purge(log_id(t, at))
                            .await
                            .unwrap_or_else(|e| panic!("{e}"));
                        model.retain(|i, _| *i > at);
                        purged = Some(at);
                    }
                }
                for s in [
                    &mut store,
                    &mut LogStore::new(GroupId(3), engine.clone(), syncer.clone()),
                ] {
                    let state = s.get_log_state().await.unwrap_or_else(|e| panic!("{e}"));
                    let last = model.keys().next_back().copied().or(purged);
                    assert_eq!(state.last_log_id.map(|l| l.index()), last);
                    assert_eq!(state.last_purged_log_id.map(|l| l.index()), purged);
                    let read = s
                        .try_get_log_entries(0..u64::MAX)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let read: Vec<(u64, u64)> = read
                        .iter()
                        .map(|e| (e.log_id.index(), e.log_id.leader_id.term))
                        .collect();
                    let want: Vec<(u64, u64)> = model.iter().map(|(i, t)| (*i, *t)).collect();
                    assert_eq!(read, want);
                }
            }
            let others = other
                .try_get_log_entries(0..10)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(others.len(), 2, "another group's log was touched");
        });
    }

    proptest! {
        #[test]
        fn the_log_store_agrees_with_a_model(steps in prop::collection::vec(step(), 1..40)) {
            run(steps);
        }
    }

    #[test]
    fn a_vote_is_read_back_after_a_restart() {
        on_fresh_engine(async |engine, syncer| {
            let mut store = LogStore::new(GroupId(0), engine.clone(), syncer.clone());
            let node = crate::id::NodeId::new("n2").unwrap_or_else(|e| panic!("{e}"));
            let vote = Vote::new(7, node);
            store
                .save_vote(&vote)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut again = LogStore::new(GroupId(0), engine, syncer.clone());
            assert_eq!(
                again.read_vote().await.unwrap_or_else(|e| panic!("{e}")),
                Some(vote)
            );
            assert!(
                syncer
                    .stats()
                    .syncs
                    .load(std::sync::atomic::Ordering::Relaxed)
                    >= 1
            );
        });
    }
}
