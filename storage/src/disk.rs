//! The free-space watermark: appends are refused before the disk is full, not after.
//!
//! Letting an engine run into `ENOSPC` is costly twice over: the failing batch may be partly in
//! the journal (its callers can only be told "outcome unknown"), and sled 0.34 then keeps the
//! I/O error as a global one and fails every later read too. So the store stops taking new
//! entries while less than [`crate::StoreConfig::min_free_disk_bytes`] is free, refusing them
//! before a seq is assigned (nothing changed: [`StoreError::DiskFull`]), and takes them again
//! by itself once space is freed. Record writes (members, markers) and deletions still pass:
//! they are small, and retention needs them to free space.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::error::StoreError;

/// How often the free space is read (`statvfs`) at most, in milliseconds. At the fastest
/// append rates measured, far less than the default watermark is written in this time.
const CHECK_EVERY_MS: u64 = 100;

/// Watches the free space of the store's file system.
#[derive(Debug)]
pub(crate) struct DiskWatch {
    dir: PathBuf,
    /// 0: no watermark.
    min_free: u64,
    started: Instant,
    /// Milliseconds since `started` of the last reading, plus one (0: never read).
    checked_at: AtomicU64,
    free: AtomicU64,
    low: AtomicBool,
}

impl DiskWatch {
    /// A watch on `dir`'s file system; `min_free` 0 turns it off.
    pub(crate) fn new(dir: PathBuf, min_free: u64) -> Self {
        Self {
            dir,
            min_free,
            started: Instant::now(),
            checked_at: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
            low: AtomicBool::new(false),
        }
    }

    /// `Err(DiskFull)` while less than the watermark is free.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.checked_at.load(Ordering::Relaxed);
        // One caller reads; the others use the last reading.
        if (last == 0 || now.saturating_sub(last) >= CHECK_EVERY_MS)
            && self
                .checked_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refresh();
        }
        if self.low.load(Ordering::Relaxed) {
            return Err(StoreError::DiskFull {
                free_bytes: self.free.load(Ordering::Relaxed),
                min_free_bytes: self.min_free,
            });
        }
        Ok(())
    }

    fn refresh(&self) {
        // An unreadable file system keeps the last reading: the engine's own errors still
        // protect the store.
        if let Ok(s) = rustix::fs::statvfs(&self.dir) {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            self.free.store(free, Ordering::Relaxed);
            self.low.store(free < self.min_free, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn refuses_below_the_watermark_and_not_when_off() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DiskWatch::new(dir.path().into(), 0).check().is_ok());
        assert!(DiskWatch::new(dir.path().into(), 1).check().is_ok());
        let all = DiskWatch::new(dir.path().into(), u64::MAX);
        assert!(matches!(
            all.check(),
            Err(StoreError::DiskFull {
                min_free_bytes: u64::MAX,
                ..
            })
        ));
    }
}
