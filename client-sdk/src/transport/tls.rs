//! Which certificates a client trusts, and the rustls client configurations for the three trust
//! modes. Only the ring provider is used, and it is passed explicitly, so the SDK works whatever
//! process-wide provider the app installed.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::Error;

/// Which server certificates the client trusts.
#[derive(Debug, Clone, Default)]
pub enum TlsTrust {
    /// The Mozilla root store compiled into the SDK (webpki roots): for public deployments.
    #[default]
    WebPkiRoots,
    /// The CA certificates in a PEM file (a private CA); names are checked as usual.
    CaFile(PathBuf),
    /// Exactly this certificate (PEM file), whatever its issuer and name: for a development
    /// node's self-signed certificate (`chorusd --dev` writes it to `chorus-data/dev-cert.pem`).
    PinnedCertFile(PathBuf),
}

/// A client TLS configuration; `alpn` is set for QUIC, which also requires TLS 1.3.
pub(crate) fn client_config(
    trust: &TlsTrust,
    alpn: Option<&[u8]>,
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if alpn.is_some() {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = match trust {
        TlsTrust::WebPkiRoots => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::PinnedCertFile(path) => {
            let cert = read_certs(path)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Tls(format!("{}: no certificate", path.display())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { cert, algorithms }))
                .with_no_client_auth()
        }
    };
    if let Some(alpn) = alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Ok(config)
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

/// The TLS server name for `host`: an IP address or a DNS name.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| Error::Tls(format!("server name {host:?}: {e}")))
}

/// Trusts exactly one certificate. The handshake signature is still verified, so a peer must
/// hold the pinned certificate's private key; issuer, name and validity dates are not checked,
/// which is what pinning a self-signed development certificate means.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
