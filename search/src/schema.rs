//! The index's documents: one per message (its current content), and one checkpoint per
//! channel saying how far that channel's log is indexed. Both kinds live in one index so that a
//! commit moves the documents and the checkpoints together: after a crash the index is exactly
//! as it was at its last commit, and indexing resumes from the checkpoints it holds.

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::{Attachment, ChannelEvent};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer,
};
use tantivy::{TantivyDocument, Term};

use crate::error::SearchError;

/// The name the text field's analyzer is registered under.
pub(crate) const TEXT_ANALYZER: &str = "chorus_text";
/// The same analysis without stemming, for prefixes (a stemmed prefix matches nothing).
pub(crate) const PREFIX_ANALYZER: &str = "chorus_prefix";

/// Tokens of this many bytes or more are dropped (hashes, base64, runaway strings).
const MAX_TOKEN_BYTES: usize = 40;

/// How message text becomes words: split on what is not a letter or digit, lowercased, with
/// accents folded to ASCII (`café` finds `cafe`), and optionally stemmed for one language
/// (`deploying` finds `deployed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analyzer {
    /// No stemming: works for every language written with spaces between words.
    Simple,
    /// Stemmed for one language.
    Stemmed(Language),
}

impl Analyzer {
    /// The names [`Analyzer::parse`] takes.
    pub const NAMES: &'static [&'static str] = &[
        "simple",
        "arabic",
        "danish",
        "dutch",
        "english",
        "finnish",
        "french",
        "german",
        "greek",
        "hungarian",
        "italian",
        "norwegian",
        "portuguese",
        "romanian",
        "russian",
        "spanish",
        "swedish",
        "tamil",
        "turkish",
    ];

    /// Parses a configuration value (see [`Self::NAMES`]).
    pub fn parse(name: &str) -> Option<Self> {
        use Language::*;
        let language = match name.to_ascii_lowercase().as_str() {
            "simple" => return Some(Analyzer::Simple),
            "arabic" => Arabic,
            "danish" => Danish,
            "dutch" => Dutch,
            "english" => English,
            "finnish" => Finnish,
            "french" => French,
            "german" => German,
            "greek" => Greek,
            "hungarian" => Hungarian,
            "italian" => Italian,
            "norwegian" => Norwegian,
            "portuguese" => Portuguese,
            "romanian" => Romanian,
            "russian" => Russian,
            "spanish" => Spanish,
            "swedish" => Swedish,
            "tamil" => Tamil,
            "turkish" => Turkish,
            _ => return None,
        };
        Some(Analyzer::Stemmed(language))
    }

    /// The configuration name; stored with the index, which is rebuilt when it changes.
    pub fn name(self) -> String {
        match self {
            Analyzer::Simple => "simple".into(),
            Analyzer::Stemmed(l) => format!("{l:?}").to_ascii_lowercase(),
        }
    }

    pub(crate) fn text(self) -> TextAnalyzer {
        let base = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter);
        match self {
            Analyzer::Simple => base.build(),
            Analyzer::Stemmed(l) => base.filter(Stemmer::new(l)).build(),
        }
    }

    pub(crate) fn prefix(self) -> TextAnalyzer {
        Analyzer::Simple.text()
    }
}

/// The fields of both document kinds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    /// `msg` or `checkpoint`.
    pub(crate) kind: Field,
    /// A message's unique key (channel and seq), for replacing and removing it.
    pub(crate) mid: Field,
    pub(crate) channel: Field,
    pub(crate) seq: Field,
    /// The seq of the edit whose content the document holds (0: as first written).
    pub(crate) edit_seq: Field,
    /// Server time of the message, unix ms.
    pub(crate) ts: Field,
    /// A stable hash of `mid`: the tie-break between equal sort keys, so that pages never
    /// overlap or skip.
    pub(crate) tie: Field,
    pub(crate) author: Field,
    pub(crate) mention: Field,
    /// `attachment`, `link`, `mention`, `reply`.
    pub(crate) has: Field,
    /// The thread root's seq (0: not a reply).
    pub(crate) thread: Field,
    /// 1: the channel is public.
    pub(crate) public: Field,
    /// 1: only the author may see it (posted while shadow-banned).
    pub(crate) withheld: Field,
    pub(crate) text: Field,
    /// A checkpoint's channel epoch, first available seq and indexed head.
    pub(crate) ck_epoch: Field,
    pub(crate) ck_first: Field,
    pub(crate) ck_head: Field,
}

pub(crate) const KIND_MESSAGE: &str = "msg";
pub(crate) const KIND_CHECKPOINT: &str = "checkpoint";

impl Fields {
    pub(crate) fn schema() -> (Schema, Fields) {
        let mut b = Schema::builder();
        let text_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TEXT_ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            kind: b.add_text_field("kind", STRING),
            mid: b.add_text_field("mid", STRING),
            channel: b.add_text_field("channel", STRING | STORED),
            seq: b.add_u64_field("seq", INDEXED | STORED | FAST),
            edit_seq: b.add_u64_field("edit_seq", STORED),
            ts: b.add_u64_field("ts", INDEXED | FAST),
            tie: b.add_u64_field("tie", FAST),
            author: b.add_text_field("author", STRING),
            mention: b.add_text_field("mention", STRING),
            has: b.add_text_field("has", STRING),
            thread: b.add_u64_field("thread", INDEXED),
            public: b.add_u64_field("public", INDEXED),
            withheld: b.add_u64_field("withheld", INDEXED),
            text: b.add_text_field("text", text_options),
            ck_epoch: b.add_u64_field("ck_epoch", STORED),
            ck_first: b.add_u64_field("ck_first", STORED),
            ck_head: b.add_u64_field("ck_head", STORED),
        };
        (b.build(), fields)
    }

    pub(crate) fn mid_term(&self, channel: &ChannelId, seq: Seq) -> Term {
        Term::from_field_text(self.mid, &mid(channel, seq))
    }

    pub(crate) fn checkpoint_term(&self, channel: &ChannelId) -> Term {
        Term::from_field_text(self.mid, &format!("ck/{channel}"))
    }

    pub(crate) fn channel_term(&self, channel: &ChannelId) -> Term {
        Term::from_field_text(self.channel, channel.as_str())
    }

    pub(crate) fn checkpoint_doc(&self, channel: &ChannelId, ck: Checkpoint) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.kind, KIND_CHECKPOINT);
        doc.add_text(self.mid, format!("ck/{channel}"));
        doc.add_text(self.channel, channel.as_str());
        doc.add_u64(self.ck_epoch, ck.epoch);
        doc.add_u64(self.ck_first, ck.first_available);
        doc.add_u64(self.ck_head, ck.head);
        doc
    }
}

/// How far one channel's log is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// The log's epoch when it was indexed (a new epoch: history was cut, start again).
    pub epoch: u64,
    /// The first seq the log held then (it moves up when retention removes entries).
    pub first_available: u64,
    /// Every entry up to this seq is indexed.
    pub head: u64,
}

/// The content a message document is built from: the message as posted, with the content of
/// its latest edit if it has one.
pub(crate) struct MessageDoc<'a> {
    pub(crate) channel: &'a ChannelId,
    pub(crate) seq: Seq,
    pub(crate) edit_seq: u64,
    pub(crate) event: &'a ChannelEvent,
    pub(crate) text: &'a str,
    pub(crate) mentions: &'a [String],
    pub(crate) attachments: &'a [Attachment],
    pub(crate) thread: u64,
    pub(crate) public: bool,
    pub(crate) withheld: bool,
}

impl Fields {
    pub(crate) fn message_doc(&self, m: &MessageDoc<'_>) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.kind, KIND_MESSAGE);
        doc.add_text(self.mid, mid(m.channel, m.seq));
        doc.add_text(self.channel, m.channel.as_str());
        doc.add_u64(self.seq, m.seq.get());
        doc.add_u64(self.edit_seq, m.edit_seq);
        doc.add_u64(self.ts, m.event.server_time_ms);
        doc.add_u64(self.tie, tie(m.channel, m.seq));
        doc.add_text(self.author, &m.event.author_id);
        for user in m.mentions {
            doc.add_text(self.mention, user);
        }
        if !m.attachments.is_empty() {
            doc.add_text(self.has, "attachment");
        }
        if has_link(m.text) {
            doc.add_text(self.has, "link");
        }
        if !m.mentions.is_empty() {
            doc.add_text(self.has, "mention");
        }
        if m.thread != 0 {
            doc.add_text(self.has, "reply");
        }
        doc.add_u64(self.thread, m.thread);
        doc.add_u64(self.public, u64::from(m.public));
        doc.add_u64(self.withheld, u64::from(m.withheld));
        doc.add_text(self.text, m.text);
        // Attachment names are found by words too ("report.pdf").
        for a in m.attachments {
            if !a.name.is_empty() {
                doc.add_text(self.text, &a.name);
            }
        }
        doc
    }
}

fn mid(channel: &ChannelId, seq: Seq) -> String {
    format!("{channel}/{}", seq.get())
}

/// FNV-1a over the channel id and seq: stable across builds and restarts (a cursor names it).
pub(crate) fn tie(channel: &ChannelId, seq: Seq) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.as_str().bytes().chain(seq.get().to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn has_link(text: &str) -> bool {
    text.contains("http://") || text.contains("https://")
}

/// The analyzers registered on an index.
pub(crate) fn register(index: &tantivy::Index, analyzer: Analyzer) {
    index.tokenizers().register(TEXT_ANALYZER, analyzer.text());
    index
        .tokenizers()
        .register(PREFIX_ANALYZER, analyzer.prefix());
}

/// The terms `analyzer` makes of `text`.
pub(crate) fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        SearchError::Index(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyzer_names_round_trip() {
        for name in Analyzer::NAMES {
            let a = Analyzer::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(a.name(), *name);
        }
        assert_eq!(Analyzer::parse("klingon"), None);
    }

    #[test]
    fn text_is_lowercased_folded_and_stemmed_when_asked() {
        let mut simple = Analyzer::Simple.text();
        assert_eq!(
            tokens(&mut simple, "Café DEPLOYING, ok?"),
            ["cafe", "deploying", "ok"]
        );
        let mut english = Analyzer::Stemmed(Language::English).text();
        assert_eq!(
            tokens(&mut english, "deploying deployed"),
            ["deploy", "deploy"]
        );
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert!(tokens(&mut simple, &long).is_empty());
    }

    #[test]
    fn tie_is_stable() {
        let c = ChannelId::new("general").unwrap();
        assert_eq!(tie(&c, Seq(1)), tie(&c, Seq(1)));
        assert_ne!(tie(&c, Seq(1)), tie(&c, Seq(2)));
        // A fixed value: a cursor written by one build is read by the next.
        assert_eq!(tie(&c, Seq(1)), 0xa318_fe1b_e630_f6b8);
    }
}
