//! Answering a search: the parsed query becomes a tantivy query with the reader's scope as a
//! filter, matches are collected under a time budget into one page ordered by relevance or
//! time, and pages follow each other by a keyset cursor (the sort key of the last hit), so
//! that paging never repeats or skips a hit however deep it goes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::search::{ClauseKind, Mentioned, Query};
use tantivy::query::{
    BooleanQuery, ConstScoreQuery, EnableScoring, Occur, PhrasePrefixQuery, PhraseQuery,
    Query as TantivyQuery, RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, DocSet, IndexReader, Searcher, TERMINATED, TantivyDocument, Term};

use crate::error::SearchError;
use crate::generation::Generation;
use crate::schema::{Analyzer, Fields, tokens};

/// Matches looked at between two looks at the clock.
const CLOCK_EVERY: u32 = 1024;

/// The generation that serves queries, as queries need it.
pub(crate) struct Serving {
    pub(crate) reader: IndexReader,
    pub(crate) fields: Fields,
    pub(crate) analyzer: Analyzer,
    pub(crate) generation: u64,
}

impl Serving {
    pub(crate) fn of(g: &Generation) -> Self {
        Serving {
            reader: g.reader.clone(),
            fields: g.fields,
            analyzer: g.analyzer,
            generation: g.marker.number,
        }
    }
}

/// How hits are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Best match first (BM25); newest first when the query has no words.
    Relevance,
    /// Newest first.
    Newest,
}

/// Whose search it is and where it may look. The caller (who knows memberships and bans)
/// decides the channels; the index only filters by them.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The searching user: `mentions:me`, and the posts withheld from everyone but them.
    pub reader: UserId,
    /// Search only this channel (already checked readable).
    pub channel: Option<ChannelId>,
    /// Otherwise, these channels (the reader's memberships)...
    pub channels: Vec<ChannelId>,
    /// ... and every public channel.
    pub include_public: bool,
}

/// One search.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    /// The parsed query.
    pub query: &'a Query,
    /// Where to look.
    pub scope: &'a Scope,
    /// The order asked for.
    pub order: Order,
    /// From the previous page's `next_cursor`.
    pub cursor: Option<&'a str>,
    /// Hits per page.
    pub limit: usize,
    /// When the query is cut.
    pub deadline: Instant,
    /// Longest snippet, in characters.
    pub snippet_chars: usize,
}

/// A matching message: where it is, and which edit holds its current content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Its channel.
    pub channel: ChannelId,
    /// Its seq.
    pub seq: Seq,
    /// The edit whose content the index holds (`None`: as first posted).
    pub edit_seq: Option<Seq>,
    /// The cursor of the page that starts after this hit (for a caller that cuts a page).
    pub cursor_after: String,
}

/// A page of hits.
pub struct SearchPage {
    /// In the order asked for.
    pub hits: Vec<Hit>,
    /// For the next page; `None`: no more.
    pub next_cursor: Option<String>,
    /// The time budget ran out before every match was looked at.
    pub timed_out: bool,
    highlighter: Option<SnippetGenerator>,
    snippet_chars: usize,
}

/// A piece of a hit's text with the matching words marked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snippet {
    /// The text.
    pub fragment: String,
    /// Byte ranges of `fragment` that matched.
    pub highlighted: Vec<std::ops::Range<usize>>,
}

impl SearchPage {
    /// The snippet of `text` (a hit's current text): the part that matched best, or else its
    /// beginning.
    pub fn snippet(&self, text: &str) -> Snippet {
        if let Some(h) = &self.highlighter {
            let s = h.snippet(text);
            if !s.is_empty() {
                return Snippet {
                    fragment: s.fragment().to_owned(),
                    highlighted: s.highlighted().to_vec(),
                };
            }
        }
        // In bytes, as the highlighter counts, cut on a character boundary.
        let mut end = self.snippet_chars.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Snippet {
            fragment: text[..end].to_owned(),
            highlighted: Vec::new(),
        }
    }

    fn empty() -> Self {
        SearchPage {
            hits: Vec::new(),
            next_cursor: None,
            timed_out: false,
            highlighter: None,
            snippet_chars: 0,
        }
    }
}

/// The position after a hit: its sort key (score bits, or time), then time (or seq: newer
/// first among equals), then the tie-break hash of its channel and seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key(u64, u64, u64);

fn encode_cursor(order: Order, key: Key) -> String {
    let tag = match order {
        Order::Relevance => 'r',
        Order::Newest => 'n',
    };
    format!("{tag}{:x}.{:x}.{:x}", key.0, key.1, key.2)
}

fn decode_cursor(order: Order, cursor: &str) -> Result<Key, SearchError> {
    let tag = match order {
        Order::Relevance => "r",
        Order::Newest => "n",
    };
    let body = cursor.strip_prefix(tag).ok_or(SearchError::BadCursor)?;
    let mut parts = body.split('.');
    let mut next = || parts.next().ok_or(SearchError::BadCursor);
    let (a, b, c) = (next()?, next()?, next()?);
    if parts.next().is_some() {
        return Err(SearchError::BadCursor);
    }
    let parse = |s: &str| {
        if s.is_empty() || s.len() > 16 {
            return Err(SearchError::BadCursor);
        }
        u64::from_str_radix(s, 16).map_err(|_| SearchError::BadCursor)
    };
    Ok(Key(parse(a)?, parse(b)?, parse(c)?))
}

/// A score as an order-preserving integer (scores are never negative).
fn score_key(score: f32) -> u64 {
    if score.is_finite() && score > 0.0 {
        u64::from(score.to_bits())
    } else {
        0
    }
}

fn filter(q: Box<dyn TantivyQuery>) -> Box<dyn TantivyQuery> {
    Box::new(ConstScoreQuery::new(q, 0.0))
}

fn term(q: Term) -> Box<dyn TantivyQuery> {
    Box::new(TermQuery::new(q, IndexRecordOption::Basic))
}

fn any(qs: Vec<Box<dyn TantivyQuery>>) -> Box<dyn TantivyQuery> {
    Box::new(BooleanQuery::new(
        qs.into_iter().map(|q| (Occur::Should, q)).collect(),
    ))
}

/// A built query, and whether it has words to score by.
type Built = (Box<dyn TantivyQuery>, bool);

/// The tantivy query for `req`, and whether it has words to score by. `None`: nothing can
/// match (every word was dropped by the analyzer, or the scope is empty).
fn build(s: &Serving, req: &SearchRequest<'_>) -> Result<Option<Built>, SearchError> {
    let f = &s.fields;
    let mut text = s.analyzer.text();
    let mut prefix = s.analyzer.prefix();
    let mut clauses: Vec<(Occur, Box<dyn TantivyQuery>)> = Vec::new();
    let mut scored = false;
    let mut positive = false;
    let mut in_channels: Vec<Term> = Vec::new();
    let in_channel = req
        .query
        .clauses
        .iter()
        .any(|c| !c.negated && matches!(c.kind, ClauseKind::In(_)));
    for c in &req.query.clauses {
        let (q, is_text): (Option<Box<dyn TantivyQuery>>, bool) = match &c.kind {
            ClauseKind::Word(w) | ClauseKind::Phrase(w) => {
                let terms: Vec<Term> = tokens(&mut text, w)
                    .iter()
                    .map(|t| Term::from_field_text(f.text, t))
                    .collect();
                let q: Option<Box<dyn TantivyQuery>> = match terms.len() {
                    0 => None,
                    1 => Some(Box::new(TermQuery::new(
                        terms[0].clone(),
                        IndexRecordOption::WithFreqs,
                    ))),
                    _ => Some(Box::new(PhraseQuery::new(terms))),
                };
                (q, true)
            }
            ClauseKind::Prefix(p) => {
                let words = tokens(&mut prefix, p);
                let n = words.len();
                // Words before the last are whole words, analysed as the text was.
                let terms: Vec<Term> = words
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let t = if i + 1 < n {
                            tokens(&mut text, w).pop().unwrap_or_else(|| w.clone())
                        } else {
                            w.clone()
                        };
                        Term::from_field_text(f.text, &t)
                    })
                    .collect();
                let q: Option<Box<dyn TantivyQuery>> = if terms.is_empty() {
                    None
                } else {
                    Some(Box::new(PhrasePrefixQuery::new(terms)))
                };
                (q, true)
            }
            ClauseKind::From(u) => (
                Some(term(Term::from_field_text(f.author, u.as_str()))),
                false,
            ),
            // Several `in:` are one clause (any of them), added after the loop.
            ClauseKind::In(ch) if !c.negated => {
                in_channels.push(f.channel_term(ch));
                continue;
            }
            ClauseKind::In(ch) => (Some(term(f.channel_term(ch))), false),
            ClauseKind::Has(h) => (Some(term(Term::from_field_text(f.has, h.name()))), false),
            ClauseKind::IsReply => (Some(term(Term::from_field_text(f.has, "reply"))), false),
            ClauseKind::Mentions(m) => {
                let user = match m {
                    Mentioned::Me => req.scope.reader.as_str(),
                    Mentioned::User(u) => u.as_str(),
                };
                (Some(term(Term::from_field_text(f.mention, user))), false)
            }
            ClauseKind::Before(ms) => (Some(ts_range(f, None, Some(*ms))), false),
            ClauseKind::After(ms) => (Some(ts_range(f, Some(*ms), None)), false),
            ClauseKind::On(a, b) => (Some(ts_range(f, Some(*a), Some(*b))), false),
            ClauseKind::Thread(root) => {
                if req.scope.channel.is_none() && !in_channel {
                    return Err(SearchError::ThreadNeedsChannel);
                }
                // The root and its replies.
                let q = any(vec![
                    term(Term::from_field_u64(f.thread, *root)),
                    term(Term::from_field_u64(f.seq, *root)),
                ]);
                (Some(q), false)
            }
        };
        let Some(q) = q else {
            continue;
        };
        if c.negated {
            clauses.push((Occur::MustNot, q));
        } else {
            positive = true;
            scored |= is_text;
            clauses.push((Occur::Must, if is_text { q } else { filter(q) }));
        }
    }
    if !in_channels.is_empty() {
        positive = true;
        clauses.push((
            Occur::Must,
            filter(Box::new(TermSetQuery::new(in_channels))),
        ));
    }
    if !positive {
        return Ok(None);
    }
    // The scope: one channel, or the reader's channels and maybe every public one.
    let scope: Box<dyn TantivyQuery> = match &req.scope.channel {
        Some(ch) => term(f.channel_term(ch)),
        None => {
            let mut any_of: Vec<Box<dyn TantivyQuery>> = Vec::new();
            if !req.scope.channels.is_empty() {
                any_of.push(Box::new(TermSetQuery::new(
                    req.scope.channels.iter().map(|c| f.channel_term(c)),
                )));
            }
            if req.scope.include_public {
                any_of.push(term(Term::from_field_u64(f.public, 1)));
            }
            if any_of.is_empty() {
                return Ok(None);
            }
            any(any_of)
        }
    };
    clauses.push((Occur::Must, filter(scope)));
    // Posts withheld from everyone but their author (shadow bans).
    let visible = any(vec![
        term(Term::from_field_u64(f.withheld, 0)),
        term(Term::from_field_text(f.author, req.scope.reader.as_str())),
    ]);
    clauses.push((Occur::Must, filter(visible)));
    Ok(Some((Box::new(BooleanQuery::new(clauses)), scored)))
}

fn ts_range(f: &Fields, from: Option<u64>, to: Option<u64>) -> Box<dyn TantivyQuery> {
    use std::ops::Bound;
    let lower = from.map_or(Bound::Unbounded, |v| {
        Bound::Included(Term::from_field_u64(f.ts, v))
    });
    let upper = to.map_or(Bound::Unbounded, |v| {
        Bound::Excluded(Term::from_field_u64(f.ts, v))
    });
    Box::new(RangeQuery::new(lower, upper))
}

/// Runs `req` against the serving generation.
pub(crate) fn run(s: &Serving, req: &SearchRequest<'_>) -> Result<SearchPage, SearchError> {
    let Some((query, scored)) = build(s, req)? else {
        return Ok(SearchPage::empty());
    };
    let by_score = scored && req.order == Order::Relevance;
    // Without words to score by, relevance is time.
    let order = if by_score {
        Order::Relevance
    } else {
        Order::Newest
    };
    let after = req.cursor.map(|c| decode_cursor(order, c)).transpose()?;
    let searcher = s.reader.searcher();
    let enable = if by_score {
        EnableScoring::enabled_from_searcher(&searcher)
    } else {
        EnableScoring::disabled_from_searcher(&searcher)
    };
    let weight = query.weight(enable)?;
    let limit = req.limit.max(1);
    // The best `limit + 1` so far, smallest on top: the extra one says a next page exists.
    let mut best: BinaryHeap<Reverse<(Key, DocAddress)>> = BinaryHeap::with_capacity(limit + 2);
    let mut timed_out = false;
    let mut seen: u32 = 0;
    'segments: for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        let ts = segment.fast_fields().u64("ts")?.first_or_default_col(0);
        let tie = segment.fast_fields().u64("tie")?.first_or_default_col(0);
        let seq = segment.fast_fields().u64("seq")?.first_or_default_col(0);
        let alive = segment.alive_bitset();
        let mut scorer = weight.scorer(segment, 1.0)?;
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            seen = seen.wrapping_add(1);
            if seen.is_multiple_of(CLOCK_EVERY) && Instant::now() >= req.deadline {
                timed_out = true;
                break 'segments;
            }
            if alive.is_none_or(|a| a.is_alive(doc)) {
                let key = if by_score {
                    Key(score_key(scorer.score()), ts.get_val(doc), tie.get_val(doc))
                } else {
                    Key(ts.get_val(doc), seq.get_val(doc), tie.get_val(doc))
                };
                if after.is_none_or(|a| key < a) {
                    let full = best.len() > limit;
                    if !full || best.peek().is_some_and(|Reverse((k, _))| *k < key) {
                        best.push(Reverse((key, DocAddress::new(ord as u32, doc))));
                        if best.len() > limit + 1 {
                            best.pop();
                        }
                    }
                }
            }
            doc = scorer.advance();
        }
    }
    let mut ranked: Vec<(Key, DocAddress)> = best.into_iter().map(|Reverse(x)| x).collect();
    ranked.sort_unstable_by_key(|(key, _)| Reverse(*key));
    let more = ranked.len() > limit;
    ranked.truncate(limit);
    let next_cursor = match ranked.last() {
        // Matches are looked at in index order, not key order: after a cut, keys below the last
        // hit may still hide matches above it never examined, so a cursor would skip them.
        Some((key, _)) if more && !timed_out => Some(encode_cursor(order, *key)),
        _ => None,
    };
    let hits = ranked
        .iter()
        .map(|(key, addr)| hit(&searcher, &s.fields, *addr, encode_cursor(order, *key)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut highlighter = if scored {
        Some(SnippetGenerator::create(&searcher, &*query, s.fields.text)?)
    } else {
        None
    };
    if let Some(h) = &mut highlighter {
        h.set_max_num_chars(req.snippet_chars);
    }
    Ok(SearchPage {
        hits: hits.into_iter().flatten().collect(),
        next_cursor,
        timed_out,
        highlighter,
        snippet_chars: req.snippet_chars,
    })
}

fn hit(
    searcher: &Searcher,
    f: &Fields,
    addr: DocAddress,
    cursor_after: String,
) -> Result<Option<Hit>, SearchError> {
    let doc: TantivyDocument = searcher.doc(addr)?;
    let channel = doc
        .get_first(f.channel)
        .and_then(|v| v.as_str())
        .and_then(|c| ChannelId::new(c).ok());
    let seq = doc.get_first(f.seq).and_then(|v| v.as_u64());
    let edit = doc
        .get_first(f.edit_seq)
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    Ok(match (channel, seq) {
        (Some(channel), Some(seq)) => Some(Hit {
            channel,
            seq: Seq(seq),
            edit_seq: (edit != 0).then_some(Seq(edit)),
            cursor_after,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        let k = Key(0x3f80_0000, 7, 0xdead_beef_0000_0001);
        for order in [Order::Relevance, Order::Newest] {
            assert_eq!(decode_cursor(order, &encode_cursor(order, k)).unwrap(), k);
        }
        let r = encode_cursor(Order::Relevance, k);
        assert!(matches!(
            decode_cursor(Order::Newest, &r),
            Err(SearchError::BadCursor)
        ));
        for junk in [
            "",
            "r",
            "r.",
            "r1",
            "r1.2",
            "rzz.1.1",
            "r1.11111111111111111.1",
            "r1.2.3.4",
            "n-1.2.3",
        ] {
            assert!(
                matches!(
                    decode_cursor(Order::Relevance, junk),
                    Err(SearchError::BadCursor)
                ),
                "{junk}"
            );
        }
    }

    #[test]
    fn score_keys_keep_order() {
        let scores = [0.0f32, 0.001, 0.5, 1.0, 7.25, 1e9];
        for w in scores.windows(2) {
            assert!(score_key(w[0]) < score_key(w[1]));
        }
        assert_eq!(score_key(f32::NAN), 0);
        assert_eq!(score_key(-1.0), 0);
    }
}
