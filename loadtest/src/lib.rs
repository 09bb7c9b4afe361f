//! `chorus-loadtest`: drives thousands of clients against one or more Chorus nodes and reports
//! throughput, latency percentiles and delivery correctness (lost, duplicated, reordered).
//!
//! This crate is filled in by the load-test issue; today it holds only this description so the
//! workspace layout is fixed.
