//! `chorus-testkit`: what the workspace's tests share (`publish = false`).
//!
//! - [`node`]: a node in-process on 127.0.0.1:0, restartable on its data directory.
//! - [`process`]: a real `chorusd` process with its config file, killed when dropped;
//!   `chorusctl` against it.
//! - [`raw`]: a raw chorus.v1 client over a real WebSocket.
//! - [`token`]: the kit's token secret and tokens.
//! - [`wait`]: waiting for a condition instead of sleeping.
//! - [`layout`]: the source-layout rules CI holds the crates to: no import circle between
//!   modules, no source file over the size limit without a reason at its top.
//!
//! Test code: panics are how it fails, so `unwrap` is allowed throughout.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod layout;
pub mod node;
pub mod process;
pub mod raw;
pub mod token;
pub mod wait;
