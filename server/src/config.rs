//! Node configuration: a TOML file, overridden by `CHORUS_*` environment variables and flags
//! (clap reads both), resolved into one `Config` that `run` takes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chorus_protocol::limits;
use serde::Deserialize;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// The setting's name.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// How tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKey {
    /// HS256 with a shared secret.
    Hs256(Vec<u8>),
    /// EdDSA (Ed25519) with a PEM public key.
    Ed25519Pem(Vec<u8>),
    /// RS256 with a PEM public key.
    Rs256Pem(Vec<u8>),
}

/// The limits a node enforces; announced to clients in `Welcome.limits` where the protocol has
/// a field for them.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest client frame, bytes.
    pub max_frame_bytes: u32,
    /// Largest message content, bytes.
    pub max_message_bytes: u32,
    /// Subscriptions per connection.
    pub max_subscriptions: u32,
    /// Sustained publishes per second per user.
    pub publish_rate_per_sec: u32,
    /// Publish burst per user.
    pub publish_burst: u32,
    /// Largest history page.
    pub max_history_limit: u32,
    /// Most entries a subscribe replays.
    pub max_recovery_entries: u32,
    /// Outbound bytes queued per connection before it is closed as a slow consumer.
    pub max_outbound_queue_bytes: u32,
    /// Requests awaiting replies per connection.
    pub max_in_flight_requests: u32,
    /// Mentions per message.
    pub max_mentions: u32,
    /// Attachments per message.
    pub max_attachments: u32,
    /// Typing / presence updates per second per session.
    pub ephemeral_rate_per_sec: u32,
    /// Distinct emoji on one message.
    pub max_reactions_per_message: u32,
    /// Distinct emoji one user puts on one message.
    pub max_reactions_per_user: u32,
    /// Pinned messages per channel.
    pub max_pins_per_channel: u32,
    /// Largest custom event payload (`SendEvent`).
    pub max_event_bytes: u32,
    /// Users one user may block.
    pub max_blocks_per_user: u32,
    /// Longest `Search.query`, bytes.
    pub max_search_query_bytes: u32,
    /// Largest `Search.limit` honoured.
    pub max_search_limit: u32,
    /// Searches per second per user (all their sessions; bursts of twice this).
    pub search_rate_per_sec: u32,
    /// Channels one search covers at most when it names none (the user's memberships, in
    /// channel id order; the reply says when some were left out).
    pub max_search_channels: u32,
    /// Whether a user sees the presence of only the users they share a channel with (true)
    /// or of everyone.
    pub presence_shared_only: bool,
    /// Largest channel (in members, and in subscribers) whose subscribers get read receipts; 0:
    /// none. Every `MarkRead` that moves a marker is one push per subscriber, so in big rooms
    /// receipts would cost more than the messages.
    pub read_receipt_max_members: u32,
    /// Channels one user may belong to; a join, creation or addition past it is refused
    /// (`LIMIT_EXCEEDED`). Bounds every per-user listing (unread totals, channel lists).
    pub max_memberships_per_user: u32,
    /// Memberships a user may take per second by `CreateChannel` and `JoinChannel` (a token
    /// bucket per user); over it: `RATE_LIMITED`.
    pub membership_rate_per_sec: u32,
    /// The burst of `membership_rate_per_sec` (bucket size).
    pub membership_burst: u32,
    /// Channel records one `ListChannels` with `include_public` examines at most while
    /// looking for public channels; the page then ends early with a cursor that goes on from
    /// there. Bounds the request's cost however many private channels the node holds.
    pub public_list_scan: u32,
    /// Connections one user may hold.
    pub max_connections_per_user: u32,
    /// Connections one source address may hold.
    pub max_connections_per_ip: u32,
    /// Connections one source address may have in their handshake (TLS, upgrade, `Hello`) at
    /// once: one address cannot hold thousands of descriptors with connects that never speak.
    pub max_pending_handshakes_per_ip: u32,
    /// Connections of the whole node; 0 = as many as the open-file limit allows after the
    /// descriptors kept for the store and the admin paths. A set value is still capped by that.
    pub max_connections: u32,
    /// New connections accepted per second per source address.
    pub handshake_rate_per_ip: u32,
    /// Time to send `Hello`, ms.
    pub handshake_timeout_ms: u32,
    /// Client heartbeat interval announced, ms.
    pub heartbeat_interval_ms: u32,
    /// Silence after which a connection is closed, ms.
    pub idle_timeout_ms: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: limits::DEFAULT_MAX_FRAME_BYTES,
            max_message_bytes: limits::DEFAULT_MAX_MESSAGE_BYTES,
            max_subscriptions: limits::DEFAULT_MAX_SUBSCRIPTIONS,
            publish_rate_per_sec: limits::DEFAULT_PUBLISH_RATE_PER_SEC,
            publish_burst: limits::DEFAULT_PUBLISH_BURST,
            max_history_limit: limits::DEFAULT_MAX_HISTORY_LIMIT,
            max_recovery_entries: limits::DEFAULT_MAX_RECOVERY_ENTRIES,
            max_outbound_queue_bytes: limits::DEFAULT_MAX_OUTBOUND_QUEUE_BYTES,
            max_in_flight_requests: limits::DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            max_mentions: limits::DEFAULT_MAX_MENTIONS,
            max_attachments: limits::DEFAULT_MAX_ATTACHMENTS,
            ephemeral_rate_per_sec: limits::DEFAULT_EPHEMERAL_RATE_PER_SEC,
            max_reactions_per_message: limits::DEFAULT_MAX_REACTIONS_PER_MESSAGE,
            max_reactions_per_user: limits::DEFAULT_MAX_REACTIONS_PER_USER,
            max_pins_per_channel: limits::DEFAULT_MAX_PINS_PER_CHANNEL,
            max_event_bytes: limits::DEFAULT_MAX_EVENT_BYTES,
            max_blocks_per_user: 1_000,
            max_search_query_bytes: limits::DEFAULT_MAX_SEARCH_QUERY_BYTES,
            max_search_limit: limits::DEFAULT_MAX_SEARCH_LIMIT,
            search_rate_per_sec: limits::DEFAULT_SEARCH_RATE_PER_SEC,
            max_search_channels: limits::DEFAULT_MAX_SEARCH_CHANNELS,
            presence_shared_only: true,
            read_receipt_max_members: 100,
            max_memberships_per_user: 10_000,
            membership_rate_per_sec: 2,
            membership_burst: 60,
            public_list_scan: 1_000,
            max_connections_per_user: 16,
            max_connections_per_ip: 10_000,
            max_pending_handshakes_per_ip: 128,
            max_connections: 0,
            handshake_rate_per_ip: 200,
            handshake_timeout_ms: limits::DEFAULT_HANDSHAKE_TIMEOUT_MS,
            heartbeat_interval_ms: limits::DEFAULT_HEARTBEAT_INTERVAL_MS,
            idle_timeout_ms: limits::DEFAULT_IDLE_TIMEOUT_MS,
        }
    }
}

impl LimitsConfig {
    /// The part of the limits the protocol announces in `Welcome`.
    pub fn announced(&self) -> chorus_protocol::v1::Limits {
        chorus_protocol::v1::Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_message_bytes: self.max_message_bytes,
            max_subscriptions: self.max_subscriptions,
            publish_rate_per_sec: self.publish_rate_per_sec,
            publish_burst: self.publish_burst,
            max_history_limit: self.max_history_limit,
            max_recovery_entries: self.max_recovery_entries,
            max_outbound_queue_bytes: self.max_outbound_queue_bytes,
            max_in_flight_requests: self.max_in_flight_requests,
            max_mentions: self.max_mentions,
            max_attachments: self.max_attachments,
            default_history_limit: limits::DEFAULT_HISTORY_LIMIT.min(self.max_history_limit),
            max_list_limit: limits::DEFAULT_MAX_LIST_LIMIT,
            max_presence_watch: limits::DEFAULT_MAX_PRESENCE_WATCH,
            ephemeral_rate_per_sec: self.ephemeral_rate_per_sec,
            max_reactions_per_message: self.max_reactions_per_message,
            max_reactions_per_user: self.max_reactions_per_user,
            max_pins_per_channel: self.max_pins_per_channel,
            max_event_bytes: self.max_event_bytes,
            max_search_query_bytes: self.max_search_query_bytes,
            max_search_limit: self.max_search_limit,
            search_rate_per_sec: self.search_rate_per_sec,
            max_search_channels: self.max_search_channels,
        }
    }

    /// Checks the values that cannot be checked by types alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("limits.max_frame_bytes", self.max_frame_bytes),
            ("limits.max_message_bytes", self.max_message_bytes),
            ("limits.max_subscriptions", self.max_subscriptions),
            ("limits.publish_burst", self.publish_burst),
            ("limits.max_history_limit", self.max_history_limit),
            (
                "limits.max_outbound_queue_bytes",
                self.max_outbound_queue_bytes,
            ),
            ("limits.max_in_flight_requests", self.max_in_flight_requests),
            ("limits.handshake_timeout_ms", self.handshake_timeout_ms),
            ("limits.idle_timeout_ms", self.idle_timeout_ms),
            (
                "limits.max_connections_per_user",
                self.max_connections_per_user,
            ),
            ("limits.max_connections_per_ip", self.max_connections_per_ip),
            (
                "limits.max_pending_handshakes_per_ip",
                self.max_pending_handshakes_per_ip,
            ),
            (
                "limits.max_memberships_per_user",
                self.max_memberships_per_user,
            ),
            ("limits.membership_burst", self.membership_burst),
            ("limits.public_list_scan", self.public_list_scan),
            (
                "limits.max_reactions_per_message",
                self.max_reactions_per_message,
            ),
            ("limits.max_reactions_per_user", self.max_reactions_per_user),
            ("limits.max_pins_per_channel", self.max_pins_per_channel),
            ("limits.max_event_bytes", self.max_event_bytes),
            ("limits.max_blocks_per_user", self.max_blocks_per_user),
            ("limits.max_search_query_bytes", self.max_search_query_bytes),
            ("limits.max_search_limit", self.max_search_limit),
            ("limits.search_rate_per_sec", self.search_rate_per_sec),
            ("limits.max_search_channels", self.max_search_channels),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
        }
        if self.max_message_bytes >= self.max_frame_bytes {
            return Err(ConfigError::Invalid {
                key: "limits.max_message_bytes",
                message: "must be smaller than limits.max_frame_bytes".into(),
            });
        }
        Ok(())
    }
}

/// The config file's shape. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Node id (default: random, stored in the data directory).
    pub node_id: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// WebSocket listener address.
    pub ws_listen: Option<SocketAddr>,
    /// Serve plain `ws://` instead of TLS.
    pub ws_plain: Option<bool>,
    /// QUIC listener address (UDP); needs TLS.
    pub quic_listen: Option<SocketAddr>,
    /// HTTP listener for /metrics, /healthz, /readyz.
    pub http_listen: Option<SocketAddr>,
    /// Turn the HTTP listener off.
    pub http_disabled: Option<bool>,
    /// Turn QUIC off.
    pub quic_disabled: Option<bool>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// File holding the HS256 secret.
    pub token_secret_file: Option<PathBuf>,
    /// Ed25519 public key (PEM) for EdDSA tokens.
    pub token_ed25519_public_key: Option<PathBuf>,
    /// RSA public key (PEM) for RS256 tokens.
    pub token_rs256_public_key: Option<PathBuf>,
    /// Required `aud` claim.
    pub token_audience: Option<String>,
    /// Required `iss` claim.
    pub token_issuer: Option<String>,
    /// Store engine: "fjall" or "sled".
    pub store_engine: Option<String>,
    /// "sync" (default) or "relaxed".
    pub store_durability: Option<String>,
    /// For relaxed durability: fsync interval, ms.
    pub store_sync_interval_ms: Option<u64>,
    /// New entries are refused while less than this is free on the store's disk, bytes.
    pub store_min_free_bytes: Option<u64>,
    /// How long shutdown waits for queues to drain, ms.
    pub shutdown_drain_ms: Option<u64>,
    /// Remove channel entries older than this by default, ms (0 = keep).
    pub retention_max_age_ms: Option<u64>,
    /// Keep at most this many entries per channel by default (0 = all).
    pub retention_max_entries: Option<u64>,
    /// How often retention runs, ms.
    pub retention_interval_ms: Option<u64>,
    /// The admin control socket (default `<data_dir>/control.sock`).
    pub control_socket: Option<PathBuf>,
    /// Turn the control socket off.
    pub control_disabled: Option<bool>,
    /// Log filter (tracing env-filter syntax); `config reload` applies it.
    pub log: Option<String>,
    /// Limits.
    pub limits: LimitsConfig,
    /// Server-wide moderation.
    pub moderation: ModerationConfig,
    /// Message search.
    pub search: SearchSettings,
    /// Cluster membership; absent: a single node.
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

/// Message search (`[search]`): the index under `<data_dir>/search/` and the cost of a query.
/// Read at start; the per-user limits are under `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchSettings {
    /// Index messages and answer `Search` (a build without the `search` feature answers
    /// `UNIMPLEMENTED` whatever this says).
    pub enabled: bool,
    /// How text becomes words: `simple` (every language written with spaces: lowercased,
    /// accents folded) or a language to stem for (`english`, `german`, ...). A change rebuilds
    /// the index in the background; the old one serves until the new one is complete.
    pub analyzer: String,
    /// Longest wait, ms, between an entry becoming durable and becoming searchable while
    /// entries arrive (one index commit per interval).
    pub commit_interval_ms: u64,
    /// The index writer's memory before it writes a segment, MiB (twice this during a rebuild).
    pub writer_memory_mb: u32,
    /// Time one search may take, ms; a slower one is cut and its reply says `timed_out`.
    pub time_budget_ms: u32,
    /// Searches running at once on the node; more wait for a turn within their budget.
    pub max_concurrent: u32,
    /// Longest snippet, in bytes of UTF-8 (characters, for Latin text).
    pub snippet_chars: u32,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            analyzer: "simple".into(),
            commit_interval_ms: 1_000,
            writer_memory_mb: 64,
            time_budget_ms: 500,
            max_concurrent: 2,
            snippet_chars: 160,
        }
    }
}

impl SearchSettings {
    /// Checks the values that cannot be checked by types alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        #[cfg(feature = "search")]
        if chorus_search::Analyzer::parse(&self.analyzer).is_none() {
            return Err(ConfigError::Invalid {
                key: "search.analyzer",
                message: format!("one of {}", chorus_search::Analyzer::NAMES.join(", ")),
            });
        }
        if !(15..=4096).contains(&self.writer_memory_mb) {
            return Err(ConfigError::Invalid {
                key: "search.writer_memory_mb",
                message: "from 15 to 4096".into(),
            });
        }
        let positive = [
            ("search.time_budget_ms", u64::from(self.time_budget_ms)),
            ("search.max_concurrent", u64::from(self.max_concurrent)),
            ("search.snippet_chars", u64::from(self.snippet_chars)),
            ("search.commit_interval_ms", self.commit_interval_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
        }
        Ok(())
    }
}

/// Server-wide moderation: the blocklist every channel shares (each channel may add its own).
/// `config reload` applies changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModerationConfig {
    /// Words and phrases refused or flagged in every channel (matching ignores case; a phrase
    /// matches the same words in a row).
    pub blocked_words: Vec<String>,
    /// `"refuse"` (the default: the post gets `BLOCKED_CONTENT`) or `"flag"` (the post passes
    /// and a flag is raised for the channel's moderators).
    pub blocked_words_action: Option<String>,
}

impl ModerationConfig {
    /// Checks the action's spelling and the list's size.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.blocked_words_action.as_deref() {
            None | Some("refuse" | "flag") => {}
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "moderation.blocked_words_action",
                    message: format!("must be \"refuse\" or \"flag\", not {other:?}"),
                });
            }
        }
        if self.blocked_words.len() > MAX_BLOCKED_WORDS
            || self
                .blocked_words
                .iter()
                .any(|w| w.trim().is_empty() || w.len() > 64)
        {
            return Err(ConfigError::Invalid {
                key: "moderation.blocked_words",
                message: format!("at most {MAX_BLOCKED_WORDS} entries of 1 to 64 bytes"),
            });
        }
        Ok(())
    }
}

/// Most entries of a blocklist (the server's or a channel's).
pub const MAX_BLOCKED_WORDS: usize = 500;

impl FileConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// Everything a node needs to run, resolved and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id, announced in `Welcome`.
    pub node_id: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where the WebSocket listener binds (port 0 = any free port).
    pub ws_listen: SocketAddr,
    /// TLS certificate chain and key (PEM); `None` serves plain `ws://`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where the QUIC listener binds; `None` = no QUIC. Needs `tls`.
    pub quic_listen: Option<SocketAddr>,
    /// Where the metrics and health listener binds; `None` = off.
    pub http_listen: Option<SocketAddr>,
    /// Token verification key.
    pub token_key: TokenKey,
    /// Required `aud`.
    pub token_audience: Option<String>,
    /// Required `iss`.
    pub token_issuer: Option<String>,
    /// Store settings.
    pub store: chorus_storage::StoreConfig,
    /// Limits.
    pub limits: LimitsConfig,
    /// Server-wide moderation.
    pub moderation: ModerationConfig,
    /// Message search.
    pub search: SearchSettings,
    /// The node as a member of a cluster (`None`: a single node).
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// How long shutdown waits for outbound queues to drain.
    pub shutdown_drain: Duration,
    /// How often retention runs (the policies are store settings).
    pub retention_interval: Duration,
    /// Where the admin control socket listens; `None` = off.
    pub control_socket: Option<PathBuf>,
    /// The config file the node was started with, re-read by `config reload`.
    pub config_file: Option<PathBuf>,
    /// Changes the log filter at run time (set by the binary, which owns the subscriber).
    pub log_filter: Option<LogFilterHandle>,
}

/// Replaces the process's log filter; returns an error message for an invalid filter.
#[derive(Clone)]
pub struct LogFilterHandle(pub std::sync::Arc<SetLogFilter>);

/// Sets the log filter from a tracing filter string.
pub type SetLogFilter = dyn Fn(&str) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for LogFilterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogFilterHandle")
    }
}

impl Config {
    /// Checks the values that cannot be checked by types alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        self.moderation.validate()?;
        self.search.validate()?;
        if let Some(c) = &self.cluster {
            c.validate(&self.node_id)
                .map_err(|e| ConfigError::Invalid {
                    key: e.key,
                    message: e.message,
                })?;
        }
        if let TokenKey::Hs256(secret) = &self.token_key
            && secret.len() < 32
        {
            return Err(ConfigError::Invalid {
                key: "token_secret_file",
                message: "an HS256 secret must be at least 32 bytes".into(),
            });
        }
        Ok(())
    }

    /// A config for tests and embedding: plain WebSocket on `127.0.0.1:0`, an HS256 secret,
    /// the given data directory, default limits.
    pub fn for_tests(data_dir: &Path, secret: &[u8]) -> Self {
        Self {
            node_id: "test-node".into(),
            data_dir: data_dir.to_path_buf(),
            ws_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            quic_listen: None,
            http_listen: None,
            token_key: TokenKey::Hs256(secret.to_vec()),
            token_audience: None,
            token_issuer: None,
            store: chorus_storage::StoreConfig::new(data_dir.join("store")),
            limits: LimitsConfig {
                // Tests create channels far faster than a person; the budget has its own test.
                membership_burst: 100_000,
                // Tests poll search until the index catches up.
                search_rate_per_sec: 10_000,
                ..LimitsConfig::default()
            },
            moderation: ModerationConfig::default(),
            search: SearchSettings {
                commit_interval_ms: 50,
                writer_memory_mb: 15,
                ..SearchSettings::default()
            },
            cluster: None,
            shutdown_drain: Duration::from_secs(2),
            retention_interval: Duration::from_secs(60),
            control_socket: None,
            config_file: None,
            log_filter: None,
        }
    }
}
