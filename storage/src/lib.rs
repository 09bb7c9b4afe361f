//! `chorus-storage`: the embedded, durable log store behind every Chorus node.
//!
//! Each channel is an ordered log of events (messages, edits, deletes, reactions, membership
//! changes) with a gapless, strictly increasing `seq` and an `epoch` that changes whenever the
//! log's history is cut. An entry is acknowledged to a publisher only after it is durable; many
//! appends share one sync (group commit). Channel metadata, members, read markers, the idempotency
//! index and retention bookkeeping live beside the logs.
//!
//! This crate is filled in by the storage issue; today it holds only this description so the
//! workspace layout is fixed.
