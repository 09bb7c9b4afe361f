//! What a node decodes from another node of its cluster: handshake, request and response frames
//! from a QUIC stream cut at input-chosen points. No decoder may panic, and whatever decodes
//! must re-encode to something that decodes to the same value.
#![no_main]

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::{FrameDecoder, decode_frames, encode_frame};
use chorus_protocol::peer::{Hello, HelloReply, Request, Response};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const MAX: usize = 1 << 20;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    for msg in decode_frames::<M>(Bytes::copy_from_slice(data), MAX).flatten() {
        let mut wire = BytesMut::new();
        encode_frame(&msg, &mut wire);
        let again: Vec<M> = decode_frames(wire.freeze(), usize::MAX)
            .collect::<Result<_, _>>()
            .expect("a re-encoded frame decodes");
        assert_eq!(again, vec![msg]);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Hello>(data);
    round_trip::<HelloReply>(data);
    round_trip::<Request>(data);
    round_trip::<Response>(data);

    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut decoder = FrameDecoder::new(MAX);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode::<Request>(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
