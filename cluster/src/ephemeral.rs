//! Ephemeral broadcasts: small messages (typing, presence) disseminated by piggybacking on SWIM
//! packets. Best effort, never used for anything that must arrive.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::id::NodeId;

/// The largest broadcast payload.
pub const MAX_BROADCAST_BYTES: usize = 512;
/// The longest topic.
pub const MAX_TOPIC_BYTES: usize = 64;
/// (origin, topic) pairs remembered to drop repeats; the oldest are forgotten first.
const MAX_SEEN: usize = 4096;

/// One broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ephemeral {
    /// The node that sent it.
    pub origin: NodeId,
    /// What it is about; a newer broadcast on a topic replaces an older one in flight.
    pub topic: String,
    /// Per origin, increasing.
    pub seq: u64,
    /// Its content.
    pub payload: Vec<u8>,
}

/// What foca keeps per broadcast to know when a newer one replaces it.
pub(crate) struct Key {
    origin: NodeId,
    topic: String,
    seq: u64,
}

impl foca::Invalidates for Key {
    fn invalidates(&self, other: &Self) -> bool {
        self.origin == other.origin && self.topic == other.topic && self.seq >= other.seq
    }
}

/// Why a received broadcast was not taken.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// It did not decode.
    #[error("undecodable broadcast: {0}")]
    Decode(String),
    /// It is larger than the limits.
    #[error("broadcast over the size limits")]
    TooLarge,
}

/// foca's broadcast handler: decodes, drops what it has seen, hands new ones to subscribers.
pub(crate) struct Handler {
    me: NodeId,
    seen: HashMap<(NodeId, String), u64>,
    order: VecDeque<(NodeId, String)>,
    out: broadcast::Sender<Ephemeral>,
}

impl Handler {
    pub(crate) fn new(me: NodeId, out: broadcast::Sender<Ephemeral>) -> Self {
        Self {
            me,
            seen: HashMap::new(),
            order: VecDeque::new(),
            out,
        }
    }
}

impl<T> foca::BroadcastHandler<T> for Handler {
    type Key = Key;
    type Error = BroadcastError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&T>,
    ) -> Result<Option<Key>, BroadcastError> {
        let b: Ephemeral =
            postcard::from_bytes(data).map_err(|e| BroadcastError::Decode(e.to_string()))?;
        if b.payload.len() > MAX_BROADCAST_BYTES || b.topic.len() > MAX_TOPIC_BYTES {
            return Err(BroadcastError::TooLarge);
        }
        let key = (b.origin.clone(), b.topic.clone());
        match self.seen.get_mut(&key) {
            Some(last) if *last >= b.seq => return Ok(None),
            Some(last) => *last = b.seq,
            None => {
                if self.seen.len() >= MAX_SEEN
                    && let Some(old) = self.order.pop_front()
                {
                    self.seen.remove(&old);
                }
                self.seen.insert(key.clone(), b.seq);
                self.order.push_back(key);
            }
        }
        let k = Key {
            origin: b.origin.clone(),
            topic: b.topic.clone(),
            seq: b.seq,
        };
        if b.origin != self.me {
            // No subscriber is fine: broadcasts are best effort.
            let _ = self.out.send(b);
        }
        Ok(Some(k))
    }
}

/// Encodes a broadcast for foca.
pub(crate) fn encode(b: &Ephemeral) -> Result<Vec<u8>, BroadcastError> {
    postcard::to_allocvec(b).map_err(|e| BroadcastError::Decode(e.to_string()))
}
