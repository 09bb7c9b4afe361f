//! Frames and batches: any envelope sequence survives batching and arbitrary fragmentation, and
//! malformed input of every kind yields a typed error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on failure by design.

mod common;

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::{
    FrameDecoder, decode_frames, encode_event_frame, encode_frame, encode_frame_to_bytes,
    split_frames,
};
use chorus_protocol::v1::{ChannelEvent, ClientEnvelope, ServerEnvelope, push};
use chorus_protocol::{DecodeError, limits};
use proptest::prelude::*;
use prost::Message;

use common::{arb_message, message};

const MAX: usize = limits::MAX_SERVER_FRAME_BYTES as usize;

fn arb_server_envelope() -> impl Strategy<Value = ServerEnvelope> {
    arb_message(message("ServerEnvelope"))
        .prop_map(|d| ServerEnvelope::decode(d.encode_to_vec().as_slice()).unwrap())
}

fn arb_client_envelope() -> impl Strategy<Value = ClientEnvelope> {
    arb_message(message("ClientEnvelope"))
        .prop_map(|d| ClientEnvelope::decode(d.encode_to_vec().as_slice()).unwrap())
}

fn arb_channel_event() -> impl Strategy<Value = ChannelEvent> {
    arb_message(message("ChannelEvent"))
        .prop_map(|d| ChannelEvent::decode(d.encode_to_vec().as_slice()).unwrap())
}

fn encode_all<M: Message>(msgs: &[M]) -> Bytes {
    let mut buf = BytesMut::new();
    for m in msgs {
        encode_frame(m, &mut buf);
    }
    buf.freeze()
}

/// Feeds `wire` to a streaming decoder in pieces cut at `cuts` and collects what it yields.
fn stream_decode<M: Message + Default>(wire: &[u8], cuts: &[usize]) -> Vec<M> {
    let mut decoder = FrameDecoder::new(MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(wire.len());
    for end in bounds {
        buf.extend_from_slice(&wire[start..end]);
        start = end;
        while let Some(msg) = decoder.decode(&mut buf).expect("valid input decodes") {
            out.push(msg);
        }
    }
    assert!(buf.is_empty(), "bytes left over after the last frame");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn server_batches_survive_any_fragmentation(
        msgs in prop::collection::vec(arb_server_envelope(), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let wire = encode_all(&msgs);
        prop_assert_eq!(&stream_decode::<ServerEnvelope>(&wire, &cuts), &msgs);
        let whole: Vec<ServerEnvelope> = decode_frames(wire, MAX).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(whole, msgs);
    }

    #[test]
    fn an_event_frame_is_byte_for_byte_the_push_envelope(event in arb_channel_event()) {
        let by_envelope =
            encode_frame_to_bytes(&ServerEnvelope::push(push::Push::Event(event.clone())));
        prop_assert_eq!(encode_event_frame(&event), by_envelope);
    }

    #[test]
    fn client_batches_survive_any_fragmentation(
        msgs in prop::collection::vec(arb_client_envelope(), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let wire = encode_all(&msgs);
        prop_assert_eq!(&stream_decode::<ClientEnvelope>(&wire, &cuts), &msgs);
        let whole: Vec<ClientEnvelope> = decode_frames(wire, MAX).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(whole, msgs);
    }

    /// A WebSocket message cut short yields the whole frames before the cut, then `Truncated`.
    #[test]
    fn cut_batches_are_truncated_not_misread(
        msgs in prop::collection::vec(arb_client_envelope(), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let wire = encode_all(&msgs);
        let cut = cut.index(wire.len());
        let boundaries: Vec<usize> = msgs
            .iter()
            .scan(0, |end, m| { *end += chorus_protocol::codec::frame_len(m); Some(*end) })
            .collect();
        let results: Vec<_> = decode_frames::<ClientEnvelope>(wire.slice(..cut), MAX).collect();
        let whole_frames = boundaries.iter().filter(|&&b| b <= cut).count();
        if cut == 0 {
            prop_assert!(matches!(results[..], [Err(DecodeError::EmptyMessage)]));
        } else if boundaries.contains(&cut) {
            prop_assert_eq!(results.len(), whole_frames);
            prop_assert!(results.iter().all(Result::is_ok));
        } else {
            prop_assert_eq!(results.len(), whole_frames + 1);
            let is_truncated = matches!(results.last(), Some(Err(DecodeError::Truncated { .. })));
            prop_assert!(is_truncated);
        }
    }

    /// Random bytes never panic either decoder, whatever the limit.
    #[test]
    fn garbage_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        max in prop_oneof![Just(16usize), Just(1024), Just(MAX)],
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let _ = decode_frames::<ClientEnvelope>(Bytes::from(bytes.clone()), max).count();
        let _ = decode_frames::<ServerEnvelope>(Bytes::from(bytes.clone()), max).count();
        let mut decoder = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        let mut start = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        bounds.sort_unstable();
        bounds.push(bytes.len());
        'feed: for end in bounds {
            buf.extend_from_slice(&bytes[start..end]);
            start = end;
            loop {
                match decoder.decode::<ClientEnvelope>(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }

    /// Valid frames with bytes flipped decode or fail with a typed error, never panic.
    #[test]
    fn corrupted_frames_never_panic(
        msg in arb_server_envelope(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut wire = encode_all(std::slice::from_ref(&msg)).to_vec();
        for (at, xor) in flips {
            let i = at.index(wire.len());
            wire[i] ^= xor;
        }
        let _ = decode_frames::<ServerEnvelope>(Bytes::from(wire), MAX).count();
    }
}

fn decode_one(frame: &'static [u8]) -> Result<ClientEnvelope, DecodeError> {
    decode_frames::<ClientEnvelope>(Bytes::from_static(frame), 1024)
        .next()
        .expect("one result")
}

#[test]
fn wrong_wire_types_are_malformed() {
    // request_id (field 1, varint) sent as length-delimited.
    assert!(matches!(
        decode_one(&[0x03, 0x0a, 0x01, 0x00]),
        Err(DecodeError::Malformed(_))
    ));
    // ping (field 12, message) sent as a varint.
    assert!(matches!(
        decode_one(&[0x02, 0x60, 0x01]),
        Err(DecodeError::Malformed(_))
    ));
    // ping claims 5 bytes but the frame holds 1.
    assert!(matches!(
        decode_one(&[0x03, 0x62, 0x05, 0x08]),
        Err(DecodeError::Malformed(_))
    ));
    // hello.token (a string) holding invalid UTF-8.
    assert!(matches!(
        decode_one(&[0x05, 0x52, 0x03, 0x12, 0x01, 0xff]),
        Err(DecodeError::Malformed(_))
    ));
    // Wire type 7 does not exist.
    assert!(matches!(
        decode_one(&[0x02, 0x0f, 0x00]),
        Err(DecodeError::Malformed(_))
    ));
    // A field number of 0 is invalid.
    assert!(matches!(
        decode_one(&[0x02, 0x00, 0x00]),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn unknown_fields_are_skipped() {
    // Versioning policy: a newer peer's fields are ignored. Ping{7} plus field 999 = 5 (varint).
    let env = decode_one(&[0x09, 0x08, 0x07, 0x62, 0x02, 0x08, 0x01, 0xb8, 0x3e, 0x05]).unwrap();
    assert_eq!(env.request_id, 7);
    assert!(env.request.is_some());
}

#[test]
fn oversized_prefix_in_a_batch_stops_the_message() {
    let results: Vec<_> =
        decode_frames::<ClientEnvelope>(Bytes::from_static(&[0xff, 0xff, 0x03]), 1024).collect();
    assert!(matches!(
        results[..],
        [Err(DecodeError::FrameTooLarge { max: 1024, .. })]
    ));
    let results: Vec<_> = split_frames(Bytes::from_static(&[0x80; 11]), usize::MAX).collect();
    assert!(matches!(
        results[..],
        [Err(DecodeError::InvalidLengthPrefix)]
    ));
}
