//! Golden vectors (`tests/vectors/`, see its README): the bytes on the wire for known messages,
//! checked with the generated types and with a reflection codec that reads only the `.proto`
//! schema, so that clients in other languages can verify themselves against the same files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on failure by design.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use chorus_protocol::codec::{decode_frames, encode_frame};
use chorus_protocol::limits::MAX_SERVER_FRAME_BYTES;
use chorus_protocol::v1::{ClientEnvelope, ServerEnvelope};
use prost::Message;
use prost_reflect::DynamicMessage;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn names_with(ext: &str) -> BTreeSet<String> {
    std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The messages of a `.txtpb` vector, parsed by reflection.
fn parse_vector(name: &str) -> (String, Vec<DynamicMessage>) {
    let text = std::fs::read_to_string(vectors_dir().join(format!("{name}.txtpb"))).unwrap();
    let type_name = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# proto-message: "))
        .unwrap_or_else(|| panic!("{name}.txtpb must start with a proto-message line"))
        .trim()
        .to_owned();
    let desc = common::pool()
        .get_message_by_name(&type_name)
        .unwrap_or_else(|| panic!("{name}: unknown type {type_name}"));
    let messages = text
        .split("\n---\n")
        .map(|part| {
            DynamicMessage::parse_text_format(desc.clone(), part)
                .unwrap_or_else(|e| panic!("{name}.txtpb does not parse: {e}"))
        })
        .collect();
    (type_name, messages)
}

/// Re-encodes the frames of `wire` through the generated type `M`.
fn typed_round_trip<M: Message + Default>(wire: Bytes) -> (usize, Vec<u8>) {
    let mut out = BytesMut::new();
    let mut count = 0;
    for msg in decode_frames::<M>(wire, MAX_SERVER_FRAME_BYTES as usize) {
        encode_frame(
            &msg.expect("vector decodes with the generated type"),
            &mut out,
        );
        count += 1;
    }
    (count, out.to_vec())
}

#[test]
fn golden_vectors_match_both_codecs() {
    let bless = std::env::var_os("CHORUS_BLESS_VECTORS").is_some();
    let txt = names_with("txtpb");
    assert!(txt.len() >= 10, "the vector set went missing");
    if !bless {
        assert_eq!(
            names_with("hex"),
            txt,
            "every .txtpb needs a .hex and the reverse"
        );
    }
    for name in &txt {
        let (type_name, messages) = parse_vector(name);
        let mut expected = BytesMut::new();
        for m in &messages {
            encode_frame(m, &mut expected);
        }
        let hex_path = vectors_dir().join(format!("{name}.hex"));
        let expected_hex = hex::encode(&expected);
        if bless {
            std::fs::write(&hex_path, format!("{expected_hex}\n")).unwrap();
        }
        let on_disk = std::fs::read_to_string(&hex_path).unwrap();
        assert_eq!(
            on_disk.trim(),
            expected_hex,
            "{name}: .hex differs from the encoded .txtpb"
        );

        let wire = Bytes::from(hex::decode(on_disk.trim()).unwrap());
        let (count, typed) = match type_name.as_str() {
            "chorus.v1.ClientEnvelope" => typed_round_trip::<ClientEnvelope>(wire.clone()),
            "chorus.v1.ServerEnvelope" => typed_round_trip::<ServerEnvelope>(wire.clone()),
            other => panic!("{name}: vectors hold envelopes, not {other}"),
        };
        assert_eq!(count, messages.len(), "{name}: frame count");
        assert_eq!(
            typed,
            wire.to_vec(),
            "{name}: generated types re-encode differently"
        );
    }
}

#[test]
fn the_protocol_doc_example_is_vector_01() {
    let hex = std::fs::read_to_string(vectors_dir().join("01-ping.hex")).unwrap();
    assert_eq!(hex.trim(), "06080762020801");
}
