//! What the SDK and the load tester decode from a server's WebSocket: frames, fed in pieces as
//! reads deliver them. The decoder may not panic, and nothing it yields may exceed the limit.
#![no_main]

use bytes::BytesMut;
use chorus_protocol::websocket::{MAX_CONTROL_PAYLOAD, WsDecoder, WsIncoming};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, the rest is the stream.
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut decoder = WsDecoder::new(MAX);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(WsIncoming::Message(m))) => assert!(m.len() <= MAX),
                Ok(Some(WsIncoming::Ping(p))) => assert!(p.len() <= MAX_CONTROL_PAYLOAD),
                Ok(Some(WsIncoming::Close { .. })) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
