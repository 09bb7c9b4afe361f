//! Users: records, erasure jobs, direct pairs, bans.

use std::ops::Bound;

use chorus_protocol::ids::UserId;
use prost::Message;

use super::{BanScope, user_id};
use crate::engine::{Direction, Op, as_ref_bound};
use crate::error::{ReadError, StoreError};
use crate::keys;
use crate::records::{BanRecord, UserRecord};
use crate::store::Store;

impl Store {
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
    ) -> Result<Vec<(UserId, UserRecord)>, ReadError> {
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
    pub fn user(&self, user: &UserId) -> Result<Option<UserRecord>, ReadError> {
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
    ) -> Result<Option<BanRecord>, ReadError> {
        let ban: Option<BanRecord> = self.inner.record(&ban_key(scope, user))?;
        Ok(ban.filter(|b| b.until_ms == 0 || b.until_ms > now_ms))
    }
}

fn ban_key(scope: BanScope<'_>, user: &UserId) -> Vec<u8> {
    match scope {
        BanScope::Channel(c) => keys::ban(Some(c), user),
        BanScope::Server => keys::ban(None, user),
    }
}
