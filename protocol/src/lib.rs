//! `chorus-protocol`: the chorus.v1 wire protocol, shared by the server, the SDK and the load
//! tester, and specified for clients in other languages by `docs/protocol.md` plus the `.proto`
//! files under `proto/`.
//!
//! The crate is sans-IO: it turns bytes into typed envelopes and back, and knows nothing of
//! sockets or runtimes, so that every transport (WebSocket, QUIC) and every test drives the same
//! code. It must never depend on tokio (CI checks).
//!
//! # Layout
//! - [`v1`]: the types generated from `proto/chorus/v1/*.proto` by prost.
//! - [`peer`]: the types of `proto/chorus/peer/v1/peer.proto`, what cluster nodes say to each other.
//! - [`codec`]: frames (a varint length prefix plus one encoded envelope), the streaming decoder
//!   for byte streams, the batch decoder for WebSocket messages, and the typed [`DecodeError`].
//! - [`envelope`]: constructors and names for envelopes, replies and pushes.
//! - [`ids`]: newtype ids (`ChannelId`, `UserId`, `Seq`, ...) and their validation.
//! - [`limits`]: the protocol version and the default limits a server announces in `Welcome`.
//! - [`codes`]: what each error code and close code means for a client, including reconnect advice.
//! - [`resume`]: the client's per-channel cursors: exactly-once, in-order delivery across
//!   reconnects, and the `Hello.resume` data.
//! - [`search`]: the search query language of `Search.query`.
//! - [`backoff`]: reconnect timing (exponential backoff with full jitter) and the plan a close
//!   code calls for.
//!
//! # Example
//! ```
//! use bytes::BytesMut;
//! use chorus_protocol::codec::{encode_frame, FrameDecoder};
//! use chorus_protocol::v1::{client_envelope::Request, ClientEnvelope, Ping};
//!
//! let ping = ClientEnvelope::new(7, Request::Ping(Ping { client_time_ms: 1 }));
//! let mut wire = BytesMut::new();
//! encode_frame(&ping, &mut wire);
//!
//! let mut decoder = FrameDecoder::new(chorus_protocol::limits::DEFAULT_MAX_FRAME_BYTES as usize);
//! let decoded: Option<ClientEnvelope> = decoder.decode(&mut wire)?;
//! assert_eq!(decoded, Some(ping));
//! # Ok::<(), chorus_protocol::DecodeError>(())
//! ```

pub mod backoff;
pub mod codec;
pub mod codes;
pub mod envelope;
pub mod ids;
pub mod limits;
pub mod resume;
pub mod search;
pub mod websocket;

pub use codec::DecodeError;

/// The chorus.v1 messages, generated from `proto/chorus/v1/*.proto`. Their documentation is the
/// comments of the `.proto` files.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::large_enum_variant,
    clippy::doc_lazy_continuation,
    clippy::doc_overindented_list_items
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/chorus.v1.rs"));
}

/// The chorus.peer.v1 messages nodes of a cluster exchange, generated from
/// `proto/chorus/peer/v1/peer.proto`. They travel in the same frames as chorus.v1 ([`codec`]).
#[allow(missing_docs, unreachable_pub, clippy::doc_lazy_continuation)]
pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/chorus.peer.v1.rs"));

    /// The peer protocol versions this build speaks.
    pub const MIN_VERSION: u32 = 1;
    /// See [`MIN_VERSION`].
    pub const MAX_VERSION: u32 = 1;
    /// The ALPN of the cluster endpoint.
    pub const ALPN: &[u8] = b"chorus-cluster/1";
    /// The first byte of a datagram that carries a membership (SWIM) packet.
    pub const DATAGRAM_MEMBERSHIP: u8 = 1;
}

/// The encoded `FileDescriptorSet` of the chorus.v1 schema (with imports and source comments),
/// for tools that work on messages by reflection: golden-vector checks, debugging dumps.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chorus_v1_descriptor.bin"));
