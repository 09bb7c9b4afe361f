//! What a node decodes from every peer: client envelopes from a WebSocket message and from a QUIC
//! stream cut at input-chosen points. Neither decoder may panic, and whatever decodes must
//! re-encode to something that decodes to the same value.
#![no_main]

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::{FrameDecoder, decode_frames, encode_frame};
use chorus_protocol::v1::ClientEnvelope;
use libfuzzer_sys::fuzz_target;

const MAX: usize = chorus_protocol::limits::DEFAULT_MAX_FRAME_BYTES as usize;

fuzz_target!(|data: &[u8]| {
    for msg in decode_frames::<ClientEnvelope>(Bytes::copy_from_slice(data), MAX).flatten() {
        let mut wire = BytesMut::new();
        encode_frame(&msg, &mut wire);
        let again: Vec<ClientEnvelope> = decode_frames(wire.freeze(), usize::MAX)
            .collect::<Result<_, _>>()
            .expect("a re-encoded envelope decodes");
        assert_eq!(again, vec![msg]);
    }

    // The first byte picks the fragment size for the stream decoder.
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut decoder = FrameDecoder::new(MAX);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode::<ClientEnvelope>(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
