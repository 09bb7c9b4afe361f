//! Writes the active fjall journal's blocks ahead of fjall's appends.
//!
//! fjall preallocates a journal with `set_len`: a sparse file. Each append that reaches a block
//! never written before allocates it, so the `fdatasync` that makes the append durable must also
//! write the inode's new extent: two writes per sync instead of one. At the group-commit sizes
//! of a busy node (a few KiB per sync) nearly every sync reaches a new block; measured here,
//! 3,000-byte appends each followed by `fdatasync` took p50 255 µs and ~100 µs of CPU per sync
//! into a sparse file, 172 µs and ~80 µs into one whose blocks were written already
//! (docs/benchmarks.md, session 12).
//!
//! So after each batch the engine writes zeros over the next stretch of the journal, a chunk at
//! a time, keeping [`AHEAD`] bytes ahead of where fjall appends. The journal's content never
//! changes: a chunk is written only if it reads as zeros (a hole reads so), only inside the
//! file's length (fjall appends to a journal reopened after a restart at its end, so a write
//! past it would move its appends), and only between two batches under the engine's write
//! lock, when fjall has flushed its buffer (batches persist to the OS buffer by default) and no
//! batch is being written. Zeros written over zeros, or over a hole, leave every byte a reader
//! sees as it was; the syncer's next `fdatasync` writes them out and allocates their blocks.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::Op;

/// The size of one zero write; one at most per batch, so a batch waits for at most this much.
pub(crate) const CHUNK: u64 = 64 * 1024;
/// How far ahead of fjall's appends the zeros reach.
pub(crate) const AHEAD: u64 = 1024 * 1024;

/// fjall's journal bytes around each batch (start and end markers, rounded up) and each item
/// (tag, value type, compression, keyspace id, lengths): `journal::entry` in fjall 3.1.13.
const BATCH_OVERHEAD: u64 = 32;
const ITEM_OVERHEAD: u64 = 21;

/// The prefill of one journal file.
#[derive(Debug)]
pub(crate) struct Prefill {
    /// The journal's id (`<id>.jnl`).
    id: u64,
    /// Read and written at offsets only.
    file: Option<File>,
    /// Its length when opened: nothing is written past it.
    len: u64,
    /// Where fjall's appends have got to, as far as this engine's batches tell (an estimate:
    /// the zero check keeps a wrong one harmless).
    appended: u64,
    /// Everything below this was zeroed (or written by fjall, or skipped).
    done: u64,
    buf: Vec<u8>,
}

/// What a step did, for tests and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to do: far enough ahead, or at the end of the file.
    Idle,
    /// Wrote a chunk of zeros.
    Zeroed,
    /// The chunk held data (the estimate was behind): skipped.
    Skipped,
}

impl Prefill {
    /// The prefill of journal `id` at `path`, which may hold appends already: everything up to
    /// `appended` is taken as written. A journal that cannot be opened gets no prefill.
    pub(crate) fn open(id: u64, path: &Path, appended: u64) -> Self {
        let file = File::options().read(true).write(true).open(path).ok();
        let len = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        Self {
            id,
            file,
            len,
            appended,
            done: appended,
            buf: Vec::new(),
        }
    }

    /// The journal this prefill is for.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Counts a batch of `ops` as appended to this journal.
    pub(crate) fn note(&mut self, ops: &[Op]) {
        let bytes: u64 = ops
            .iter()
            .map(|op| {
                let (k, v) = match op {
                    Op::Put(k, v) => (k.len(), v.len()),
                    Op::Delete(k) => (k.len(), 0),
                };
                ITEM_OVERHEAD + (k + v) as u64
            })
            .sum();
        self.appended += BATCH_OVERHEAD + bytes;
    }

    /// Zeroes the next chunk if the zeros are less than [`AHEAD`] in front of the appends.
    /// Must be called only while no batch is being written to the journal.
    pub(crate) fn step(&mut self) -> std::io::Result<Step> {
        // Whatever fjall has written is not ours to check again.
        self.done = self.done.max(self.appended);
        let Some(file) = &self.file else {
            return Ok(Step::Idle);
        };
        let target = (self.appended + AHEAD).min(self.len);
        if self.done >= target {
            return Ok(Step::Idle);
        }
        let n = CHUNK.min(self.len - self.done);
        let at = self.done;
        self.done += n;
        self.buf.resize(n as usize, 0);
        file.read_exact_at(&mut self.buf, at)?;
        if self.buf.iter().any(|b| *b != 0) {
            return Ok(Step::Skipped);
        }
        // `buf` is all zeros: written back, the bytes stay what they were.
        file.write_all_at(&self.buf, at)?;
        Ok(Step::Zeroed)
    }

    /// Stops prefilling this journal (after an I/O error: prefilling is an optimisation, and
    /// the batches themselves are written by fjall).
    pub(crate) fn stop(&mut self) {
        self.file = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Seek, SeekFrom, Write};

    use proptest::prelude::*;

    use super::*;

    fn sparse(len: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.jnl");
        File::create(&path).unwrap().set_len(len).unwrap();
        (dir, path)
    }

    fn put(k: usize, v: usize) -> Op {
        Op::Put(vec![1; k], vec![2; v])
    }

    #[test]
    fn zeros_stay_ahead_of_the_appends_and_inside_the_file() {
        let (_dir, path) = sparse(4 * AHEAD);
        let mut p = Prefill::open(1, &path, 0);
        let mut zeroed = 0;
        while p.step().unwrap() == Step::Zeroed {
            zeroed += 1;
        }
        assert_eq!(zeroed, AHEAD / CHUNK, "up to AHEAD, one chunk per step");
        // 100 KiB of batches: the zeros move on by as much, a chunk per step.
        for _ in 0..100 {
            p.note(&[put(
                10,
                1000 - ITEM_OVERHEAD as usize - 10 - BATCH_OVERHEAD as usize,
            )]);
        }
        assert_eq!(p.appended, 100_000);
        assert_eq!(p.step().unwrap(), Step::Zeroed);
        assert_eq!(p.step().unwrap(), Step::Zeroed);
        assert_eq!(p.step().unwrap(), Step::Idle);
        // Never past the end of the file.
        p.appended = 4 * AHEAD - 10;
        while p.step().unwrap() != Step::Idle {}
        assert_eq!(p.done, 4 * AHEAD);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * AHEAD);
    }

    /// Data found where the zeros would go (the estimate was behind) is left alone.
    #[test]
    fn a_chunk_holding_data_is_skipped() {
        let (_dir, path) = sparse(AHEAD * 2);
        let mut f = File::options().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(CHUNK + 17)).unwrap();
        f.write_all(b"fjall's batch").unwrap();
        let mut p = Prefill::open(1, &path, 0);
        assert_eq!(p.step().unwrap(), Step::Zeroed);
        assert_eq!(p.step().unwrap(), Step::Skipped);
        assert_eq!(p.step().unwrap(), Step::Zeroed);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[CHUNK as usize + 17..][..13], b"fjall's batch");
    }

    #[test]
    fn a_journal_that_cannot_be_opened_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Prefill::open(7, &dir.path().join("7.jnl"), 0);
        assert_eq!(p.id(), 7);
        assert_eq!(p.step().unwrap(), Step::Idle);
        assert!(!dir.path().join("7.jnl").exists());
    }

    proptest! {
        /// Whatever was written where, and whatever the estimate says, prefilling changes no
        /// byte of the file and never its length.
        #[test]
        fn prefilling_never_changes_the_content(
            writes in proptest::collection::vec((0u64..3 * AHEAD, 1usize..5000), 0..8),
            appended in 0u64..3 * AHEAD,
            steps in 1usize..80,
        ) {
            let (_dir, path) = sparse(3 * AHEAD);
            let mut f = File::options().write(true).open(&path).unwrap();
            for (at, n) in &writes {
                f.seek(SeekFrom::Start(*at)).unwrap();
                f.write_all(&vec![0xA5; *n]).unwrap();
            }
            let before = std::fs::read(&path).unwrap();
            let mut p = Prefill::open(1, &path, appended);
            for _ in 0..steps {
                p.step().unwrap();
            }
            prop_assert!(std::fs::read(&path).unwrap() == before);
        }
    }
}
