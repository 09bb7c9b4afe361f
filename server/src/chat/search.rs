//! Search: the query parsed and bounded, the user's scope decided now (their memberships,
//! public channels when asked, one readable channel), the index asked under the time budget,
//! and every hit read back from the log and checked again before it is shown: a message
//! deleted, erased or withheld since it was indexed, or a channel the user no longer reads,
//! never shows, whatever the index still holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::search::{ClauseKind, parse};
use chorus_protocol::v1::{self, channel_event::Body};
use chorus_search::{Order, Scope, SearchError, SearchRequest};
use prost::Message as _;

use super::{Actor, Chat, Error, channel_id, clamp_limit};

/// Page size when the request asks none.
const DEFAULT_LIMIT: usize = 20;

impl Chat<'_> {
    /// One page of search results for the acting user, cut to `max_reply_bytes`.
    pub async fn search(
        &self,
        s: v1::Search,
        max_reply_bytes: usize,
    ) -> Result<v1::SearchResults, Error> {
        let Actor::User(user) = self.actor else {
            return Err(Error::Forbidden("search is a user's request".into()));
        };
        let Some((index, permits)) = self.node.search().index() else {
            return Err(Error::Unimplemented("search is off on this node".into()));
        };
        let limits = self.node.limits();
        if s.query.len() > limits.max_search_query_bytes as usize {
            return Err(Error::too_large("query", "query too long"));
        }
        self.take_search_budget(&limits)?;
        let query = parse(&s.query).map_err(|e| {
            metrics::counter!("chorus_search_errors_total", "kind" => "query").increment(1);
            Error::invalid("query", e.to_string())
        })?;
        let limit = clamp_limit(s.limit, DEFAULT_LIMIT, limits.max_search_limit);
        let order = match v1::SearchOrder::try_from(s.order) {
            Ok(v1::SearchOrder::Newest) => Order::Newest,
            _ => Order::Relevance,
        };
        // The scope, decided now: one channel the user reads, or their channels (and public
        // ones when asked), plus the channels `in:` names that they read.
        let mut truncated = false;
        let scope = if s.channel_id.is_empty() {
            let max = limits.max_search_channels as usize;
            let mut channels = self.node.store().user_channels(user, None, max + 1)?;
            truncated = channels.len() > max;
            channels.truncate(max);
            for c in &query.clauses {
                if let (false, ClauseKind::In(ch)) = (c.negated, &c.kind)
                    && !channels.contains(ch)
                    && self.readable(ch).is_ok()
                {
                    channels.push(ch.clone());
                }
            }
            Scope {
                reader: user.clone(),
                channel: None,
                channels,
                include_public: s.include_public,
            }
        } else {
            let id = channel_id("channel_id", &s.channel_id)?;
            self.readable(&id)?;
            Scope {
                reader: user.clone(),
                channel: Some(id),
                channels: Vec::new(),
                include_public: false,
            }
        };
        let settings = &self.node.config().search;
        let started = Instant::now();
        let deadline = started + Duration::from_millis(u64::from(settings.time_budget_ms));
        // A turn among the searches running at once, within the same budget.
        let permit = tokio::time::timeout_at(deadline.into(), permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                metrics::counter!("chorus_search_errors_total", "kind" => "busy").increment(1);
                Error::Unavailable {
                    message: "search busy".into(),
                    retry_after_ms: 500,
                }
            })?;
        let index = Arc::clone(index);
        let snippet_chars = settings.snippet_chars as usize;
        let cursor = (!s.cursor.is_empty()).then_some(s.cursor);
        let page = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            index.search(&SearchRequest {
                query: &query,
                scope: &scope,
                order,
                cursor: cursor.as_deref(),
                limit,
                deadline,
                snippet_chars,
            })
        })
        .await
        .map_err(|e| Error::Unavailable {
            message: format!("search failed: {e}"),
            retry_after_ms: 1_000,
        })?
        .map_err(search_error)?;
        metrics::histogram!("chorus_search_seconds").record(started.elapsed().as_secs_f64());
        if page.timed_out {
            metrics::counter!("chorus_search_timeouts_total").increment(1);
        }
        let mut readable: HashMap<ChannelId, bool> = HashMap::new();
        let mut results = v1::SearchResults {
            next_cursor: page.next_cursor.clone().unwrap_or_default(),
            timed_out: page.timed_out,
            channels_truncated: truncated,
            ..Default::default()
        };
        let mut budget = max_reply_bytes.saturating_sub(256);
        let mut previous: Option<String> = None;
        for hit in &page.hits {
            let may = *readable
                .entry(hit.channel.clone())
                .or_insert_with(|| self.readable(&hit.channel).is_ok());
            if !may {
                continue;
            }
            let Some((event, text)) = self.current(&hit.channel, hit.seq, hit.edit_seq)? else {
                continue;
            };
            let snippet = page.snippet(&text);
            let snippet = v1::Snippet {
                highlighted: snippet
                    .highlighted
                    .iter()
                    .map(|r| v1::TextRange {
                        start: r.start as u32,
                        end: r.end as u32,
                    })
                    .collect(),
                fragment: snippet.fragment,
            };
            let len = event.encoded_len() + snippet.encoded_len() + 16;
            if len > budget {
                // The rest would not fit in the reply: the next page starts at this hit (or
                // after it, if it alone is more than a reply holds).
                results.next_cursor = previous.unwrap_or_else(|| hit.cursor_after.clone());
                break;
            }
            previous = Some(hit.cursor_after.clone());
            budget -= len;
            results.hits.push(event);
            results.snippets.push(snippet);
        }
        Ok(results)
    }

    /// A hit as the user reads it now: the message with its latest edit's content, if it is
    /// still a message they may see; and its text.
    fn current(
        &self,
        channel: &ChannelId,
        seq: Seq,
        edit_seq: Option<Seq>,
    ) -> Result<Option<(v1::ChannelEvent, String)>, Error> {
        let store = self.node.store();
        let reader = self.actor.user().map(|u| u.as_str());
        let Some(entry) = store.entry(channel, seq)? else {
            return Ok(None);
        };
        if !entry.visible_to(reader) {
            return Ok(None);
        }
        let mut event = entry.event.clone();
        let Some(Body::Message(message)) = &mut event.body else {
            return Ok(None);
        };
        if let Some(edit_seq) = edit_seq
            && let Some(edit) = store.entry(channel, edit_seq)?
            && edit.visible_to(reader)
            && let Some(Body::MessageEdited(e)) = &edit.event.body
            && e.target_seq == seq.get()
        {
            message.text.clone_from(&e.text);
            message.mentions.clone_from(&e.mentions);
            message.attachments.clone_from(&e.attachments);
            message.custom.clone_from(&e.custom);
        }
        let text = message.text.clone();
        Ok(Some((event, text)))
    }
}

fn search_error(e: SearchError) -> Error {
    let kind = match &e {
        SearchError::Query(_) | SearchError::ThreadNeedsChannel => "query",
        SearchError::BadCursor => "cursor",
        _ => "index",
    };
    metrics::counter!("chorus_search_errors_total", "kind" => kind).increment(1);
    match e {
        SearchError::Query(q) => Error::invalid("query", q.to_string()),
        e @ SearchError::ThreadNeedsChannel => Error::invalid("query", e.to_string()),
        SearchError::BadCursor => Error::invalid("cursor", "not a cursor of this query"),
        other => {
            tracing::warn!(error = %other, "search failed");
            Error::Unavailable {
                message: "search index unavailable".into(),
                retry_after_ms: 1_000,
            }
        }
    }
}
