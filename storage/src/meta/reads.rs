//! Read markers and unread counts.

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use prost::Message;

use super::ReadState;
use crate::engine::{Direction, Op};
use crate::error::{ReadError, StoreError};
use crate::keys;
use crate::log::MAX_MENTION_COUNT;
use crate::records::{ChannelRecord, MarkerRecord};
use crate::store::Store;

impl Store {
    /// Moves the user's read marker forward to `seq` (clamped to the head) and returns the read
    /// state. A marker never moves back.
    pub async fn mark_read(
        &self,
        user: &UserId,
        channel: &ChannelId,
        seq: Seq,
        now_ms: u64,
    ) -> Result<ReadState, StoreError> {
        self.advance_read_marker(user, channel, seq, now_ms).await?;
        Ok(self.read_state(user, channel)?)
    }

    /// [`Store::mark_read`] without computing the read state afterwards (a scan of the mention
    /// index). Says whether the marker moved (markers only move forward): a node tells others
    /// (read receipts) only when it did.
    pub async fn advance_read_marker(
        &self,
        user: &UserId,
        channel: &ChannelId,
        seq: Seq,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let inner = &*self.inner;
        let key = keys::marker(user, channel);
        let _g = inner.stripe(&key).lock().await;
        let log = inner.logs.get(channel)?;
        let position = crate::log::position_of(&log);
        let current: MarkerRecord = inner.record(&key)?.unwrap_or_default();
        let target = seq.min(position.head);
        if target.get() > current.seq {
            let ordinal = match log.entry_at(&*inner.engine, target)? {
                Some(e) => e.ordinal,
                // Removed by retention: everything up to there counts as read.
                None => self.removed_ordinal(channel)?,
            };
            let marker = MarkerRecord {
                seq: target.get(),
                ordinal,
                updated_at_ms: now_ms,
            };
            inner
                .commit(vec![Op::Put(key, marker.encode_to_vec())])
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    fn removed_ordinal(&self, channel: &ChannelId) -> Result<u64, ReadError> {
        Ok(self
            .inner
            .record::<ChannelRecord>(&keys::channel(channel))?
            .map_or(0, |r| r.removed_ordinal))
    }

    /// The user's read state in a channel: unread and mention counts without scanning the log.
    pub fn read_state(&self, user: &UserId, channel: &ChannelId) -> Result<ReadState, ReadError> {
        self.read_state_at_least(user, channel, None)
    }

    /// [`Store::read_state`] as if the marker stood at least at `floor`: a marker that is
    /// decided but not written yet (a node writes the markers its users' own posts move in
    /// the background) already counts.
    pub fn read_state_at_least(
        &self,
        user: &UserId,
        channel: &ChannelId,
        floor: Option<Seq>,
    ) -> Result<ReadState, ReadError> {
        let inner = &*self.inner;
        let position = self.position(channel)?;
        let mut marker: MarkerRecord = inner
            .record(&keys::marker(user, channel))?
            .unwrap_or_default();
        if let Some(floor) = floor.map(|f| f.min(position.head))
            && floor.get() > marker.seq
        {
            let log = inner.logs.get(channel)?;
            marker.ordinal = match log.entry_at(&*inner.engine, floor)? {
                Some(e) => e.ordinal,
                None => self.removed_ordinal(channel)?,
            };
            marker.seq = floor.get();
        }
        let prefix = keys::mention_prefix(channel, user.as_str());
        let from = prefix.u64(marker.seq).into_vec();
        let to = keys::mention_prefix(channel, user.as_str())
            .u64(position.head.get())
            .into_vec();
        let mentions = if position.head.get() > marker.seq {
            inner
                .engine
                .scan(
                    std::ops::Bound::Excluded(&from),
                    std::ops::Bound::Included(&to),
                    Direction::Forward,
                    MAX_MENTION_COUNT,
                )?
                .len() as u64
        } else {
            0
        };
        Ok(ReadState {
            last_read: Seq(marker.seq),
            unread: position.message_count.saturating_sub(marker.ordinal),
            mentions,
            head: position.head,
            updated_at_ms: marker.updated_at_ms,
        })
    }

    /// Forgets the user's read marker in a channel (erasure).
    pub async fn forget_read_marker(
        &self,
        user: &UserId,
        channel: &ChannelId,
    ) -> Result<(), StoreError> {
        self.inner
            .commit(vec![Op::Delete(keys::marker(user, channel))])
            .await
    }
}
