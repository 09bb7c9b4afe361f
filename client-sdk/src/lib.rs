//! `chorus-client`: the async Rust SDK that native apps embed to talk to a Chorus node.
//!
//! It connects over WebSocket or QUIC, offers a typed call for every request of protocol v1, and
//! hands the app an ordered, gapless, duplicate-free event stream across reconnects and server
//! restarts, with an offline outbox for publishes.
//!
//! This crate is filled in by the SDK issue; today it holds only this description so the
//! workspace layout is fixed.
