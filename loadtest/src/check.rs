//! Delivery checks for one stream of a channel's entries: every seq once, in order. A seq that
//! skips ahead records the missing ones; a missing one arriving later counts as reordered; one
//! seen before counts as a duplicate. At the end, skipped seqs still missing are lost; seqs
//! after the last one received are undelivered (the run ended before they came).
//!
//! Seqs alone cannot show a message the node stored twice (two seqs, one message): the test
//! messages also carry their sender and the sender's message number. Where a sender publishes
//! in order on one connection its numbers must rise from one entry to the next; where its
//! publishes may overtake each other (the storm's, concurrent and resent across reconnects) the
//! check remembers every number instead.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// The most skipped seqs listed one by one: a node that jumps further (a corrupt or hostile
/// seq) has the rest counted as lost without listing them, so that one bad frame cannot make
/// the tester allocate without bound.
const MAX_LISTED_GAP: u64 = 1 << 20;

/// Hashes the tester's own sender ids (small integers) with one multiply: with the default
/// SipHash the sender lookup cost 5 – 8 % of the tester's CPU per delivery at 2 million
/// deliveries/s.
#[derive(Debug, Default, Clone, Copy)]
struct SenderHasher(u64);

impl Hasher for SenderHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(FIBONACCI);
    }
}

/// 2^64 / golden ratio: spreads consecutive ids over the high bits the table's tags use.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// How a received seq fits its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// After every seq seen so far: the next one, or a skip ahead.
    Ahead,
    /// A seq skipped earlier, arriving now (reordered).
    Late,
    /// A seq seen before (duplicate).
    Again,
}

/// Counts for one (receiver, channel) stream.
#[derive(Debug, Clone, Default)]
pub struct StreamCheck {
    /// The highest seq seen.
    last: u64,
    /// The first seq seen (0: none yet).
    first: u64,
    /// Seqs skipped over and not (yet) seen.
    missing: BTreeSet<u64>,
    /// Seqs skipped in jumps too long to list ([`MAX_LISTED_GAP`]): lost, whatever comes later.
    unlisted: u64,
    /// Each sender's highest message number seen in this stream.
    numbers: HashMap<u32, u64, BuildHasherDefault<SenderHasher>>,
    /// Every (sender, number) seen, for senders whose messages may arrive out of their order.
    every_number: Option<HashSet<(u32, u64)>>,
    /// Entries received.
    pub received: u64,
    /// Entries seen twice: the same seq again, or the same message (sender and number) under
    /// a second seq.
    pub duplicates: u64,
    /// Entries that arrived after a later one.
    pub reordered: u64,
}

impl StreamCheck {
    /// A check expecting the stream to start after `head` (the channel's head when the
    /// subscription started).
    pub fn after(head: u64) -> Self {
        Self {
            last: head,
            first: head.saturating_add(1),
            ..Self::default()
        }
    }

    /// Checks messages by remembering every number, not by their rising: for senders whose
    /// publishes may be sequenced out of their numbering.
    pub fn remembering_numbers(mut self) -> Self {
        self.every_number = Some(HashSet::new());
        self
    }

    /// Records a received seq.
    pub fn observe(&mut self, seq: u64) -> Seen {
        self.received += 1;
        if seq > self.last {
            let skipped = seq - self.last - 1;
            if skipped > MAX_LISTED_GAP {
                self.unlisted += skipped;
            } else {
                self.missing.extend(self.last + 1..seq);
            }
            self.last = seq;
            Seen::Ahead
        } else if self.missing.remove(&seq) {
            self.reordered += 1;
            Seen::Late
        } else {
            self.duplicates += 1;
            Seen::Again
        }
    }

    /// Records a received test message: `seq` as [`StreamCheck::observe`] does, then the
    /// sender's message `number`, which must be above the last one seen from that sender (or,
    /// [`StreamCheck::remembering_numbers`], not seen before). One that is not is the same
    /// message stored a second time, and counts as a duplicate.
    /// Returns whether the message is one not received before (late ones included).
    pub fn observe_message(&mut self, seq: u64, sender: u32, number: u64) -> bool {
        let seen = self.observe(seq);
        if seen == Seen::Again {
            return false;
        }
        if let Some(seen) = &mut self.every_number {
            // Order does not matter here: a late entry is judged too.
            let fresh = seen.insert((sender, number));
            if !fresh {
                self.duplicates += 1;
            }
            return fresh;
        }
        if seen == Seen::Late {
            // Counted as reordered; a late entry's number says nothing about storage when
            // numbers must rise.
            return true;
        }
        match self.numbers.entry(sender) {
            Entry::Vacant(v) => {
                v.insert(number);
                true
            }
            Entry::Occupied(mut o) if number > *o.get() => {
                o.insert(number);
                true
            }
            Entry::Occupied(_) => {
                self.duplicates += 1;
                false
            }
        }
    }

    /// Entries not received among `first..=expected_last`: [`StreamCheck::gaps`] plus
    /// [`StreamCheck::tail`].
    pub fn lost(&self, expected_last: u64) -> u64 {
        self.gaps(expected_last) + self.tail(expected_last)
    }

    /// Entries skipped over: a later one arrived and they never did. In an ordered stream this
    /// is a loss whenever the run ended.
    pub fn gaps(&self, expected_last: u64) -> u64 {
        self.unlisted
            + self
                .missing
                .iter()
                .filter(|s| **s >= self.first && **s <= expected_last)
                .count() as u64
    }

    /// Entries after the last one received, up to `expected_last`: not delivered by the time
    /// the run ended (a node too slow to catch its subscribers up, or a lost tail).
    pub fn tail(&self, expected_last: u64) -> u64 {
        expected_last.saturating_sub(self.last)
    }

    /// The highest seq seen.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_duplicate_and_reordered() {
        let mut c = StreamCheck::after(10);
        for s in [11, 12, 12, 15, 13, 16] {
            c.observe(s);
        }
        assert_eq!((c.received, c.duplicates, c.reordered), (6, 1, 1));
        assert_eq!(c.lost(16), 1, "14 never came");
        assert_eq!(c.lost(18), 3, "and the tail");
        assert_eq!((c.gaps(18), c.tail(18)), (1, 2));
        let mut clean = StreamCheck::after(0);
        for s in 1..=100 {
            clean.observe(s);
        }
        assert_eq!(
            (clean.lost(100), clean.duplicates, clean.reordered),
            (0, 0, 0)
        );
    }

    #[test]
    fn the_same_message_under_two_seqs_is_a_duplicate() {
        let mut c = StreamCheck::after(0);
        c.observe_message(1, 7, 1);
        c.observe_message(2, 9, 1);
        c.observe_message(3, 7, 2);
        assert_eq!(c.duplicates, 0, "senders are numbered apart");
        c.observe_message(4, 7, 2);
        assert_eq!(c.duplicates, 1, "7's message 2 stored again");
        c.observe_message(5, 7, 3);
        c.observe_message(5, 7, 3);
        assert_eq!(c.duplicates, 2, "a repeated seq counts once, not twice");
        c.observe_message(7, 9, 2);
        c.observe_message(6, 9, 5);
        assert_eq!(
            (c.duplicates, c.reordered),
            (2, 1),
            "a late seq is a reorder, its number not judged"
        );
        assert_eq!(c.lost(7), 0);
    }

    #[test]
    fn remembered_numbers_may_come_in_any_order() {
        let mut c = StreamCheck::after(0).remembering_numbers();
        assert!(c.observe_message(1, 0, 5));
        assert!(c.observe_message(2, 0, 3));
        assert!(!c.observe_message(3, 0, 5));
        assert_eq!((c.duplicates, c.reordered, c.lost(3)), (1, 0, 0));
        // A late seq carrying a message already seen is still a duplicate.
        assert!(c.observe_message(5, 0, 6));
        assert!(!c.observe_message(4, 0, 3));
        assert_eq!((c.duplicates, c.reordered), (2, 1));
    }

    #[test]
    fn a_seq_far_ahead_counts_lost_without_listing() {
        let mut c = StreamCheck::after(0);
        c.observe(1);
        c.observe(u64::MAX);
        assert_eq!(c.gaps(u64::MAX), u64::MAX - 2);
        assert!(c.missing.is_empty());
        c.observe(u64::MAX);
        assert_eq!(c.duplicates, 1);
        assert_eq!(StreamCheck::after(u64::MAX).tail(5), 0);
    }
}
