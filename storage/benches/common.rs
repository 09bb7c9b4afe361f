//! Shared setup for the storage benchmarks: a store on a chosen engine with 1,000 channels.

#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub
)]

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{ChannelKind, Message, channel_event::Body};
use chorus_storage::{EngineKind, NewChannel, NewEntry, RetentionPolicy, Store, StoreConfig};

pub const CHANNELS: usize = 1_000;
pub const PAYLOAD: usize = 200;

pub fn channel(i: usize) -> ChannelId {
    ChannelId::new(format!("bench-{i}")).unwrap()
}

pub fn payload_entry(n: u64) -> NewEntry {
    let mut text = format!("{n:016}");
    text.push_str(&"x".repeat(PAYLOAD - text.len()));
    NewEntry {
        author: Some(UserId::new("bench").unwrap()),
        time_ms: n,
        body: Body::Message(Message {
            text,
            ..Message::default()
        }),
        client_msg_id: None,
        withheld: false,
    }
}

pub fn open(engine: EngineKind, dir: &std::path::Path) -> Store {
    open_with(engine, dir, |_| {})
}

pub fn open_with(
    engine: EngineKind,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut StoreConfig),
) -> Store {
    let mut config = StoreConfig::new(dir);
    config.engine = engine;
    tweak(&mut config);
    Store::open(config).unwrap()
}

pub async fn create_channels(store: &Store) {
    let mut tasks = Vec::new();
    for i in 0..CHANNELS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_channel(NewChannel {
                    id: channel(i),
                    kind: ChannelKind::Group,
                    name: String::new(),
                    topic: String::new(),
                    created_by: UserId::new("bench").unwrap(),
                    created_at_ms: 1,
                    members: Vec::new(),
                    custom: Bytes::new(),
                    retention: RetentionPolicy::default(),
                })
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Appends `total` entries from `appenders` concurrent tasks, spread over the channels.
pub async fn append_concurrently(store: &Store, appenders: usize, total: u64, offset: u64) {
    let per = total.div_ceil(appenders as u64);
    let mut tasks = Vec::new();
    for a in 0..appenders as u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let n = offset + a * per + i;
                let ch = channel((n as usize * 7919) % CHANNELS);
                store.append(&ch, payload_entry(n)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
