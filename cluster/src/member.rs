//! A member's identity as SWIM (foca) gossips it: the node id is the address foca keys members
//! by; the start time makes a restarted node a newer identity that replaces the old one, so a
//! restart leaves no ghost.

use std::net::SocketAddr;

use chorus_protocol::peer::NodeInfo;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::tls::parse_addr;

/// The identity membership gossips.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Member {
    /// The node.
    pub node: NodeId,
    /// Its cluster endpoint.
    pub cluster_addr: SocketAddr,
    /// Where its clients connect.
    pub client_addr: String,
    /// When its process started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// Bumped each time the node comes back after being declared down while it lived (a pause,
    /// a partition).
    pub renewed: u16,
}

impl Member {
    /// The identity a node's handshake describes.
    pub(crate) fn from_info(info: &NodeInfo) -> Option<Self> {
        Some(Self {
            node: NodeId::new(info.node_id.clone()).ok()?,
            cluster_addr: parse_addr(&info.cluster_addr)?,
            client_addr: info.client_addr.clone(),
            started_at_ms: info.started_at_ms,
            renewed: 0,
        })
    }
}

impl foca::Identity for Member {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            renewed: self.renewed.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.node.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.started_at_ms, self.renewed) > (adversary.started_at_ms, adversary.renewed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn member(started: u64, renewed: u16) -> Member {
        Member {
            node: NodeId::new("n1").unwrap_or_else(|e| panic!("{e}")),
            cluster_addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            client_addr: "127.0.0.1:9000".into(),
            started_at_ms: started,
            renewed,
        }
    }

    #[test]
    fn a_restart_or_a_renewal_wins_over_the_old_identity() {
        assert!(member(2, 0).win_addr_conflict(&member(1, 9)));
        assert!(!member(1, 9).win_addr_conflict(&member(2, 0)));
        let renewed = member(1, 0).renew().unwrap_or_else(|| member(0, 0));
        assert!(renewed.win_addr_conflict(&member(1, 0)));
        assert_eq!(renewed.addr(), member(1, 0).addr());
    }
}
