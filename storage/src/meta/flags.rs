//! The moderation queue: flags raised on messages and users of a channel, listed newest first,
//! closed with a resolution. A flag's id orders flags by time: the creation time in ms in its
//! high bits, so that listing is a range scan.

use chorus_protocol::ids::ChannelId;
use prost::Message;

use crate::engine::{Direction, Op, as_ref_bound, prefix_bounds};
use crate::error::{ReadError, StoreError};
use crate::keys;
use crate::records::{FlagRecord, decode_record};
use crate::store::Store;

/// A flag to raise.
#[derive(Debug, Clone)]
pub struct NewFlag {
    /// The message; 0 for a user.
    pub target_seq: u64,
    /// The flagged user (a message's author).
    pub user_id: String,
    /// Who reports; empty for a blocklist.
    pub reporter_id: String,
    /// Why.
    pub reason: String,
    /// Now, unix ms.
    pub now_ms: u64,
}

/// A page of a channel's flags.
#[derive(Debug, Clone)]
pub struct FlagPage {
    /// Newest first.
    pub flags: Vec<(u64, FlagRecord)>,
    /// The id to continue below; `None`: no more.
    pub next: Option<u64>,
}

impl Store {
    /// Raises a flag, or finds the open one of the same reporter on the same target. Returns
    /// its id and whether it is new.
    pub async fn raise_flag(
        &self,
        channel: &ChannelId,
        new: NewFlag,
    ) -> Result<(u64, bool), StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(&(b"flags", channel)).lock().await;
        let open = keys::open_flag(channel, new.target_seq, &new.user_id, &new.reporter_id);
        if let Some(v) = inner.engine.get(&open)? {
            let id = <[u8; 8]>::try_from(v.as_slice())
                .map(u64::from_be_bytes)
                .unwrap_or_default();
            return Ok((id, false));
        }
        // Time in the high bits; the low bits count flags raised in the same millisecond.
        let mut id = new.now_ms << 20;
        while inner.engine.get(&keys::flag(channel, id))?.is_some() {
            id += 1;
        }
        let record = FlagRecord {
            target_seq: new.target_seq,
            user_id: new.user_id,
            reporter_id: new.reporter_id,
            reason: new.reason,
            created_at_ms: new.now_ms,
            ..Default::default()
        };
        inner
            .commit(vec![
                Op::Put(keys::flag(channel, id), record.encode_to_vec()),
                Op::Put(open, id.to_be_bytes().to_vec()),
            ])
            .await?;
        Ok((id, true))
    }

    /// One flag.
    pub fn flag(&self, channel: &ChannelId, id: u64) -> Result<Option<FlagRecord>, ReadError> {
        self.inner.record(&keys::flag(channel, id))
    }

    /// Flags below `before` (newest first), open ones only unless `include_resolved`; at most
    /// `limit` returned and `scan` examined, so that a queue of many closed flags costs a
    /// bounded read per page.
    pub fn flags(
        &self,
        channel: &ChannelId,
        before: Option<u64>,
        include_resolved: bool,
        limit: usize,
        scan: usize,
    ) -> Result<FlagPage, ReadError> {
        let prefix = keys::flag_prefix(channel).into_vec();
        let (start, end) = prefix_bounds(&prefix);
        let end = before.map_or(end, |b| std::ops::Bound::Excluded(keys::flag(channel, b)));
        let n = scan.max(limit);
        let rows = self.inner.engine.scan(
            as_ref_bound(&start),
            as_ref_bound(&end),
            Direction::Reverse,
            n + 1,
        )?;
        let mut flags = Vec::new();
        let (mut examined, mut last) = (0, None);
        for (k, v) in rows.iter().take(n) {
            examined += 1;
            last = keys::trailing_u64(k);
            let record: FlagRecord = decode_record(k, v)?;
            if include_resolved || record.resolution == 0 {
                flags.push((last.unwrap_or_default(), record));
                if flags.len() == limit {
                    break;
                }
            }
        }
        Ok(FlagPage {
            flags,
            next: if rows.len() > examined { last } else { None },
        })
    }

    /// Closes a flag; `None` when there is no such flag. Closing a closed flag again changes
    /// its resolution and note.
    pub async fn resolve_flag(
        &self,
        channel: &ChannelId,
        id: u64,
        resolved_by: &str,
        resolution: i32,
        note: &str,
        now_ms: u64,
    ) -> Result<Option<FlagRecord>, StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(&(b"flags", channel)).lock().await;
        let key = keys::flag(channel, id);
        let Some(mut record): Option<FlagRecord> = inner.record(&key)? else {
            return Ok(None);
        };
        record.resolution = resolution;
        resolved_by.clone_into(&mut record.resolved_by);
        record.resolved_at_ms = now_ms;
        note.clone_into(&mut record.note);
        let open = keys::open_flag(
            channel,
            record.target_seq,
            &record.user_id,
            &record.reporter_id,
        );
        inner
            .commit(vec![Op::Put(key, record.encode_to_vec()), Op::Delete(open)])
            .await?;
        Ok(Some(record))
    }
}
