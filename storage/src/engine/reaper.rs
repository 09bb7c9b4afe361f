//! Frees fjall's flushed memtables on a thread of our own.
//!
//! A memtable is a skiplist of every entry written since the last rotation (64 MiB by default),
//! and freeing one node by node took 177 ms of CPU here. fjall 3.1 drops its last reference in
//! `Keyspace::inner_rotate_memtable`'s version-history maintenance, while holding the
//! keyspaces lock that its journal rotation waits for with the journal writer lock held, so
//! every batch commit, and with it every publish, stalled for that long once per rotation.
//! This thread keeps one more reference to each active
//! memtable it sees and drops it once fjall holds none: the free then happens here, where it
//! blocks nobody, and no memtable lives longer than fjall needs it plus one poll.
//!
//! When this can go: once fjall drops flushed memtables outside the keyspaces lock (or its
//! journal rotation no longer waits on that lock; fjall-rs/fjall#282 moves the rotation's
//! fsyncs out of the writer lock, a step towards it). The longest-write figure of the
//! `footprint` bench (docs/benchmarks.md) shows whether the stall is back without it.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{AbstractTree, Keyspace};

/// How often the active memtable is looked at. A memtable is active for seconds even at the
/// highest write rates (64 MiB), so this catches every one that matters; one it misses is
/// freed by fjall as before.
const POLL: Duration = Duration::from_millis(50);

/// A memtable held only so that its memory is freed here.
type Held = Arc<dyn Any + Send + Sync>;

/// The reaper thread; stopped and joined on drop.
pub(crate) struct MemtableReaper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    freed: Arc<AtomicU64>,
}

impl std::fmt::Debug for MemtableReaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemtableReaper")
            .field("freed", &self.freed())
            .finish_non_exhaustive()
    }
}

impl MemtableReaper {
    /// Starts watching `keyspace`.
    pub(crate) fn start(keyspace: Keyspace) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel();
        let freed = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&freed);
        let thread = std::thread::Builder::new()
            .name("memtable-reaper".into())
            .spawn(move || {
                let mut held: Vec<Held> = Vec::new();
                loop {
                    hold_active(&keyspace, &mut held);
                    count.fetch_add(release_unused(&mut held), Ordering::Relaxed);
                    match stopped.recv_timeout(POLL) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
            freed,
        })
    }

    /// Memtables whose last reference this thread dropped.
    pub(crate) fn freed(&self) -> u64 {
        self.freed.load(Ordering::Relaxed)
    }
}

/// Takes a reference to the active memtable unless one is already held.
fn hold_active(keyspace: &Keyspace, held: &mut Vec<Held>) {
    let active: Held = keyspace.tree.active_memtable();
    if !held.iter().any(|h| Arc::ptr_eq(h, &active)) {
        held.push(active);
    }
}

/// Drops the memtables nobody else refers to any more; returns how many. Once only this
/// thread holds one, nothing can reach it again, so the count cannot rise behind our back.
fn release_unused(held: &mut Vec<Held>) -> u64 {
    let before = held.len();
    held.retain(|h| Arc::strong_count(h) > 1);
    (before - held.len()) as u64
}

impl Drop for MemtableReaper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the thread has nothing left to clean up; the memtables are freed as
            // its stack unwinds.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::{Database, KeyspaceCreateOptions};

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn flushed_memtables_are_freed_by_the_reaper_and_no_data_goes_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let keyspace = db.keyspace("k", KeyspaceCreateOptions::default).unwrap();
        let reaper = MemtableReaper::start(keyspace.clone()).unwrap();
        let mut rotations = 0;
        // Each round fills the active memtable, lets the reaper see it, then rotates and
        // flushes it; fjall lets go of flushed memtables in the maintenance of a later
        // rotation.
        wait_for("the reaper frees a flushed memtable", || {
            let first = rotations * 100;
            for i in first..first + 100 {
                keyspace
                    .insert(format!("key{i:08}"), vec![7u8; 100])
                    .unwrap();
            }
            std::thread::sleep(POLL * 2);
            keyspace.rotate_memtable_and_wait().unwrap();
            rotations += 1;
            reaper.freed() > 0
        });
        // Everything written is still there: the reaper only ever drops its own references.
        for i in 0..rotations * 100 {
            assert_eq!(
                keyspace.get(format!("key{i:08}")).unwrap().as_deref(),
                Some(&[7u8; 100][..])
            );
        }
        // Stopping joins the thread (a hang here fails the test by its timeout).
        drop(reaper);
    }

    #[test]
    fn release_keeps_what_others_still_hold() {
        let shared: Held = Arc::new(1u32);
        let mut held = vec![Arc::clone(&shared), Arc::new(2u32) as Held];
        assert_eq!(release_unused(&mut held), 1);
        assert_eq!(held.len(), 1);
        drop(shared);
        assert_eq!(release_unused(&mut held), 1);
        assert!(held.is_empty());
    }
}
