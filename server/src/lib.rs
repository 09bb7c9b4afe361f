//! `chorus-server`: the `chorusd` node.
//!
//! A node accepts apps over WebSocket and QUIC (TLS via rustls, ring provider), authenticates
//! them with JWTs, persists channel events through `chorus-storage` and fans each durable event
//! out to every subscriber's bounded queue.
//!
//! # Layout
//! The path of a request, outside in, and the direction of every import (a module imports only
//! from those below it):
//! - [`server`]: `run(config, shutdown)` and [`Server`]: starts the store, the node, the
//!   listeners and the background tasks; graceful shutdown.
//! - [`http`] (`/metrics`, `/healthz`, `/readyz`) and [`control`] (the admin socket): beside the
//!   client path, over [`node`] and [`chat`].
//! - [`transport`]: TCP, TLS, WebSocket framing, QUIC; feeds frames to a connection.
//! - [`connection`]: one client connection: handshake, read loop, writer.
//! - [`session`]: one session's state; its router is the only match on `Request`.
//! - [`chat`]: the domain (channels, members, messages, reads, typing), for sessions and the
//!   control socket alike.
//! - [`background`]: retention passes, budget sweeps, the status sampler.
//! - [`node`]: what every session shares (store, hub, limits, budgets), fields private.
//! - [`admission`]: the door: connection caps per node and per address.
//! - [`search`]: the node's message search index (feature `search`), fed through the fanout
//!   seam.
//! - [`hub`]: sessions and subscriptions; the [`hub::fanout::Fanout`] seam that delivers durable
//!   entries.
//! - leaves: [`outbound`] (a connection's bounded queue), [`ids`], [`config`], [`auth`],
//!   [`metrics`], [`stats`], [`own_reads`], [`ratelimit`], [`clock`], [`dev`], [`data_dir`],
//!   [`blocklist`].
//!
//! `cargo test -p chorus-testkit --test layout` checks that no two modules import each other,
//! directly or in a circle.

pub mod admission;
pub mod auth;
pub mod background;
pub mod blocklist;
pub mod chat;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod control;
pub mod data_dir;
pub mod dev;
pub mod http;
pub mod hub;
pub mod ids;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod own_reads;
pub mod ratelimit;
pub mod search;
pub mod server;
pub mod session;
pub mod stats;
pub mod transport;

pub use config::Config;
pub use server::{Server, run};
