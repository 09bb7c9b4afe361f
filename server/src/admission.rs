//! Admission control before any work is spent on a connection: a node-wide connection cap that
//! keeps file descriptors in reserve for the store and the admin paths, and per source address
//! the open connections, the handshakes not yet finished and the rate of new connections.
//!
//! Why the node-wide cap: bare TCP connects that never send a byte each hold a descriptor until
//! the handshake deadline. With the descriptor table full, the store's next journal or segment
//! file failed to open (`Too many open files`), fjall's worker died and the store stayed
//! read-only until a restart. The cap is derived from the process's open-file limit minus
//! [`FdBudget::reserved`], so accepted connections can never take the store's descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;

use crate::config::LimitsConfig;
use crate::ratelimit::TokenBucket;

/// Descriptors kept for everything but client connections besides the store's own file cache:
/// journals, the lock file, listeners, the control socket and its clients, `/readyz` and
/// `/metrics` requests, the audit log, backups.
pub const FD_RESERVE_BESIDES_STORE: u64 = 128;

/// Fewest connections the derived cap allows, however low the open-file limit.
const MIN_DERIVED_CONNECTIONS: u64 = 16;

/// Admission state of one source address.
#[derive(Debug)]
pub struct PerIp {
    /// Open connections (pending or established).
    pub connections: usize,
    /// Connections whose handshake (TLS, upgrade, `Hello`) has not finished.
    pub pending: usize,
    /// New connections allowed per second.
    pub handshakes: TokenBucket,
}

/// How many connections the process's descriptors allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft open-file limit when the node started (`None`: unknown).
    pub limit: Option<u64>,
    /// Descriptors kept out of the connections' reach.
    pub reserved: u64,
    /// The connection cap the limit allows.
    pub max_connections: usize,
}

impl FdBudget {
    /// The budget for an open-file `limit` with `store_files` descriptors cached by the store.
    pub fn new(limit: Option<u64>, store_files: u64) -> Self {
        let reserved = store_files + FD_RESERVE_BESIDES_STORE;
        let max_connections = match limit {
            Some(limit) => limit.saturating_sub(reserved).max(MIN_DERIVED_CONNECTIONS),
            None => u64::MAX,
        };
        Self {
            limit,
            reserved,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        }
    }

    /// The budget of this process now.
    pub fn of_process(store_files: u64) -> Self {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        Self::new(limit, store_files)
    }
}

/// Raises the soft open-file limit to the hard limit, so that a node started from a shell
/// with the common default of 1,024 can hold as many connections as the host allows. Returns
/// the limits before and after when it changed anything.
pub fn raise_fd_limit() -> std::io::Result<Option<(u64, u64)>> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    match (current, maximum) {
        (Some(current), Some(maximum)) if current < maximum => {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(maximum),
                    maximum: Some(maximum),
                },
            )?;
            Ok(Some((current, maximum)))
        }
        // Unlimited hard limit: raise to what the kernel allows a process.
        (Some(current), None) => {
            let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(current);
            if nr_open <= current {
                return Ok(None);
            }
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(nr_open),
                    maximum: None,
                },
            )?;
            Ok(Some((current, nr_open)))
        }
        _ => Ok(None),
    }
}

/// The door every client connection passes: the node-wide count and the per-address state.
/// The node holds one; an [`Admission`] holds it until its connection ends.
#[derive(Debug)]
pub struct Door {
    /// Open connections of the whole node, for the node-wide cap.
    connections: AtomicUsize,
    /// Connections and handshake budget per source address.
    per_ip: DashMap<std::net::IpAddr, PerIp>,
    /// What the process's open-file limit allows (set at start).
    fd_budget: FdBudget,
}

impl Door {
    /// A door for a process whose descriptors allow `fd_budget`.
    pub fn new(fd_budget: FdBudget) -> Self {
        Self {
            connections: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            fd_budget,
        }
    }

    /// Open connections now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// What the descriptors allow.
    pub fn fd_budget(&self) -> FdBudget {
        self.fd_budget
    }

    /// The node-wide connection cap in force under `limits`: the configured one, never above
    /// what the descriptors allow.
    pub fn max_connections(&self, limits: &LimitsConfig) -> usize {
        let fds = self.fd_budget.max_connections;
        match limits.max_connections {
            0 => fds,
            configured => fds.min(configured as usize),
        }
    }

    /// Admission control before any work (no TLS, no upgrade): the node-wide cap, then per
    /// source address its open connections, its unfinished handshakes and its rate of new
    /// connections.
    pub fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
        limits: &LimitsConfig,
    ) -> Result<Admission, Refusal> {
        let ip = peer.ip();
        let refused = |why: Refusal| {
            metrics::counter!("chorus_connections_refused_total", "reason" => why.label())
                .increment(1);
            tracing::debug!(%ip, reason = why.label(), "connection refused");
            why
        };
        let max = self.max_connections(limits);
        // Counted first, given back on refusal: two accepts racing at the cap cannot both pass.
        if self.connections.fetch_add(1, Ordering::Relaxed) >= max {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return Err(refused(Refusal::NodeFull));
        }
        let give_back = |why| {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            Err(refused(why))
        };
        let mut entry = self.per_ip.entry(ip).or_insert_with(|| PerIp {
            connections: 0,
            pending: 0,
            handshakes: TokenBucket::new(
                limits.handshake_rate_per_ip,
                limits.handshake_rate_per_ip,
                Instant::now(),
            ),
        });
        if entry.connections >= limits.max_connections_per_ip as usize {
            return give_back(Refusal::AddressFull);
        }
        if entry.pending >= limits.max_pending_handshakes_per_ip as usize {
            return give_back(Refusal::AddressPending);
        }
        if entry.handshakes.take(Instant::now()).is_err() {
            return give_back(Refusal::AddressRate);
        }
        entry.connections += 1;
        entry.pending += 1;
        Ok(Admission {
            door: self.clone(),
            peer,
            pending: true,
        })
    }

    /// Forgets addresses with no connection whose handshake budget has refilled, so the map
    /// stays as small as the set of recently active addresses.
    pub fn sweep_idle(&self) {
        let now = Instant::now();
        self.per_ip
            .retain(|_, n| n.connections > 0 || !n.handshakes.is_full(now));
    }
}

/// A connection's place in the node-wide and per-address counts, given back when the
/// connection ends; its handshake's place when `Admission::established` is called or it ends.
pub struct Admission {
    door: Arc<Door>,
    peer: SocketAddr,
    pending: bool,
}

impl Admission {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The handshake finished (a session started): the address's pending count drops.
    pub(crate) fn established(&mut self) {
        if std::mem::take(&mut self.pending)
            && let Some(mut n) = self.door.per_ip.get_mut(&self.peer.ip())
        {
            n.pending = n.pending.saturating_sub(1);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.door.connections.fetch_sub(1, Ordering::Relaxed);
        // The entry stays (with its handshake budget) until the sweep finds it idle and full.
        if let Some(mut n) = self.door.per_ip.get_mut(&self.peer.ip()) {
            n.connections = n.connections.saturating_sub(1);
            if self.pending {
                n.pending = n.pending.saturating_sub(1);
            }
        }
    }
}

/// Why a connection was not admitted (the label of `chorus_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node-wide cap (`limits.max_connections`, or what the descriptors allow).
    NodeFull,
    /// `limits.max_connections_per_ip`.
    AddressFull,
    /// `limits.max_pending_handshakes_per_ip`.
    AddressPending,
    /// `limits.handshake_rate_per_ip`.
    AddressRate,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::NodeFull => "node_full",
            Refusal::AddressFull => "address_full",
            Refusal::AddressPending => "address_pending",
            Refusal::AddressRate => "address_rate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_cap_leaves_the_reserve_free() {
        let b = FdBudget::new(Some(20_000), 256);
        assert_eq!(b.reserved, 256 + FD_RESERVE_BESIDES_STORE);
        assert_eq!(b.max_connections, 20_000 - 384);
        // The probe's limit of 512: 128 connections, the rest for the store and admins.
        assert_eq!(FdBudget::new(Some(512), 256).max_connections, 128);
        // Below the reserve a node still takes a few connections.
        assert_eq!(
            FdBudget::new(Some(100), 256).max_connections,
            MIN_DERIVED_CONNECTIONS as usize
        );
        assert_eq!(FdBudget::new(None, 256).max_connections, usize::MAX);
    }
}
