//! Messages: publish (sequenced now, acknowledged when durable), edit, delete, history.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::limits::MAX_CLIENT_MSG_ID_BYTES;
use chorus_protocol::v1::{self, Role, channel_event::Body};
use chorus_storage::{Anchor, LogEntry, LogQuery, NewEntry};
use prost::Message;

use super::access::role_rank;
use super::policy::Flagged;
use super::view::appended_message;
use super::{Actor, Chat, Error, channel_id, clamp_limit, user_id};
use crate::clock::unix_ms;

/// The durable half of a publish: resolves when the entry is durable.
pub type Durable = Pin<Box<dyn Future<Output = Result<v1::Appended, Error>> + Send>>;

impl Chat<'_> {
    /// Validates and sequences a message now, in request order; the returned future resolves
    /// when it is durable, without holding up the caller's next requests.
    pub async fn publish(&self, p: v1::Publish) -> Result<Durable, Error> {
        let Actor::User(me) = self.actor else {
            return Err(Error::Forbidden("a user publishes".into()));
        };
        let id = channel_id("channel_id", &p.channel_id)?;
        let message = p
            .message
            .ok_or_else(|| Error::invalid("message", "message is required"))?;
        if message.client_msg_id.is_empty() || message.client_msg_id.len() > MAX_CLIENT_MSG_ID_BYTES
        {
            return Err(Error::invalid(
                "message.client_msg_id",
                "client_msg_id must be 1 to 64 bytes",
            ));
        }
        let limits = self.node.limits();
        let content = content_bytes(&message.text, &message.custom, &message.attachments);
        if content > limits.max_message_bytes as usize {
            return Err(Error::too_large(
                "message",
                format!("message content over {} bytes", limits.max_message_bytes),
            ));
        }
        if message.mentions.len() > limits.max_mentions as usize {
            return Err(Error::too_large("message.mentions", "too many mentions"));
        }
        if message.attachments.len() > limits.max_attachments as usize {
            return Err(Error::too_large(
                "message.attachments",
                "too many attachments",
            ));
        }
        for m in &message.mentions {
            user_id("message.mentions", m)?;
        }
        let (info, member) = self.poster(&id)?;
        let now = unix_ms();
        self.check_references(&id, &info, &message)?;
        let flagged =
            self.posting_policy(&info, Some(&member), &message.text, "message.text", true)?;
        self.take_publish_budget(&limits)?;
        let key = message.client_msg_id.clone();
        let started = Instant::now();
        let ticket = self
            .node
            .store()
            .begin_append(
                &id,
                NewEntry {
                    author: Some(me.clone()),
                    time_ms: now,
                    body: Body::Message(message),
                    client_msg_id: Some(key),
                    withheld: member.shadowed_until_ms > now,
                },
            )
            .await?;
        let own_reads = self.node.own_reads().clone();
        let user = me.clone();
        let store = self.node.store().clone();
        Ok(Box::pin(async move {
            let appended = ticket.durable().await?;
            if let Some(Flagged(word)) = flagged
                && !appended.duplicate
            {
                super::flags::flag_blocked(&store, &id, appended.entry.seq, user.as_str(), &word)
                    .await;
            }
            if !appended.duplicate {
                let hot = crate::metrics::HotMetrics::get();
                hot.commit.record(started.elapsed().as_secs_f64());
                hot.publishes.increment(1);
            }
            // Posting means having read the channel; the marker moves in the background.
            own_reads.note(user, id, appended.entry.seq);
            Ok(appended_message(&appended))
        }))
    }

    /// A reply's root must be a live message that is not itself a reply (threads are one level
    /// deep); a quoted entry must be a live message of the channel. Both are read only when
    /// named, so that a plain message costs no read.
    fn check_references(
        &self,
        id: &ChannelId,
        info: &chorus_storage::ChannelInfo,
        message: &v1::Message,
    ) -> Result<(), Error> {
        let head = info.position.head.get();
        let store = self.node.store();
        let live = |seq: u64| -> Result<Option<v1::Message>, Error> {
            if seq > head {
                return Ok(None);
            }
            Ok(store
                .entry(id, Seq(seq))?
                .and_then(|e| match self.event_view(&e).body {
                    Some(Body::Message(m)) => Some(m),
                    _ => None,
                }))
        };
        if message.thread_parent_seq != 0 {
            match live(message.thread_parent_seq)? {
                Some(root) if root.thread_parent_seq == 0 => {}
                Some(_) => {
                    return Err(Error::invalid(
                        "message.thread_parent_seq",
                        "a reply cannot start a thread: reply to its root",
                    ));
                }
                None => {
                    return Err(Error::invalid(
                        "message.thread_parent_seq",
                        "no such message",
                    ));
                }
            }
        } else if message.show_in_channel {
            return Err(Error::invalid(
                "message.show_in_channel",
                "only a thread reply is shown in the channel",
            ));
        }
        if message.quoted_seq != 0 && live(message.quoted_seq)?.is_none() {
            return Err(Error::invalid("message.quoted_seq", "no such message"));
        }
        Ok(())
    }

    /// Replaces a message's content (its author only).
    pub async fn edit(&self, e: v1::EditMessage) -> Result<v1::Appended, Error> {
        let id = channel_id("channel_id", &e.channel_id)?;
        let (_, entry, _) = self.target_message(&id, e.target_seq)?;
        if self.actor.user().map(|u| u.as_str()) != Some(entry.event.author_id.as_str()) {
            return Err(Error::Forbidden("only the author edits a message".into()));
        }
        let limits = self.node.limits();
        if content_bytes(&e.text, &e.custom, &e.attachments) > limits.max_message_bytes as usize {
            return Err(Error::too_large("text", "message content too large"));
        }
        if e.mentions.len() > limits.max_mentions as usize
            || e.attachments.len() > limits.max_attachments as usize
        {
            return Err(Error::TooLarge {
                field: None,
                message: "too many mentions or attachments".into(),
            });
        }
        let info = self.readable(&id)?;
        self.require_not_blocked(&info)?;
        let flagged = self.posting_policy(&info, None, &e.text, "text", false)?;
        let body = Body::MessageEdited(v1::MessageEdited {
            target_seq: e.target_seq,
            text: e.text,
            mentions: e.mentions,
            attachments: e.attachments,
            custom: e.custom,
        });
        // A shadow-banned author's edit is withheld like their posts.
        let withheld = self.shadowed(&id)?;
        let appended = self
            .append_as(&id, body, &e.client_msg_id, withheld)
            .await?;
        if let Some(Flagged(word)) = flagged
            && !appended.duplicate
        {
            let author = self.actor.user().map_or("", |u| u.as_str());
            super::flags::flag_blocked(self.node.store(), &id, Seq(e.target_seq), author, &word)
                .await;
        }
        Ok(appended)
    }

    /// Deletes a message (its author, a moderator, an admin): a `MessageDeleted` event, and
    /// the message's content replaced by a tombstone (the seq stays, so the log has no gap).
    pub async fn delete(
        &self,
        id: &ChannelId,
        seq: u64,
        client_msg_id: &str,
    ) -> Result<v1::Appended, Error> {
        let (role, entry, message) = self.target_message(id, seq)?;
        let own = self.actor.user().map(|u| u.as_str()) == Some(entry.event.author_id.as_str());
        if !own && role_rank(role) < role_rank(Role::Moderator) {
            return Err(Error::Forbidden(
                "only the author or a moderator deletes a message".into(),
            ));
        }
        let reason = match self.actor {
            Actor::User(_) => v1::tombstone::Reason::Deleted,
            Actor::Admin => v1::tombstone::Reason::AdminRemoved,
        };
        let body = Body::MessageDeleted(v1::MessageDeleted {
            target_seq: seq,
            by_moderator: !own,
        });
        let appended = self.append_keyed(id, body, client_msg_id).await?;
        let tombstone = Body::Tombstone(v1::Tombstone {
            reason: reason as i32,
            thread_parent_seq: message.thread_parent_seq,
        });
        self.node.store().rewrite(id, Seq(seq), tombstone).await?;
        Ok(appended)
    }

    /// A page of a readable channel's log, cut to `max_reply_bytes`.
    pub fn history(
        &self,
        h: v1::History,
        max_reply_bytes: usize,
    ) -> Result<v1::HistoryPage, Error> {
        let id = channel_id("channel_id", &h.channel_id)?;
        self.readable(&id)?;
        let announced = self.node.limits().announced();
        let limit = clamp_limit(
            h.limit,
            announced.default_history_limit as usize,
            announced.max_history_limit,
        );
        let anchor = match h.anchor {
            None => Anchor::Latest,
            Some(v1::history::Anchor::BeforeSeq(s)) => Anchor::Before(Seq(s)),
            Some(v1::history::Anchor::AfterSeq(s)) => Anchor::After(Seq(s)),
            Some(v1::history::Anchor::AroundSeq(s)) => Anchor::Around(Seq(s)),
        };
        let thread = (h.thread_parent_seq != 0).then_some(Seq(h.thread_parent_seq));
        let page = self.node.store().read(
            &id,
            &LogQuery {
                anchor,
                limit,
                thread,
            },
        )?;
        let store = self.node.store();
        let messages: Vec<Seq> = page
            .entries
            .iter()
            .filter(|e| {
                matches!(e.event.body, Some(Body::Message(_)))
                    && e.visible_to(self.actor.user().map(|u| u.as_str()))
            })
            .map(|e| e.seq)
            .collect();
        let all_summaries = store.summaries(&id, &messages, self.actor.user())?;
        // Events and their summaries take up to three quarters of the reply; the entries they
        // quote come after, in what is left.
        let mut left = max_reply_bytes;
        let mut budget = max_reply_bytes / 4 * 3;
        let mut events = Vec::with_capacity(page.entries.len());
        let mut summaries = Vec::with_capacity(all_summaries.len());
        let mut by_seq = all_summaries.into_iter().peekable();
        let mut cut = false;
        for e in &page.entries {
            let summary = by_seq.next_if(|s| s.seq == e.seq.get());
            let len =
                e.event.encoded_len() + 8 + summary.as_ref().map_or(0, |s| s.encoded_len() + 8);
            if len > budget {
                cut = true;
                break;
            }
            budget -= len;
            left -= len;
            events.push(self.event_view(e));
            summaries.extend(summary);
        }
        let quoted = self.quoted_by(&id, &events, left)?;
        Ok(v1::HistoryPage {
            channel_id: id.to_string(),
            epoch: page.position.epoch.get(),
            summaries,
            quoted,
            events,
            has_more_before: page.has_more_before,
            has_more_after: page.has_more_after || cut,
            first_available_seq: page.position.first_available.get(),
            head_seq: page.position.head.get(),
        })
    }

    /// The entries the messages of `events` quote that `events` does not hold, as they read
    /// now, in seq order; those that would take more than `budget` bytes are left out.
    fn quoted_by(
        &self,
        id: &ChannelId,
        events: &[v1::ChannelEvent],
        budget: usize,
    ) -> Result<Vec<v1::ChannelEvent>, Error> {
        let mut wanted: Vec<u64> = events
            .iter()
            .filter_map(|e| match &e.body {
                Some(Body::Message(m)) if m.quoted_seq != 0 => Some(m.quoted_seq),
                _ => None,
            })
            .filter(|q| events.binary_search_by_key(q, |e| e.seq).is_err())
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut left = budget;
        let mut quoted = Vec::with_capacity(wanted.len());
        for q in wanted {
            if let Some(e) = self.node.store().entry(id, Seq(q))? {
                let len = e.event.encoded_len() + 8;
                if len > left {
                    break;
                }
                left -= len;
                quoted.push(self.event_view(&e));
            }
        }
        Ok(quoted)
    }

    /// The message at `seq`, which must be a live message of a channel the actor belongs to
    /// (not archived, except for an admin).
    pub(super) fn target_message(
        &self,
        id: &ChannelId,
        seq: u64,
    ) -> Result<(Role, Arc<LogEntry>, v1::Message), Error> {
        let (info, role) = self.require_role(id, Role::Member)?;
        if info.record.archived && matches!(self.actor, Actor::User(_)) {
            return Err(Error::Forbidden("the channel is archived".into()));
        }
        let entry = self
            .node
            .store()
            .entry(id, Seq(seq))?
            .ok_or_else(|| Error::NotFound(format!("no entry {seq}")))?;
        // A withheld post is no message to anyone but its author.
        match self.event_view(&entry).body {
            Some(Body::Message(m)) => Ok((role, entry, m)),
            _ => Err(Error::NotAMessage(seq)),
        }
    }

    /// Appends an event by the actor (no author for an admin).
    pub(crate) async fn append_event(
        &self,
        id: &ChannelId,
        body: Body,
    ) -> Result<v1::Appended, Error> {
        self.append_keyed(id, body, "").await
    }

    /// Appends an event by the actor with an idempotency key (`""`: none).
    pub(super) async fn append_keyed(
        &self,
        id: &ChannelId,
        body: Body,
        key: &str,
    ) -> Result<v1::Appended, Error> {
        self.append_as(id, body, key, false).await
    }

    /// Appends an event by the actor with an idempotency key (`""`: none), withheld from
    /// everyone but its author when `withheld`.
    pub(super) async fn append_as(
        &self,
        id: &ChannelId,
        body: Body,
        key: &str,
        withheld: bool,
    ) -> Result<v1::Appended, Error> {
        if key.len() > MAX_CLIENT_MSG_ID_BYTES {
            return Err(Error::invalid(
                "client_msg_id",
                "client_msg_id must be at most 64 bytes",
            ));
        }
        let appended = self
            .node
            .store()
            .append(
                id,
                NewEntry {
                    author: self.actor.user().cloned(),
                    time_ms: unix_ms(),
                    body,
                    client_msg_id: (!key.is_empty()).then(|| key.to_owned()),
                    withheld,
                },
            )
            .await?;
        Ok(appended_message(&appended))
    }
}

/// A message's content size: text, custom data and attachments, as limited by
/// `max_message_bytes`.
fn content_bytes(text: &str, custom: &[u8], attachments: &[v1::Attachment]) -> usize {
    text.len() + custom.len() + attachments.iter().map(Message::encoded_len).sum::<usize>()
}
