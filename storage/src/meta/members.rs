//! Members: add, change, remove, mute; member lists and a user's channels.

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::v1::Role;
use prost::Message;

use super::{channel_ids, counts, user_id};
use crate::engine::Op;
use crate::error::{ReadError, StoreError};
use crate::keys;
use crate::records::MemberRecord;
use crate::store::Store;

impl Store {
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
        let _g = inner.lock_membership(channel, user).await;
        let (ckey, mut record) = inner.channel_record(channel)?;
        let mkey = keys::member(channel, user);
        let existing: Option<MemberRecord> = inner.record(&mkey)?;
        let old_role = existing.as_ref().map(MemberRecord::role);
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
                shadowed_until_ms: shadow_ban_until(inner, channel, user, now_ms)?,
            },
        };
        let mut ops = vec![Op::Put(mkey, member.encode_to_vec())];
        let owners = counts::owner_delta(old_role, Some(role));
        if added {
            record.member_count += 1;
            let index = keys::user_channel(user, channel);
            // A stale index entry (its member record lost) is already counted.
            if inner.engine.get(&index)?.is_none() {
                ops.extend(inner.user_count_op(user, 1)?);
            }
            ops.push(Op::Put(index, Vec::new()));
        }
        if added || owners != 0 {
            counts::adjust_owners(&mut record, owners);
            ops.push(Op::Put(ckey, record.encode_to_vec()));
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
        let _g = inner.lock_membership(channel, user).await;
        let (ckey, mut record) = inner.channel_record(channel)?;
        let mkey = keys::member(channel, user);
        let index = keys::user_channel(user, channel);
        let indexed = inner.engine.get(&index)?.is_some();
        let Some(member) = inner.record::<MemberRecord>(&mkey)? else {
            // The user's index entry may outlive a lost member record; it goes too, so that
            // walks over the user's channels end.
            if indexed {
                let mut ops = vec![Op::Delete(index)];
                ops.extend(inner.user_count_op(user, -1)?);
                inner.commit(ops).await?;
            }
            return Ok(false);
        };
        record.member_count = record.member_count.saturating_sub(1);
        counts::adjust_owners(&mut record, counts::owner_delta(Some(member.role()), None));
        let mut ops = vec![
            Op::Delete(mkey),
            Op::Delete(index),
            Op::Put(ckey, record.encode_to_vec()),
        ];
        if indexed {
            ops.extend(inner.user_count_op(user, -1)?);
        }
        inner.commit(ops).await?;
        Ok(true)
    }

    /// Mutes a member until `until_ms` (0 lifts the mute).
    pub async fn set_mute(
        &self,
        channel: &ChannelId,
        user: &UserId,
        until_ms: u64,
    ) -> Result<(), StoreError> {
        self.change_member(channel, user, |m| m.muted_until_ms = until_ms)
            .await
    }

    /// Shadow-bans a member until `until_ms` (0 lifts it).
    pub async fn set_shadow(
        &self,
        channel: &ChannelId,
        user: &UserId,
        until_ms: u64,
    ) -> Result<(), StoreError> {
        self.change_member(channel, user, |m| m.shadowed_until_ms = until_ms)
            .await
    }

    /// Changes an existing member's record under the channel's stripe.
    async fn change_member(
        &self,
        channel: &ChannelId,
        user: &UserId,
        change: impl FnOnce(&mut MemberRecord),
    ) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(channel).lock().await;
        let mkey = keys::member(channel, user);
        let mut member: MemberRecord =
            inner.record(&mkey)?.ok_or_else(|| StoreError::NotMember {
                channel: channel.clone(),
                user: user.clone(),
            })?;
        change(&mut member);
        inner
            .commit(vec![Op::Put(mkey, member.encode_to_vec())])
            .await
    }

    /// A member's record, if the user is a member.
    pub fn member(
        &self,
        channel: &ChannelId,
        user: &UserId,
    ) -> Result<Option<MemberRecord>, ReadError> {
        self.inner.record(&keys::member(channel, user))
    }

    /// Members in key order after `after`.
    pub fn members(
        &self,
        channel: &ChannelId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<(UserId, MemberRecord)>, ReadError> {
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
    ) -> Result<Vec<ChannelId>, ReadError> {
        let prefix = keys::user_channel_prefix(user).into_vec();
        let plen = prefix.len();
        let rows = self
            .inner
            .page(&prefix, after.map(|a| keys::user_channel(user, a)), limit)?;
        channel_ids(&rows, plen)
    }
}

/// Until when a user joining `channel` stays shadow-banned there (0: not shadow-banned): a
/// shadow ban in force survives leaving and coming back, written with the new membership so
/// that no post of the new member is ever visible.
fn shadow_ban_until(
    inner: &crate::store::Inner,
    channel: &ChannelId,
    user: &UserId,
    now_ms: u64,
) -> Result<u64, ReadError> {
    let ban: Option<crate::records::BanRecord> = inner.record(&keys::ban(Some(channel), user))?;
    Ok(match ban {
        Some(b) if b.shadow && b.until_ms == 0 => u64::MAX,
        Some(b) if b.shadow && b.until_ms > now_ms => b.until_ms,
        _ => 0,
    })
}
