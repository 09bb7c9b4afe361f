//! `chorus-testkit`: what the workspace's tests share (`publish = false`).
//!
//! - [`layout`]: the source-layout rules CI holds the crates to: no import circle between
//!   modules, no source file over the size limit without a reason at its top.

pub mod layout;
