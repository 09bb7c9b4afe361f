//! Counts kept beside the records they count, so that limit checks cost one read: a channel's
//! owners (the last owner may not leave) and a user's channels (`max_memberships_per_user`).
//!
//! Both are kept from the moment they are first known: a channel created with this build, or
//! a channel or user counted once by a scan (data from before the counts existed), is marked
//! counted, and every membership change then adjusts its count in the same atomic batch.
//! Every write that changes a membership holds the stripes of the channel and of the user,
//! so a count and the index it counts never disagree.

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::Role;
use prost::Message;

use crate::engine::Op;
use crate::error::StoreError;
use crate::keys;
use crate::records::{ChannelRecord, UserRecord};
use crate::store::{Inner, Store};

/// How a membership change moves the owner count: from `old` role (`None`: not a member) to
/// `new`.
pub(super) fn owner_delta(old: Option<Role>, new: Option<Role>) -> i64 {
    i64::from(new == Some(Role::Owner)) - i64::from(old == Some(Role::Owner))
}

/// Applies `delta` to a kept owner count.
pub(super) fn adjust_owners(record: &mut ChannelRecord, delta: i64) {
    if record.owners_counted {
        record.owner_count = apply(record.owner_count, delta);
    }
}

fn apply(count: u32, delta: i64) -> u32 {
    u32::try_from((i64::from(count) + delta).max(0)).unwrap_or(u32::MAX)
}

impl Inner {
    /// The write that moves `user`'s kept channel count by `delta`, if the count is kept. The
    /// caller holds the user's stripe (`keys::user`).
    pub(super) fn user_count_op(
        &self,
        user: &UserId,
        delta: i64,
    ) -> Result<Option<Op>, StoreError> {
        let key = keys::user(user);
        let Some(mut record) = self.record::<UserRecord>(&key)? else {
            return Ok(None);
        };
        if !record.channels_counted || delta == 0 {
            return Ok(None);
        }
        record.channel_count = apply(record.channel_count, delta);
        Ok(Some(Op::Put(key, record.encode_to_vec())))
    }
}

impl Store {
    /// The channel's owners. Counted by a scan of its members once if the count is not kept
    /// yet (a channel from before the count existed), and kept from then on.
    pub async fn owner_count(&self, channel: &ChannelId) -> Result<u32, StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(channel).lock().await;
        let (ckey, mut record) = inner.channel_record(channel)?;
        if record.owners_counted {
            return Ok(record.owner_count);
        }
        let mut count = 0u32;
        let mut after: Option<UserId> = None;
        loop {
            let page = self.members(channel, after.as_ref(), 1_000)?;
            let Some((last, _)) = page.last().cloned() else {
                break;
            };
            count += page.iter().filter(|(_, m)| m.role() == Role::Owner).count() as u32;
            after = Some(last);
        }
        record.owner_count = count;
        record.owners_counted = true;
        inner
            .commit(vec![Op::Put(ckey, record.encode_to_vec())])
            .await?;
        Ok(count)
    }

    /// How many channels the user belongs to, at most `at_most`: the kept count, or a scan of
    /// the user's channel index that stops at `at_most` (a limit check needs to know only
    /// whether the count reached the limit). A scan that finds fewer than `at_most` knows the
    /// exact count, which is kept from then on (for a user with a record or with memberships).
    pub async fn user_channel_count(
        &self,
        user: &UserId,
        at_most: usize,
    ) -> Result<usize, StoreError> {
        let inner = &*self.inner;
        let key = keys::user(user);
        if let Some(record) = inner.record::<UserRecord>(&key)?
            && record.channels_counted
        {
            return Ok((record.channel_count as usize).min(at_most));
        }
        // Under the user's stripe: no membership of the user changes during the scan.
        let _g = inner.stripe(&key).lock().await;
        let existing: Option<UserRecord> = inner.record(&key)?;
        if let Some(record) = &existing
            && record.channels_counted
        {
            return Ok((record.channel_count as usize).min(at_most));
        }
        let found = self.user_channels(user, None, at_most)?.len();
        // Kept once known exactly, for a user with a record or with memberships: a check must
        // not create a record (a commit) for every fresh id a request names. Not while the
        // store refuses growth: the count is then simply not kept yet.
        if found < at_most && (existing.is_some() || found > 0) && inner.queue.health().is_ok() {
            let mut record = existing.unwrap_or_default();
            record.channel_count = u32::try_from(found).unwrap_or(u32::MAX);
            record.channels_counted = true;
            inner
                .commit(vec![Op::Put(key, record.encode_to_vec())])
                .await?;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use chorus_protocol::v1::ChannelKind;

    use super::*;
    use crate::engine::memory::MemoryEngine;
    use crate::{NewChannel, StoreConfig};

    /// Data from before the counts existed: the records say "not counted", and the first
    /// count scans, then keeps the count through later changes.
    #[tokio::test]
    async fn records_from_before_the_counts_are_counted_once_then_kept() {
        let store = Store::with_engine(Arc::new(MemoryEngine::new()), StoreConfig::new("/none"));
        let (ch, a, b) = (
            ChannelId::new("c").unwrap(),
            UserId::new("a").unwrap(),
            UserId::new("b").unwrap(),
        );
        store
            .create_channel(NewChannel {
                id: ch.clone(),
                kind: ChannelKind::Group,
                name: String::new(),
                topic: String::new(),
                created_by: a.clone(),
                created_at_ms: 1,
                members: vec![(b.clone(), Role::Owner)],
                custom: Bytes::new(),
                retention: Default::default(),
            })
            .await
            .unwrap();
        // Make the records look old: no counts kept.
        let inner = &*store.inner;
        let (ckey, mut record) = inner.channel_record(&ch).unwrap();
        record.owners_counted = false;
        record.owner_count = 0;
        let mut ops = vec![Op::Put(ckey, record.encode_to_vec())];
        for u in [&a, &b] {
            let key = keys::user(u);
            let mut user: UserRecord = inner.record(&key).unwrap().unwrap_or_default();
            user.channels_counted = false;
            user.channel_count = 0;
            ops.push(Op::Put(key, user.encode_to_vec()));
        }
        inner.commit(ops).await.unwrap();
        // An uncounted channel's changes leave the count unkept; the first ask counts.
        store.put_member(&ch, &b, Role::Member, 2).await.unwrap();
        assert_eq!(store.owner_count(&ch).await.unwrap(), 1);
        assert!(inner.channel_record(&ch).unwrap().1.owners_counted);
        store.put_member(&ch, &b, Role::Owner, 3).await.unwrap();
        assert_eq!(
            store.owner_count(&ch).await.unwrap(),
            2,
            "kept from the first count on"
        );
        // A scan that reaches the limit does not know the exact count: nothing is kept.
        assert_eq!(store.user_channel_count(&a, 1).await.unwrap(), 1);
        assert!(
            !inner
                .record::<UserRecord>(&keys::user(&a))
                .unwrap()
                .unwrap()
                .channels_counted
        );
        assert_eq!(store.user_channel_count(&a, 10).await.unwrap(), 1);
        assert!(
            inner
                .record::<UserRecord>(&keys::user(&a))
                .unwrap()
                .unwrap()
                .channels_counted
        );
        store.remove_member(&ch, &a).await.unwrap();
        assert_eq!(store.user_channel_count(&a, 10).await.unwrap(), 0);
        // A limit check on a user the store has no record of writes nothing.
        let stranger = UserId::new("stranger").unwrap();
        assert_eq!(store.user_channel_count(&stranger, 10).await.unwrap(), 0);
        assert!(
            inner
                .record::<UserRecord>(&keys::user(&stranger))
                .unwrap()
                .is_none()
        );
    }
}
