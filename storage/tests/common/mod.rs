//! Helpers shared by the storage tests: stores on every engine, entries, channels.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::{ChannelKind, Message, channel_event::Body};
use chorus_storage::engine::memory::MemoryEngine;
use chorus_storage::{EngineKind, NewChannel, NewEntry, RetentionPolicy, Store, StoreConfig};

/// The engines a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Fjall,
    Sled,
}

/// A store and the directory it lives in (kept alive as long as the store).
pub struct TestStore {
    pub store: Store,
    pub dir: tempfile::TempDir,
    pub kind: Kind,
}

pub fn config(kind: Kind, dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.engine = match kind {
        Kind::Sled => EngineKind::Sled,
        _ => EngineKind::Fjall,
    };
    config.engine_cache_bytes = 8 * 1024 * 1024;
    config
}

pub fn open_in(kind: Kind, dir: &Path, tweak: impl FnOnce(&mut StoreConfig)) -> Store {
    let mut config = config(kind, dir);
    tweak(&mut config);
    match kind {
        Kind::Memory => Store::with_engine(Arc::new(MemoryEngine::new()), config),
        _ => Store::open(config).expect("store opens"),
    }
}

pub fn open(kind: Kind) -> TestStore {
    open_with(kind, |_| {})
}

pub fn open_with(kind: Kind, tweak: impl FnOnce(&mut StoreConfig)) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(kind, dir.path(), tweak);
    TestStore { store, dir, kind }
}

impl TestStore {
    /// Closes and reopens the store on the same directory (memory stores cannot reopen).
    pub fn reopen(&mut self) {
        assert_ne!(self.kind, Kind::Memory, "memory stores do not persist");
        self.store.close();
        // The old store holds the directory lock until it is dropped.
        let placeholder = Store::with_engine(
            Arc::new(MemoryEngine::new()),
            config(Kind::Memory, self.dir.path()),
        );
        drop(std::mem::replace(&mut self.store, placeholder));
        self.store = open_in(self.kind, self.dir.path(), |_| {});
    }
}

pub fn cid(s: &str) -> ChannelId {
    ChannelId::new(s).unwrap()
}

pub fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

pub fn message(text: &str) -> Body {
    Body::Message(Message {
        text: text.to_owned(),
        ..Message::default()
    })
}

pub fn entry(author: &str, text: &str, key: Option<&str>) -> NewEntry {
    NewEntry {
        author: Some(uid(author)),
        time_ms: 1_000,
        body: message(text),
        client_msg_id: key.map(str::to_owned),
        withheld: false,
    }
}

pub fn text_of(e: &chorus_storage::LogEntry) -> String {
    match &e.event.body {
        Some(Body::Message(m)) => m.text.clone(),
        other => format!("{other:?}"),
    }
}

pub async fn create(store: &Store, id: &str, owner: &str, members: &[&str]) {
    store
        .create_channel(NewChannel {
            id: cid(id),
            kind: ChannelKind::Group,
            name: id.to_owned(),
            topic: String::new(),
            created_by: uid(owner),
            created_at_ms: 1_000,
            members: members
                .iter()
                .map(|m| (uid(m), chorus_protocol::v1::Role::Member))
                .collect(),
            custom: Bytes::new(),
            retention: RetentionPolicy::default(),
        })
        .await
        .expect("channel created");
}

/// Sets a channel's retention to keeping its newest `n` entries.
pub async fn keep_newest(store: &Store, channel: &ChannelId, n: u64) {
    store
        .update_channel(
            channel,
            chorus_storage::ChannelPatch {
                retention: Some(RetentionPolicy {
                    max_age_ms: 0,
                    max_entries: n,
                }),
                ..chorus_storage::ChannelPatch::default()
            },
        )
        .await
        .expect("retention set");
}

/// Generates one `#[tokio::test]` per engine calling `$body(kind)`.
#[macro_export]
macro_rules! on_every_engine {
    ($($name:ident),+ $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::common::Kind::Memory).await }
            )+
        }
        mod fjall {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::common::Kind::Fjall).await }
            )+
        }
        mod sled {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::common::Kind::Sled).await }
            )+
        }
    };
}

/// A runtime for property tests, which run each case synchronously.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
