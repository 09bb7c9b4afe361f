//! Access tokens for synthetic users, signed with the node's HS256 secret.

use anyhow::Context;
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// Signs tokens for any user name.
#[derive(Clone)]
pub struct Minter {
    key: jsonwebtoken::EncodingKey,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Minter")
    }
}

impl Minter {
    /// A minter for this secret.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: jsonwebtoken::EncodingKey::from_secret(secret),
        }
    }

    /// A minter for the secret in a file (surrounding whitespace ignored, as the node does).
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        Ok(Self::new(text.trim().as_bytes()))
    }

    /// A token for `user`, valid for a day.
    pub fn token(&self, user: &str) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let claims = Claims {
            sub: user,
            iat: now.saturating_sub(5),
            exp: now + 86_400,
        };
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.key,
        )?)
    }
}
