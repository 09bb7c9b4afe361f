//! Newtype ids, so that a channel id cannot be passed where a user id is expected, and so that
//! validation happens once, at the edge, when a peer's string becomes an id.

use std::fmt;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which id: "channel id", "user id".
        kind: &'static str,
    },
    /// The id is longer than allowed.
    #[error("{kind} is {len} bytes long, over the limit of {max}")]
    TooLong {
        /// Which id.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id holds a character that is not allowed.
    #[error("{kind} contains the forbidden character {ch:?}")]
    ForbiddenChar {
        /// Which id.
        kind: &'static str,
        /// The first offending character.
        ch: char,
    },
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The longest valid id, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `id` and wraps it.
            pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
                let id = id.into();
                if id.is_empty() {
                    return Err(IdError::Empty { kind: $kind });
                }
                if id.len() > Self::MAX_LEN {
                    return Err(IdError::TooLong { kind: $kind, len: id.len(), max: Self::MAX_LEN });
                }
                let allowed: fn(char) -> bool = $allowed;
                if let Some(ch) = id.chars().find(|&c| !allowed(c)) {
                    return Err(IdError::ForbiddenChar { kind: $kind, ch });
                }
                Ok(Self(id))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string, for building protobuf messages.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Hash and Eq are the inner string's, so maps keyed by the id answer lookups by `&str`
        // without building an id.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(id: String) -> Result<Self, IdError> {
                Self::new(id)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(id: &str) -> Result<Self, IdError> {
                Self::new(id)
            }
        }
    };
}

string_id!(
    /// A channel id: 1 to 64 bytes of `[A-Za-z0-9._:-]`, so that it is safe in URLs, logs,
    /// metrics labels and storage keys without escaping.
    ChannelId,
    "channel id",
    64,
    |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
);

string_id!(
    /// A user id: the `sub` claim of the user's token; 1 to 128 bytes of printable characters
    /// without whitespace (emails, UUIDs and provider-prefixed ids all fit).
    UserId,
    "user id",
    128,
    |c| !c.is_whitespace() && !c.is_control()
);

macro_rules! number_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value, as it travels in protobuf fields.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }
    };
}

number_id!(
    /// A position in one channel's log. The first entry has seq 1; 0 means "before the first
    /// entry" (an empty log, or a cursor that has seen nothing).
    Seq
);

number_id!(
    /// The generation of a channel's log history. It changes whenever history is cut, so that a
    /// cursor from an older history is never mistaken for a position in the new one.
    Epoch
);

number_id!(
    /// A client-chosen request id, echoed in the reply. Never 0.
    RequestId
);

impl Seq {
    /// The seq after this one.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_are_url_and_key_safe() {
        assert!(ChannelId::new("general").is_ok());
        assert!(ChannelId::new("team:eng.backend-2_x").is_ok());
        assert_eq!(
            ChannelId::new("a b"),
            Err(IdError::ForbiddenChar {
                kind: "channel id",
                ch: ' '
            })
        );
        assert_eq!(
            ChannelId::new(""),
            Err(IdError::Empty { kind: "channel id" })
        );
        assert!(ChannelId::new("x".repeat(64)).is_ok());
        assert!(matches!(
            ChannelId::new("x".repeat(65)),
            Err(IdError::TooLong { len: 65, .. })
        ));
        assert!(ChannelId::new("é").is_err());
    }

    #[test]
    fn user_ids_take_emails_and_unicode_but_no_whitespace() {
        assert!(UserId::new("alice@example.com").is_ok());
        assert!(UserId::new("auth0|5f7c8ec7").is_ok());
        assert!(UserId::new("zoë").is_ok());
        assert!(UserId::new("al ice").is_err());
        assert!(UserId::new("al\u{0}ice").is_err());
    }

    #[test]
    fn seq_orders_and_advances() {
        assert!(Seq(1) < Seq(2));
        assert_eq!(Seq(41).next(), Seq(42));
        assert_eq!(Seq::default(), Seq(0));
    }
}
