//! Criterion benchmark of encoding a channel event for delivery: once per commit (the hub) and
//! once per replayed entry (catch-up), so its cost is paid for every message a node stores and
//! every entry a reconnecting client is sent.
//!
//! `cargo bench -p chorus-protocol --bench codec`

#![allow(missing_docs)]

// The allocator chorusd uses: what the clone costs depends on it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use chorus_protocol::codec::{encode_event_frame, encode_frame_to_bytes};
use chorus_protocol::v1::{ChannelEvent, Message, ServerEnvelope, channel_event, push};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A chat message as `chorus-loadtest` sends it: 64-byte text, a client message id, a payload.
fn event() -> ChannelEvent {
    ChannelEvent {
        channel_id: "dm-u000123-u000124".into(),
        seq: 48_213,
        epoch: 1,
        server_time_ms: 1_764_400_000_000,
        author_id: "u000123".into(),
        body: Some(channel_event::Body::Message(Message {
            client_msg_id: "123-48213".into(),
            text: "x".repeat(64),
            custom: vec![7; 24].into(),
            ..Default::default()
        })),
    }
}

fn event_frames(c: &mut Criterion) {
    let event = event();
    let mut group = c.benchmark_group("event_frame");
    group.throughput(Throughput::Elements(1));
    group.bench_function("direct", |b| {
        b.iter(|| encode_event_frame(black_box(&event)));
    });
    group.bench_function("envelope_with_clone", |b| {
        b.iter(|| {
            encode_frame_to_bytes(&ServerEnvelope::push(push::Push::Event(
                black_box(&event).clone(),
            )))
        });
    });
    group.finish();
}

criterion_group!(benches, event_frames);
criterion_main!(benches);
