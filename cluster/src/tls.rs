//! The cluster's certificates: a CA made by `chorusctl cluster init`, one certificate per node
//! signed by it, and the mutual-TLS configurations of the cluster endpoint. A peer is trusted
//! because the cluster CA signed its certificate, and is the node its certificate names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chorus_protocol::peer::ALPN;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::ClusterError;
use crate::id::NodeId;

/// The name every node's certificate carries, and the one a dialling node checks: it does not
/// know which node answers at a seed address until the handshake says so.
pub const SERVER_NAME: &str = "chorus-cluster";

/// The name in a node's certificate that says which node it is.
pub fn node_name(node: &NodeId) -> String {
    format!("{node}.node.chorus-cluster")
}

/// File names inside a CA directory and a node's certificate directory.
pub mod files {
    /// The CA certificate (copied to every node).
    pub const CA_CERT: &str = "ca.pem";
    /// The CA key (kept by the operator, never copied to nodes).
    pub const CA_KEY: &str = "ca-key.pem";
    /// The cluster id, beside the CA.
    pub const CLUSTER_ID: &str = "cluster-id";
    /// A node's certificate.
    pub const NODE_CERT: &str = "node.pem";
    /// A node's key.
    pub const NODE_KEY: &str = "node-key.pem";
}

/// A cluster CA: its certificate and key.
pub struct ClusterCa {
    cluster_id: String,
    key: KeyPair,
    cert_pem: String,
}

/// A node's certificate and key, as PEM.
pub struct NodeCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

fn tls_error(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(e.to_string())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The CA's parameters, a function of the cluster id alone: issuing a node certificate later
/// rebuilds the issuer from them and the saved key, without parsing the CA certificate.
fn ca_params(cluster_id: &str) -> Result<CertificateParams, ClusterError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        format!("Chorus cluster CA {cluster_id}"),
    );
    name.push(DnType::OrganizationName, "Chorus");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl ClusterCa {
    /// Makes a new CA for a cluster.
    pub fn generate(cluster_id: &str) -> Result<Self, ClusterError> {
        if cluster_id.is_empty() || cluster_id.len() > 64 {
            return Err(ClusterError::Config(
                "the cluster id is 1 to 64 bytes".into(),
            ));
        }
        let key = KeyPair::generate().map_err(tls_error)?;
        let cert = ca_params(cluster_id)?
            .self_signed(&key)
            .map_err(tls_error)?;
        Ok(Self {
            cluster_id: cluster_id.to_owned(),
            key,
            cert_pem: cert.pem(),
        })
    }

    /// Reads a CA saved by [`ClusterCa::save`].
    pub fn load(dir: &Path) -> Result<Self, ClusterError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(io_error(&path))
        };
        let cluster_id = read(files::CLUSTER_ID)?.trim().to_owned();
        let key = KeyPair::from_pem(&read(files::CA_KEY)?).map_err(tls_error)?;
        Ok(Self {
            cluster_id,
            key,
            cert_pem: read(files::CA_CERT)?,
        })
    }

    /// Writes the CA certificate, its key (mode 0600) and the cluster id into `dir`; refuses to
    /// overwrite an existing CA.
    pub fn save(&self, dir: &Path) -> Result<(), ClusterError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let key_path = dir.join(files::CA_KEY);
        if key_path.exists() {
            return Err(ClusterError::Config(format!(
                "{} exists: a cluster CA is already there",
                key_path.display()
            )));
        }
        write_private(&key_path, &self.key.serialize_pem())?;
        let cert_path = dir.join(files::CA_CERT);
        std::fs::write(&cert_path, &self.cert_pem).map_err(io_error(&cert_path))?;
        let id_path = dir.join(files::CLUSTER_ID);
        std::fs::write(&id_path, format!("{}\n", self.cluster_id)).map_err(io_error(&id_path))
    }

    /// The cluster id the CA was made for.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for one node: usable as server and as client, naming
    /// [`SERVER_NAME`] and the node's own name.
    pub fn issue(&self, node: &NodeId) -> Result<NodeCert, ClusterError> {
        let issuer = Issuer::new(ca_params(&self.cluster_id)?, &self.key);
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned(), node_name(node)])
            .map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, node.as_str());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(tls_error)?;
        let cert = params.signed_by(&key, &issuer).map_err(tls_error)?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `node` and makes its TLS configs in memory (nodes of one
    /// process: tests, benchmarks).
    pub fn tls_for(&self, node: &NodeId) -> Result<TlsConfigs, ClusterError> {
        let cert = self.issue(node)?;
        TlsConfigs::from_pem(
            self.cert_pem().as_bytes(),
            cert.cert_pem.as_bytes(),
            cert.key_pem.as_bytes(),
        )
    }

    /// Writes what one node needs into `dir`: the CA certificate, its certificate and key, and
    /// the cluster id.
    pub fn write_node(&self, node: &NodeId, dir: &Path) -> Result<(), ClusterError> {
        let cert = self.issue(node)?;
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        for (name, text) in [
            (files::CA_CERT, self.cert_pem.as_str()),
            (files::NODE_CERT, cert.cert_pem.as_str()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(io_error(&path))?;
        }
        let id_path = dir.join(files::CLUSTER_ID);
        std::fs::write(&id_path, format!("{}\n", self.cluster_id)).map_err(io_error(&id_path))?;
        write_private(&dir.join(files::NODE_KEY), &cert.key_pem)
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), ClusterError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    f.write_all(text.as_bytes()).map_err(io_error(path))
}

/// Where a node finds its certificates.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// The node's certificate.
    pub node_cert: PathBuf,
    /// The node's key.
    pub node_key: PathBuf,
}

impl CertPaths {
    /// The files [`ClusterCa::write_node`] writes, in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join(files::CA_CERT),
            node_cert: dir.join(files::NODE_CERT),
            node_key: dir.join(files::NODE_KEY),
        }
    }
}

/// The endpoint's TLS: as server it asks every peer for a certificate signed by the cluster CA;
/// as client it presents its own and checks the server's against the same CA.
#[derive(Clone)]
pub struct TlsConfigs {
    /// Accepting.
    pub server: Arc<rustls::ServerConfig>,
    /// Dialling.
    pub client: Arc<rustls::ClientConfig>,
}

impl TlsConfigs {
    /// Reads the PEM files and builds both configurations.
    pub fn load(paths: &CertPaths) -> Result<Self, ClusterError> {
        let read = |path: &Path| std::fs::read(path).map_err(io_error(path));
        Self::from_pem(
            &read(&paths.ca_cert)?,
            &read(&paths.node_cert)?,
            &read(&paths.node_key)?,
        )
    }

    /// Builds both configurations from PEM text.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self, ClusterError> {
        let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca)
            .collect::<Result<_, _>>()
            .map_err(tls_error)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(tls_error)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(tls_error)?;
        if ca.is_empty() || chain.is_empty() {
            return Err(ClusterError::Tls("no certificate in the PEM file".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(tls_error)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(tls_error)?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(tls_error)?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(tls_error)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// Whether the peer's certificate (already checked against the CA by TLS) names `node`.
pub(crate) fn certificate_names(conn: &quinn::Connection, node: &NodeId) -> bool {
    let Some(identity) = conn.peer_identity() else {
        return false;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return false;
    };
    let Some(leaf) = chain.first() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_name(node)) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Parses `host:port` (an address; names are not resolved: cluster addresses are IPs).
pub(crate) fn parse_addr(text: &str) -> Option<SocketAddr> {
    text.parse().ok()
}
