//! Read markers moved by a user's own posts.
//!
//! Posting means having read the channel, so a post moves its author's read marker. Writing
//! that marker once per post doubled the durable writes of every publish (and took a stripe
//! lock and two reads); a chatty user needs only the last one. Markers are collected per (user,
//! channel) and written at most once per [`FLUSH_EVERY`]: the author's unread count may show
//! their own latest posts for up to that long, and a crash can lose that last second of
//! own-post markers (never a message, and never a marker the user set with `MarkRead`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_storage::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_ms;

/// The longest an own-post marker waits to be written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Markers written together before the flush yields to other tasks.
const FLUSH_SLICE: usize = 64;

/// Own-post markers waiting to be written. Holds at most one entry per (user, channel) that
/// was posted to since the last flush.
#[derive(Debug, Default)]
pub struct OwnReads {
    pending: Mutex<HashMap<(UserId, ChannelId), Seq>>,
    wake: Notify,
    stop: CancellationToken,
}

impl OwnReads {
    /// Notes that `user` posted `seq` in `channel`.
    pub fn note(&self, user: UserId, channel: ChannelId, seq: Seq) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let slot = pending.entry((user, channel)).or_insert(seq);
        *slot = (*slot).max(seq);
        drop(pending);
        self.wake.notify_one();
    }

    /// The marker `user`'s own posts in `channel` moved and that is not written yet: readers of
    /// the read state count it, so that one's own messages never show as unread.
    pub fn pending(&self, user: &UserId, channel: &ChannelId) -> Option<Seq> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() {
            return None;
        }
        pending.get(&(user.clone(), channel.clone())).copied()
    }

    /// Writes the markers until [`OwnReads::stop`], then writes what is left and returns.
    pub async fn run(&self, store: Store) {
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = self.stop.cancelled() => break,
            }
            self.flush(&store).await;
            tokio::select! {
                () = tokio::time::sleep(FLUSH_EVERY) => {}
                () = self.stop.cancelled() => break,
            }
        }
        self.flush(&store).await;
    }

    /// Ends [`OwnReads::run`] after a last flush (shutdown).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    async fn flush(&self, store: &Store) {
        // Copied, not taken: an entry stays visible to [`OwnReads::pending`] until its marker
        // is written, and is removed then unless a newer post raised it meanwhile.
        let batch: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if batch.is_empty() {
            return;
        }
        let now = unix_ms();
        // In slices, yielding between them: thousands of markers at once would hold a worker
        // for tens of milliseconds and show up in every connection's latency.
        for slice in batch.chunks(FLUSH_SLICE) {
            let writes = slice
                .iter()
                .map(|((user, channel), seq)| store.advance_read_marker(user, channel, *seq, now));
            let results = futures_util::future::join_all(writes).await;
            {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                for ((key, seq), result) in slice.iter().zip(results) {
                    match result {
                        Ok(_) => {
                            if pending.get(key) == Some(seq) {
                                pending.remove(key);
                            }
                        }
                        // A deleted channel: the marker no longer matters.
                        Err(chorus_storage::StoreError::ChannelNotFound(_)) => {
                            pending.remove(key);
                        }
                        // A read-only or full store: kept (counts still include it) and
                        // tried again at the next flush.
                        Err(e) => {
                            tracing::debug!(error = %e, "own-post read marker not written yet");
                        }
                    }
                }
            }
            tokio::task::yield_now().await;
        }
    }

    #[cfg(test)]
    fn pending_all(&self) -> HashMap<(UserId, ChannelId), Seq> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;

    fn ids() -> (UserId, ChannelId) {
        (
            UserId::new("alice").unwrap(),
            ChannelId::new("room").unwrap(),
        )
    }

    #[test]
    fn keeps_the_highest_seq_per_user_and_channel() {
        let reads = OwnReads::default();
        let (user, channel) = ids();
        for seq in [3, 7, 5] {
            reads.note(user.clone(), channel.clone(), Seq(seq));
        }
        assert_eq!(reads.pending_all().get(&(user, channel)), Some(&Seq(7)));
    }

    // Real time, not paused: the store commits on its own threads, and paused time would jump
    // ahead while a flush waits for them. The timing asserted is one-sided (a marker cannot be
    // written sooner than a second after the previous flush), so a slow machine cannot fail it.
    #[tokio::test]
    async fn writes_at_most_once_a_second_and_everything_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_engine(
            Arc::new(chorus_storage::engine::memory::MemoryEngine::default()),
            chorus_storage::StoreConfig::new(dir.path()),
        );
        let (user, channel) = ids();
        store
            .create_channel(chorus_storage::NewChannel {
                id: channel.clone(),
                kind: chorus_protocol::v1::ChannelKind::Group,
                name: String::new(),
                topic: String::new(),
                created_by: user.clone(),
                created_at_ms: 1,
                members: vec![],
                custom: bytes::Bytes::new(),
                retention: Default::default(),
            })
            .await
            .unwrap();
        let reads = Arc::new(OwnReads::default());
        let runner = tokio::spawn({
            let (reads, store) = (reads.clone(), store.clone());
            async move { reads.run(store).await }
        });
        let post = |n: u64| {
            let (store, channel, user) = (store.clone(), channel.clone(), user.clone());
            async move {
                let entry = chorus_storage::NewEntry {
                    author: Some(user),
                    time_ms: n,
                    body: chorus_protocol::v1::channel_event::Body::Message(
                        chorus_protocol::v1::Message {
                            text: format!("m{n}"),
                            ..Default::default()
                        },
                    ),
                    client_msg_id: None,
                    withheld: false,
                };
                store.append(&channel, entry).await.unwrap().entry.seq
            }
        };
        let marker = || store.read_state(&user, &channel).unwrap().last_read.get();
        let until = |want: u64| {
            let marker = &marker;
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while marker() != want {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "marker never reached {want}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };

        let first = post(1).await;
        reads.note(user.clone(), channel.clone(), first);
        until(first.get()).await;

        let second = post(2).await;
        reads.note(user.clone(), channel.clone(), second);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            marker(),
            first.get(),
            "no sooner than a second after the last flush"
        );
        until(second.get()).await;

        let third = post(3).await;
        reads.note(user.clone(), channel.clone(), third);
        reads.stop();
        runner.await.unwrap();
        assert_eq!(marker(), third.get(), "stop writes what is left");
    }
}
