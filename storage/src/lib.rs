//! `chorus-storage`: the embedded, durable log store behind every Chorus node.
//!
//! Each channel is an ordered log of events (messages, edits, deletes, reactions, membership
//! changes) with a gapless, strictly increasing `seq` and an `epoch` that changes whenever the
//! log's history is cut. An entry is acknowledged only after it is durable; many appends share
//! one sync (group commit). Channel metadata, members, read markers with unread counts, the
//! idempotency index, users, bans and retention bookkeeping live beside the logs.
//!
//! # Layout
//! - [`engine`]: the narrow engine trait (ordered keys, atomic batches, range scans, one durable
//!   sync) and its engines: fjall (default), sled (feature `sled`), memory (tests).
//! - `keys`: the key space, big-endian so that order on disk is order in time.
//! - `records`: the stored form of entries and metadata.
//! - `commit`: the group-commit writer thread and its queue; the `Durable` trait through which
//!   it tells a channel log what became durable.
//! - `log`: the `Logs` component: sequencing, appends, rewrites, the tail cache and reads.
//! - `meta`: channels, members, read markers, users and bans.
//! - `retention`: removal by age or count, and history truncation.
//! - `store`: opening a directory (lock file, format marker), and the shared plumbing.
//! - `backup`: online backups into a new store directory.
//!
//! # Guarantees
//! - `append` returns only after the entry is durable (with [`Durability::Sync`]); an entry the
//!   engine holds but has not synced is invisible to readers.
//! - After a failed write or sync, the store accepts no more writes (`StoreError::ReadOnly`) and
//!   keeps serving reads; nothing is acknowledged that could not be persisted. The requests of
//!   the failed batch itself get `StoreError::OutcomeUnknown`: they may be on disk, and only a
//!   `ReadOnly` refusal promises that nothing was written.
//! - A retried append with the same author and `client_msg_id` returns the original entry.
//! - A damaged data directory gives an [`OpenError`] at open, never a panic; only one process
//!   opens a directory at a time.

mod backup;
mod commit;
mod config;
mod disk;
pub mod engine;
mod error;
mod idem_filter;
mod keys;
mod log;
#[cfg(test)]
mod log_layout_tests;
mod meta;
mod records;
mod retention;
mod store;

pub use backup::BackupReport;
pub use commit::{CommitListener, CommitStats, LatencyHistogram, LatencySnapshot};
pub use config::{Durability, EngineKind, RetentionPolicy, StoreConfig};
pub use error::{BackupError, EngineError, OpenError, ReadError, StoreError};
pub use log::{
    AggregateLimits, Anchor, AppendTicket, Appended, LogPage, LogPosition, LogQuery, NewEntry,
    ThreadCursor, ThreadPage,
};
pub use meta::{BanScope, ChannelInfo, ChannelPatch, FlagPage, NewChannel, NewFlag, ReadState};
pub use records::{
    BanRecord, ChannelRecord, FlagRecord, LogEntry, MarkerRecord, MemberRecord, PinRecord,
    UserRecord,
};
pub use retention::RetentionReport;
pub use store::Store;
