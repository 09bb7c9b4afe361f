//! One connection's subscription to one channel, and where it stands: replaying from the
//! store, live, or ended by the node.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chorus_protocol::ids::{Seq, UserId};

use crate::outbound::Outbound;

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState {
    /// The session is replaying from the store; live entries are left to the replay.
    Replaying,
    /// Live: entries after `last` are pushed as they commit.
    Live {
        /// The last seq delivered.
        last: Seq,
    },
    /// Ended by the node (the user left or was removed); nothing more is delivered.
    Ended,
}

/// One connection's subscription to one channel.
#[derive(Debug)]
pub struct Subscription {
    /// The subscribing user, so that leaving a channel ends their subscriptions.
    pub user: UserId,
    /// The connection's queue.
    pub outbound: Arc<Outbound>,
    /// Replay or live, and what was delivered.
    pub state: Mutex<SubState>,
}

impl Subscription {
    /// A subscription in the replaying state.
    pub fn replaying(user: UserId, outbound: Arc<Outbound>) -> Self {
        Self {
            user,
            outbound,
            state: Mutex::new(SubState::Replaying),
        }
    }

    /// Where it stands now.
    pub fn state(&self) -> SubState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the node ended it.
    pub fn is_ended(&self) -> bool {
        self.state() == SubState::Ended
    }

    /// Marks it ended: nothing more is delivered to it.
    pub fn end(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = SubState::Ended;
    }
}

impl Subscription {
    /// Pushes the event if the subscription is live and has not had it; says whether it did.
    pub(super) fn deliver(&self, seq: Seq, frame: &Bytes) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let SubState::Live { last } = *state
            && seq > last
        {
            *state = SubState::Live { last: seq };
            drop(state);
            return self.outbound.push(frame.clone());
        }
        false
    }
}
