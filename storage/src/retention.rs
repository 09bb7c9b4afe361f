//! Retention: removing entries by age or count. The new `first_available_seq` is made durable
//! (and visible) before any entry is deleted, so a reader never finds a hole below it, and the
//! store always answers recovery requests truthfully.

use chorus_protocol::ids::{ChannelId, Seq};

use crate::config::RetentionPolicy;
use crate::engine::{Direction, Op};
use crate::error::StoreError;
use crate::keys;
use crate::log::{id_of, position_of};
use crate::records::{ChannelRecord, decode_entry};
use crate::store::{Inner, Store};

/// Entries deleted per engine batch.
const CHUNK: usize = 1024;

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Channels looked at.
    pub channels: u64,
    /// Entries removed.
    pub entries_removed: u64,
}

impl Store {
    /// Applies each channel's retention policy (or the store default) at time `now_ms`.
    pub async fn run_retention(&self, now_ms: u64) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        let mut after: Option<ChannelId> = None;
        loop {
            let ids = self.channels(after.as_ref(), 256)?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for id in ids {
                report.channels += 1;
                report.entries_removed += self.retain_channel(&id, now_ms).await?;
            }
            after = Some(last);
        }
        Ok(report)
    }

    /// Applies retention to one channel; returns the number of entries removed.
    pub async fn retain_channel(
        &self,
        channel: &ChannelId,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let inner = &*self.inner;
        let _g = inner.stripe(channel).lock().await;
        let Some(record) = inner.record::<ChannelRecord>(&keys::channel(channel))? else {
            return Ok(0);
        };
        let default = inner.config.default_retention;
        let policy = RetentionPolicy {
            max_age_ms: nonzero_or(record.retention_max_age_ms, default.max_age_ms),
            max_entries: nonzero_or(record.retention_max_entries, default.max_entries),
        };
        if policy == RetentionPolicy::default() {
            return Ok(0);
        }
        let log = inner.logs.get(channel)?;
        let position = position_of(&log);
        let first = position.first_available.get();
        let head = position.head.get();
        let mut cut = first;
        if policy.max_entries > 0 && head >= first + policy.max_entries {
            cut = head + 1 - policy.max_entries;
        }
        if policy.max_age_ms > 0 {
            let oldest_kept = now_ms.saturating_sub(policy.max_age_ms);
            // Walk forward from the cut while entries are too old.
            'walk: while cut <= head {
                let from = log.keys.key(Seq(cut));
                let to = log.keys.key(Seq(head));
                let rows = inner.engine.scan(
                    std::ops::Bound::Included(&from),
                    std::ops::Bound::Included(&to),
                    Direction::Forward,
                    CHUNK,
                )?;
                if rows.is_empty() {
                    break;
                }
                for (k, v) in &rows {
                    let entry = decode_entry(k, v)?;
                    if entry.event.server_time_ms >= oldest_kept {
                        break 'walk;
                    }
                    cut = keys::trailing_u64(k).unwrap_or(cut) + 1;
                }
            }
        }
        if cut <= first {
            return Ok(0);
        }
        let removed_ordinal = match log.entry_at(&*inner.engine, Seq(cut - 1))? {
            Some(e) => e.ordinal,
            None => record.removed_ordinal,
        };
        self.cut(id_of(&log), &log, Seq(cut), removed_ordinal, None)
            .await
    }
}

fn nonzero_or(own: u64, default: u64) -> u64 {
    if own > 0 { own } else { default }
}

/// Deletes every log entry below `cut`, with its idempotency, thread and mention index entries,
/// and then what the log derived for the messages below `cut`.
pub(crate) async fn delete_below(
    inner: &Inner,
    channel: &ChannelId,
    log_keys: &keys::LogKeys,
    cut: Seq,
) -> Result<u64, StoreError> {
    let removed = delete_entries_below(inner, channel, log_keys, cut).await?;
    delete_derived_below(inner, channel, cut).await?;
    Ok(removed)
}

/// Removes the derived records of messages below `cut` (reactions, threads; target 0, the
/// channel's pins, stays: its pins of removed messages are dropped at its next change and
/// skipped by reads), and the thread-activity keys of replies below `cut`. Derivation refuses
/// targets below `first_available` once the cut is made, so nothing writes these ranges again.
async fn delete_derived_below(
    inner: &Inner,
    channel: &ChannelId,
    cut: Seq,
) -> Result<(), StoreError> {
    let ranges = [
        (
            keys::derived_prefix(channel).u64(1).into_vec(),
            keys::derived_prefix(channel).u64(cut.get()).into_vec(),
        ),
        (
            keys::thread_activity_prefix(channel).into_vec(),
            keys::thread_activity_prefix(channel)
                .u64(cut.get())
                .into_vec(),
        ),
    ];
    for (start, end) in ranges {
        loop {
            let rows = inner.engine.scan(
                std::ops::Bound::Included(&start),
                std::ops::Bound::Excluded(&end),
                Direction::Forward,
                CHUNK,
            )?;
            if rows.is_empty() {
                break;
            }
            inner
                .commit(rows.into_iter().map(|(k, _)| Op::Delete(k)).collect())
                .await?;
        }
    }
    Ok(())
}

async fn delete_entries_below(
    inner: &Inner,
    channel: &ChannelId,
    log_keys: &keys::LogKeys,
    cut: Seq,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    let start = log_keys.key(Seq(0));
    let end = log_keys.key(cut);
    loop {
        let rows = inner.engine.scan(
            std::ops::Bound::Included(&start),
            std::ops::Bound::Excluded(&end),
            Direction::Forward,
            CHUNK,
        )?;
        if rows.is_empty() {
            return Ok(removed);
        }
        let mut ops = Vec::with_capacity(rows.len() * 2);
        for (k, v) in rows {
            let seq = keys::trailing_u64(&k).unwrap_or_default();
            // A damaged entry is removed all the same; its index entries may stay behind.
            if let Ok(entry) = decode_entry(&k, &v) {
                let author = entry.event.author_id.as_str();
                if !entry.client_msg_id.is_empty() {
                    ops.push(Op::Delete(keys::idem(
                        channel,
                        author,
                        &entry.client_msg_id,
                    )));
                }
                for key in keys::index_keys(channel, Seq(seq), entry.event.body.as_ref()) {
                    ops.push(Op::Delete(key));
                }
            }
            ops.push(Op::Delete(k));
            removed += 1;
        }
        inner.commit(ops).await?;
    }
}
