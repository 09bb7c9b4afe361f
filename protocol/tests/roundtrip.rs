//! Every envelope variant survives encode -> decode -> encode, and the generated Rust types agree
//! byte for byte with a reflection-based encoder working from the `.proto` descriptors alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers panic on failure by design.

mod common;

use std::collections::BTreeSet;
use std::fmt::Debug;

use chorus_protocol::v1::{ClientEnvelope, ServerEnvelope, server_envelope};
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};

use common::{arb_message, arb_message_with, message, oneof, pool};

const CASES_PER_VARIANT: u32 = 24;

/// Decodes the reflection encoding of `dynamic` into the generated type `T` and checks both ways.
fn check<T: Message + Default + PartialEq + Debug>(dynamic: &DynamicMessage) -> T {
    let wire = dynamic.encode_to_vec();
    let typed = T::decode(wire.as_slice()).expect("generated type decodes the reflected encoding");
    let typed_wire = typed.encode_to_vec();
    assert!(
        typed_wire == wire,
        "generated and reflected encodings differ for {}",
        dynamic.to_text_format()
    );
    assert_eq!(T::decode(typed_wire.as_slice()).unwrap(), typed);
    // Fields set to their default are not encoded, so compare against the decoded original.
    let original = DynamicMessage::decode(dynamic.descriptor(), wire.as_slice()).unwrap();
    let back = DynamicMessage::decode(dynamic.descriptor(), typed_wire.as_slice()).unwrap();
    assert!(
        back == original,
        "reflected decode differs: {}",
        back.to_text_format()
    );
    typed
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES_PER_VARIANT,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn every_client_request_round_trips() {
    let envelope = message("ClientEnvelope");
    let requests = oneof(&envelope, "request");
    assert!(requests.fields().len() >= 35);
    for field in requests.fields() {
        let strategy = arb_message_with(envelope.clone(), Some(field.clone()));
        runner()
            .run(&strategy, |dynamic| {
                let typed: ClientEnvelope = check(&dynamic);
                let request = typed.request.expect("the forced variant is set");
                assert_eq!(request.name(), field.name());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("request {}: {e}", field.name()));
    }
}

/// Builds a `ServerEnvelope` strategy whose `kind` is `outer` holding the variant `inner` of the
/// nested message's oneof `inner_oneof`.
fn server_variants(outer: &str, inner_oneof: &str) {
    let envelope = message("ServerEnvelope");
    let outer_field = envelope.get_field_by_name(outer).unwrap();
    let Kind::Message(inner_desc) = outer_field.kind() else {
        panic!("{outer} is a message")
    };
    for field in oneof(&inner_desc, inner_oneof).fields() {
        let strategy = arb_message_with(inner_desc.clone(), Some(field.clone()));
        let (env_desc, outer_field) = (envelope.clone(), outer_field.clone());
        runner()
            .run(&strategy, |inner| {
                let mut dynamic = DynamicMessage::new(env_desc.clone());
                dynamic.set_field(&outer_field, Value::Message(inner));
                let typed: ServerEnvelope = check(&dynamic);
                let name = match typed.kind.expect("kind is set") {
                    server_envelope::Kind::Reply(r) => r.result.expect("result is set").name(),
                    server_envelope::Kind::Push(p) => p.push.expect("push is set").name(),
                };
                assert_eq!(name, field.name());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{outer}.{}: {e}", field.name()));
    }
}

#[test]
fn every_reply_round_trips() {
    server_variants("reply", "result");
}

#[test]
fn every_push_round_trips() {
    server_variants("push", "push");
}

#[test]
fn any_server_envelope_round_trips() {
    let mut runner = runner();
    runner
        .run(&arb_message(message("ServerEnvelope")), |dynamic| {
            check::<ServerEnvelope>(&dynamic);
            Ok(())
        })
        .unwrap();
}

fn reachable(desc: MessageDescriptor, seen: &mut BTreeSet<String>) {
    if !seen.insert(desc.full_name().to_owned()) {
        return;
    }
    for field in desc.fields() {
        if let Kind::Message(m) = field.kind() {
            reachable(m, seen);
        }
    }
}

/// The round trips above start from the two envelopes; this proves that they reach every message
/// of the schema, so that no message type escapes testing.
#[test]
fn envelopes_reach_every_message_of_the_schema() {
    let mut seen = BTreeSet::new();
    reachable(message("ClientEnvelope"), &mut seen);
    reachable(message("ServerEnvelope"), &mut seen);
    let all: BTreeSet<String> = pool()
        .all_messages()
        .filter(|m| m.package_name() == "chorus.v1")
        .map(|m| m.full_name().to_owned())
        .collect();
    let orphans: Vec<_> = all.difference(&seen).collect();
    assert!(
        orphans.is_empty(),
        "messages no envelope can carry: {orphans:?}"
    );
}
