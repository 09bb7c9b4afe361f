//! What the log's entries do to a generation: a channel's entries after its checkpoint are
//! read and applied, and the checkpoint moves with them.

use std::sync::atomic::Ordering;

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::channel_event::Body;
use chorus_protocol::v1::{ChannelKind, Message};
use chorus_storage::{Anchor, LogEntry, LogQuery, Store};
use tantivy::Term;
use tantivy::query::{BooleanQuery, Occur, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;

use crate::error::SearchError;
use crate::generation::Generation;
use crate::schema::{Checkpoint, MessageDoc};
use crate::status::Counters;

/// Entries read from a log per read.
const READ_BATCH: usize = 512;
/// Entries one channel may index per pass before the others get a turn.
const CHANNEL_PASS: u64 = 8_192;

impl Generation {
    pub(crate) fn commit_if_large(&mut self, docs: usize) -> Result<(), SearchError> {
        if self.uncommitted >= docs {
            self.commit()?;
        }
        Ok(())
    }
}

/// Indexes up to [`CHANNEL_PASS`] entries of `channel` after its checkpoint. Returns how
/// many entries remain.
pub(crate) fn index_channel(
    store: &Store,
    g: &mut Generation,
    channel: &ChannelId,
    counters: &Counters,
) -> Result<u64, SearchError> {
    // The position is in memory; the channel's kind never changes, so its record is read
    // once per generation.
    let pos = match store.position(channel) {
        Ok(pos) => pos,
        Err(chorus_storage::ReadError::ChannelNotFound(_)) => {
            if g.checkpoints.contains_key(channel) {
                g.forget_channel(channel);
            }
            g.public.remove(channel);
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let public = match g.public.get(channel) {
        Some(p) => *p,
        None => {
            let Some(info) = store.channel(channel)? else {
                return Ok(0);
            };
            let p = info.record.kind() == ChannelKind::Public;
            g.public.insert(channel.clone(), p);
            p
        }
    };
    let first = pos.first_available.get();
    let mut ck = match g.checkpoints.get(channel) {
        // A checkpoint past the log's head: the store was restored from an older copy.
        Some(ck) if ck.epoch == pos.epoch.get() && ck.head <= pos.head.get() => *ck,
        known => {
            // A new channel for the index, its history was cut (a new epoch), or the log is
            // behind the index (a restored store): from the first entry the log holds.
            if known.is_some() {
                g.forget_channel(channel);
            }
            Checkpoint {
                epoch: pos.epoch.get(),
                first_available: first,
                head: first.saturating_sub(1),
            }
        }
    };
    if first > ck.first_available {
        // Retention removed entries below `first`: their documents go too.
        let q = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    g.fields.channel_term(channel),
                    IndexRecordOption::Basic,
                )),
            ),
            (
                Occur::Must,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Unbounded,
                    std::ops::Bound::Excluded(Term::from_field_u64(g.fields.seq, first)),
                )),
            ),
        ]);
        g.writer.delete_query(Box::new(q))?;
        g.uncommitted += 1;
        ck.first_available = first;
        ck.head = ck.head.max(first.saturating_sub(1));
    }
    let stop_at = pos.head.get().min(ck.head.saturating_add(CHANNEL_PASS));
    while ck.head < stop_at {
        let want = usize::try_from(stop_at - ck.head).unwrap_or(READ_BATCH);
        let page = store.read(
            channel,
            &LogQuery {
                anchor: Anchor::After(Seq(ck.head)),
                limit: want.min(READ_BATCH),
                thread: None,
            },
        )?;
        if page.entries.is_empty() {
            // Nothing stored after the checkpoint any more (removed under us).
            ck.head = stop_at;
            break;
        }
        for e in &page.entries {
            if e.seq.get() > stop_at {
                break;
            }
            apply(store, g, channel, e, public)?;
            counters.indexed.fetch_add(1, Ordering::Relaxed);
            ck.head = e.seq.get();
        }
    }
    g.set_checkpoint(channel, ck);
    Ok(pos.head.get().saturating_sub(ck.head))
}

/// What one entry changes in the index: a message is added, an edit replaces its message's
/// content, a delete or tombstone removes it.
fn apply(
    store: &Store,
    g: &mut Generation,
    channel: &ChannelId,
    e: &LogEntry,
    public: bool,
) -> Result<(), SearchError> {
    match &e.event.body {
        // No document of it can exist: documents and checkpoints commit together, and
        // indexing resumes after the checkpoint, so an entry past it was never committed.
        Some(Body::Message(m)) => add(g, channel, e, m, None, public, false),
        Some(Body::MessageEdited(edit)) => {
            let target = store.entry(channel, Seq(edit.target_seq))?;
            let Some(target) = target else {
                return Ok(());
            };
            let Some(Body::Message(m)) = &target.event.body else {
                // Deleted or erased since: nothing to index.
                return Ok(());
            };
            let edited = Message {
                text: edit.text.clone(),
                mentions: edit.mentions.clone(),
                attachments: edit.attachments.clone(),
                thread_parent_seq: m.thread_parent_seq,
                ..Default::default()
            };
            add(g, channel, &target, &edited, Some(e), public, true)
        }
        Some(Body::MessageDeleted(d)) => {
            g.writer
                .delete_term(g.fields.mid_term(channel, Seq(d.target_seq)));
            g.uncommitted += 1;
            Ok(())
        }
        Some(Body::Tombstone(_)) => {
            g.writer.delete_term(g.fields.mid_term(channel, e.seq));
            g.uncommitted += 1;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Adds the document of the message `target` with `content`; `replace`: removes its earlier
/// document first (an edit).
fn add(
    g: &mut Generation,
    channel: &ChannelId,
    target: &LogEntry,
    content: &Message,
    edit: Option<&LogEntry>,
    public: bool,
    replace: bool,
) -> Result<(), SearchError> {
    let doc = g.fields.message_doc(&MessageDoc {
        channel,
        seq: target.seq,
        edit_seq: edit.map_or(0, |e| e.seq.get()),
        event: &target.event,
        text: &content.text,
        mentions: &content.mentions,
        attachments: &content.attachments,
        thread: content.thread_parent_seq,
        public,
        withheld: target.withheld || edit.is_some_and(|e| e.withheld),
    });
    if replace {
        g.writer.delete_term(g.fields.mid_term(channel, target.seq));
    }
    g.writer.add_document(doc)?;
    g.uncommitted += 1;
    Ok(())
}
