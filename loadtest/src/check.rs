//! Delivery checks for one stream of a channel's entries: every seq once, in order. A seq that
//! skips ahead records the missing ones; a missing one arriving later counts as reordered; one
//! seen before counts as a duplicate. At the end, skipped seqs still missing are lost; seqs
//! after the last one received are undelivered (the run ended before they came).

use std::collections::BTreeSet;

/// Counts for one (receiver, channel) stream.
#[derive(Debug, Clone, Default)]
pub struct StreamCheck {
    /// The highest seq seen.
    last: u64,
    /// The first seq seen (0: none yet).
    first: u64,
    /// Seqs skipped over and not (yet) seen.
    missing: BTreeSet<u64>,
    /// Entries received.
    pub received: u64,
    /// Entries seen twice.
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
            first: head + 1,
            ..Self::default()
        }
    }

    /// Records a received seq.
    pub fn observe(&mut self, seq: u64) {
        self.received += 1;
        if seq == self.last + 1 {
            self.last = seq;
        } else if seq > self.last {
            self.missing.extend(self.last + 1..seq);
            self.last = seq;
        } else if self.missing.remove(&seq) {
            self.reordered += 1;
        } else {
            self.duplicates += 1;
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
        self.missing
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
        (1..=100).for_each(|s| clean.observe(s));
        assert_eq!(
            (clean.lost(100), clean.duplicates, clean.reordered),
            (0, 0, 0)
        );
    }
}
