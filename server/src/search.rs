//! The node's search index, as the rest of the node sees it: opened at start under
//! `<data_dir>/search/`, told of durable entries through the [`Fanout`] seam (so that, in a
//! cluster, a replica indexes what it applies), and asked by the chat domain, the control
//! socket, retention and erasure. Without the `search` feature, or with `[search] enabled =
//! false`, it is absent and every caller hears so.

use std::sync::Arc;

use chorus_protocol::ids::UserId;
use chorus_storage::LogEntry;

use crate::config::Config;
use crate::hub::Fanout;

/// Why the index could not start.
#[derive(Debug, thiserror::Error)]
#[error("search index: {0}")]
pub struct SearchStartError(String);

/// The search index, if the node has one.
#[derive(Default)]
pub struct Search {
    #[cfg(feature = "search")]
    index: Option<Arc<chorus_search::SearchIndex>>,
    #[cfg(feature = "search")]
    permits: Option<Arc<tokio::sync::Semaphore>>,
}

impl Search {
    /// Opens the index for `config` over `store` and starts its indexer (which catches up with
    /// the log first). Absent when search is off.
    pub fn open(config: &Config, store: &chorus_storage::Store) -> Result<Self, SearchStartError> {
        #[cfg(feature = "search")]
        {
            let s = &config.search;
            if !s.enabled {
                return Ok(Self::default());
            }
            let analyzer = chorus_search::Analyzer::parse(&s.analyzer)
                .ok_or_else(|| SearchStartError(format!("unknown analyzer {:?}", s.analyzer)))?;
            let index = chorus_search::SearchIndex::open(
                chorus_search::SearchConfig {
                    dir: config.data_dir.join("search"),
                    analyzer,
                    feed: chorus_search::FeedConfig {
                        commit_interval: std::time::Duration::from_millis(s.commit_interval_ms),
                        commit_docs: 50_000,
                        writer_memory_bytes: s.writer_memory_mb as usize * 1024 * 1024,
                    },
                },
                store.clone(),
            )
            .map_err(|e| SearchStartError(e.to_string()))?;
            Ok(Self {
                index: Some(Arc::new(index)),
                permits: Some(Arc::new(tokio::sync::Semaphore::new(
                    s.max_concurrent as usize,
                ))),
            })
        }
        #[cfg(not(feature = "search"))]
        {
            let _ = (config, store);
            Ok(Self::default())
        }
    }

    /// The index and the permits of the searches running at once.
    #[cfg(feature = "search")]
    pub fn index(
        &self,
    ) -> Option<(
        &Arc<chorus_search::SearchIndex>,
        &Arc<tokio::sync::Semaphore>,
    )> {
        self.index.as_ref().zip(self.permits.as_ref())
    }

    /// Whether the node answers searches.
    pub fn is_on(&self) -> bool {
        #[cfg(feature = "search")]
        {
            self.index.is_some()
        }
        #[cfg(not(feature = "search"))]
        {
            false
        }
    }

    /// Retention removed entries: the index drops their documents.
    pub fn rescan(&self) {
        #[cfg(feature = "search")]
        if let Some(i) = &self.index {
            i.rescan();
        }
    }

    /// Removes everything `user` wrote from the index, committed before it returns (erasure).
    pub async fn forget_author(&self, user: &UserId) -> Result<(), String> {
        #[cfg(feature = "search")]
        if let Some(i) = &self.index {
            return i.forget_author(user).await.map_err(|e| e.to_string());
        }
        let _ = user;
        Ok(())
    }

    /// Stops the indexer after a last commit.
    pub fn close(&self) {
        #[cfg(feature = "search")]
        if let Some(i) = &self.index {
            i.close();
        }
    }

    /// Sets the search gauges, just before a scrape.
    pub fn export_metrics(&self) {
        #[cfg(feature = "search")]
        if let Some(i) = &self.index {
            let s = i.status();
            metrics::gauge!("chorus_search_docs").set(s.docs as f64);
            metrics::gauge!("chorus_search_channels").set(s.channels as f64);
            metrics::gauge!("chorus_search_disk_bytes").set(s.disk_bytes as f64);
            metrics::gauge!("chorus_search_lag_entries").set(s.lag_entries as f64);
            metrics::gauge!("chorus_search_lag_seconds").set(s.lag.as_secs_f64());
            metrics::gauge!("chorus_search_rebuilding")
                .set(f64::from(u8::from(s.rebuild.is_some())));
            metrics::gauge!("chorus_search_indexer_failed")
                .set(f64::from(u8::from(s.failed.is_some())));
            metrics::counter!("chorus_search_indexed_total").absolute(s.indexed);
            metrics::counter!("chorus_search_commits_total").absolute(s.commits);
        }
    }
}

/// Hands durable entries to the index (a set insert per entry; the indexer reads the log).
pub struct SearchFeed(pub Arc<Search>);

impl Fanout for SearchFeed {
    fn deliver(&self, entry: &Arc<LogEntry>) {
        #[cfg(feature = "search")]
        if let Some(i) = &self.0.index {
            i.notify(&entry.event.channel_id);
        }
        #[cfg(not(feature = "search"))]
        let _ = entry;
    }
}
