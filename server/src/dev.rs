//! `chorusd --dev`: everything a newcomer needs, created on first start under the data
//! directory: a self-signed certificate for localhost and a token secret.

use std::path::{Path, PathBuf};

/// Files of a dev setup.
#[derive(Debug, Clone)]
pub struct DevFiles {
    /// Self-signed certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The HS256 secret (hex).
    pub secret: PathBuf,
}

/// Why the dev files could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// File system.
    #[error("dev files: {0}")]
    Io(#[from] std::io::Error),
    /// Certificate generation.
    #[error("dev certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// Creates (once) and returns the dev files in `dir`.
pub fn ensure(dir: &Path) -> Result<DevFiles, DevError> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let files = DevFiles {
        cert: dir.join("dev-cert.pem"),
        key: dir.join("dev-key.pem"),
        secret: dir.join("dev-token-secret"),
    };
    if !files.cert.exists() || !files.key.exists() {
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let certified = rcgen::generate_simple_self_signed(names)?;
        write_private(&files.key, certified.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&files.cert, certified.cert.pem())?;
    }
    if !files.secret.exists() {
        let secret: [u8; 32] = rand::random();
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&files.secret, hex.as_bytes())?;
    }
    Ok(files)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Reads a secret file: the bytes of its trimmed content.
pub fn read_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    Ok(std::fs::read_to_string(path)?.trim().as_bytes().to_vec())
}
