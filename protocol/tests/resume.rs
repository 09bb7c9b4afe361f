//! The client's resume bookkeeping against arbitrary duplicate-laden streams: what a correct
//! server may send (every seq in order, plus repeats of earlier ones) is delivered exactly once
//! and in order; a missing seq is reported, never skipped silently.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::resume::{Accept, ResumeTracker};
use chorus_protocol::v1::{ChannelEvent, RecoveryFailure, Subscribed};
use proptest::prelude::*;

fn event(seq: u64) -> ChannelEvent {
    ChannelEvent {
        channel_id: "room".into(),
        seq,
        epoch: 3,
        ..ChannelEvent::default()
    }
}

fn tracker(head: u64) -> ResumeTracker {
    let mut t = ResumeTracker::new();
    t.subscribed(
        &ChannelId::new("room").unwrap(),
        &Subscribed {
            channel_id: "room".into(),
            epoch: 3,
            head_seq: head,
            recovered: false,
            failure: RecoveryFailure::NoCursor as i32,
            first_available_seq: 1,
            error: None,
        },
    );
    t
}

/// A stream of seqs `start+1..=end` in order, with repeats of already-sent seqs mixed in.
fn stream() -> impl Strategy<Value = (u64, u64, Vec<u64>)> {
    (
        0u64..50,
        1u64..80,
        prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 0..200),
    )
        .prop_map(|(start, len, noise)| {
            let end = start + len;
            let mut out = Vec::new();
            let mut next = start + 1;
            let mut noise = noise.into_iter();
            while next <= end {
                match noise.next() {
                    Some((true, i)) if next > 1 => {
                        out.push(1 + i.index((next - 1) as usize) as u64)
                    }
                    _ => {
                        out.push(next);
                        next += 1;
                    }
                }
            }
            (start, end, out)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn duplicates_are_dropped_and_order_kept((start, end, seqs) in stream()) {
        let mut t = tracker(start);
        let mut delivered = Vec::new();
        for s in seqs {
            match t.on_event(&event(s)) {
                Accept::Deliver => delivered.push(s),
                Accept::Duplicate => {}
                other => prop_assert!(false, "unexpected {:?} for seq {}", other, s),
            }
        }
        prop_assert_eq!(delivered, (start + 1..=end).collect::<Vec<_>>());
        prop_assert_eq!(t.cursor(&ChannelId::new("room").unwrap()).unwrap().last, Seq(end));
    }

    #[test]
    fn a_missing_seq_is_reported((start, end, seqs) in stream(), drop in any::<prop::sample::Index>()) {
        prop_assume!(end > start + 1);
        // Remove every occurrence of one seq that is not the last.
        let missing = start + 1 + drop.index((end - start - 1) as usize) as u64;
        let mut t = tracker(start);
        let mut saw_gap = false;
        for s in seqs.into_iter().filter(|&s| s != missing) {
            if let Accept::Gap { expected, .. } = t.on_event(&event(s)) {
                prop_assert_eq!(expected, Seq(missing));
                saw_gap = true;
                break;
            }
        }
        prop_assert!(saw_gap, "seq {} went missing without a gap report", missing);
    }
}
