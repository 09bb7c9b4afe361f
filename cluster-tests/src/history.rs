//! What a workload recorded: every operation a client invoked and how it ended, what every
//! subscriber received, the final log of every replica, and memory samples. Checkers read it.

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this position.
    Ok {
        /// The channel's epoch.
        epoch: u64,
        /// Its seq.
        seq: u64,
    },
    /// Refused: it did not happen.
    Fail(String),
    /// No answer: it may or may not have happened.
    Timeout,
}

/// One publish, from invoke to outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The node the client sent it to.
    pub node: usize,
    /// The channel.
    pub channel: String,
    /// Its `client_msg_id` (unique per publish; retries reuse it).
    pub key: String,
    /// When it was sent, ms since the run started.
    pub invoked_ms: u64,
    /// When the outcome arrived.
    pub completed_ms: u64,
    /// The outcome.
    pub outcome: Outcome,
}

/// One log entry, as a replica holds it or a subscriber received it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// The channel.
    pub channel: String,
    /// Its epoch.
    pub epoch: u64,
    /// Its seq.
    pub seq: u64,
    /// The `client_msg_id` it was published with.
    pub key: String,
}

/// One event a subscriber received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Which subscriber.
    pub subscriber: usize,
    /// The entry.
    pub entry: Entry,
    /// It came first after a resume that answered `recovered = false` (a gap before it is
    /// announced, not silent).
    pub after_reset: bool,
}

/// A whole run.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every operation.
    pub ops: Vec<Op>,
    /// Every delivery, in the order each subscriber received them.
    pub deliveries: Vec<Delivery>,
    /// Each replica's final log.
    pub logs: Vec<Vec<Entry>>,
    /// Resident memory samples per node: (ms since start, bytes).
    pub rss: Vec<Vec<(u64, u64)>>,
}
