//! Channels, members, read markers, users and bans. Read-modify-write of a record happens under
//! a striped lock held until the change is durable, so that concurrent changes of one record
//! never lose each other, while changes of different records share syncs.

use std::ops::Bound;

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, Epoch, Seq, UserId};
use chorus_protocol::v1::{ChannelKind, Role};
use prost::Message;

use crate::config::RetentionPolicy;
use crate::engine::{Direction, Op, as_ref_bound};
use crate::error::StoreError;
use crate::keys;
use crate::log::{LogPosition, MAX_MENTION_COUNT};
use crate::records::{BanRecord, ChannelRecord, MarkerRecord, MemberRecord, UserRecord};
use crate::store::Store;

/// A channel to create.
#[derive(Debug, Clone)]
pub struct NewChannel {
    /// Its id.
    pub id: ChannelId,
    /// Direct, group or public.
    pub kind: ChannelKind,
    /// Display name.
    pub name: String,
    /// Topic line.
    pub topic: String,
    /// The creator, who becomes owner.
    pub created_by: UserId,
    /// Creation time, unix ms.
    pub created_at_ms: u64,
    /// Other initial members, with their roles.
    pub members: Vec<(UserId, Role)>,
    /// Opaque application data.
    pub custom: Bytes,
    /// Retention; zero fields fall back to the store default.
    pub retention: RetentionPolicy,
}

/// A change of channel metadata; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct ChannelPatch {
    /// New name.
    pub name: Option<String>,
    /// New topic.
    pub topic: Option<String>,
    /// New custom data.
    pub custom: Option<Bytes>,
    /// Archive (true) or restore (false).
    pub archived: Option<bool>,
    /// New retention policy.
    pub retention: Option<RetentionPolicy>,
}

/// A channel's metadata with its log position.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelInfo {
    /// Its id.
    pub id: ChannelId,
    /// The stored metadata.
    pub record: ChannelRecord,
    /// Where its log stands.
    pub position: LogPosition,
}

/// A user's read state in one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The newest seq read (0 = nothing).
    pub last_read: Seq,
    /// Messages after `last_read`.
    pub unread: u64,
    /// Of those, the ones mentioning the user (saturates at 1000).
    pub mentions: u64,
    /// The channel's head.
    pub head: Seq,
    /// When the marker last moved, unix ms (0 = never).
    pub updated_at_ms: u64,
}

/// Where a ban applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanScope<'a> {
    /// One channel.
    Channel(&'a ChannelId),
    /// The whole server.
    Server,
}

/// The channel ids that end the keys of `rows`, after `prefix_len` bytes.
fn channel_ids(
    rows: &[crate::engine::KeyValue],
    prefix_len: usize,
) -> Result<Vec<ChannelId>, StoreError> {
    rows.iter()
        .map(|(k, _)| {
            keys::trailing_str(k, prefix_len)
                .and_then(|s| ChannelId::new(s).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    key: crate::records::hex(k),
                    message: "key does not end in a channel id".into(),
                })
        })
        .collect()
}

/// The next channel log number as stored (1 in a store that never gave one).
fn stored_log_number(inner: &crate::store::Inner) -> Result<u64, StoreError> {
    let key = keys::next_log_number();
    match inner.engine.get(&key)? {
        None => Ok(1),
        Some(v) => <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt {
                key: crate::records::hex(&key),
                message: "the log-number counter is not 8 bytes".into(),
            }),
    }
}

fn user_id(s: &str) -> Result<UserId, StoreError> {
    UserId::new(s).map_err(|e| StoreError::Corrupt {
        key: s.to_owned(),
        message: e.to_string(),
    })
}

impl Store {
    /// Creates a channel with its creator as owner and the given members.
    pub async fn create_channel(&self, new: NewChannel) -> Result<ChannelInfo, StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(&new.id).lock().await;
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
            return Err(StoreError::ChannelExists(new.id.to_string()));
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
        };
        let mut ops = extra;
        for (user, role) in &members {
            let m = MemberRecord {
                role: *role as i32,
                joined_at_ms: new.created_at_ms,
                muted_until_ms: 0,
            };
            ops.push(Op::Put(keys::member(&new.id, user), m.encode_to_vec()));
            ops.push(Op::Put(keys::user_channel(user, &new.id), Vec::new()));
        }
        let permit = inner.reserve_growth().await?;
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
            inner.enqueue(ops, crate::commit::Completion::Done(tx), permit)?;
            *next = Some(number + 1);
        }
        rx.await.map_err(|_| StoreError::Closed)??;
        // A channel of this id may have been loaded (and failed) before: start afresh.
        inner.logs.remove(&new.id);
        self.channel(&new.id)?
            .ok_or_else(|| StoreError::ChannelNotFound(new.id.to_string()))
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
        // The pair's stripe and the new channel's: both before the lookup, taken together.
        let _g = inner.lock_two(&pair, &id).await;
        if let Some(id) = self.direct_channel_of(a, b)? {
            let info = self
                .channel(&id)?
                .ok_or_else(|| StoreError::ChannelNotFound(id.to_string()))?;
            return Ok((info, false));
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
    ) -> Result<Option<ChannelId>, StoreError> {
        let pair = keys::direct(a, b);
        let Some(existing) = self.inner.engine.get(&pair)? else {
            return Ok(None);
        };
        std::str::from_utf8(&existing)
            .ok()
            .and_then(|s| ChannelId::new(s).ok())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                key: crate::records::hex(&pair),
                message: "direct index holds no channel id".into(),
            })
    }

    /// A channel's metadata and position.
    pub fn channel(&self, id: &ChannelId) -> Result<Option<ChannelInfo>, StoreError> {
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
    ) -> Result<Vec<ChannelId>, StoreError> {
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
        inner
            .commit(vec![Op::Put(key, record.encode_to_vec())])
            .await?;
        self.channel(id)?
            .ok_or_else(|| StoreError::ChannelNotFound(id.to_string()))
    }

    /// Adds a member or changes an existing member's role. Returns whether the user is new.
    pub async fn put_member(
        &self,
        channel: &ChannelId,
        user: &UserId,
        role: Role,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.write_member(channel, user, role, now_ms, true).await
    }

    /// Adds a member with `role` unless the user already is one (whose role then stays).
    /// Returns whether the user is new.
    pub async fn add_member(
        &self,
        channel: &ChannelId,
        user: &UserId,
        role: Role,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.write_member(channel, user, role, now_ms, false).await
    }

    async fn write_member(
        &self,
        channel: &ChannelId,
        user: &UserId,
        role: Role,
        now_ms: u64,
        overwrite: bool,
    ) -> Result<bool, StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(channel).lock().await;
        let (ckey, mut record) = inner.channel_record(channel)?;
        let mkey = keys::member(channel, user);
        let existing: Option<MemberRecord> = inner.record(&mkey)?;
        let added = existing.is_none();
        if !added && !overwrite {
            return Ok(false);
        }
        let member = match existing {
            Some(mut m) => {
                m.role = role as i32;
                m
            }
            None => MemberRecord {
                role: role as i32,
                joined_at_ms: now_ms,
                muted_until_ms: 0,
            },
        };
        let mut ops = vec![Op::Put(mkey, member.encode_to_vec())];
        if added {
            record.member_count += 1;
            ops.push(Op::Put(ckey, record.encode_to_vec()));
            ops.push(Op::Put(keys::user_channel(user, channel), Vec::new()));
        }
        inner.commit(ops).await?;
        Ok(added)
    }

    /// Removes a member. Returns whether the user was a member.
    pub async fn remove_member(
        &self,
        channel: &ChannelId,
        user: &UserId,
    ) -> Result<bool, StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(channel).lock().await;
        let (ckey, mut record) = inner.channel_record(channel)?;
        let mkey = keys::member(channel, user);
        if inner.engine.get(&mkey)?.is_none() {
            // The user's index entry may outlive a lost member record; it goes too, so that
            // walks over the user's channels end.
            let index = keys::user_channel(user, channel);
            if inner.engine.get(&index)?.is_some() {
                inner.commit(vec![Op::Delete(index)]).await?;
            }
            return Ok(false);
        }
        record.member_count = record.member_count.saturating_sub(1);
        inner
            .commit(vec![
                Op::Delete(mkey),
                Op::Delete(keys::user_channel(user, channel)),
                Op::Put(ckey, record.encode_to_vec()),
            ])
            .await?;
        Ok(true)
    }

    /// Mutes a member until `until_ms` (0 lifts the mute).
    pub async fn set_mute(
        &self,
        channel: &ChannelId,
        user: &UserId,
        until_ms: u64,
    ) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(channel).lock().await;
        let mkey = keys::member(channel, user);
        let mut member: MemberRecord =
            inner.record(&mkey)?.ok_or_else(|| StoreError::NotMember {
                channel: channel.to_string(),
                user: user.to_string(),
            })?;
        member.muted_until_ms = until_ms;
        inner
            .commit(vec![Op::Put(mkey, member.encode_to_vec())])
            .await
    }

    /// A member's record, if the user is a member.
    pub fn member(
        &self,
        channel: &ChannelId,
        user: &UserId,
    ) -> Result<Option<MemberRecord>, StoreError> {
        self.inner.record(&keys::member(channel, user))
    }

    /// Members in key order after `after`.
    pub fn members(
        &self,
        channel: &ChannelId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<(UserId, MemberRecord)>, StoreError> {
        let prefix = keys::member_prefix(channel).into_vec();
        let plen = prefix.len();
        let rows = self
            .inner
            .page(&prefix, after.map(|a| keys::member(channel, a)), limit)?;
        rows.iter()
            .map(|(k, v)| {
                let user = user_id(keys::trailing_str(k, plen).unwrap_or(""))?;
                Ok((user, crate::records::decode_record(k, v)?))
            })
            .collect()
    }

    /// The channels a user is a member of, in key order after `after`.
    pub fn user_channels(
        &self,
        user: &UserId,
        after: Option<&ChannelId>,
        limit: usize,
    ) -> Result<Vec<ChannelId>, StoreError> {
        let prefix = keys::user_channel_prefix(user).into_vec();
        let plen = prefix.len();
        let rows = self
            .inner
            .page(&prefix, after.map(|a| keys::user_channel(user, a)), limit)?;
        channel_ids(&rows, plen)
    }

    /// How many channels the user belongs to, counted up to `at_most` (the scan stops there:
    /// a limit check needs to know only whether the count reached the limit).
    pub fn user_channel_count(&self, user: &UserId, at_most: usize) -> Result<usize, StoreError> {
        Ok(self.user_channels(user, None, at_most)?.len())
    }

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
        self.read_state(user, channel)
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
        let log = inner.channel_log(channel)?;
        let position = crate::log::position_of(&log);
        let current: MarkerRecord = inner.record(&key)?.unwrap_or_default();
        let target = seq.min(position.head);
        if target.get() > current.seq {
            let ordinal = match inner.entry_at(&log, target)? {
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

    fn removed_ordinal(&self, channel: &ChannelId) -> Result<u64, StoreError> {
        Ok(self
            .inner
            .record::<ChannelRecord>(&keys::channel(channel))?
            .map_or(0, |r| r.removed_ordinal))
    }

    /// The user's read state in a channel: unread and mention counts without scanning the log.
    pub fn read_state(&self, user: &UserId, channel: &ChannelId) -> Result<ReadState, StoreError> {
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
    ) -> Result<ReadState, StoreError> {
        let inner = &*self.inner;
        let position = self.position(channel)?;
        let mut marker: MarkerRecord = inner
            .record(&keys::marker(user, channel))?
            .unwrap_or_default();
        if let Some(floor) = floor.map(|f| f.min(position.head))
            && floor.get() > marker.seq
        {
            let log = inner.channel_log(channel)?;
            marker.ordinal = match inner.entry_at(&log, floor)? {
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

    /// Deletes the direct-channel index entries of every pair `user` is in (erasure: the keys
    /// name the user). The channels stay, with their other member and history; a later
    /// `direct_channel` for such a pair would make a new one. Returns how many were deleted.
    pub async fn forget_direct_pairs(&self, user: &UserId) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let end = [keys::DIRECT + 1];
        let mut from = Bound::Included(vec![keys::DIRECT]);
        let mut deleted = 0;
        loop {
            let page = inner.engine.scan(
                as_ref_bound(&from),
                Bound::Excluded(&end[..]),
                Direction::Forward,
                1_000,
            )?;
            let Some((last, _)) = page.last() else {
                return Ok(deleted);
            };
            from = Bound::Excluded(last.clone());
            let ops: Vec<Op> = page
                .into_iter()
                .filter(|(k, _)| {
                    let lo = keys::trailing_str(k, 1);
                    let hi = lo.and_then(|lo| keys::trailing_str(k, 2 + lo.len()));
                    lo == Some(user.as_str()) || hi == Some(user.as_str())
                })
                .map(|(k, _)| Op::Delete(k))
                .collect();
            deleted += ops.len() as u64;
            if !ops.is_empty() {
                inner.commit(ops).await?;
            }
        }
    }

    /// Creates or replaces a user's record.
    pub async fn put_user(&self, user: &UserId, record: UserRecord) -> Result<(), StoreError> {
        let key = keys::user(user);
        let _g = self.inner.stripe(&key).lock().await;
        self.inner
            .commit(vec![Op::Put(key, record.encode_to_vec())])
            .await
    }

    /// Changes a user's record (created empty if missing) with `f`.
    pub async fn update_user(
        &self,
        user: &UserId,
        f: impl FnOnce(&mut UserRecord),
    ) -> Result<UserRecord, StoreError> {
        let key = keys::user(user);
        let _g = self.inner.stripe(&key).lock().await;
        let mut record: UserRecord = self.inner.record(&key)?.unwrap_or_default();
        f(&mut record);
        self.inner
            .commit(vec![Op::Put(key, record.encode_to_vec())])
            .await?;
        Ok(record)
    }

    /// Starts (or restarts) the erasure of a user, durably: the user is marked erased (new
    /// sessions are refused, tokens issued before `now_ms` are revoked, the display name goes)
    /// and the job is listed by [`Store::erasure_jobs`] until [`Store::finish_erasure`], so a
    /// node that stops mid-way resumes it. The anonymous id is `anonymous` unless the user
    /// already has one from an earlier erasure, which is kept. Returns the record.
    pub async fn begin_erasure(
        &self,
        user: &UserId,
        anonymous: &str,
        now_ms: u64,
    ) -> Result<UserRecord, StoreError> {
        let key = keys::user(user);
        let _g = self.inner.stripe(&key).lock().await;
        let mut record: UserRecord = self.inner.record(&key)?.unwrap_or_default();
        record.display_name.clear();
        record.erased = true;
        record.tokens_valid_after_ms = record.tokens_valid_after_ms.max(now_ms);
        if record.erasure_anonymous_id.is_empty() {
            anonymous.clone_into(&mut record.erasure_anonymous_id);
        }
        record.erasure_started_ms = now_ms;
        record.erasure_finished_ms = 0;
        self.inner
            .commit(vec![
                Op::Put(key, record.encode_to_vec()),
                Op::Put(keys::erasure(user), Vec::new()),
            ])
            .await?;
        Ok(record)
    }

    /// Marks a user's erasure finished at `now_ms`: it is no longer resumed.
    pub async fn finish_erasure(&self, user: &UserId, now_ms: u64) -> Result<(), StoreError> {
        let key = keys::user(user);
        let _g = self.inner.stripe(&key).lock().await;
        let mut record: UserRecord = self.inner.record(&key)?.unwrap_or_default();
        record.erasure_finished_ms = now_ms;
        self.inner
            .commit(vec![
                Op::Put(key, record.encode_to_vec()),
                Op::Delete(keys::erasure(user)),
            ])
            .await
    }

    /// Erasures not finished, in user id order after `after`, with the users' records.
    pub fn erasure_jobs(
        &self,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<(UserId, UserRecord)>, StoreError> {
        let rows = self
            .inner
            .page(&[keys::ERASURE], after.map(keys::erasure), limit)?;
        rows.iter()
            .map(|(k, _)| {
                let user = user_id(keys::trailing_str(k, 1).unwrap_or(""))?;
                let record = self.user(&user)?.unwrap_or_default();
                Ok((user, record))
            })
            .collect()
    }

    /// A user's record.
    pub fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.inner.record(&keys::user(user))
    }

    /// Bans a user from a channel or the server.
    pub async fn ban(
        &self,
        scope: BanScope<'_>,
        user: &UserId,
        record: BanRecord,
    ) -> Result<(), StoreError> {
        let key = ban_key(scope, user);
        self.inner
            .commit(vec![Op::Put(key, record.encode_to_vec())])
            .await
    }

    /// Lifts a ban. Returns whether there was one.
    pub async fn unban(&self, scope: BanScope<'_>, user: &UserId) -> Result<bool, StoreError> {
        let key = ban_key(scope, user);
        let _g = self.inner.stripe(&key).lock().await;
        let existed = self.inner.engine.get(&key)?.is_some();
        if existed {
            self.inner.commit(vec![Op::Delete(key)]).await?;
        }
        Ok(existed)
    }

    /// The ban in force at `now_ms`, if any (expired bans read as none).
    pub fn ban_of(
        &self,
        scope: BanScope<'_>,
        user: &UserId,
        now_ms: u64,
    ) -> Result<Option<BanRecord>, StoreError> {
        let ban: Option<BanRecord> = self.inner.record(&ban_key(scope, user))?;
        Ok(ban.filter(|b| b.until_ms == 0 || b.until_ms > now_ms))
    }

    /// Cuts the channel's history: every entry is removed and the epoch changes, so that no old
    /// cursor can resume. Seqs keep counting from the old head.
    pub async fn truncate(&self, channel: &ChannelId, now_ms: u64) -> Result<Epoch, StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(channel).lock().await;
        let log = inner.channel_log(channel)?;
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

fn ban_key(scope: BanScope<'_>, user: &UserId) -> Vec<u8> {
    match scope {
        BanScope::Channel(c) => keys::ban(Some(c), user),
        BanScope::Server => keys::ban(None, user),
    }
}
