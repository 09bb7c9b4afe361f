//! Reads: a channel's position, one entry, and pages of the log or of one thread, from the
//! tail cache where it covers them and from the engine otherwise.

use std::ops::Bound;
use std::sync::Arc;

use chorus_protocol::ids::{ChannelId, Seq};

use super::channel::ChannelLog;
use super::{Anchor, LogPage, LogPosition, LogQuery, Logs};
use crate::engine::{Direction, as_ref_bound, prefix_bounds};
use crate::error::ReadError;
use crate::keys;
use crate::records::LogEntry;

impl Logs {
    /// Where the channel's log stands.
    pub(crate) fn position(&self, channel: &ChannelId) -> Result<LogPosition, ReadError> {
        let log = self.get(channel)?;
        let state = log.lock();
        Ok(ChannelLog::position(&state))
    }

    /// One entry, if it is durable and still available.
    pub(crate) fn entry(
        &self,
        channel: &ChannelId,
        seq: Seq,
    ) -> Result<Option<Arc<LogEntry>>, ReadError> {
        let log = self.get(channel)?;
        log.entry_at(&*self.engine, seq)
    }

    /// A page of the log.
    pub(crate) fn read(&self, channel: &ChannelId, query: &LogQuery) -> Result<LogPage, ReadError> {
        let log = self.get(channel)?;
        let position = ChannelLog::position(&log.lock());
        let limit = query.limit.max(1) as u64;
        if let Some(root) = query.thread {
            return self.read_thread(&log, position, root, query.anchor, limit);
        }
        let first = position.first_available.get();
        let head = position.head.get();
        let (lo, hi) = match query.anchor {
            Anchor::Latest => (head.saturating_sub(limit - 1).max(first), head),
            Anchor::Before(s) => {
                let hi = s.get().saturating_sub(1).min(head);
                (hi.saturating_sub(limit - 1).max(first), hi)
            }
            Anchor::After(s) => {
                let lo = s.get().saturating_add(1).max(first);
                (lo, lo.saturating_add(limit - 1).min(head))
            }
            Anchor::Around(s) => {
                let lo = s.get().saturating_sub((limit - 1) / 2).max(first);
                let hi = lo.saturating_add(limit - 1).min(head);
                (hi.saturating_sub(limit - 1).max(first), hi)
            }
        };
        let entries = log.range(&*self.engine, Seq(lo), Seq(hi))?;
        let (lo_edge, hi_edge) = if lo <= hi { (lo, hi) } else { (hi + 1, lo - 1) };
        Ok(LogPage {
            entries,
            has_more_before: lo_edge > first && lo_edge > 1,
            has_more_after: hi_edge < head,
            position,
        })
    }

    fn read_thread(
        &self,
        log: &ChannelLog,
        position: LogPosition,
        root: Seq,
        anchor: Anchor,
        limit: u64,
    ) -> Result<LogPage, ReadError> {
        let prefix = keys::thread_prefix(&log.id, root).into_vec();
        let key_at = |s: u64| keys::thread_prefix(&log.id, root).u64(s).into_vec();
        let head = position.head.get();
        let visible = |k: &Vec<u8>| {
            keys::trailing_u64(k).filter(|&s| s <= head && s >= position.first_available.get())
        };
        let (start, end) = prefix_bounds(&prefix);
        let scan =
            |lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, dir, n: u64| -> Result<Vec<u64>, ReadError> {
                let keys =
                    self.engine
                        .scan(as_ref_bound(&lo), as_ref_bound(&hi), dir, n as usize)?;
                Ok(keys.iter().filter_map(|(k, _)| visible(k)).collect())
            };
        // Replies only; the root is added when the page reaches the thread's start.
        let (mut seqs, more_before, more_after) = match anchor {
            Anchor::Latest => {
                let mut s = scan(start.clone(), end.clone(), Direction::Reverse, limit + 1)?;
                let more = s.len() as u64 > limit;
                s.truncate(limit as usize);
                s.reverse();
                (s, more, false)
            }
            Anchor::Before(b) => {
                let mut s = scan(
                    start.clone(),
                    Bound::Excluded(key_at(b.get())),
                    Direction::Reverse,
                    limit + 1,
                )?;
                let more = s.len() as u64 > limit;
                s.truncate(limit as usize);
                s.reverse();
                let after = !scan(
                    Bound::Included(key_at(b.get())),
                    end.clone(),
                    Direction::Forward,
                    1,
                )?
                .is_empty();
                (s, more, after)
            }
            Anchor::After(a) => {
                let mut s = scan(
                    Bound::Excluded(key_at(a.get())),
                    end.clone(),
                    Direction::Forward,
                    limit + 1,
                )?;
                let more = s.len() as u64 > limit;
                s.truncate(limit as usize);
                let before = !scan(
                    start.clone(),
                    Bound::Included(key_at(a.get())),
                    Direction::Reverse,
                    1,
                )?
                .is_empty();
                (s, before, more)
            }
            Anchor::Around(c) => {
                let half = (limit - 1) / 2;
                let mut before = scan(
                    start.clone(),
                    Bound::Excluded(key_at(c.get())),
                    Direction::Reverse,
                    half + 1,
                )?;
                let more_before = before.len() as u64 > half;
                before.truncate(half as usize);
                before.reverse();
                let rest = limit - before.len() as u64;
                let mut after = scan(
                    Bound::Included(key_at(c.get())),
                    end.clone(),
                    Direction::Forward,
                    rest + 1,
                )?;
                let more_after = after.len() as u64 > rest;
                after.truncate(rest as usize);
                before.extend(after);
                (before, more_before, more_after)
            }
        };
        if !more_before && (seqs.len() as u64) < limit {
            seqs.insert(0, root.get());
        }
        let mut entries = Vec::with_capacity(seqs.len());
        for s in seqs {
            if let Some(e) = log.entry_at(&*self.engine, Seq(s))? {
                entries.push(e);
            }
        }
        Ok(LogPage {
            entries,
            has_more_before: more_before,
            has_more_after: more_after,
            position,
        })
    }
}
