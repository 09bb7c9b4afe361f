//! One built index in its own directory (`gen-N`), and the files that say which generation
//! serves queries (`ACTIVE`) and which one a rebuild is filling (`BUILDING`). A rebuild fills a
//! new generation from the log beside the one serving, and a rename of `ACTIVE` switches: a
//! crash at any point leaves one complete generation serving.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use chorus_protocol::ids::ChannelId;
use tantivy::collector::DocSetCollector;
use tantivy::merge_policy::LogMergePolicy;
use tantivy::query::TermQuery;
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::error::SearchError;
use crate::schema::{Analyzer, Checkpoint, Fields, KIND_CHECKPOINT, register};

/// The file naming the generation that serves queries.
pub(crate) const ACTIVE: &str = "ACTIVE";
/// The file naming the generation a rebuild is filling.
pub(crate) const BUILDING: &str = "BUILDING";

/// The layout of a generation's documents; a generation of another format is rebuilt.
const FORMAT: u32 = 1;

/// Deleted documents a segment may hold (as a share) before a merge rewrites it: edits and
/// deletes leave them, and they cost disk and query time until merged away.
const DEL_DOCS_RATIO_BEFORE_MERGE: f32 = 0.3;

/// What `ACTIVE` and `BUILDING` hold: a generation number and how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) number: u64,
    pub(crate) analyzer: String,
    pub(crate) format: u32,
}

impl Marker {
    pub(crate) fn new(number: u64, analyzer: Analyzer) -> Self {
        Marker {
            number,
            analyzer: analyzer.name(),
            format: FORMAT,
        }
    }

    /// Whether a generation made this way serves an index configured with `analyzer`.
    pub(crate) fn fits(&self, analyzer: Analyzer) -> bool {
        self.format == FORMAT && self.analyzer == analyzer.name()
    }

    pub(crate) fn read(path: &Path) -> Result<Option<Marker>, SearchError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SearchError::io(path, e)),
        };
        let mut words = text.split_whitespace();
        let parsed = (|| {
            let number = words.next()?.parse().ok()?;
            let analyzer = words.next()?.to_owned();
            let format = words.next()?.parse().ok()?;
            Some(Marker {
                number,
                analyzer,
                format,
            })
        })();
        // A marker that does not parse names nothing: the index is rebuilt from the log.
        Ok(parsed)
    }

    /// Writes the marker atomically (a new file renamed over the old one, both synced).
    pub(crate) fn write(&self, path: &Path) -> Result<(), SearchError> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| SearchError::io(&tmp, e))?;
        writeln!(f, "{} {} {}", self.number, self.analyzer, self.format)
            .and_then(|()| f.sync_all())
            .map_err(|e| SearchError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| SearchError::io(path, e))?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), SearchError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SearchError::io(dir, e))
}

/// How a generation's writer is sized.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterBudget {
    /// The writer's memory before it flushes a segment.
    pub(crate) memory_bytes: usize,
}

/// An open generation: its index, writer, reader and per-channel checkpoints.
pub(crate) struct Generation {
    pub(crate) marker: Marker,
    pub(crate) dir: PathBuf,
    pub(crate) writer: IndexWriter,
    pub(crate) reader: IndexReader,
    pub(crate) fields: Fields,
    pub(crate) analyzer: Analyzer,
    /// Where each channel is indexed to, including changes not committed yet.
    pub(crate) checkpoints: HashMap<ChannelId, Checkpoint>,
    /// Channels whose checkpoint changed since the last commit.
    pub(crate) touched: HashSet<ChannelId>,
    /// Documents added or removed since the last commit.
    pub(crate) uncommitted: usize,
    /// Whether each channel seen is public (a channel's kind never changes).
    pub(crate) public: HashMap<ChannelId, bool>,
}

impl Generation {
    pub(crate) fn dir_of(root: &Path, number: u64) -> PathBuf {
        root.join(format!("gen-{number}"))
    }

    /// Opens generation `marker.number` under `root`, creating it if it is not there.
    pub(crate) fn open(
        root: &Path,
        marker: Marker,
        analyzer: Analyzer,
        budget: WriterBudget,
    ) -> Result<Generation, SearchError> {
        let dir = Self::dir_of(root, marker.number);
        std::fs::create_dir_all(&dir).map_err(|e| SearchError::io(&dir, e))?;
        let (schema, fields) = Fields::schema();
        let directory = tantivy::directory::MmapDirectory::open(&dir)
            .map_err(|e| SearchError::Index(e.to_string()))?;
        let index = Index::open_or_create(directory, schema)?;
        register(&index, analyzer);
        let writer: IndexWriter = index.writer_with_options(
            tantivy::indexer::IndexWriterOptions::builder()
                .num_worker_threads(1)
                .num_merge_threads(1)
                .memory_budget_per_thread(budget.memory_bytes)
                .build(),
        )?;
        let mut policy = LogMergePolicy::default();
        policy.set_del_docs_ratio_before_merge(DEL_DOCS_RATIO_BEFORE_MERGE);
        writer.set_merge_policy(Box::new(policy));
        // Reloaded after each commit by the indexer, never behind its back.
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let checkpoints = read_checkpoints(&reader, &fields)?;
        Ok(Generation {
            marker,
            dir,
            writer,
            reader,
            fields,
            analyzer,
            checkpoints,
            touched: HashSet::new(),
            uncommitted: 0,
            public: HashMap::new(),
        })
    }

    pub(crate) fn set_checkpoint(&mut self, channel: &ChannelId, ck: Checkpoint) {
        if self.checkpoints.get(channel) != Some(&ck) {
            self.checkpoints.insert(channel.clone(), ck);
            self.touched.insert(channel.clone());
        }
    }

    pub(crate) fn forget_channel(&mut self, channel: &ChannelId) {
        self.writer.delete_term(self.fields.channel_term(channel));
        self.uncommitted += 1;
        if self.checkpoints.remove(channel).is_some() {
            self.touched.insert(channel.clone());
        }
    }

    /// Whether anything waits for a commit.
    pub(crate) fn dirty(&self) -> bool {
        self.uncommitted > 0 || !self.touched.is_empty()
    }

    /// Writes the changed checkpoints with the documents, commits, and makes it all
    /// searchable.
    pub(crate) fn commit(&mut self) -> Result<(), SearchError> {
        if !self.dirty() {
            return Ok(());
        }
        for channel in self.touched.drain() {
            self.writer
                .delete_term(self.fields.checkpoint_term(&channel));
            if let Some(ck) = self.checkpoints.get(&channel) {
                self.writer
                    .add_document(self.fields.checkpoint_doc(&channel, *ck))?;
            }
        }
        self.writer.commit()?;
        self.uncommitted = 0;
        self.reader.reload()?;
        Ok(())
    }
}

pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Every channel's checkpoint as last committed: one document per channel, so this reads as
/// many documents as the index knows channels.
fn read_checkpoints(
    reader: &IndexReader,
    fields: &Fields,
) -> Result<HashMap<ChannelId, Checkpoint>, SearchError> {
    let searcher = reader.searcher();
    let query = TermQuery::new(
        Term::from_field_text(fields.kind, KIND_CHECKPOINT),
        IndexRecordOption::Basic,
    );
    let docs = searcher.search(&query, &DocSetCollector)?;
    let mut out = HashMap::with_capacity(docs.len());
    for addr in docs {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let text = |f| doc.get_first(f).and_then(|v| v.as_str()).map(str::to_owned);
        let num = |f| doc.get_first(f).and_then(|v| v.as_u64()).unwrap_or(0);
        let Some(channel) = text(fields.channel).and_then(|c| ChannelId::new(c).ok()) else {
            continue;
        };
        out.insert(
            channel,
            Checkpoint {
                epoch: num(fields.ck_epoch),
                first_available: num(fields.ck_first),
                head: num(fields.ck_head),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_junk_names_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ACTIVE");
        assert_eq!(Marker::read(&path).unwrap(), None);
        let m = Marker::new(7, Analyzer::Simple);
        m.write(&path).unwrap();
        assert_eq!(Marker::read(&path).unwrap(), Some(m.clone()));
        assert!(m.fits(Analyzer::Simple));
        assert!(!m.fits(Analyzer::parse("english").unwrap()));
        std::fs::write(&path, "seven").unwrap();
        assert_eq!(Marker::read(&path).unwrap(), None);
    }

    #[test]
    fn checkpoints_survive_reopening_and_only_commits_count() {
        let dir = tempfile::tempdir().unwrap();
        let budget = WriterBudget {
            memory_bytes: 15_000_000,
        };
        let c = ChannelId::new("general").unwrap();
        let ck = Checkpoint {
            epoch: 1,
            first_available: 1,
            head: 9,
        };
        {
            let mut g = Generation::open(
                dir.path(),
                Marker::new(1, Analyzer::Simple),
                Analyzer::Simple,
                budget,
            )
            .unwrap();
            g.set_checkpoint(&c, ck);
            g.commit().unwrap();
            g.set_checkpoint(&c, Checkpoint { head: 12, ..ck });
            // Dropped without a commit: as after kill -9.
        }
        let g = Generation::open(
            dir.path(),
            Marker::new(1, Analyzer::Simple),
            Analyzer::Simple,
            budget,
        )
        .unwrap();
        assert_eq!(g.checkpoints.get(&c), Some(&ck));
        assert_eq!(g.checkpoints.len(), 1);
    }
}
