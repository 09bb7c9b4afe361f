//! Search requests and their results.

use std::ops::Range;

use chorus_protocol::ids::ChannelId;
use chorus_protocol::v1;

use super::Entry;
use crate::error::Error;

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchOrder {
    /// Best match first (newest first when the query has no words).
    #[default]
    Relevance,
    /// Newest first.
    Newest,
}

/// A search: the query in the search language (`deploy* from:alice after:2026-12-01`, see
/// docs/protocol.md section 6.9) and where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// The query text.
    pub query: String,
    /// Only this channel; `None`: the user's channels.
    pub channel: Option<ChannelId>,
    /// Also public channels the user is not a member of (without `channel`).
    pub include_public: bool,
    /// The order.
    pub order: SearchOrder,
    /// Hits per page (0: the server's default; at most `Limits.max_search_limit`).
    pub limit: u32,
}

impl SearchQuery {
    /// A query over the user's channels, best match first.
    pub fn new(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            channel: None,
            include_public: false,
            order: SearchOrder::Relevance,
            limit: 0,
        }
    }

    /// Only in `channel`.
    pub fn in_channel(mut self, channel: ChannelId) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Also in public channels.
    pub fn with_public(mut self) -> Self {
        self.include_public = true;
        self
    }

    /// Newest first.
    pub fn newest_first(mut self) -> Self {
        self.order = SearchOrder::Newest;
        self
    }

    /// Hits per page.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    pub(crate) fn to_proto(&self, cursor: Option<&str>) -> v1::Search {
        v1::Search {
            query: self.query.clone(),
            channel_id: self
                .channel
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            limit: self.limit,
            cursor: cursor.unwrap_or_default().to_owned(),
            include_public: self.include_public,
            order: match self.order {
                SearchOrder::Relevance => v1::SearchOrder::Relevance,
                SearchOrder::Newest => v1::SearchOrder::Newest,
            } as i32,
        }
    }
}

/// The part of a hit's text that matched, with the matching words marked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snippet {
    /// The text.
    pub fragment: String,
    /// Byte ranges of `fragment` that matched, in order (always on character boundaries).
    pub highlighted: Vec<Range<usize>>,
}

/// One hit: the message as it reads now, and its snippet.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The message (its latest edit applied). Not part of any subscription stream.
    pub entry: Entry,
    /// Where it matched.
    pub snippet: Snippet,
}

/// A page of search results.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SearchPage {
    /// In the order asked for.
    pub hits: Vec<SearchHit>,
    /// The cursor of the next page; `None`: no more.
    pub next_cursor: Option<String>,
    /// The server's time budget cut the query: a next page may hold better matches.
    pub timed_out: bool,
    /// The user belongs to more channels than one search covers: only the first ones (by
    /// channel id) were searched.
    pub channels_truncated: bool,
}

impl TryFrom<v1::SearchResults> for SearchPage {
    type Error = Error;

    fn try_from(r: v1::SearchResults) -> Result<Self, Error> {
        let mut snippets = r.snippets.into_iter();
        let mut hits = Vec::with_capacity(r.hits.len());
        for event in r.hits {
            let channel = ChannelId::new(event.channel_id.clone())
                .map_err(|e| Error::Protocol(format!("search hit: {e}")))?;
            let snippet = snippets.next().unwrap_or_default();
            let fragment = snippet.fragment;
            let highlighted = snippet
                .highlighted
                .into_iter()
                .map(|t| t.start as usize..t.end as usize)
                // A range that is not on character boundaries of the fragment is dropped,
                // so that slicing with it never panics.
                .filter(|r| r.start <= r.end && fragment.get(r.clone()).is_some())
                .collect();
            hits.push(SearchHit {
                entry: Entry::from_proto(event, &channel),
                snippet: Snippet {
                    fragment,
                    highlighted,
                },
            });
        }
        Ok(SearchPage {
            hits,
            next_cursor: (!r.next_cursor.is_empty()).then_some(r.next_cursor),
            timed_out: r.timed_out,
            channels_truncated: r.channels_truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ranges_are_dropped_and_hits_pair_with_snippets() {
        let event = v1::ChannelEvent {
            channel_id: "general".into(),
            seq: 3,
            ..Default::default()
        };
        let page = SearchPage::try_from(v1::SearchResults {
            hits: vec![event],
            snippets: vec![v1::Snippet {
                fragment: "héllo world".into(),
                highlighted: vec![
                    v1::TextRange { start: 0, end: 6 },
                    v1::TextRange { start: 2, end: 3 },
                    v1::TextRange { start: 7, end: 99 },
                ],
            }],
            next_cursor: "n1.2.3".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(page.hits[0].snippet.highlighted, vec![0..6]);
        assert_eq!(page.hits[0].entry.seq.get(), 3);
        assert_eq!(page.next_cursor.as_deref(), Some("n1.2.3"));
        let bad = v1::SearchResults {
            hits: vec![v1::ChannelEvent::default()],
            ..Default::default()
        };
        assert!(SearchPage::try_from(bad).is_err());
    }

    #[test]
    fn queries_become_requests() {
        let q = SearchQuery::new("deploy*")
            .in_channel(ChannelId::new("ops").unwrap())
            .newest_first()
            .limit(10);
        let p = q.to_proto(Some("c"));
        assert_eq!(
            (p.channel_id.as_str(), p.limit, p.cursor.as_str(), p.order),
            ("ops", 10, "c", v1::SearchOrder::Newest as i32)
        );
    }
}
