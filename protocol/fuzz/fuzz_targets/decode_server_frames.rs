//! What a client (the SDK, the load tester) decodes from a server: server envelopes from one
//! WebSocket message. The decoder may not panic, and whatever decodes must round-trip.
#![no_main]

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::{decode_frames, encode_frame};
use chorus_protocol::v1::ServerEnvelope;
use libfuzzer_sys::fuzz_target;

const MAX: usize = chorus_protocol::limits::MAX_SERVER_FRAME_BYTES as usize;

fuzz_target!(|data: &[u8]| {
    for msg in decode_frames::<ServerEnvelope>(Bytes::copy_from_slice(data), MAX).flatten() {
        let mut wire = BytesMut::new();
        encode_frame(&msg, &mut wire);
        let again: Vec<ServerEnvelope> = decode_frames(wire.freeze(), usize::MAX)
            .collect::<Result<_, _>>()
            .expect("a re-encoded envelope decodes");
        assert_eq!(again, vec![msg]);
    }
});
