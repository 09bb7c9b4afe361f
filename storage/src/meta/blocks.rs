//! User blocks: who a user blocks. A block between two users also marks their direct channel
//! (if they have one) as blocked, in the same write, so that a post to it is refused without
//! reading anything but the channel record a post reads anyway.

use chorus_protocol::ids::UserId;
use prost::Message;

use super::user_id;
use crate::engine::Op;
use crate::error::{ReadError, StoreError};
use crate::keys;
use crate::records::{BlockRecord, ChannelRecord};
use crate::store::Store;

impl Store {
    /// `blocker` blocks `blocked` (at most `max` users). Returns whether the block is new.
    pub async fn block_user(
        &self,
        blocker: &UserId,
        blocked: &UserId,
        now_ms: u64,
        max: usize,
    ) -> Result<bool, StoreError> {
        self.set_block(blocker, blocked, Some((now_ms, max))).await
    }

    /// Lifts a block. Returns whether there was one.
    pub async fn unblock_user(
        &self,
        blocker: &UserId,
        blocked: &UserId,
    ) -> Result<bool, StoreError> {
        self.set_block(blocker, blocked, None).await
    }

    async fn set_block(
        &self,
        blocker: &UserId,
        blocked: &UserId,
        add: Option<(u64, usize)>,
    ) -> Result<bool, StoreError> {
        let inner = &*self.inner;
        let pair = keys::direct(blocker, blocked);
        let direct = self.direct_channel_of(blocker, blocked)?;
        let mut stripes = vec![
            inner.stripe_index(&pair),
            inner.stripe_index(&keys::user(blocker)),
        ];
        stripes.extend(direct.as_ref().map(|d| inner.stripe_index(d)));
        let _g = inner.lock_all(stripes).await;
        // Again under the pair's stripe: a direct channel made meanwhile is marked too.
        let direct = self.direct_channel_of(blocker, blocked)?;
        let key = keys::block(blocker, blocked);
        let existed = inner.engine.get(&key)?.is_some();
        let mut ops = Vec::new();
        match add {
            Some(_) if existed => return Ok(false),
            None if !existed => return Ok(false),
            Some((now_ms, max)) => {
                let prefix = keys::block_prefix(blocker).into_vec();
                if inner.page(&prefix, None, max)?.len() >= max {
                    return Err(StoreError::TooManyBlocks { max });
                }
                let record = BlockRecord {
                    created_at_ms: now_ms,
                };
                ops.push(Op::Put(key, record.encode_to_vec()));
            }
            None => ops.push(Op::Delete(key)),
        }
        if let Some(id) = &direct {
            let ckey = keys::channel(id);
            if let Some(mut record) = inner.record::<ChannelRecord>(&ckey)? {
                record.blocked =
                    add.is_some() || inner.engine.get(&keys::block(blocked, blocker))?.is_some();
                ops.push(Op::Put(ckey, record.encode_to_vec()));
            }
        }
        inner.commit(ops).await?;
        Ok(true)
    }

    /// Whether `blocker` blocks `blocked`.
    pub fn blocks(&self, blocker: &UserId, blocked: &UserId) -> Result<bool, ReadError> {
        Ok(self
            .inner
            .engine
            .get(&keys::block(blocker, blocked))?
            .is_some())
    }

    /// Whether either of two users blocks the other.
    pub fn blocks_either(&self, a: &UserId, b: &UserId) -> Result<bool, ReadError> {
        Ok(self.blocks(a, b)? || self.blocks(b, a)?)
    }

    /// The users `blocker` blocks, in id order after `after`.
    pub fn blocked_users(
        &self,
        blocker: &UserId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, ReadError> {
        let prefix = keys::block_prefix(blocker).into_vec();
        let rows = self
            .inner
            .page(&prefix, after.map(|a| keys::block(blocker, a)), limit)?;
        rows.iter()
            .map(|(k, _)| user_id(keys::trailing_str(k, prefix.len()).unwrap_or("")))
            .collect()
    }
}
