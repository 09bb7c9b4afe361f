//! The node: what every session, the control socket and the background tasks share. One
//! [`Node`] per running server, behind an `Arc`; its fields are private, so that who may change
//! what (limits on reload, the drain flag) is said here once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use chorus_protocol::ids::{ChannelId, UserId};
use chorus_storage::Store;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Door;
use crate::auth::Verifier;
use crate::config::{Config, LimitsConfig};
use crate::hub::Hub;
use crate::ids::SessionKey;
use crate::own_reads::OwnReads;
use crate::ratelimit::TokenBucket;
use crate::stats::NodeStats;

/// Per-user token buckets (all of a user's sessions share one).
pub type UserBuckets = DashMap<UserId, Mutex<TokenBucket>>;

/// What every session shares.
pub struct Node {
    store: Store,
    hub: Arc<Hub>,
    config: Config,
    verifier: Verifier,
    /// The limits in force; `config reload` replaces them (new connections and new requests
    /// see the new ones).
    limits: RwLock<Arc<LimitsConfig>>,
    /// The server's blocklist, compiled (reloadable).
    blocklist: RwLock<Arc<crate::blocklist::Blocklist>>,
    /// Slow mode: when each (channel, member) may post again.
    slow_mode: DashMap<(ChannelId, UserId), tokio::time::Instant>,
    /// Publish budgets, per user.
    publish_buckets: UserBuckets,
    /// Budgets for memberships a user takes (`CreateChannel`, `JoinChannel`), per user.
    membership_buckets: UserBuckets,
    /// Search budgets, per user.
    search_buckets: UserBuckets,
    /// The message search index (absent when search is off).
    search: Arc<crate::search::Search>,
    /// The cluster endpoint and membership (absent: a single node).
    cluster: Option<Arc<chorus_cluster::Cluster>>,
    /// Connection admission: the node-wide cap and the per-address state.
    door: Arc<Door>,
    /// Background work sessions start; shutdown waits for it, so that nothing holds the store
    /// after the node stops.
    background: TaskTracker,
    /// Read markers moved by users' own posts, written in the background.
    own_reads: Arc<OwnReads>,
    /// Set when shutdown or a drain starts: `/readyz` turns 503, new sessions are refused.
    draining: AtomicBool,
    /// Cancelled when shutdown starts: long background jobs (erasures) stop between steps.
    stopping: CancellationToken,
    /// Cancelled to stop accepting connections (drain, shutdown).
    accepting: CancellationToken,
    /// When the node started.
    started: Instant,
    /// Live counters for `status`.
    stats: Arc<NodeStats>,
    next_key: AtomicU64,
}

impl Node {
    /// A node over an open store and its hub, admitting connections through `door`.
    pub fn new(
        store: Store,
        hub: Arc<Hub>,
        config: Config,
        verifier: Verifier,
        door: Door,
    ) -> Self {
        store.set_aggregate_limits(aggregate_limits(&config.limits));
        Self {
            store,
            hub,
            verifier,
            limits: RwLock::new(Arc::new(config.limits.clone())),
            blocklist: RwLock::new(Arc::new(crate::blocklist::Blocklist::server(
                &config.moderation,
            ))),
            slow_mode: DashMap::new(),
            publish_buckets: DashMap::new(),
            membership_buckets: DashMap::new(),
            search_buckets: DashMap::new(),
            search: Arc::default(),
            cluster: None,
            door: Arc::new(door),
            background: TaskTracker::new(),
            own_reads: Arc::default(),
            draining: AtomicBool::new(false),
            stopping: CancellationToken::new(),
            accepting: CancellationToken::new(),
            started: Instant::now(),
            stats: Arc::default(),
            next_key: AtomicU64::new(1),
            config,
        }
    }

    /// The node with its search index (set once, before the node is shared).
    pub fn with_search(mut self, search: Arc<crate::search::Search>) -> Self {
        self.search = search;
        self
    }

    /// The node as a cluster member (set once, before the node is shared).
    pub fn with_cluster(mut self, cluster: Option<Arc<chorus_cluster::Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// The cluster endpoint and membership, when the node is in a cluster.
    pub fn cluster(&self) -> Option<&Arc<chorus_cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// The message search index.
    pub fn search(&self) -> &Arc<crate::search::Search> {
        &self.search
    }

    /// Search budgets, per user.
    pub fn search_buckets(&self) -> &UserBuckets {
        &self.search_buckets
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The registries of sessions and subscriptions.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The configuration the node started with (limits: see [`Node::limits`]).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Token verification.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The limits in force.
    pub fn limits(&self) -> Arc<LimitsConfig> {
        self.limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts new limits in force. Publish and membership budgets restart with the new rates.
    pub fn set_limits(&self, limits: LimitsConfig) {
        self.store.set_aggregate_limits(aggregate_limits(&limits));
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(limits);
        self.publish_buckets.clear();
        self.membership_buckets.clear();
        self.search_buckets.clear();
    }

    /// Replaces the server's moderation settings (a configuration reload).
    pub fn set_moderation(&self, moderation: crate::config::ModerationConfig) {
        *self.blocklist.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(crate::blocklist::Blocklist::server(&moderation));
    }

    /// The server's blocklist.
    pub fn blocklist(&self) -> Arc<crate::blocklist::Blocklist> {
        self.blocklist
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// When each (channel, member) in slow mode may post again.
    pub fn slow_mode(&self) -> &DashMap<(ChannelId, UserId), tokio::time::Instant> {
        &self.slow_mode
    }

    /// Publish budgets, per user.
    pub fn publish_buckets(&self) -> &UserBuckets {
        &self.publish_buckets
    }

    /// Membership budgets, per user.
    pub fn membership_buckets(&self) -> &UserBuckets {
        &self.membership_buckets
    }

    /// Connection admission.
    pub fn door(&self) -> &Arc<Door> {
        &self.door
    }

    /// Background work that shutdown waits for.
    pub fn background(&self) -> &TaskTracker {
        &self.background
    }

    /// Read markers moved by users' own posts.
    pub fn own_reads(&self) -> &Arc<OwnReads> {
        &self.own_reads
    }

    /// Live counters for `status`.
    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }

    /// When the node started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A fresh session key.
    pub fn next_key(&self) -> SessionKey {
        SessionKey::new(self.next_key.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether shutdown or a drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts a drain: `/readyz` turns 503, no new connection is accepted and no new session
    /// starts. Sessions already open are closed by the caller.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.accepting.cancel();
    }

    /// Starts shutdown: a drain, and long background jobs stop between their steps.
    pub fn start_stopping(&self) {
        self.start_draining();
        self.stopping.cancel();
    }

    /// Cancelled when accepting stops (drain, shutdown).
    pub fn accepting(&self) -> &CancellationToken {
        &self.accepting
    }

    /// Cancelled when shutdown starts.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Forgets per-address and per-user budgets that are idle and full again, so the maps stay
    /// as small as the set of recently active addresses and users.
    pub fn sweep_idle_budgets(&self) {
        self.door.sweep_idle();
        let now = Instant::now();
        for buckets in [
            &self.publish_buckets,
            &self.membership_buckets,
            &self.search_buckets,
        ] {
            buckets.retain(|_, bucket| {
                !bucket
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_full(now)
            });
        }
        let now = tokio::time::Instant::now();
        self.slow_mode.retain(|_, until| *until > now);
    }
}

/// The limits the store holds reactions and pins to.
fn aggregate_limits(l: &LimitsConfig) -> chorus_storage::AggregateLimits {
    chorus_storage::AggregateLimits {
        reactions_per_message: l.max_reactions_per_message,
        reactions_per_user: l.max_reactions_per_user,
        pins_per_channel: l.max_pins_per_channel,
    }
}
