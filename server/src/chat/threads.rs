//! Threads: a reply names its root (`Message.thread_parent_seq`); the store keeps each root's
//! thread summary and the channel's threads by latest reply. This file lists them; publishing
//! a reply is in `messages`.

use chorus_protocol::ids::Seq;
use chorus_protocol::v1;
use chorus_storage::ThreadCursor;
use prost::Message;

use super::{Chat, Error, channel_id, clamp_limit};

/// Threads per page when the request asks for 0.
const DEFAULT_THREAD_PAGE: usize = 20;

impl Chat<'_> {
    /// A page of a readable channel's threads, the latest reply first, each with its root as
    /// it reads now.
    /// The reply is cut to `max_reply_bytes`, its cursor going on after the last thread kept.
    pub fn list_threads(
        &self,
        l: v1::ListThreads,
        max_reply_bytes: usize,
    ) -> Result<v1::ThreadList, Error> {
        let id = channel_id("channel_id", &l.channel_id)?;
        self.readable(&id)?;
        let after = parse_cursor(&l.cursor)?;
        let max = self.node.limits().announced().max_list_limit;
        let limit = clamp_limit(l.limit, DEFAULT_THREAD_PAGE, max);
        let store = self.node.store();
        let page = store.threads(&id, after, limit)?;
        let mut threads = Vec::with_capacity(page.threads.len());
        let mut next = page.next;
        let mut left = max_reply_bytes;
        for mut t in page.threads {
            t.root = store
                .entry(&id, Seq(t.root_seq))?
                .map(|e| self.event_view(&e));
            let len = t.encoded_len() + 8;
            if len > left && !threads.is_empty() {
                next = threads.last().map(|k: &v1::ThreadSummary| ThreadCursor {
                    last_reply: Seq(k.last_reply_seq),
                    root: Seq(k.root_seq),
                });
                break;
            }
            left = left.saturating_sub(len);
            threads.push(t);
        }
        Ok(v1::ThreadList {
            threads,
            next_cursor: next
                .map(|c| format!("{}:{}", c.last_reply.get(), c.root.get()))
                .unwrap_or_default(),
        })
    }
}

/// `""` (the first page) or `last_reply:root` of the page's last thread.
fn parse_cursor(s: &str) -> Result<Option<ThreadCursor>, Error> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid("cursor", "not a cursor of this list");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    Ok(Some(ThreadCursor {
        last_reply: Seq(a.parse().map_err(|_| bad())?),
        root: Seq(b.parse().map_err(|_| bad())?),
    }))
}
