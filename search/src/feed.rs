//! The indexer: one thread that reads durable log entries and writes them into the index,
//! never on the publish path. The store's commit listener only marks a channel dirty (a set
//! insert); the thread reads the channel's log from its checkpoint on, so a slow index lags
//! instead of slowing acks, and a notification lost in a crash is recovered by the catch-up
//! scan at start.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_storage::Store;
use tantivy::Term;

use crate::apply::index_channel;
use crate::error::SearchError;
use crate::generation::{ACTIVE, BUILDING, Generation, Marker, WriterBudget, sync_dir};
use crate::schema::Analyzer;
use crate::shared::{Command, Shared};
use crate::status::{Building, Counters};

/// Channels a rebuild (or the catch-up scan at start) takes from the store per step.
const SCAN_PAGE: usize = 256;
/// The longest wait between taking two batches of notifications.
const MAX_BATCH_DELAY: Duration = Duration::from_millis(50);

/// How the indexer runs.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// A commit (what makes indexed entries searchable) at least this often while entries
    /// arrive.
    pub commit_interval: Duration,
    /// ... or after this many documents, whichever comes first.
    pub commit_docs: usize,
    /// The writer's memory budget.
    pub writer_memory_bytes: usize,
}

/// The indexer thread's own state.
pub(crate) struct Feed {
    pub(crate) shared: Arc<Shared>,
    pub(crate) store: Store,
    pub(crate) root: std::path::PathBuf,
    pub(crate) config: FeedConfig,
    pub(crate) analyzer: Analyzer,
    pub(crate) active: Generation,
    /// A rebuild: the generation being filled and the store's channels still to scan.
    pub(crate) building: Option<(Generation, Scan)>,
    /// The catch-up scan of the active generation (at start, after retention).
    pub(crate) catch_up: Option<Scan>,
    /// Channels taken from `pending` with entries left to index, since when, and how many.
    inflight: HashMap<ChannelId, (Instant, u64)>,
    /// The oldest notification indexed but not committed yet.
    uncommitted_since: Option<Instant>,
    /// When the oldest uncommitted document was written.
    first_uncommitted: Option<Instant>,
    /// When notifications were last taken.
    last_take: Instant,
}

/// A walk over every channel of the store, a bounded amount of work per step.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    after: Option<ChannelId>,
    queue: VecDeque<ChannelId>,
    done: bool,
    pub(crate) channels: u64,
}

impl Scan {
    /// The channel to work on next, fetching the next page of the store's channels when the
    /// last one is used up (`None`: the walk is over).
    fn next(&mut self, store: &Store) -> Result<Option<ChannelId>, SearchError> {
        if self.queue.is_empty() && !self.done {
            let page = store.channels(self.after.as_ref(), SCAN_PAGE)?;
            match page.last() {
                Some(last) => self.after = Some(last.clone()),
                None => self.done = true,
            }
            self.queue.extend(page);
        }
        Ok(self.queue.front().cloned())
    }

    /// One pass over the front channel; it is done with when nothing is left.
    fn step(
        &mut self,
        store: &Store,
        g: &mut Generation,
        counters: &Counters,
    ) -> Result<bool, SearchError> {
        let Some(channel) = self.next(store)? else {
            return Ok(false);
        };
        if index_channel(store, g, &channel, counters)? == 0 {
            self.queue.pop_front();
            self.channels += 1;
        }
        Ok(true)
    }
}

impl Feed {
    pub(crate) fn new(
        shared: Arc<Shared>,
        store: Store,
        root: std::path::PathBuf,
        config: FeedConfig,
        analyzer: Analyzer,
        active: Generation,
        building: Option<Generation>,
    ) -> Self {
        let mut feed = Feed {
            shared,
            store,
            root,
            config,
            analyzer,
            active,
            building: None,
            catch_up: Some(Scan::default()),
            inflight: HashMap::new(),
            uncommitted_since: None,
            first_uncommitted: None,
            last_take: Instant::now(),
        };
        if let Some(g) = building {
            feed.begin_building(g);
        }
        feed.drop_checkpoints_past_the_log();
        feed
    }

    /// A checkpoint past its log's head, or of another epoch, is of another history (a store
    /// restored from an older copy): its channel is indexed again from the start. Checked
    /// before any new entry arrives, so a new entry at a seq the index already holds is never
    /// taken for the old one.
    fn drop_checkpoints_past_the_log(&mut self) {
        let store = &self.store;
        let stale = |g: &Generation| -> Vec<ChannelId> {
            g.checkpoints
                .iter()
                .filter(|(c, ck)| {
                    store
                        .position(c)
                        .is_ok_and(|p| p.epoch.get() != ck.epoch || p.head.get() < ck.head)
                })
                .map(|(c, _)| c.clone())
                .collect()
        };
        for c in stale(&self.active) {
            self.active.forget_channel(&c);
        }
        if let Some((g, _)) = &mut self.building {
            for c in stale(g) {
                g.forget_channel(&c);
            }
        }
    }

    fn budget(&self) -> WriterBudget {
        WriterBudget {
            memory_bytes: self.config.writer_memory_bytes,
        }
    }

    /// Runs until told to stop; commits what it holds before returning.
    pub(crate) fn run(mut self) {
        let result = self.run_inner();
        let why = match result {
            Ok(()) => "stopped".to_owned(),
            Err(e) => {
                tracing::error!(error = %e, "search indexer failed; search serves what it has");
                e.to_string()
            }
        };
        let mut failed = self.shared.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.get_or_insert(why.clone());
        drop(failed);
        let commands: Vec<Command> = {
            let mut p = self.shared.pending();
            // Under the lock `command` takes: nothing queued after this waits forever.
            p.stop = true;
            p.commands.drain(..).collect()
        };
        for c in commands {
            answer_stopped(c, &why);
        }
    }

    fn run_inner(&mut self) -> Result<(), SearchError> {
        loop {
            let (dirty, commands, rescan, stop) = self.wait();
            if rescan && self.catch_up.is_none() {
                self.catch_up = Some(Scan::default());
            }
            for (channel, since) in dirty {
                self.inflight.entry(channel).or_insert((since, 0));
            }
            let mut syncs = Vec::new();
            for c in commands {
                match c {
                    Command::ForgetAuthor(user, tx) => {
                        let r = self.forget_author(&user);
                        let _ = tx.send(r);
                    }
                    Command::Sync(tx) => {
                        // Every channel is looked at again: what became durable before the
                        // sync is covered even if its notification has not arrived yet.
                        self.catch_up = Some(Scan::default());
                        syncs.push(tx);
                    }
                    Command::Reindex(tx) => {
                        let _ = tx.send(self.start_reindex());
                    }
                }
            }
            let mut more = self.index_inflight()?;
            self.scan_step()?;
            let due = self.first_uncommitted.is_some_and(|t| {
                t.elapsed() >= self.config.commit_interval
                    || self.active.uncommitted >= self.config.commit_docs
            });
            // Commits at the interval (or when large, asked for, stopping), not per batch: each
            // commit writes a segment.
            if due || !syncs.is_empty() || stop {
                self.commit_all()?;
            }
            // A sync answers once everything notified before it, and what the log held before
            // the catch-up scan, is searchable.
            while !syncs.is_empty() && (more || self.catch_up.is_some()) {
                more = self.index_inflight()?;
                self.catch_up_step()?;
                self.commit_all()?;
            }
            self.finish_reindex_if_done()?;
            self.publish_lag();
            for tx in syncs {
                let _ = tx.send(Ok(()));
            }
            if stop {
                return Ok(());
            }
        }
    }

    /// Waits for work: notifications, commands, a due commit, a scan step, or stop.
    fn wait(&mut self) -> (Vec<(ChannelId, Instant)>, Vec<Command>, bool, bool) {
        let busy = !self.inflight.is_empty()
            || self.building.as_ref().is_some_and(|(_, s)| !s.done)
            || self.catch_up.is_some();
        let timeout = match (busy, self.first_uncommitted) {
            (true, _) => Duration::ZERO,
            (false, Some(t)) => self.config.commit_interval.saturating_sub(t.elapsed()),
            (false, None) => Duration::from_secs(3600),
        };
        let mut p = self.shared.pending();
        // Live entries are taken in batches at most every `batch_delay`: a pass costs a read
        // per channel, and one pass per entry would cost more than indexing it.
        let batch_delay = (self.config.commit_interval / 4).min(MAX_BATCH_DELAY);
        let since = self.last_take.elapsed();
        if !busy && since < batch_delay && p.commands.is_empty() && !p.stop {
            p = self
                .shared
                .wake
                .wait_timeout(p, batch_delay - since)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        if p.dirty.is_empty() && p.commands.is_empty() && !p.stop && !p.rescan && !timeout.is_zero()
        {
            p = self
                .shared
                .wake
                .wait_timeout(p, timeout)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let dirty: Vec<(ChannelId, Instant)> = p.dirty.drain().collect();
        if !dirty.is_empty() {
            self.last_take = Instant::now();
        }
        let commands = p.commands.drain(..).collect();
        let rescan = std::mem::take(&mut p.rescan);
        (dirty, commands, rescan, p.stop)
    }

    /// One pass over the channels taken: each indexes up to [`CHANNEL_PASS`] entries; those
    /// with more stay in flight. Returns whether any has more.
    fn index_inflight(&mut self) -> Result<bool, SearchError> {
        let channels: Vec<ChannelId> = self.inflight.keys().cloned().collect();
        let counters = &self.shared.counters;
        for channel in channels {
            let mut left = index_channel(&self.store, &mut self.active, &channel, counters)?;
            // In flight until both generations have it all: a rebuild must not fall behind.
            if let Some((g, _)) = &mut self.building {
                left = left.max(index_channel(&self.store, g, &channel, counters)?);
            }
            if left > 0 {
                if let Some(slot) = self.inflight.get_mut(&channel) {
                    slot.1 = left;
                }
            } else if let Some((since, _)) = self.inflight.remove(&channel) {
                let oldest = self.uncommitted_since.map_or(since, |t| t.min(since));
                self.uncommitted_since = Some(oldest);
            }
        }
        if self.active.dirty() {
            self.first_uncommitted.get_or_insert_with(Instant::now);
        }
        Ok(!self.inflight.is_empty())
    }

    /// One step of the catch-up scan of the active generation, or else of the rebuild.
    /// Returns whether a scan goes on.
    fn scan_step(&mut self) -> Result<bool, SearchError> {
        if self.catch_up.is_some() {
            self.catch_up_step()?;
            return Ok(true);
        }
        self.build_step()
    }

    fn catch_up_step(&mut self) -> Result<(), SearchError> {
        let counters = &self.shared.counters;
        let Some(scan) = &mut self.catch_up else {
            return Ok(());
        };
        // A rebuild's generation is caught up too (after retention: its old entries go).
        if let (Some(channel), Some((g, _))) = (scan.next(&self.store)?, &mut self.building) {
            while index_channel(&self.store, g, &channel, counters)? > 0 {
                g.commit_if_large(self.config.commit_docs)?;
            }
        }
        if !scan.step(&self.store, &mut self.active, counters)? {
            // Channels the index knows that the store no longer has.
            let gone: Vec<ChannelId> = self
                .active
                .checkpoints
                .keys()
                .filter(|c| matches!(self.store.channel(c), Ok(None)))
                .cloned()
                .collect();
            for c in gone {
                self.active.forget_channel(&c);
            }
            self.catch_up = None;
        }
        if self.active.dirty() {
            self.first_uncommitted.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    fn build_step(&mut self) -> Result<bool, SearchError> {
        let counters = &self.shared.counters;
        let Some((g, scan)) = &mut self.building else {
            return Ok(false);
        };
        let going = scan.step(&self.store, g, counters)?;
        g.commit_if_large(self.config.commit_docs)?;
        let mut b = self
            .shared
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(b) = b.as_mut() {
            b.channels_done = scan.channels;
        }
        Ok(going)
    }

    fn commit_all(&mut self) -> Result<(), SearchError> {
        if self.active.dirty() {
            self.active.commit()?;
            self.shared.counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((g, _)) = &mut self.building {
            g.commit()?;
        }
        self.first_uncommitted = None;
        self.uncommitted_since = None;
        Ok(())
    }

    /// What the status reads of the indexer: documents, channels, and how far behind.
    fn publish_lag(&self) {
        let c = &self.shared.counters;
        c.checkpoints
            .store(self.active.checkpoints.len() as u64, Ordering::Relaxed);
        let behind: u64 = self.inflight.values().map(|(_, left)| *left).sum();
        c.lag_entries
            .store(behind + self.active.uncommitted as u64, Ordering::Relaxed);
        let oldest = self
            .inflight
            .values()
            .map(|(t, _)| *t)
            .chain(self.uncommitted_since)
            .min();
        let ms = oldest.map_or(u64::MAX, |t| self.shared.since_epoch(t));
        self.shared.oldest_inflight_ms.store(ms, Ordering::Relaxed);
    }

    fn forget_author(&mut self, user: &UserId) -> Result<(), SearchError> {
        let term = |g: &Generation| Term::from_field_text(g.fields.author, user.as_str());
        self.active.writer.delete_term(term(&self.active));
        self.active.uncommitted += 1;
        if let Some((g, _)) = &mut self.building {
            g.writer.delete_term(term(g));
            g.uncommitted += 1;
        }
        self.commit_all()
    }

    fn start_reindex(&mut self) -> Result<u64, SearchError> {
        if self.building.is_some() {
            return Err(SearchError::ReindexRunning);
        }
        let number = self.active.marker.number + 1;
        let marker = Marker::new(number, self.analyzer);
        let dir = Generation::dir_of(&self.root, number);
        // A leftover of an abandoned rebuild starts over.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| SearchError::io(&dir, e))?;
        }
        let g = Generation::open(&self.root, marker.clone(), self.analyzer, self.budget())?;
        marker.write(&self.root.join(BUILDING))?;
        self.begin_building(g);
        Ok(number)
    }

    fn begin_building(&mut self, g: Generation) {
        let number = g.marker.number;
        self.building = Some((g, Scan::default()));
        *self
            .shared
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Building {
            generation: number,
            channels_done: 0,
            started: Instant::now(),
        });
        tracing::info!(generation = number, "search index rebuild started");
    }

    /// A finished rebuild becomes the active generation: `ACTIVE` renamed over, queries
    /// switched, the old generation's files removed.
    fn finish_reindex_if_done(&mut self) -> Result<(), SearchError> {
        if !self.building.as_ref().is_some_and(|(_, s)| s.done) || !self.inflight.is_empty() {
            return Ok(());
        }
        let Some((mut g, scan)) = self.building.take() else {
            return Ok(());
        };
        g.commit()?;
        g.marker.write(&self.root.join(ACTIVE))?;
        let building = self.root.join(BUILDING);
        std::fs::remove_file(&building).map_err(|e| SearchError::io(&building, e))?;
        sync_dir(&self.root)?;
        let old = std::mem::replace(&mut self.active, g);
        *self
            .shared
            .serving
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(crate::query::Serving::of(&self.active));
        *self
            .shared
            .building
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.shared
            .counters
            .rebuilds
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            generation = self.active.marker.number,
            channels = scan.channels,
            "search index rebuilt"
        );
        let old_dir = old.dir.clone();
        drop(old);
        // Queries still holding the old searcher keep its files open (mmap) until they end.
        if let Err(e) = std::fs::remove_dir_all(&old_dir) {
            tracing::warn!(dir = %old_dir.display(), error = %e, "could not remove the old search index");
        }
        Ok(())
    }
}

fn answer_stopped(c: Command, why: &str) {
    let e = || SearchError::Stopped(why.to_owned());
    match c {
        Command::ForgetAuthor(_, tx) | Command::Sync(tx) => {
            let _ = tx.send(Err(e()));
        }
        Command::Reindex(tx) => {
            let _ = tx.send(Err(e()));
        }
    }
}
