//! The protocol version and the default limits a server enforces and announces in
//! `Welcome.limits`. Servers may configure other values; clients must obey what `Welcome` says,
//! not these constants.

use crate::v1::Limits;

/// The protocol version of chorus.v1, sent in `Hello.protocol_version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The ALPN protocol id for QUIC connections.
pub const QUIC_ALPN: &[u8] = b"chorus/1";

/// The WebSocket subprotocol a client may offer in `Sec-WebSocket-Protocol`.
pub const WEBSOCKET_SUBPROTOCOL: &str = "chorus.v1";

/// Largest client-to-server envelope in bytes: enough for a maximal message with metadata,
/// small enough that 100,000 connections cannot pin much memory with half-sent frames.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 64 * 1024;

/// Largest server-to-client envelope in bytes. History pages and replays are cut to fit, so a
/// client can set its decoder to this limit.
pub const MAX_SERVER_FRAME_BYTES: u32 = 4 * 1024 * 1024;

/// Largest message content (text + custom + attachment metadata), in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 16 * 1024;

/// Most channels one connection may be subscribed to.
pub const DEFAULT_MAX_SUBSCRIPTIONS: u32 = 1_000;

/// Sustained publishes per second per user.
pub const DEFAULT_PUBLISH_RATE_PER_SEC: u32 = 20;

/// Publishes a user may burst above the sustained rate.
pub const DEFAULT_PUBLISH_BURST: u32 = 50;

/// Largest page a `History` request returns.
pub const DEFAULT_MAX_HISTORY_LIMIT: u32 = 200;

/// Page size of a `History` request with `limit = 0`.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

/// Most entries a `Subscribe` replays before answering `recovered = false, TOO_FAR_BEHIND`.
pub const DEFAULT_MAX_RECOVERY_ENTRIES: u32 = 10_000;

/// Outbound bytes queued for one connection before it is closed as a slow consumer.
pub const DEFAULT_MAX_OUTBOUND_QUEUE_BYTES: u32 = 1024 * 1024;

/// Requests a client may have awaiting replies at once.
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: u32 = 256;

/// Most mentions per message.
pub const DEFAULT_MAX_MENTIONS: u32 = 50;

/// Most attachments per message.
pub const DEFAULT_MAX_ATTACHMENTS: u32 = 10;

/// How often a client sends `Ping` when idle, in milliseconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u32 = 25_000;

/// Silence after which the server closes a connection, in milliseconds: a little over two
/// heartbeats, so that one lost ping does not end a session.
pub const DEFAULT_IDLE_TIMEOUT_MS: u32 = 60_000;

/// Time a new connection has to send `Hello`, in milliseconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u32 = 10_000;

/// Largest `limit` honoured by ListChannels, ListMembers and Search.
pub const DEFAULT_MAX_LIST_LIMIT: u32 = 200;

/// Most users one session may watch with `WatchPresence`.
pub const DEFAULT_MAX_PRESENCE_WATCH: u32 = 1_000;

/// Sustained typing and presence updates per second per session.
pub const DEFAULT_EPHEMERAL_RATE_PER_SEC: u32 = 5;

/// Most distinct emoji on one message.
pub const DEFAULT_MAX_REACTIONS_PER_MESSAGE: u32 = 50;

/// Most distinct emoji one user puts on one message.
pub const DEFAULT_MAX_REACTIONS_PER_USER: u32 = 20;

/// Most pinned messages per channel.
pub const DEFAULT_MAX_PINS_PER_CHANNEL: u32 = 100;

/// Largest `SendEvent.payload`, in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: u32 = 4_096;

/// Longest `client_msg_id`, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 64;

/// Longest reaction emoji or short name, in bytes.
pub const MAX_EMOJI_BYTES: usize = 64;

/// The limits a server announces when it runs with the defaults.
pub fn default_limits() -> Limits {
    Limits {
        max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
        publish_rate_per_sec: DEFAULT_PUBLISH_RATE_PER_SEC,
        publish_burst: DEFAULT_PUBLISH_BURST,
        max_history_limit: DEFAULT_MAX_HISTORY_LIMIT,
        max_recovery_entries: DEFAULT_MAX_RECOVERY_ENTRIES,
        max_outbound_queue_bytes: DEFAULT_MAX_OUTBOUND_QUEUE_BYTES,
        max_in_flight_requests: DEFAULT_MAX_IN_FLIGHT_REQUESTS,
        max_mentions: DEFAULT_MAX_MENTIONS,
        max_attachments: DEFAULT_MAX_ATTACHMENTS,
        default_history_limit: DEFAULT_HISTORY_LIMIT,
        max_list_limit: DEFAULT_MAX_LIST_LIMIT,
        max_presence_watch: DEFAULT_MAX_PRESENCE_WATCH,
        ephemeral_rate_per_sec: DEFAULT_EPHEMERAL_RATE_PER_SEC,
        max_reactions_per_message: DEFAULT_MAX_REACTIONS_PER_MESSAGE,
        max_reactions_per_user: DEFAULT_MAX_REACTIONS_PER_USER,
        max_pins_per_channel: DEFAULT_MAX_PINS_PER_CHANNEL,
        max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        max_search_query_bytes: DEFAULT_MAX_SEARCH_QUERY_BYTES,
        max_search_limit: DEFAULT_MAX_SEARCH_LIMIT,
        search_rate_per_sec: DEFAULT_SEARCH_RATE_PER_SEC,
        max_search_channels: DEFAULT_MAX_SEARCH_CHANNELS,
    }
}

// A maximal message plus ids, mentions and envelope overhead must fit in a frame, or a valid
// publish would be refused as a protocol error; an idle timeout must survive one lost heartbeat.
const _: () = {
    assert!(
        DEFAULT_MAX_MESSAGE_BYTES + DEFAULT_MAX_MENTIONS * 130 + 1024 <= DEFAULT_MAX_FRAME_BYTES
    );
    assert!(DEFAULT_IDLE_TIMEOUT_MS > 2 * DEFAULT_HEARTBEAT_INTERVAL_MS);
    assert!(DEFAULT_HISTORY_LIMIT <= DEFAULT_MAX_HISTORY_LIMIT);
};

/// Default longest `Search.query`, in bytes.
pub const DEFAULT_MAX_SEARCH_QUERY_BYTES: u32 = 512;

/// Default largest `Search.limit`.
pub const DEFAULT_MAX_SEARCH_LIMIT: u32 = 50;

/// Default searches per second per user.
pub const DEFAULT_SEARCH_RATE_PER_SEC: u32 = 5;

/// Default number of channels one search covers at most.
pub const DEFAULT_MAX_SEARCH_CHANNELS: u32 = 10_000;
