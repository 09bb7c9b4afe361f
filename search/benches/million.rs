//! The search index at a million messages: how fast it indexes a store's log, how many bytes
//! a message costs on disk, and query latency (p50, p99) for common queries over 1,000
//! channels. Prints Markdown tables for docs/benchmarks.md.
//!
//! `cargo bench -p chorus-search --bench million -- [messages] [channels]` (defaults 1,000,000
//! and 1,000). Messages are chat-like: 3 to 25 words drawn from a Zipf-distributed vocabulary
//! of 20,000 words, 500 authors, a mention in one message of 20, a link in one of 30.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_protocol::ids::{ChannelId, UserId};
use chorus_protocol::search::parse;
use chorus_protocol::v1::{ChannelKind, Message, channel_event::Body};
use chorus_search::{Analyzer, FeedConfig, Order, Scope, SearchConfig, SearchIndex, SearchRequest};
use chorus_storage::{Durability, NewChannel, NewEntry, RetentionPolicy, Store, StoreConfig};

const VOCABULARY: usize = 20_000;
const AUTHORS: u64 = 500;

/// xorshift64*: deterministic, so that every run indexes the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A Zipf(1)-distributed rank in `0..n`, by inverting the harmonic CDF approximately.
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let h = (n as f64).ln() + 0.577;
        ((u * h).exp() - 1.0).clamp(0.0, (n - 1) as f64) as usize
    }
}

/// A pronounceable word for each rank (rank 0..20 are common English words).
fn word(rank: usize) -> String {
    const COMMON: [&str; 20] = [
        "the", "to", "and", "is", "it", "we", "deploy", "meeting", "today", "release", "bug",
        "please", "review", "tomorrow", "thanks", "build", "team", "update", "customer", "fix",
    ];
    if rank < COMMON.len() {
        return COMMON[rank].to_owned();
    }
    const SYL: [&str; 16] = [
        "ka", "ro", "mi", "tes", "lu", "van", "dor", "pe", "zi", "bal", "no", "ser", "qui", "fa",
        "gen", "tor",
    ];
    let mut r = rank;
    let mut w = String::new();
    while r > 0 || w.is_empty() {
        w.push_str(SYL[r % 16]);
        r /= 16;
    }
    w
}

fn text(rng: &mut Rng) -> Message {
    let n = 3 + rng.below(23) as usize;
    let mut words: Vec<String> = (0..n).map(|_| word(rng.zipf(VOCABULARY))).collect();
    let mut mentions = Vec::new();
    if rng.below(20) == 0 {
        let user = format!("u{}", rng.below(AUTHORS));
        words.push(format!("@{user}"));
        mentions.push(user);
    }
    if rng.below(30) == 0 {
        words.push(format!("https://example.com/{}", rng.below(1_000_000)));
    }
    Message {
        text: words.join(" "),
        mentions,
        ..Message::default()
    }
}

async fn seed(store: &Store, messages: u64, channels: u64) {
    for c in 0..channels {
        store
            .create_channel(NewChannel {
                id: ChannelId::new(format!("c{c}")).unwrap(),
                kind: ChannelKind::Group,
                name: format!("c{c}"),
                topic: String::new(),
                created_by: UserId::new("u0").unwrap(),
                created_at_ms: 1,
                members: Vec::new(),
                custom: Bytes::new(),
                retention: RetentionPolicy::default(),
            })
            .await
            .unwrap();
    }
    // 64 appenders, each its own slice of the messages: group commit batches them.
    let per = messages.div_ceil(64);
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
            let start = t * per;
            for i in start..(start + per).min(messages) {
                let channel = ChannelId::new(format!("c{}", rng.below(channels))).unwrap();
                store
                    .append(
                        &channel,
                        NewEntry {
                            author: Some(UserId::new(format!("u{}", rng.below(AUTHORS))).unwrap()),
                            time_ms: 1_700_000_000_000 + i * 100,
                            body: Body::Message(text(&mut rng)),
                            client_msg_id: None,
                            withheld: false,
                        },
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let messages = args.first().copied().unwrap_or(1_000_000);
    let channels = args.get(1).copied().unwrap_or(1_000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path().join("store"));
    // Seeding speed only: the index reads the same log either way.
    config.durability = Durability::RelaxedPeriodicSync {
        interval: Duration::from_millis(200),
    };
    let store = Store::open(config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    rt.block_on(seed(&store, messages, channels));
    let seeded = t.elapsed();
    let store_bytes = store.disk_bytes().unwrap_or(0);
    println!(
        "seeded {messages} messages in {channels} channels in {:.1} s (store {:.0} MB)",
        seeded.as_secs_f64(),
        store_bytes as f64 / 1e6
    );

    // Indexing: the catch-up scan of a fresh index over the whole log.
    let search_dir = dir.path().join("search");
    let t = Instant::now();
    let index = Arc::new(
        SearchIndex::open(
            SearchConfig {
                dir: search_dir,
                analyzer: Analyzer::Simple,
                feed: FeedConfig {
                    commit_interval: Duration::from_secs(1),
                    commit_docs: 50_000,
                    writer_memory_bytes: 64 * 1024 * 1024,
                },
            },
            store.clone(),
        )
        .unwrap(),
    );
    rt.block_on(index.sync()).unwrap();
    let indexing = t.elapsed();
    let status = index.status();
    assert_eq!(status.docs, messages, "every message indexed once");
    println!();
    println!("| messages | channels | indexing time | messages/s | index bytes | bytes/message |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {messages} | {channels} | {:.1} s | {:.0} | {:.0} MB | {:.0} |",
        indexing.as_secs_f64(),
        messages as f64 / indexing.as_secs_f64(),
        status.disk_bytes as f64 / 1e6,
        status.disk_bytes as f64 / messages as f64,
    );

    // Queries: a user of 100 channels, and one of every channel.
    let all: Vec<ChannelId> = (0..channels)
        .map(|c| ChannelId::new(format!("c{c}")).unwrap())
        .collect();
    let some: Vec<ChannelId> = all
        .iter()
        .step_by((channels / 100).max(1) as usize)
        .cloned()
        .collect();
    let queries = [
        ("common word", "deploy"),
        ("two words", "release review"),
        ("rare word", &*word(15_000)),
        ("phrase", "\"please review\""),
        ("prefix", "rev*"),
        ("word from:user", "meeting from:u7"),
        ("mentions:user", "mentions:u42"),
        ("has:link date range", "has:link after:2023-11-14"),
    ];
    let runs = 200;
    println!();
    println!("| query | scope | order | hits/page | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    for (label, text) in queries {
        let q = parse(text).unwrap();
        for (scope_label, channels) in [("100 channels", &some), ("1,000 channels", &all)] {
            for order in [Order::Relevance, Order::Newest] {
                let scope = Scope {
                    reader: UserId::new("u1").unwrap(),
                    channel: None,
                    channels: channels.clone(),
                    include_public: false,
                };
                let mut times = Vec::with_capacity(runs);
                let mut hits = 0;
                for _ in 0..runs {
                    let t = Instant::now();
                    let page = index
                        .search(&SearchRequest {
                            query: &q,
                            scope: &scope,
                            order,
                            cursor: None,
                            limit: 20,
                            deadline: Instant::now() + Duration::from_secs(10),
                            snippet_chars: 160,
                        })
                        .unwrap();
                    times.push(t.elapsed());
                    hits = page.hits.len();
                }
                times.sort_unstable();
                println!(
                    "| {label} `{text}` | {scope_label} | {order:?} | {hits} | {:.2} ms | {:.2} ms |",
                    percentile(&times, 0.5).as_secs_f64() * 1e3,
                    percentile(&times, 0.99).as_secs_f64() * 1e3,
                );
            }
        }
    }
    index.close();
    store.close();
}
