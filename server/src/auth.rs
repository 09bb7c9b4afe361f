//! Token verification: JWTs whose `sub` is the user id, signed with the node's configured key.
//! The `alg` of a token must match the key type (no algorithm confusion), `exp` is required,
//! `nbf`, `aud` and `iss` are checked when present or configured, with a small leeway for clock
//! skew.

use chorus_protocol::ids::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::config::TokenKey;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token is not valid yet (`nbf`).
    #[error("token not valid yet")]
    NotYetValid,
    /// The signature, algorithm, audience or issuer is wrong, or the token is malformed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The key could not be loaded.
    #[error("invalid key: {0}")]
    Key(String),
}

/// The claims a node reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// Not before, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, unix seconds (revocation compares it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience: RFC 7519 allows one string or an array of strings. Only its shape is read
    /// here; `jsonwebtoken` checks its value against the configured audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A token's `aud` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "chat"`.
    One(String),
    /// `"aud": ["chat", "web"]`.
    Many(Vec<String>),
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Who.
    pub user: UserId,
    /// Until when the token is valid, unix ms.
    pub expires_at_ms: u64,
    /// When it was issued, unix ms (0 if the token did not say).
    pub issued_at_ms: u64,
}

/// Verifies tokens with one key.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `key`, requiring `audience` and `issuer` when given.
    pub fn new(
        key: &TokenKey,
        audience: Option<&str>,
        issuer: Option<&str>,
    ) -> Result<Self, TokenError> {
        let (alg, key) = match key {
            TokenKey::Hs256(secret) => (Algorithm::HS256, DecodingKey::from_secret(secret)),
            TokenKey::Ed25519Pem(pem) => (
                Algorithm::EdDSA,
                DecodingKey::from_ed_pem(pem).map_err(|e| TokenError::Key(e.to_string()))?,
            ),
            TokenKey::Rs256Pem(pem) => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(pem).map_err(|e| TokenError::Key(e.to_string()))?,
            ),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        // A configured audience or issuer must be present in the token, not just match if there.
        let mut required = vec!["exp", "sub"];
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self { key, validation })
    }

    /// Verifies `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                other => TokenError::Invalid(format!("{other:?}")),
            },
        )?;
        let user =
            UserId::new(data.claims.sub).map_err(|e| TokenError::Invalid(format!("sub: {e}")))?;
        Ok(Identity {
            user,
            expires_at_ms: data.claims.exp.saturating_mul(1000),
            issued_at_ms: data.claims.iat.unwrap_or(0).saturating_mul(1000),
        })
    }
}

/// Mints an HS256 token for `user`, valid for `ttl_secs` from `now_secs`.
pub fn mint_hs256(
    secret: &[u8],
    user: &str,
    now_secs: u64,
    ttl_secs: u64,
) -> Result<String, TokenError> {
    let claims = Claims {
        sub: user.to_owned(),
        exp: now_secs + ttl_secs,
        nbf: None,
        iat: Some(now_secs),
        aud: None,
        iss: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| TokenError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        crate::clock::unix_ms() / 1000
    }

    #[test]
    fn a_minted_token_verifies() {
        let v = Verifier::new(&TokenKey::Hs256(SECRET.to_vec()), None, None).unwrap();
        let token = mint_hs256(SECRET, "alice", now(), 3600).unwrap();
        let id = v.verify(&token).unwrap();
        assert_eq!(id.user.as_str(), "alice");
        assert!(id.expires_at_ms > crate::clock::unix_ms());
    }

    #[test]
    fn bad_signatures_expiry_and_alg_are_refused() {
        let v = Verifier::new(&TokenKey::Hs256(SECRET.to_vec()), None, None).unwrap();
        let other = mint_hs256(b"another-secret-another-secret-xx", "alice", now(), 3600).unwrap();
        assert!(matches!(v.verify(&other), Err(TokenError::Invalid(_))));
        let expired = mint_hs256(SECRET, "alice", now() - 7200, 3600).unwrap();
        assert_eq!(v.verify(&expired), Err(TokenError::Expired));
        // Within the leeway an expired token still passes.
        let just = mint_hs256(SECRET, "alice", now() - 3610, 3600).unwrap();
        assert!(v.verify(&just).is_ok());
        // `alg: none` and other algorithms are refused: the alg must match the key type.
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(matches!(v.verify(none), Err(TokenError::Invalid(_))));
        assert!(matches!(v.verify("garbage"), Err(TokenError::Invalid(_))));
        let bad_sub = mint_hs256(SECRET, "has space", now(), 3600).unwrap();
        assert!(matches!(v.verify(&bad_sub), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn audience_and_issuer_are_enforced_when_configured() {
        let v =
            Verifier::new(&TokenKey::Hs256(SECRET.to_vec()), Some("chat"), Some("idp")).unwrap();
        let plain = mint_hs256(SECRET, "alice", now(), 3600).unwrap();
        assert!(matches!(v.verify(&plain), Err(TokenError::Invalid(_))));
        let claims = Claims {
            sub: "alice".into(),
            exp: now() + 60,
            nbf: None,
            iat: None,
            aud: Some(Audience::One("chat".into())),
            iss: Some("idp".into()),
        };
        let good = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(v.verify(&good).is_ok());
    }

    fn token_with_aud(aud: serde_json::Value) -> String {
        let claims = serde_json::json!({"sub": "alice", "exp": now() + 60, "aud": aud});
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    /// RFC 7519 4.1.3: `aud` is a string or an array of strings; an array was refused as
    /// malformed (`Json(invalid type: sequence, expected a string)`).
    #[test]
    fn an_audience_array_is_accepted_when_it_holds_the_audience() {
        let strict = Verifier::new(&TokenKey::Hs256(SECRET.to_vec()), Some("chat"), None).unwrap();
        let open = Verifier::new(&TokenKey::Hs256(SECRET.to_vec()), None, None).unwrap();
        let array = token_with_aud(serde_json::json!(["web", "chat"]));
        assert_eq!(strict.verify(&array).unwrap().user.as_str(), "alice");
        assert!(open.verify(&array).is_ok());
        let other = token_with_aud(serde_json::json!(["web", "mail"]));
        assert!(matches!(strict.verify(&other), Err(TokenError::Invalid(_))));
        assert!(open.verify(&other).is_ok());
        let single = token_with_aud(serde_json::json!("chat"));
        assert!(strict.verify(&single).is_ok());
        let wrong_shape = token_with_aud(serde_json::json!(7));
        assert!(matches!(
            strict.verify(&wrong_shape),
            Err(TokenError::Invalid(_))
        ));
    }
}
