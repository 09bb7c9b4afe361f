//! A connection's outbound queue: encoded frames waiting for the socket, with a byte budget.
//! Transport control bytes (a WebSocket pong or close reply) queue in the same order.
//!
//! The hub pushes without ever waiting: a push that would take the queue over its budget marks
//! the connection as a slow consumer instead, and the writer closes it with `SLOW_CONSUMER` (the
//! client resumes from the log, so nothing is lost). The writer takes every queued frame at once
//! and sends them in as few socket writes as it can.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use chorus_protocol::v1::CloseCode;
use tokio::sync::Notify;

/// Why and how a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The close code.
    pub code: CloseCode,
    /// Human-readable detail.
    pub reason: String,
    /// Advised reconnect delay, ms.
    pub reconnect_after_ms: u32,
}

/// What waits in the queue.
#[derive(Debug)]
enum Item {
    /// An encoded protocol frame; frames may share one transport message.
    Frame(Bytes),
    /// Bytes the transport wrote itself (a WebSocket control frame): sent as they are, alone.
    Raw(Bytes),
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Frame(b) | Item::Raw(b) => b.len(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Item>,
    bytes: usize,
    close: Option<Close>,
}

/// The queue; shared by the connection's tasks and the hub.
#[derive(Debug)]
pub struct Outbound {
    state: Mutex<State>,
    /// Wakes the writer: frames or a close arrived.
    ready: Notify,
    /// Wakes producers waiting for room (replays).
    drained: Notify,
    /// Wakes whoever waits for the close (the reader).
    closed: Notify,
    budget: usize,
}

/// What the writer takes from the queue.
#[derive(Debug)]
pub enum Batch {
    /// Frames, concatenated: one WebSocket message.
    Frames(Bytes),
    /// Transport bytes queued with [`Outbound::push_raw`], to write unchanged.
    Raw(Bytes),
    /// Everything before it was taken; close now.
    Close(Close),
}

impl Outbound {
    /// A queue holding at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            drained: Notify::new(),
            closed: Notify::new(),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame without waiting. Over budget, the connection is closed as a slow
    /// consumer instead and `false` is returned. Frames after a close are dropped.
    pub fn push(&self, frame: Bytes) -> bool {
        self.push_item(Item::Frame(frame))
    }

    /// Queues bytes the transport itself must write, unchanged and in order with the frames
    /// (a WebSocket pong or close reply). The same budget applies: a peer that sends pings and
    /// never reads is closed as a slow consumer like any other.
    pub fn push_raw(&self, bytes: Bytes) -> bool {
        self.push_item(Item::Raw(bytes))
    }

    fn push_item(&self, frame: Item) -> bool {
        let mut state = self.lock();
        if state.close.is_some() {
            return false;
        }
        if state.bytes + frame.len() > self.budget {
            state.close = Some(Close {
                code: CloseCode::SlowConsumer,
                reason: format!("outbound queue over {} bytes", self.budget),
                reconnect_after_ms: 0,
            });
            drop(state);
            self.ready.notify_one();
            self.drained.notify_waiters();
            self.closed.notify_waiters();
            return false;
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Queues a frame, first waiting until the queue is at most half full: for producers that
    /// can wait (history replays), so that they do not trip the slow-consumer limit.
    pub async fn push_when_room(&self, frame: Bytes) -> bool {
        loop {
            let drained = self.drained.notified();
            {
                let state = self.lock();
                if state.close.is_some() {
                    return false;
                }
                if state.bytes <= self.budget / 2 {
                    break;
                }
            }
            drained.await;
        }
        self.push(frame)
    }

    /// Asks the writer to close the connection after the frames already queued.
    pub fn close(&self, close: Close) {
        let mut state = self.lock();
        state.close.get_or_insert(close);
        drop(state);
        self.ready.notify_one();
        self.drained.notify_waiters();
        self.closed.notify_waiters();
    }

    /// Waits until a close is requested.
    pub async fn wait_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.is_closing() {
                return;
            }
            closed.await;
        }
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// Waits for work and takes it: queued frames (up to about `max_bytes`, at least one frame),
    /// or the close once no frames are left.
    pub async fn next(&self, max_bytes: usize) -> Batch {
        loop {
            let ready = self.ready.notified();
            if let Some(batch) = self.take(max_bytes) {
                return batch;
            }
            ready.await;
        }
    }

    fn take(&self, max_bytes: usize) -> Option<Batch> {
        let mut state = self.lock();
        if let Some(close) = &state.close
            && (state.frames.is_empty() || close.code == CloseCode::SlowConsumer)
        {
            // A slow consumer is closed at once: its queue is what it could not read.
            return Some(Batch::Close(close.clone()));
        }
        let first = match state.frames.pop_front()? {
            Item::Raw(raw) => {
                state.bytes -= raw.len();
                drop(state);
                self.drained.notify_waiters();
                return Some(Batch::Raw(raw));
            }
            Item::Frame(first) => first,
        };
        let mut taken = first.len();
        let joins =
            |f: &Item, taken: usize| matches!(f, Item::Frame(f) if taken + f.len() <= max_bytes);
        let batch = if state.frames.front().is_none_or(|f| !joins(f, taken)) {
            first
        } else {
            let mut buf = BytesMut::with_capacity(max_bytes.min(state.bytes));
            buf.extend_from_slice(&first);
            while state.frames.front().is_some_and(|f| joins(f, taken)) {
                if let Some(Item::Frame(f)) = state.frames.pop_front() {
                    taken += f.len();
                    buf.extend_from_slice(&f);
                }
            }
            buf.freeze()
        };
        state.bytes -= taken;
        drop(state);
        self.drained.notify_waiters();
        Some(Batch::Frames(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_batched_up_to_the_limit() {
        let q = Outbound::new(1000);
        for i in 0..5u8 {
            assert!(q.push(Bytes::from(vec![i; 100])));
        }
        let Batch::Frames(b) = q.next(250).await else {
            panic!()
        };
        assert_eq!(b.len(), 200);
        let Batch::Frames(b) = q.next(10_000).await else {
            panic!()
        };
        assert_eq!(b.len(), 300);
    }

    #[tokio::test]
    async fn raw_bytes_go_alone_and_in_order() {
        let q = Outbound::new(1000);
        q.push(Bytes::from_static(b"a"));
        q.push(Bytes::from_static(b"b"));
        q.push_raw(Bytes::from_static(b"pong"));
        q.push(Bytes::from_static(b"c"));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(match q.next(10_000).await {
                Batch::Frames(b) => format!("frames {}", String::from_utf8_lossy(&b)),
                Batch::Raw(b) => format!("raw {}", String::from_utf8_lossy(&b)),
                Batch::Close(c) => format!("close {c:?}"),
            });
        }
        assert_eq!(got, ["frames ab", "raw pong", "frames c"]);
        assert!(q.lock().frames.is_empty());
        assert_eq!(q.lock().bytes, 0);
    }

    #[tokio::test]
    async fn over_budget_closes_as_slow_consumer() {
        let q = Outbound::new(250);
        assert!(q.push(Bytes::from(vec![0; 200])));
        assert!(!q.push(Bytes::from(vec![0; 100])));
        let Batch::Close(c) = q.next(10_000).await else {
            panic!()
        };
        assert_eq!(c.code, CloseCode::SlowConsumer);
        assert!(!q.push(Bytes::from_static(b"x")));
    }

    #[tokio::test]
    async fn a_normal_close_comes_after_the_queued_frames() {
        let q = Outbound::new(1000);
        q.push(Bytes::from_static(b"abc"));
        q.close(Close {
            code: CloseCode::GoingAway,
            reason: "bye".into(),
            reconnect_after_ms: 0,
        });
        assert!(matches!(q.next(10).await, Batch::Frames(_)));
        assert!(matches!(q.next(10).await, Batch::Close(_)));
    }
}
