//! The narrow interface every storage engine offers the store: one ordered key space, atomic
//! batches, forward and reverse range scans, and one durable sync.
//!
//! Writes become visible to reads when `write` returns and durable when a later `sync` returns.
//! The store never acknowledges an entry before that `sync`.

use std::ops::Bound;

use crate::error::EngineError;

pub(crate) mod cached;
pub mod fjall;
pub mod memory;
mod reaper;
#[cfg(feature = "sled")]
pub mod sled;

/// Largest value the store writes. Chat entries are capped far below this by the protocol; the
/// cap keeps every engine on its fast path (sled stores larger values as unsynced blob files).
pub const MAX_VALUE_BYTES: usize = 128 * 1024;

/// One change in an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Removes `key` (no error when absent).
    Delete(Vec<u8>),
}

/// The order of a range scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Reverse,
}

/// A key-value pair returned by a scan.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A storage engine.
pub trait Engine: Send + Sync + 'static {
    /// A short name for logs and metrics: "fjall", "sled", "memory".
    fn name(&self) -> &'static str;

    /// The value under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Up to `limit` pairs with keys in `(start, end)`, in `direction` order.
    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError>;

    /// Applies `ops` atomically: after a crash either all of them or none are present.
    fn write(&self, ops: &[Op]) -> Result<(), EngineError>;

    /// Makes every completed `write` durable.
    fn sync(&self) -> Result<(), EngineError>;

    /// Bytes the engine occupies on disk (0 for memory).
    fn disk_bytes(&self) -> Result<u64, EngineError>;

    /// Memtables freed off the engine's own locks (fjall's reaper); 0 for engines without.
    fn memtables_freed(&self) -> u64 {
        0
    }

    /// Calls `visit` with every pair as of one instant, in key order, while writes go on (an
    /// online backup). Returns `Ok(false)` without visiting when the engine has no snapshots;
    /// the store then holds writes back while it copies.
    fn visit_snapshot(&self, visit: &mut Visitor<'_>) -> Result<bool, EngineError> {
        let _ = visit;
        Ok(false)
    }
}

/// What [`Engine::visit_snapshot`] calls for each pair.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), EngineError> + 'a;

/// Every key that starts with `prefix`, as scan bounds.
pub fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = Bound::Included(prefix.to_vec());
    // The end is the prefix with its last non-0xff byte incremented and the rest dropped.
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xff {
            end.push(last + 1);
            return (start, Bound::Excluded(end));
        }
    }
    (start, Bound::Unbounded)
}

/// Takes up to `limit` items of a double-ended range iterator in `direction` order, converting
/// each, and stops at the first error: the body of every engine's `scan`.
pub(crate) fn collect_directed<I, T>(
    iter: I,
    direction: Direction,
    limit: usize,
    convert: impl FnMut(T) -> Result<KeyValue, EngineError>,
) -> Result<Vec<KeyValue>, EngineError>
where
    I: DoubleEndedIterator<Item = T>,
{
    match direction {
        Direction::Forward => iter.take(limit).map(convert).collect(),
        Direction::Reverse => iter.rev().take(limit).map(convert).collect(),
    }
}

/// Borrows owned bounds for [`Engine::scan`].
pub fn as_ref_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds_cover_exactly_the_prefix() {
        assert_eq!(
            prefix_bounds(b"ab"),
            (
                Bound::Included(b"ab".to_vec()),
                Bound::Excluded(b"ac".to_vec())
            )
        );
        assert_eq!(
            prefix_bounds(&[1, 0xff]),
            (Bound::Included(vec![1, 0xff]), Bound::Excluded(vec![2]))
        );
        assert_eq!(prefix_bounds(&[0xff]).1, Bound::Unbounded);
    }
}
