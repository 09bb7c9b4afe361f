//! The node's periodic work, each a task that runs until the node stops: retention passes and
//! budget sweeps ([`retention`]), the status sampler ([`status`]), the presence pump
//! ([`presence`]).

pub mod presence;
pub mod retention;
pub mod status;
