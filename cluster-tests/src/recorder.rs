//! The workload recorder: real SDK clients publish and subscribe, and every operation's invoke
//! and outcome and every entry a subscriber received go into one [`History`] for the checkers.
//!
//! Clients run inside the namespace: [`crate::netns::Netns::spawn`] gives a thread there, and the
//! recorder's futures run on a runtime built in that thread.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chorus_client::proto;
use chorus_client::{ChannelId, Client, EntryBody, Error, Event, Events};

use crate::history::{Delivery, Entry, History, Op, Outcome};

/// Collects what every client did and saw during one run.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    deliveries: Mutex<Vec<Delivery>>,
    resets: Mutex<usize>,
}

/// How a subscriber's recording ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// [`Event::Closed`] or the stream ended.
    Closed(String),
    /// [`Event::SubscriptionEnded`] for one of its channels.
    SubscriptionEnded(String),
}

/// The history's form of a log entry: messages by their `client_msg_id`; entries the server
/// made itself (channel created, members added) by their seq, which keeps keys unique so that
/// the duplicate checker only speaks of publishes.
pub fn entry_of(e: &chorus_client::Entry) -> Entry {
    let key = match &e.body {
        EntryBody::Message(m) if !m.client_msg_id.is_empty() => m.client_msg_id.clone(),
        _ => format!("~{}", e.seq.get()),
    };
    Entry {
        channel: e.channel.to_string(),
        epoch: e.epoch.get(),
        seq: e.seq.get(),
        key,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            deliveries: Mutex::new(Vec::new()),
            resets: Mutex::new(0),
        })
    }

    /// Milliseconds since the run started (the history's clock).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Publishes one message with `key` as its `client_msg_id` through `client` (connected to
    /// `node`) and records it as one operation: each attempt waits up to `attempt`, a timed-out
    /// attempt is retried with the same key (the server answers a retry of a stored message
    /// with the original seq) until `give_up` has passed since the first, and the operation's
    /// invoke time is the first attempt's, so a retry that lands cannot look later than it is.
    pub async fn publish(
        &self,
        node: usize,
        client: &Client,
        channel: &ChannelId,
        key: &str,
        attempt: Duration,
        give_up: Duration,
    ) -> Outcome {
        let invoked_ms = self.now_ms();
        let first = Instant::now();
        // Whether some attempt may have taken effect (timed out, or lost its connection).
        let mut uncertain = false;
        let outcome = loop {
            let message = proto::Message {
                text: key.to_owned(),
                client_msg_id: key.to_owned(),
                ..Default::default()
            };
            let ended_early =
                match tokio::time::timeout(attempt, client.publish(channel, message)).await {
                    Ok(Ok(p)) => {
                        break Outcome::Ok {
                            epoch: p.epoch.get(),
                            seq: p.seq.get(),
                        };
                    }
                    Ok(Err(Error::Server(e))) if !e.is_retryable() => {
                        if uncertain {
                            // An earlier attempt may have been stored; this refusal says nothing
                            // of it.
                            break Outcome::Timeout;
                        }
                        break Outcome::Fail(e.to_string());
                    }
                    Ok(Err(Error::Server(e))) => Some(e.to_string()),
                    Ok(Err(e)) => {
                        uncertain = true;
                        Some(e.to_string())
                    }
                    Err(_) => {
                        uncertain = true;
                        None
                    }
                };
            if first.elapsed() >= give_up {
                break match ended_early {
                    Some(e) if !uncertain => Outcome::Fail(e),
                    _ => Outcome::Timeout,
                };
            }
            // An attempt that ended early waits a little before the next (one that timed out
            // has waited already).
            if ended_early.is_some() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        lock(&self.ops).push(Op {
            node,
            channel: channel.to_string(),
            key: key.to_owned(),
            invoked_ms,
            completed_ms: self.now_ms(),
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Records every entry `events` brings as subscriber `subscriber`'s deliveries until the
    /// stream ends or `stop` resolves. A [`Event::Reload`] marks the next entry of its channel
    /// as coming after a reset.
    pub async fn subscriber(
        &self,
        subscriber: usize,
        mut events: Events,
        stop: impl std::future::Future<Output = ()>,
    ) -> Ended {
        let mut reset: std::collections::HashSet<String> = std::collections::HashSet::new();
        tokio::pin!(stop);
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                () = &mut stop => return Ended::Closed("stopped".into()),
            };
            match event {
                None => return Ended::Closed("stream ended".into()),
                Some(Event::Entry(e)) => {
                    let entry = entry_of(&e);
                    let after_reset = reset.remove(&entry.channel);
                    lock(&self.deliveries).push(Delivery {
                        subscriber,
                        entry,
                        after_reset,
                    });
                }
                Some(Event::Reload { channel, .. }) => {
                    *lock(&self.resets) += 1;
                    reset.insert(channel.to_string());
                }
                Some(Event::SubscriptionEnded { channel, reason }) => {
                    return Ended::SubscriptionEnded(format!("{channel}: {reason:?}"));
                }
                Some(Event::Closed { reason, .. }) => return Ended::Closed(reason),
                Some(_) => {}
            }
        }
    }

    /// How many `Reload`s the subscribers got (a single node that restarts should cause none).
    pub fn resets(&self) -> usize {
        *lock(&self.resets)
    }

    /// The highest seq subscriber `subscriber` got in `channel`.
    pub fn delivered_up_to(&self, subscriber: usize, channel: &ChannelId) -> Option<u64> {
        let channel = channel.to_string();
        lock(&self.deliveries)
            .iter()
            .filter(|d| d.subscriber == subscriber && d.entry.channel == channel)
            .map(|d| d.entry.seq)
            .max()
    }

    /// The history so far, with `logs` as the replicas' final logs.
    pub fn history(&self, logs: Vec<Vec<Entry>>) -> History {
        History {
            ops: lock(&self.ops).clone(),
            deliveries: lock(&self.deliveries).clone(),
            logs,
            rss: Vec::new(),
        }
    }
}

/// The whole log of `channel` as `client`'s node holds it, read in pages from the start.
pub async fn read_log(client: &Client, channel: &ChannelId) -> Result<Vec<Entry>, Error> {
    let mut log = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .history(proto::History {
                channel_id: channel.to_string(),
                anchor: Some(proto::history::Anchor::AfterSeq(after)),
                limit: 0,
                thread_parent_seq: 0,
            })
            .await?;
        let Some(last) = page.entries.last() else {
            return Ok(log);
        };
        after = last.seq.get();
        log.extend(page.entries.iter().map(entry_of));
        if !page.has_more_after {
            return Ok(log);
        }
    }
}
