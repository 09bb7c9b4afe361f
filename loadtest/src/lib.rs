//! `chorus-loadtest`: drives thousands of clients against one or more Chorus nodes and reports
//! throughput, latency percentiles and delivery correctness (lost, duplicated, reordered).
//!
//! Every scenario is bounded in connections and time and refuses targets outside loopback.
//! Clients are lean: a bare SDK connection ([`chorus_client::raw`]) per simulated user, one task
//! each, decoding only the fields it checks ([`received`]) and checking every entry against the
//! channel's sequence, with latencies in one HDR histogram per thread, merged at the end; the reconnect-storm scenario uses full SDK clients, since
//! their recovery is what it measures.
//!
//! - [`lean`]: a connection that has said `Hello`, with request helpers.
//! - [`check`]: per-stream delivery checks (lost, duplicate, reordered).
//! - [`payload`]: the send time and origin carried in each test message.
//! - [`received`]: the subset of the server's envelopes an actor decodes.
//! - [`report`]: the report (JSON and table), server CPU and memory from `/proc`.
//! - [`scenario`]: connect, fanout, pairs, rooms, reconnect-storm.
//! - [`server_metrics`]: the node's commit latency and syncs, from its metrics endpoint.
//! - [`token`]: HS256 tokens for synthetic users.

pub mod check;
pub mod lean;
pub mod payload;
pub mod received;
pub mod report;
pub mod scenario;
pub mod server_metrics;
pub mod token;
