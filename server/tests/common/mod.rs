//! The shared test kit (`chorus-testkit`) under the names these tests use.

#![allow(unused_imports, unreachable_pub)]

pub use chorus_testkit::node::Node;
pub use chorus_testkit::raw::{Client, Ws, appended, error_code, http_get, text};
pub use chorus_testkit::token::{SECRET, token, token_ttl};

/// Real `chorusd` processes.
pub mod process {
    pub use chorus_testkit::process::*;
    pub use chorus_testkit::wait::{wait_for_listener, wait_until};
}
