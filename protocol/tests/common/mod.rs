//! Reflection over the chorus.v1 schema for tests: random messages of any type built from the
//! descriptors, so that every message, field and oneof variant is exercised without a hand-written
//! strategy per type, and new fields are covered as soon as they are added to the `.proto` files.

#![allow(dead_code, clippy::expect_used)]

use std::sync::OnceLock;

use bytes::Bytes;
use proptest::prelude::*;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, OneofDescriptor,
    Value,
};

/// The schema, decoded once from the descriptor set the build script saved.
pub(crate) fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(chorus_protocol::FILE_DESCRIPTOR_SET)
            .expect("the build script's descriptor set decodes")
    })
}

/// The descriptor of a chorus.v1 message by its short name, e.g. `"ClientEnvelope"`.
pub(crate) fn message(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(&format!("chorus.v1.{name}"))
        .unwrap_or_else(|| panic!("chorus.v1.{name} is in the schema"))
}

/// The oneof of `desc` called `name`.
pub(crate) fn oneof(desc: &MessageDescriptor, name: &str) -> OneofDescriptor {
    desc.oneofs()
        .find(|o| o.name() == name)
        .unwrap_or_else(|| panic!("{} has a oneof {name}", desc.full_name()))
}

/// Any message of type `desc`.
pub(crate) fn arb_message(desc: MessageDescriptor) -> BoxedStrategy<DynamicMessage> {
    arb_message_with(desc, None)
}

/// Any message of type `desc`; when `forced` names one of its oneof fields, that field is set.
pub(crate) fn arb_message_with(
    desc: MessageDescriptor,
    forced: Option<FieldDescriptor>,
) -> BoxedStrategy<DynamicMessage> {
    let mut parts: Vec<BoxedStrategy<Vec<(FieldDescriptor, Value)>>> = Vec::new();
    for field in desc.fields() {
        let real_oneof = field.containing_oneof().filter(|o| !o.is_synthetic());
        if real_oneof.is_some() {
            continue;
        }
        let f = field.clone();
        let strategy = if field.is_list() {
            prop::collection::vec(arb_value(&field), 0..3)
                .prop_map(move |vs| vec![(f.clone(), Value::List(vs))])
                .boxed()
        } else {
            prop::option::weighted(0.7, arb_value(&field))
                .prop_map(move |v| v.map(|v| (f.clone(), v)).into_iter().collect())
                .boxed()
        };
        parts.push(strategy);
    }
    for oneof in desc.oneofs().filter(|o| !o.is_synthetic()) {
        let fields: Vec<FieldDescriptor> = match &forced {
            Some(f) if f.containing_oneof().as_ref() == Some(&oneof) => vec![f.clone()],
            _ => oneof.fields().collect(),
        };
        let mut choices: Vec<BoxedStrategy<Vec<(FieldDescriptor, Value)>>> = fields
            .into_iter()
            .map(|f| {
                let fd = f.clone();
                arb_value(&f)
                    .prop_map(move |v| vec![(fd.clone(), v)])
                    .boxed()
            })
            .collect();
        if forced.is_none() {
            choices.push(Just(Vec::new()).boxed());
        }
        parts.push(proptest::strategy::Union::new(choices).boxed());
    }
    parts
        .prop_map(move |sets| {
            let mut msg = DynamicMessage::new(desc.clone());
            for (field, value) in sets.into_iter().flatten() {
                msg.set_field(&field, value);
            }
            msg
        })
        .boxed()
}

fn arb_value(field: &FieldDescriptor) -> BoxedStrategy<Value> {
    match field.kind() {
        Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Kind::Uint32 => prop_oneof![0u32..300, any::<u32>()]
            .prop_map(Value::U32)
            .boxed(),
        Kind::Uint64 => prop_oneof![0u64..300, any::<u64>()]
            .prop_map(Value::U64)
            .boxed(),
        Kind::Int32 => any::<i32>().prop_map(Value::I32).boxed(),
        Kind::Int64 => any::<i64>().prop_map(Value::I64).boxed(),
        Kind::String => ".{0,12}".prop_map(Value::String).boxed(),
        Kind::Bytes => prop::collection::vec(any::<u8>(), 0..16)
            .prop_map(|b| Value::Bytes(Bytes::from(b)))
            .boxed(),
        Kind::Enum(e) => {
            let known: Vec<i32> = e.values().map(|v| v.number()).collect();
            // Unknown values must survive a round trip: newer peers may send them.
            prop_oneof![4 => prop::sample::select(known), 1 => 100i32..200]
                .prop_map(Value::EnumNumber)
                .boxed()
        }
        Kind::Message(m) => arb_message(m).prop_map(Value::Message).boxed(),
        other => panic!("the chorus.v1 schema does not use {other:?}; add a strategy"),
    }
}
