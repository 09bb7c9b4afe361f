//! `chorus-server`: the `chorusd` node and the `chorusctl` admin CLI.
//!
//! A node accepts native apps over WebSocket and QUIC (TLS via rustls), authenticates them,
//! keeps connection state in sharded in-memory maps, sequences and persists channel events through
//! `chorus-storage`, and fans each event out to every subscriber with bounded per-connection
//! queues. Admins drive a live node through a Unix control socket.
//!
//! This crate is filled in by the server issue; today it holds only this description so the
//! workspace layout is fixed.
