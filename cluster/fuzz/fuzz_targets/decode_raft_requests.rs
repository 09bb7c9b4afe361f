//! What a node decodes from a Raft request a peer sent: the payload of every kind. No input may
//! panic the decoder.
#![no_main]

use chorus_cluster::consensus::decode_request;
use chorus_protocol::peer::RaftKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let kind = RaftKind::try_from(i32::from(kind % 6)).unwrap_or(RaftKind::Unspecified);
    let _ = decode_request(kind, payload);
});
