//! The fault harness: real `chorusd` processes on 127.0.0.1-.5 inside a network namespace the
//! test creates, faults applied to them (kill -9, SIGSTOP/SIGCONT, restart, partitions and
//! random loss with `iptables` inside the namespace), a recorder of what clients did and saw,
//! and checkers over the recorded history.
//!
//! Delay, duplication and reordering come from [`chorus_cluster::fault::FaultSocket`] in
//! in-process tests (this kernel has no `tc netem`).
//!
//! - [`netns`]: the namespace and its firewall.
//! - [`nodes`]: node processes in it.
//! - [`schedule`]: seeded fault schedules (every run prints its seed; `CHORUS_SEED` replays).
//! - [`recorder`]: SDK clients' operations and deliveries, recorded as a [`history::History`].
//! - [`history`]: what a workload recorded; [`checkers`]: the invariants over it.

pub mod checkers;
pub mod history;
pub mod netns;
pub mod nodes;
pub mod recorder;
pub mod schedule;
