//! `[cluster]`: the node as a member of a cluster — its cluster endpoint and membership
//! (`chorus-cluster`). Without the section the node is a single node, exactly as before: no
//! endpoint, no directory, no change to any path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chorus_cluster::tls::files;
use chorus_cluster::{
    CertPaths, ClusterConfig, ClusterError, MembershipTiming, NodeId, PeerLimits,
};

/// A `[cluster]` value that is out of range (the config layer reports it as a `ConfigError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// The setting's name.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Where the cluster endpoint listens (UDP; its own port).
    pub listen: SocketAddr,
    /// The address other nodes dial (default: `listen`, which must then not be 0.0.0.0).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Cluster addresses of other nodes to join through (this node's own address is skipped).
    #[serde(default)]
    pub seeds: Vec<SocketAddr>,
    /// Where `ca.pem`, `node.pem`, `node-key.pem` and `cluster-id` are (default
    /// `<data_dir>/cluster`).
    #[serde(default)]
    pub cert_dir: Option<PathBuf>,
    /// SWIM: one member probed this often, ms.
    #[serde(default = "defaults::probe_period_ms")]
    pub probe_period_ms: u64,
    /// SWIM: a suspect member that does not refute it in this time is down, ms.
    #[serde(default = "defaults::suspect_to_down_ms")]
    pub suspect_to_down_ms: u64,
    /// A request to another node fails after this long, ms.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// The largest frame a peer may send, bytes.
    #[serde(default = "defaults::max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// Requests one peer may have open on this node at once.
    #[serde(default = "defaults::max_streams_per_peer")]
    pub max_streams_per_peer: u32,
}

mod defaults {
    pub(super) fn probe_period_ms() -> u64 {
        400
    }
    pub(super) fn suspect_to_down_ms() -> u64 {
        1_200
    }
    pub(super) fn request_timeout_ms() -> u64 {
        5_000
    }
    pub(super) fn max_frame_bytes() -> u32 {
        1 << 20
    }
    pub(super) fn max_streams_per_peer() -> u32 {
        256
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        key,
        message: message.into(),
    }
}

impl ClusterSettings {
    /// Checks what types alone cannot.
    pub fn validate(&self, node_id: &str) -> Result<(), InvalidSetting> {
        NodeId::new(node_id).map_err(|e| invalid("node_id", e.to_string()))?;
        let advertise = self.advertise.unwrap_or(self.listen);
        if advertise.ip().is_unspecified() {
            return Err(invalid(
                "cluster.advertise",
                "set it to an address other nodes can dial when cluster.listen is 0.0.0.0",
            ));
        }
        if !(100..=60_000).contains(&self.probe_period_ms) {
            return Err(invalid("cluster.probe_period_ms", "from 100 to 60000"));
        }
        if self.suspect_to_down_ms < self.probe_period_ms {
            return Err(invalid(
                "cluster.suspect_to_down_ms",
                "at least cluster.probe_period_ms",
            ));
        }
        if self.request_timeout_ms == 0 || self.max_streams_per_peer == 0 {
            return Err(invalid(
                "cluster.request_timeout_ms",
                "request_timeout_ms and max_streams_per_peer must be greater than 0",
            ));
        }
        if !(4096..=(64 << 20)).contains(&self.max_frame_bytes) {
            return Err(invalid("cluster.max_frame_bytes", "from 4096 to 67108864"));
        }
        Ok(())
    }

    /// The certificate directory.
    pub fn cert_dir(&self, data_dir: &Path) -> PathBuf {
        self.cert_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("cluster"))
    }

    /// The cluster layer's configuration for this node; reads the cluster id beside the CA.
    pub fn to_cluster_config(
        &self,
        node_id: &str,
        data_dir: &Path,
        client_addr: SocketAddr,
    ) -> Result<ClusterConfig, ClusterError> {
        let dir = self.cert_dir(data_dir);
        let id_path = dir.join(files::CLUSTER_ID);
        let cluster_id = std::fs::read_to_string(&id_path)
            .map_err(|source| ClusterError::Io {
                path: id_path,
                source,
            })?
            .trim()
            .to_owned();
        let timing = MembershipTiming {
            probe_period: Duration::from_millis(self.probe_period_ms),
            probe_rtt: Duration::from_millis((self.probe_period_ms * 3 / 8).max(50)),
            suspect_to_down_after: Duration::from_millis(self.suspect_to_down_ms),
            ..MembershipTiming::default()
        };
        let limits = PeerLimits {
            max_frame_bytes: self.max_frame_bytes as usize,
            max_streams: self.max_streams_per_peer,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            ..PeerLimits::default()
        };
        Ok(ClusterConfig {
            node_id: NodeId::new(node_id)?,
            cluster_id,
            listen: self.listen,
            advertise: self.advertise.unwrap_or(self.listen),
            client_addr: client_addr.to_string(),
            seeds: self.seeds.clone(),
            certs: CertPaths::in_dir(&dir),
            limits,
            timing,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }
}

/// Exports the cluster's metrics that are read at scrape time.
pub fn export_metrics(cluster: Option<&chorus_cluster::Cluster>) {
    if let Some(c) = cluster {
        for link in c.endpoint().links() {
            metrics::gauge!("chorus_cluster_peer_rtt_seconds", "peer" => link.node.to_string())
                .set(link.rtt.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ClusterSettings {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_section_takes_defaults_and_refuses_what_cannot_work() {
        let s = parse("listen = \"10.0.0.1:7400\"\nseeds = [\"10.0.0.2:7400\"]");
        assert_eq!(s.probe_period_ms, 400);
        assert_eq!(
            s.cert_dir(Path::new("/data")),
            PathBuf::from("/data/cluster")
        );
        assert_eq!(s.validate("n1"), Ok(()));
        assert_eq!(s.validate("Node 1").map_err(|e| e.key), Err("node_id"));

        let open = parse("listen = \"0.0.0.0:7400\"");
        assert_eq!(
            open.validate("n1").map_err(|e| e.key),
            Err("cluster.advertise")
        );
        let advertised = parse("listen = \"0.0.0.0:7400\"\nadvertise = \"10.0.0.1:7400\"");
        assert_eq!(advertised.validate("n1"), Ok(()));

        let fast =
            parse("listen = \"10.0.0.1:7400\"\nprobe_period_ms = 500\nsuspect_to_down_ms = 100");
        assert_eq!(
            fast.validate("n1").map_err(|e| e.key),
            Err("cluster.suspect_to_down_ms")
        );
        assert!(
            toml::from_str::<ClusterSettings>("listen = \"10.0.0.1:7400\"\nbogus = 1").is_err()
        );
    }

    #[test]
    fn the_cluster_id_comes_from_beside_the_ca() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = parse("listen = \"127.0.0.1:7400\"");
        assert!(
            s.to_cluster_config(
                "n1",
                dir.path(),
                "127.0.0.1:9000".parse().unwrap_or_else(|e| panic!("{e}"))
            )
            .is_err()
        );
        std::fs::create_dir_all(dir.path().join("cluster")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("cluster/cluster-id"), "prod\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let c = s
            .to_cluster_config(
                "n1",
                dir.path(),
                "127.0.0.1:9000".parse().unwrap_or_else(|e| panic!("{e}")),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.cluster_id, "prod");
        assert_eq!(c.client_addr, "127.0.0.1:9000");
        assert_eq!(c.certs.node_key, dir.path().join("cluster/node-key.pem"));
    }
}
