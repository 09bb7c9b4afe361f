//! A write-through cache of point records (channels, members, bans, direct pairs) in front of
//! an engine.
//!
//! Every publish checks the channel, the author's membership and bans; on an LSM engine each of
//! those is a point read through memtables, bloom filters and index blocks, and together they
//! were the largest cost of a publish (a quarter of the node's CPU under `pairs` load). These
//! records are small, read far more often than written, and written only through `write`, so
//! the cache stays exact: it sees every write, and answers a read from memory when it can.
//!
//! Coherence: `write` applies the batch to the engine first, then upserts each cached key
//! (absent keys are cached as absent). A read that misses fills the cache only if nothing was
//! stored for that key meanwhile (`Entry::Vacant`), so a fill from before a write cannot
//! overwrite what the write stored. The cache is bounded by clearing it whole when it is full;
//! a generation counter, checked under the map's shard lock, stops a read that started before a
//! clear from filling in a value that may be older than a write the clear discarded.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::{Direction, Engine, KeyValue, Op, Visitor};
use crate::error::EngineError;
use crate::keys;

/// Records kept before the cache is cleared: at ~150 bytes each, about 40 MiB.
pub(crate) const RECORD_CACHE_ENTRIES: usize = 262_144;

/// The engine with the cache in front.
pub(crate) struct RecordCache {
    inner: Arc<dyn Engine>,
    records: DashMap<Vec<u8>, Option<Arc<[u8]>>>,
    generation: AtomicU64,
    capacity: usize,
}

impl RecordCache {
    pub(crate) fn new(inner: Arc<dyn Engine>, capacity: usize) -> Self {
        Self {
            inner,
            records: DashMap::new(),
            generation: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Point records read on every request. Not here: log entries, indexes and markers, and
    /// user records, which are read and written once per connection (caching them would cost
    /// every idle connection a cache entry and save nothing).
    fn cached(key: &[u8]) -> bool {
        matches!(
            key.first(),
            Some(&(keys::CHANNEL | keys::MEMBER | keys::BAN | keys::DIRECT))
        )
    }

    fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.records.clear();
    }

    fn make_room(&self) {
        if self.records.len() >= self.capacity {
            self.clear();
        }
    }
}

impl Engine for RecordCache {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if !Self::cached(key) {
            return self.inner.get(key);
        }
        if let Some(hit) = self.records.get(key) {
            return Ok(hit.as_deref().map(<[u8]>::to_vec));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let value = self.inner.get(key)?;
        self.make_room();
        match self.records.entry(key.to_vec()) {
            // A write stored this key after our read: it is the newer value.
            Entry::Occupied(newer) => Ok(newer.get().as_deref().map(<[u8]>::to_vec)),
            Entry::Vacant(slot) => {
                if self.generation.load(Ordering::Acquire) == generation {
                    slot.insert(value.as_deref().map(Arc::from));
                }
                Ok(value)
            }
        }
    }

    fn scan(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.inner.scan(start, end, direction, limit)
    }

    fn write(&self, ops: &[Op]) -> Result<(), EngineError> {
        if let Err(e) = self.inner.write(ops) {
            // Applied or not, the cache no longer knows: forget everything.
            self.clear();
            return Err(e);
        }
        for op in ops {
            let (key, value) = match op {
                Op::Put(k, v) => (k, Some(Arc::from(v.as_slice()))),
                Op::Delete(k) => (k, None),
            };
            if Self::cached(key) {
                self.make_room();
                self.records.insert(key.clone(), value);
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.inner.sync()
    }

    fn disk_bytes(&self) -> Result<u64, EngineError> {
        self.inner.disk_bytes()
    }

    fn memtables_freed(&self) -> u64 {
        self.inner.memtables_freed()
    }

    fn visit_snapshot(&self, visit: &mut Visitor<'_>) -> Result<bool, EngineError> {
        self.inner.visit_snapshot(visit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::engine::memory::MemoryEngine;

    fn key(table: u8, s: &str) -> Vec<u8> {
        keys::Key::new(table).str(s).into_vec()
    }

    #[test]
    fn reads_see_every_write_and_delete() {
        let engine = Arc::new(MemoryEngine::default());
        let cache = RecordCache::new(engine.clone(), 16);
        let k = key(keys::MEMBER, "c");
        assert_eq!(cache.get(&k).unwrap(), None);
        cache.write(&[Op::Put(k.clone(), b"one".to_vec())]).unwrap();
        assert_eq!(cache.get(&k).unwrap().as_deref(), Some(&b"one"[..]));
        cache.write(&[Op::Put(k.clone(), b"two".to_vec())]).unwrap();
        assert_eq!(cache.get(&k).unwrap().as_deref(), Some(&b"two"[..]));
        cache.write(&[Op::Delete(k.clone())]).unwrap();
        assert_eq!(cache.get(&k).unwrap(), None);
        assert_eq!(engine.get(&k).unwrap(), None);
    }

    #[test]
    fn uncached_tables_go_to_the_engine() {
        let engine = Arc::new(MemoryEngine::default());
        let cache = RecordCache::new(engine.clone(), 16);
        let k = key(keys::LOG, "c");
        cache.get(&k).unwrap();
        assert!(cache.records.is_empty());
        // Written behind the cache's back (only possible for uncached tables in the store).
        engine.write(&[Op::Put(k.clone(), b"x".to_vec())]).unwrap();
        assert_eq!(cache.get(&k).unwrap().as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn a_full_cache_starts_over_and_stays_exact() {
        let engine = Arc::new(MemoryEngine::default());
        let cache = RecordCache::new(engine, 4);
        for i in 0..20 {
            let k = key(keys::MEMBER, &format!("u{i}"));
            cache
                .write(&[Op::Put(k.clone(), i.to_string().into_bytes())])
                .unwrap();
            assert!(cache.records.len() <= 4);
        }
        for i in 0..20 {
            let k = key(keys::MEMBER, &format!("u{i}"));
            assert_eq!(cache.get(&k).unwrap(), Some(i.to_string().into_bytes()));
        }
    }

    #[test]
    fn concurrent_readers_never_keep_a_stale_value() {
        let engine = Arc::new(MemoryEngine::default());
        let cache = Arc::new(RecordCache::new(engine, 8));
        let keys: Vec<Vec<u8>> = (0..12)
            .map(|i| key(keys::CHANNEL, &format!("c{i}")))
            .collect();
        std::thread::scope(|s| {
            for _ in 0..3 {
                let (cache, keys) = (cache.clone(), keys.clone());
                s.spawn(move || {
                    for round in 0..2_000 {
                        let _ = cache.get(&keys[round % keys.len()]).unwrap();
                    }
                });
            }
            for round in 0..2_000u32 {
                let k = &keys[round as usize % keys.len()];
                cache
                    .write(&[Op::Put(k.clone(), round.to_be_bytes().to_vec())])
                    .unwrap();
            }
        });
        // Every key's cached value is the last one written.
        for (i, k) in keys.iter().enumerate() {
            let last = (0..2_000u32)
                .filter(|r| *r as usize % keys.len() == i)
                .max();
            assert_eq!(
                cache.get(k).unwrap(),
                last.map(|r| r.to_be_bytes().to_vec())
            );
        }
    }
}
