//! `chorus-server`: the `chorusd` node.
//!
//! A node accepts native apps over WebSocket and QUIC (TLS via rustls, ring provider), authenticates them
//! with JWTs, keeps connection state in sharded maps, persists channel events through
//! `chorus-storage` and fans each durable event out to every subscriber's bounded queue.
//!
//! # Layout
//! - [`server`]: `run(config, shutdown)` and [`server::Server`]: store, hub, listener, shutdown.
//! - [`connection`]: one WebSocket connection: handshake, read loop, batched writer.
//! - [`session`]: request dispatch, permission checks, subscriptions with gapless recovery.
//! - [`hub`]: sessions and subscribers (dashmap); the store's commit listener, fanning out.
//! - [`outbound`]: a connection's bounded outbound queue (slow consumers are closed).
//! - [`auth`]: JWT verification and minting. [`config`]: configuration. [`tls`], [`dev`].
//!
//! - [`quic`]: the QUIC listener: the same sessions over one bidirectional stream.
//! - [`observe`]: metrics (Prometheus) and the `/metrics`, `/healthz`, `/readyz` listener.
//!
//! # Not yet here
//! Reactions, presence, search and moderation requests are answered `UNIMPLEMENTED`; see the
//! README status.

pub mod admission;
pub mod auth;
pub mod clock;
pub mod config;
pub mod connection;
pub mod control;
pub mod data_dir;
pub mod dev;
pub mod hub;
pub mod observe;
pub mod outbound;
pub mod own_reads;
pub mod quic;
pub mod ratelimit;
pub mod server;
pub mod session;
pub mod stats;
pub mod tls;
pub mod tls_stream;
pub mod ws;

pub use config::Config;
pub use server::{Server, run};
