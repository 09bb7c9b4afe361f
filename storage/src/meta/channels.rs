//! Channels: create (group, public, direct), look up, list, update, truncate.

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, Epoch, Seq, UserId};
use chorus_protocol::v1::{ChannelKind, Role};
use prost::Message;

use super::{ChannelInfo, ChannelPatch, NewChannel, channel_ids, stored_log_number};
use crate::config::RetentionPolicy;
use crate::engine::Op;
use crate::error::{ReadError, StoreError};
use crate::keys;
use crate::records::{ChannelRecord, MemberRecord};
use crate::store::Store;

impl Store {
    /// Creates a channel with its creator as owner and the given members.
    pub async fn create_channel(&self, new: NewChannel) -> Result<ChannelInfo, StoreError> {
        let inner = &*self.inner;
        let mut stripes = vec![
            inner.stripe_index(&new.id),
            inner.stripe_index(&keys::user(&new.created_by)),
        ];
        stripes.extend(
            new.members
                .iter()
                .map(|(u, _)| inner.stripe_index(&keys::user(u))),
        );
        let _g = inner.lock_all(stripes).await;
        self.create_locked(new, Vec::new()).await
    }

    async fn create_locked(
        &self,
        new: NewChannel,
        extra: Vec<Op>,
    ) -> Result<ChannelInfo, StoreError> {
        let inner = &*self.inner;
        let key = keys::channel(&new.id);
        if inner.engine.get(&key)?.is_some() {
            return Err(StoreError::ChannelExists(new.id.clone()));
        }
        let mut members = vec![(new.created_by.clone(), Role::Owner)];
        for (user, role) in new.members {
            if !members.iter().any(|(u, _)| *u == user) {
                members.push((user, role));
            }
        }
        let mut record = ChannelRecord {
            kind: new.kind as i32,
            name: new.name,
            topic: new.topic,
            created_by: new.created_by.to_string(),
            created_at_ms: new.created_at_ms,
            archived: false,
            // Distinct from any earlier channel of the same id, so old cursors never resume.
            epoch: new.created_at_ms.max(1),
            first_available_seq: 1,
            member_count: members.len() as u32,
            custom: new.custom,
            retention_max_age_ms: new.retention.max_age_ms,
            retention_max_entries: new.retention.max_entries,
            removed_ordinal: 0,
            log_number: 0,
            owner_count: members.iter().filter(|(_, r)| *r == Role::Owner).count() as u32,
            owners_counted: true,
            slow_mode_ms: 0,
            blocked_words: Vec::new(),
            block_action: 0,
            blocked: false,
            moderation_log: 0,
        };
        let mut ops = extra;
        for (user, role) in &members {
            let m = MemberRecord {
                role: *role as i32,
                joined_at_ms: new.created_at_ms,
                muted_until_ms: 0,
                shadowed_until_ms: 0,
            };
            ops.push(Op::Put(keys::member(&new.id, user), m.encode_to_vec()));
            let index = keys::user_channel(user, &new.id);
            // A stale index entry (left by a lost record of an earlier channel of this id) is
            // already counted.
            if inner.engine.get(&index)?.is_none() {
                ops.extend(inner.user_count_op(user, 1)?);
            }
            ops.push(Op::Put(index, Vec::new()));
        }
        let permit = inner.queue.reserve_growth().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            // The number is taken and the creation queued under one lock, so creations reach
            // the engine in number order and the stored counter only grows: a number is never
            // given twice, even across a crash (the counter is written with the channel).
            let mut next = inner
                .next_log_number
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let number = match *next {
                Some(n) => n,
                None => stored_log_number(inner)?,
            };
            record.log_number = number;
            ops.push(Op::Put(key, record.encode_to_vec()));
            ops.push(Op::Put(
                keys::next_log_number(),
                (number + 1).to_be_bytes().to_vec(),
            ));
            inner
                .queue
                .enqueue(ops, crate::commit::Completion::Done(tx), permit)?;
            *next = Some(number + 1);
        }
        rx.await.map_err(|_| StoreError::Closed)??;
        // A channel of this id may have been loaded (and failed) before: start afresh.
        inner.logs.forget(&new.id);
        self.channel(&new.id)?
            .ok_or_else(|| StoreError::ChannelNotFound(new.id.clone()))
    }

    /// The direct channel of two users, created with `id` if it does not exist. Returns the
    /// channel and whether it was created now.
    pub async fn direct_channel(
        &self,
        a: &UserId,
        b: &UserId,
        id: ChannelId,
        now_ms: u64,
    ) -> Result<(ChannelInfo, bool), StoreError> {
        let inner = &*self.inner;
        let pair = keys::direct(a, b);
        // The pair's stripe, the new channel's and both users': before the lookup, together.
        let _g = inner
            .lock_all(vec![
                inner.stripe_index(&pair),
                inner.stripe_index(&id),
                inner.stripe_index(&keys::user(a)),
                inner.stripe_index(&keys::user(b)),
            ])
            .await;
        if let Some(id) = self.direct_channel_of(a, b)? {
            let info = self
                .channel(&id)?
                .ok_or_else(|| StoreError::ChannelNotFound(id.clone()))?;
            return Ok((info, false));
        }
        // Under the pair's stripe, which blocking takes too: no channel appears between two
        // users once either blocks the other.
        if self.blocks_either(a, b)? {
            return Err(StoreError::Blocked);
        }
        let new = NewChannel {
            id: id.clone(),
            kind: ChannelKind::Direct,
            name: String::new(),
            topic: String::new(),
            created_by: a.clone(),
            created_at_ms: now_ms,
            members: vec![(b.clone(), Role::Owner)],
            custom: Bytes::new(),
            retention: RetentionPolicy::default(),
        };
        let info = self
            .create_locked(new, vec![Op::Put(pair, id.as_str().as_bytes().to_vec())])
            .await?;
        Ok((info, true))
    }

    /// The id of the direct channel of two users, if they have one.
    pub fn direct_channel_of(
        &self,
        a: &UserId,
        b: &UserId,
    ) -> Result<Option<ChannelId>, ReadError> {
        let pair = keys::direct(a, b);
        let Some(existing) = self.inner.engine.get(&pair)? else {
            return Ok(None);
        };
        std::str::from_utf8(&existing)
            .ok()
            .and_then(|s| ChannelId::new(s).ok())
            .map(Some)
            .ok_or_else(|| ReadError::Corrupt {
                key: crate::records::hex(&pair),
                message: "direct index holds no channel id".into(),
            })
    }

    /// A channel's metadata and position.
    pub fn channel(&self, id: &ChannelId) -> Result<Option<ChannelInfo>, ReadError> {
        let inner = &*self.inner;
        let Some(record) = inner.record::<ChannelRecord>(&keys::channel(id))? else {
            return Ok(None);
        };
        let position = self.position(id)?;
        Ok(Some(ChannelInfo {
            id: id.clone(),
            record,
            position,
        }))
    }

    /// Channel ids in key order after `after`, for admin listings.
    pub fn channels(
        &self,
        after: Option<&ChannelId>,
        limit: usize,
    ) -> Result<Vec<ChannelId>, ReadError> {
        let rows = self
            .inner
            .page(&[keys::CHANNEL], after.map(keys::channel), limit)?;
        channel_ids(&rows, 1)
    }

    /// Changes channel metadata.
    pub async fn update_channel(
        &self,
        id: &ChannelId,
        patch: ChannelPatch,
    ) -> Result<ChannelInfo, StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(id).lock().await;
        let (key, mut record) = inner.channel_record(id)?;
        if let Some(name) = patch.name {
            record.name = name;
        }
        if let Some(topic) = patch.topic {
            record.topic = topic;
        }
        if let Some(custom) = patch.custom {
            record.custom = custom;
        }
        if let Some(archived) = patch.archived {
            record.archived = archived;
        }
        if let Some(r) = patch.retention {
            record.retention_max_age_ms = r.max_age_ms;
            record.retention_max_entries = r.max_entries;
        }
        if let Some(ms) = patch.slow_mode_ms {
            record.slow_mode_ms = ms;
        }
        if let Some((words, action)) = patch.blocklist {
            record.blocked_words = words;
            record.block_action = action;
        }
        if let Some(policy) = patch.moderation_log {
            record.moderation_log = policy;
        }
        inner
            .commit(vec![Op::Put(key, record.encode_to_vec())])
            .await?;
        self.channel(id)?
            .ok_or_else(|| StoreError::ChannelNotFound(id.clone()))
    }

    /// Cuts the channel's history: every entry is removed and the epoch changes, so that no old
    /// cursor can resume. Seqs keep counting from the old head.
    pub async fn truncate(&self, channel: &ChannelId, now_ms: u64) -> Result<Epoch, StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(channel).lock().await;
        let log = inner.logs.get(channel)?;
        let position = crate::log::position_of(&log);
        let epoch = Epoch(now_ms.max(position.epoch.get() + 1));
        let (head, ordinal) = crate::log::assigned_head(&log);
        self.cut(channel, &log, head.next(), ordinal, Some(epoch))
            .await?;
        Ok(epoch)
    }

    /// Sets `first_available` (and possibly a new epoch) durably, then removes the entries
    /// below it with their index entries. Called with the channel's stripe held.
    pub(crate) async fn cut(
        &self,
        channel: &ChannelId,
        log: &crate::log::ChannelLog,
        cut: Seq,
        removed_ordinal: u64,
        epoch: Option<Epoch>,
    ) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let (ckey, mut record) = inner.channel_record(channel)?;
        record.first_available_seq = cut.get();
        record.removed_ordinal = removed_ordinal;
        if let Some(e) = epoch {
            record.epoch = e.get();
        }
        inner
            .commit(vec![Op::Put(ckey, record.encode_to_vec())])
            .await?;
        crate::log::cut_tail(log, cut, epoch);
        crate::retention::delete_below(inner, channel, &log.keys, cut).await
    }
}
