//! The node id: the name a node has in its cluster, in its certificate and in every status.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ClusterError;

/// The longest node id: it is a DNS label in the node's certificate.
pub const MAX_NODE_ID_LEN: usize = 63;

/// A node's id: 1 to 63 of `a-z`, `0-9` and `-`, starting with a letter or digit (a DNS label,
/// because the certificate names the node `<id>.node.chorus-cluster`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Checks and wraps an id.
    pub fn new(id: impl Into<String>) -> Result<Self, ClusterError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= MAX_NODE_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !id.starts_with('-')
            && !id.ends_with('-');
        if valid {
            Ok(Self(id))
        } else {
            Err(ClusterError::Config(format!(
                "node id {id:?}: 1 to {MAX_NODE_ID_LEN} of a-z, 0-9 and '-', not starting or ending with '-'"
            )))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = ClusterError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dns_labels() {
        for ok in ["n1", "node-a", "a", &"x".repeat(63)] {
            assert!(NodeId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "N1", "-a", "a-", "a.b", "a b", &"x".repeat(64), "ü"] {
            assert!(NodeId::new(bad).is_err(), "{bad}");
        }
    }
}
