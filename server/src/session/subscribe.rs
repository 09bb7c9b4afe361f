//! Subscriptions with gapless recovery: subscribe (registered before the head is read), the
//! replay from the store, the switch to live delivery at the exact seq where the replay ended,
//! unsubscribe, and the resume of `Hello`.

use std::sync::Arc;

use chorus_protocol::codec::encode_event_frame;
use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::{self, ErrorCode, RecoveryFailure, push::Push, reply};
use chorus_storage::{Anchor, LogQuery, ReadError};

use super::Session;
use crate::chat::{Error as ChatError, channel_id};
use crate::hub::{SubState, Subscription, push_frame};

/// Entries read per step of a replay.
const REPLAY_PAGE: usize = 256;

/// What a subscribe decided; the replay runs after its reply is queued.
pub struct ReplayPlan {
    channel: ChannelId,
    sub: Arc<Subscription>,
    from: Seq,
}

/// What a replay does after finding no more entries.
enum ReplayStep {
    /// Switched to live, or the subscription ended elsewhere.
    Stop,
    /// Read again.
    Again,
    /// End the subscription with this reason.
    End(v1::Error),
}

fn read_error(e: ReadError) -> v1::Error {
    ChatError::from(e).into()
}

fn expired_during_replay() -> v1::Error {
    v1::Error::new(
        ErrorCode::NotFound,
        "entries after the cursor expired during the replay; reload the channel (History), then subscribe again",
    )
}

impl Session {
    /// Subscribes to a readable channel from `s.since`, deciding whether the cursor can be
    /// recovered; the caller queues the reply, then runs [`Session::replay`].
    pub(super) async fn subscribe(
        &mut self,
        s: v1::Subscribe,
    ) -> Result<(v1::Subscribed, ReplayPlan), v1::Error> {
        let id = channel_id("channel_id", &s.channel_id)?;
        if let Some(existing) = self.subscriptions.get(&id) {
            if !existing.is_ended() {
                return Err(v1::Error::new(ErrorCode::Conflict, "already subscribed"));
            }
            self.subscriptions.remove(&id);
            metrics::gauge!("chorus_subscriptions").decrement(1.0);
        }
        if self.subscriptions.len() >= self.node.limits().max_subscriptions as usize {
            return Err(v1::Error::new(
                ErrorCode::LimitExceeded,
                "too many subscriptions",
            ));
        }
        self.chat().readable(&id)?;
        // Registered before the head is read: every entry committed after this point reaches
        // the subscription, either through the replay or live.
        let sub = Arc::new(Subscription::replaying(
            self.identity.user.clone(),
            self.outbound.clone(),
        ));
        self.node.hub().subscribe(&id, self.key, sub.clone());
        self.subscriptions.insert(id.clone(), sub.clone());
        metrics::gauge!("chorus_subscriptions").increment(1.0);
        let position = self.node.store().position(&id).map_err(read_error)?;
        let head = position.head;
        let max_replay = u64::from(self.node.limits().max_recovery_entries);
        let (failure, from) = match s.since {
            None => (RecoveryFailure::NoCursor, head),
            Some(c) if c.epoch != position.epoch.get() => (RecoveryFailure::EpochChanged, head),
            Some(c) if c.seq > head.get() => (RecoveryFailure::CursorAhead, head),
            Some(c) if c.seq + 1 < position.first_available.get() => {
                (RecoveryFailure::EntriesExpired, head)
            }
            Some(c) if head.get() - c.seq > max_replay => (RecoveryFailure::TooFarBehind, head),
            Some(c) => (RecoveryFailure::Unspecified, Seq(c.seq)),
        };
        let subscribed = v1::Subscribed {
            channel_id: id.to_string(),
            epoch: position.epoch.get(),
            head_seq: head.get(),
            recovered: failure == RecoveryFailure::Unspecified,
            failure: failure as i32,
            first_available_seq: position.first_available.get(),
            error: None,
        };
        Ok((
            subscribed,
            ReplayPlan {
                channel: id,
                sub,
                from,
            },
        ))
    }

    /// Sends every entry after `plan.from` from the store, then switches the subscription to
    /// live delivery at the exact seq where the replay ended.
    pub(super) async fn replay(&mut self, plan: ReplayPlan) {
        let store = self.node.store().clone();
        let mut cursor = plan.from;
        loop {
            let query = LogQuery {
                anchor: Anchor::After(cursor),
                limit: REPLAY_PAGE,
                thread: None,
            };
            let page = match store.read(&plan.channel, &query) {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(channel = %plan.channel, error = %e, "replay failed");
                    self.end_subscription(&plan.channel, read_error(e));
                    return;
                }
            };
            // Retention removed entries this replay had not sent yet: say so, never skip them.
            if page.position.first_available.get() > cursor.get() + 1 {
                self.end_subscription(&plan.channel, expired_during_replay());
                return;
            }
            for entry in &page.entries {
                if plan.sub.is_ended() {
                    // The user left or was removed meanwhile; the hub has said so.
                    return;
                }
                let frame = encode_event_frame(&entry.event_for(Some(self.identity.user.as_str())));
                if !self.outbound.push_when_room(frame).await {
                    return;
                }
                cursor = entry.seq;
            }
            if page.entries.is_empty() {
                // Under the subscription's lock: an entry committed after this head check is
                // delivered live; one committed before it is read by the next loop turn.
                let next = {
                    let mut state = plan.sub.state.lock().unwrap_or_else(|p| p.into_inner());
                    if *state == SubState::Ended {
                        ReplayStep::Stop
                    } else {
                        match store.position(&plan.channel) {
                            Ok(position) if position.head <= cursor => {
                                *state = SubState::Live { last: cursor };
                                ReplayStep::Stop
                            }
                            Ok(position) if position.first_available.get() > cursor.get() + 1 => {
                                ReplayStep::End(expired_during_replay())
                            }
                            // Entries committed since the read: read again (they are readable).
                            Ok(_) => ReplayStep::Again,
                            Err(e) => ReplayStep::End(read_error(e)),
                        }
                    }
                };
                match next {
                    ReplayStep::Stop => return,
                    ReplayStep::End(e) => {
                        self.end_subscription(&plan.channel, e);
                        return;
                    }
                    ReplayStep::Again => tokio::task::yield_now().await,
                }
            }
        }
    }

    /// Ends a subscription from the node's side, telling the client why.
    fn end_subscription(&mut self, id: &ChannelId, reason: v1::Error) {
        if self.subscriptions.remove(id).is_some() {
            metrics::gauge!("chorus_subscriptions").decrement(1.0);
        }
        self.node.hub().unsubscribe(id, self.key);
        self.outbound
            .push(push_frame(Push::SubscriptionEnded(v1::SubscriptionEnded {
                channel_id: id.to_string(),
                reason: Some(reason),
            })));
    }

    /// Ends a live subscription at the client's request.
    pub(super) fn unsubscribe(&mut self, id: &ChannelId) -> Result<(), v1::Error> {
        let removed = self.subscriptions.remove(id);
        if removed.is_some() {
            metrics::gauge!("chorus_subscriptions").decrement(1.0);
        }
        if removed.is_none_or(|s| s.is_ended()) {
            return Err(v1::Error::new(ErrorCode::NotFound, "not subscribed"));
        }
        self.node.hub().unsubscribe(id, self.key);
        Ok(())
    }

    /// Sends `Welcome` with the outcome of each subscription `Hello.resume` asked for (failures
    /// per channel, in `Welcome`), then their replays.
    pub async fn resume(
        &mut self,
        request_id: u64,
        mut welcome: v1::Welcome,
        subs: Vec<v1::Subscribe>,
    ) {
        let mut plans = Vec::new();
        for s in subs {
            let channel_id = s.channel_id.clone();
            match self.subscribe(s).await {
                Ok((subscribed, plan)) => {
                    welcome.resumed.push(subscribed);
                    plans.push(plan);
                }
                Err(e) => welcome.resumed.push(v1::Subscribed {
                    channel_id,
                    error: Some(e),
                    ..v1::Subscribed::default()
                }),
            }
        }
        self.reply(request_id, reply::Result::Welcome(welcome));
        for plan in plans {
            self.replay(plan).await;
        }
    }
}
