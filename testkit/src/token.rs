//! Tokens for tests: one secret for every node the kit starts.

use chorus_server::auth;

/// The HS256 secret of every node the kit starts.
pub const SECRET: &[u8] = b"integration-test-secret-0123456789abcdef";

/// A token for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    token_ttl(user, 3600)
}

/// A token for `user`, valid for `ttl_secs`.
pub fn token_ttl(user: &str, ttl_secs: u64) -> String {
    auth::mint_hs256(
        SECRET,
        user,
        chorus_server::clock::unix_ms() / 1000,
        ttl_secs,
    )
    .unwrap()
}
