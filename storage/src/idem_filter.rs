//! A channel's idempotency filter: which `(author, client_msg_id)` keys the channel may already
//! hold.
//!
//! Every publish carries an idempotency key, and for nearly every one the answer is "new".
//! Asking the engine meant a memtable search per publish for a key that is not there, a
//! visible share of the node's CPU in `pairs` (docs/benchmarks.md, "Decisions"). A key
//! this filter has never seen is certainly not stored, so the engine is asked only about keys it
//! may have seen: real retries, and false positives (under 3.3 %).
//!
//! The filter learns the keys stored before it existed by scanning the channel's idempotency
//! index one page per append, so that the first publish after a restart into a channel with a
//! long history does not wait for one long scan; until the scan is done, every key is looked
//! up in the engine. Keys queued meanwhile are added as they are queued, so once the scan ends
//! the filter has seen every stored key. Keys deleted later (retention) stay in it: that only
//! costs a lookup.

use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;

use crate::engine::{Direction, Engine, as_ref_bound, prefix_bounds};
use crate::error::ReadError;

/// Stored keys scanned per append until the scan is done.
const SCAN_PAGE: usize = 1024;

/// Keys the first layer holds: most channels are small, and a layer of 64 keys is 80 bytes.
const FIRST_CAPACITY: usize = 64;
/// Each new layer holds this many times the keys of the one before.
const GROWTH: usize = 4;
/// The first layer's false-positive rate; each later layer's is [`TIGHTENING`] times its
/// predecessor's, so all layers together stay under `FIRST_FP / (1 - TIGHTENING)` (3.3 %).
const FIRST_FP: f64 = 0.01;
const TIGHTENING: f64 = 0.7;
/// A filter that would grow past this many bytes is dropped (its layers up to 4 million keys
/// hold 5.6 million in ~11 MB; the next one would not fit), and its
/// channel's keys are all looked up in the engine, as before the filter existed: one huge
/// channel must not hold memory without bound.
const MAX_BYTES: usize = 16 << 20;

/// A scalable Bloom filter (layers of growing size) with a per-filter random hash seed, so
/// that nobody can choose keys that collide in every node's filter.
#[derive(Debug)]
pub(crate) struct IdemFilter {
    layers: Vec<Layer>,
    hasher: RandomState,
    /// The scan of stored keys; `None` once every key stored before the filter existed has been
    /// added.
    scan: Option<Scan>,
    /// Set when the filter outgrew [`MAX_BYTES`]: every key may be stored.
    dropped: bool,
}

/// Where the scan of a channel's stored keys goes on, and where its index ends.
#[derive(Debug)]
struct Scan {
    from: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
}

impl IdemFilter {
    /// A filter for the keys under `prefix` (one channel's idempotency index), with the scan of
    /// the stored ones still to do.
    pub(crate) fn new(prefix: &[u8]) -> Self {
        Self {
            layers: Vec::new(),
            hasher: RandomState::new(),
            scan: Some({
                let (from, end) = prefix_bounds(prefix);
                Scan { from, end }
            }),
            dropped: false,
        }
    }

    /// Adds the next page of stored keys, if the scan is not done.
    pub(crate) fn scan_step(&mut self, engine: &dyn Engine) -> Result<(), ReadError> {
        // Dropping the filter ends the scan too.
        let Some(scan) = &self.scan else {
            return Ok(());
        };
        let page = engine.scan(
            as_ref_bound(&scan.from),
            as_ref_bound(&scan.end),
            Direction::Forward,
            SCAN_PAGE,
        )?;
        let more = page.len() == SCAN_PAGE;
        for (key, _) in &page {
            self.insert(key);
        }
        self.scan = match (more, page.into_iter().next_back(), self.scan.take()) {
            (true, Some((last, _)), Some(Scan { end, .. })) => Some(Scan {
                from: Bound::Excluded(last),
                end,
            }),
            _ => None,
        };
        Ok(())
    }

    /// False only if `key` was certainly never stored.
    pub(crate) fn may_contain(&self, key: &[u8]) -> bool {
        if self.scan.is_some() || self.dropped {
            return true;
        }
        let hash = self.hasher.hash_one(key);
        self.layers.iter().any(|layer| layer.contains(hash))
    }

    /// Records `key` as (about to be) stored.
    pub(crate) fn insert(&mut self, key: &[u8]) {
        if self.dropped {
            return;
        }
        let hash = self.hasher.hash_one(key);
        let full = self.layers.last().is_none_or(Layer::is_full);
        if full {
            let n = self.layers.len();
            let capacity = FIRST_CAPACITY.saturating_mul(GROWTH.saturating_pow(n as u32));
            let fp = FIRST_FP * TIGHTENING.powi(n as i32);
            let layer = Layer::new(capacity, fp);
            let bytes: usize = self.layers.iter().map(Layer::bytes).sum::<usize>() + layer.bytes();
            if bytes > MAX_BYTES {
                self.dropped = true;
                self.layers = Vec::new();
                self.scan = None;
                return;
            }
            self.layers.push(layer);
        }
        if let Some(layer) = self.layers.last_mut() {
            layer.insert(hash);
        }
    }
}

/// One fixed-size Bloom filter; its `k` bit positions come from one 64-bit hash by double
/// hashing (Kirsch and Mitzenmacher).
#[derive(Debug)]
struct Layer {
    bits: Vec<u64>,
    hashes: u32,
    capacity: usize,
    len: usize,
}

impl Layer {
    fn new(capacity: usize, fp: f64) -> Self {
        let ln2 = std::f64::consts::LN_2;
        let bits = (capacity as f64 * -fp.ln() / (ln2 * ln2)).ceil().max(64.0) as usize;
        let words = bits.div_ceil(64);
        let hashes = ((words * 64) as f64 / capacity as f64 * ln2).round() as u32;
        Self {
            bits: vec![0; words],
            hashes: hashes.clamp(1, 16),
            capacity,
            len: 0,
        }
    }

    fn bytes(&self) -> usize {
        self.bits.len() * 8
    }

    fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// The bit positions of `hash`.
    fn positions(hash: u64, hashes: u32, words: usize) -> impl Iterator<Item = usize> {
        let m = (words * 64) as u64;
        // Odd, so that the steps are never zero.
        let step = hash.rotate_left(32) | 1;
        (0..u64::from(hashes)).map(move |i| (hash.wrapping_add(i.wrapping_mul(step)) % m) as usize)
    }

    fn insert(&mut self, hash: u64) {
        for p in Self::positions(hash, self.hashes, self.bits.len()) {
            self.bits[p / 64] |= 1 << (p % 64);
        }
        self.len += 1;
    }

    fn contains(&self, hash: u64) -> bool {
        Self::positions(hash, self.hashes, self.bits.len())
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::engine::Op;
    use crate::engine::memory::MemoryEngine;

    fn key(prefix: &[u8], i: usize) -> Vec<u8> {
        let mut k = prefix.to_vec();
        k.extend_from_slice(format!("user-{}:msg-{i}", i % 7).as_bytes());
        k
    }

    /// A filter whose scan found nothing: it knows only what is inserted.
    fn empty() -> IdemFilter {
        let mut f = IdemFilter::new(b"I\x01c");
        f.scan_step(&MemoryEngine::new()).unwrap();
        f
    }

    #[test]
    fn inserted_keys_are_found_across_layers_and_false_positives_stay_rare() {
        let mut f = empty();
        let n = 50_000;
        for i in 0..n {
            f.insert(&key(b"in", i));
        }
        assert!(f.layers.len() > 3, "the test spans several layers");
        assert!((0..n).all(|i| f.may_contain(&key(b"in", i))));
        let false_positives = (0..n).filter(|i| f.may_contain(&key(b"out", *i))).count();
        // The bound of all layers together is 3.3 %.
        assert!(
            false_positives < n * 4 / 100,
            "{false_positives} false positives in {n}"
        );
    }

    #[test]
    fn a_small_channel_costs_one_small_layer() {
        let mut f = empty();
        for i in 0..FIRST_CAPACITY {
            f.insert(&key(b"k", i));
        }
        assert_eq!(f.layers.len(), 1);
        assert!(
            f.layers[0].bits.len() * 8 <= 128,
            "bytes of the first layer"
        );
    }

    /// A filter that would outgrow its cap is dropped: from then on every key may be stored
    /// (and is looked up), which is what a channel without a filter does.
    #[test]
    fn a_filter_past_its_cap_is_dropped_and_answers_maybe() {
        let mut f = empty();
        let mut i = 0;
        while !f.dropped {
            f.insert(&(i as u64).to_le_bytes());
            i += 1;
        }
        // Layers of 64, 256, ... 4 Mi keys hold 5,592,384; the next insert would need a new one.
        assert_eq!(i, 5_592_385);
        assert!(f.layers.is_empty(), "its memory is freed");
        assert!(f.may_contain(&key(b"k", 0)) && f.may_contain(b"never inserted"));
        f.insert(b"more");
        assert!(f.layers.is_empty());
    }

    /// Stored keys are learnt a page per step; until the last page, every key may be there.
    #[test]
    fn the_scan_learns_the_stored_keys_page_by_page() {
        let engine = MemoryEngine::new();
        let prefix = b"I\x01c".to_vec();
        let stored: Vec<Vec<u8>> = (0..SCAN_PAGE * 2 + 10).map(|i| key(&prefix, i)).collect();
        let mut ops: Vec<Op> = stored
            .iter()
            .map(|k| Op::Put(k.clone(), vec![0; 8]))
            .collect();
        // A neighbouring channel's keys are not the filter's business.
        ops.extend((0..100).map(|i| Op::Put(key(b"I\x01d", i), vec![0; 8])));
        engine.write(&ops).unwrap();

        let mut f = IdemFilter::new(&prefix);
        for _ in 0..3 {
            assert!(f.may_contain(&key(&prefix, 1_000_000)), "scan not done");
            f.scan_step(&engine).unwrap();
        }
        assert!(f.scan.is_none(), "three pages cover the index");
        assert!(stored.iter().all(|k| f.may_contain(k)));
        let unknown = (0..1000)
            .filter(|i| f.may_contain(&key(&prefix, 1_000_000 + i)))
            .count();
        assert!(
            unknown < 40,
            "{unknown} of 1000 unknown keys may be present"
        );
        // Steps after the end change nothing.
        f.scan_step(&engine).unwrap();
        assert!(f.scan.is_none());
    }

    /// A key inserted while the scan runs is known once it ends, wherever it sorts.
    #[test]
    fn keys_queued_during_the_scan_are_kept() {
        let engine = MemoryEngine::new();
        let prefix = b"I\x01c".to_vec();
        let ops: Vec<Op> = (0..SCAN_PAGE + 1)
            .map(|i| Op::Put(key(&prefix, i), vec![0; 8]))
            .collect();
        engine.write(&ops).unwrap();
        let mut f = IdemFilter::new(&prefix);
        f.scan_step(&engine).unwrap();
        let early = key(&prefix, 0).into_iter().chain(*b"!").collect::<Vec<_>>();
        f.insert(&early);
        f.scan_step(&engine).unwrap();
        assert!(f.scan.is_none());
        assert!(f.may_contain(&early));
    }

    proptest! {
        #[test]
        fn no_false_negatives(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..600)) {
            let mut f = empty();
            for k in &keys {
                f.insert(k);
            }
            for k in &keys {
                prop_assert!(f.may_contain(k));
            }
        }
    }
}
