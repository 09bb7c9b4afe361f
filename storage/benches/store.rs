//! Criterion benchmarks of the store: durable appends with 1, 16 and 256 concurrent appenders
//! on each engine, and latest-50 history reads from the tail cache and from disk.
//!
//! `cargo bench -p chorus-storage --bench store`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

// The allocator chorusd uses; the system allocator costs about a third of the append rate here.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use chorus_protocol::ids::Seq;
use chorus_storage::{Anchor, EngineKind, LogQuery};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn durable_appends(c: &mut Criterion) {
    let rt = common::runtime();
    let mut group = c.benchmark_group("durable_append");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    group.sample_size(10);
    for engine in [EngineKind::Fjall, EngineKind::Sled] {
        let dir = tempfile::tempdir().unwrap();
        let store = common::open(engine, dir.path());
        rt.block_on(common::create_channels(&store));
        let mut offset = 0u64;
        for appenders in [1usize, 16, 256] {
            group.bench_with_input(
                BenchmarkId::new(engine.as_str(), appenders),
                &appenders,
                |b, &appenders| {
                    b.iter_custom(|iters| {
                        let start = Instant::now();
                        rt.block_on(common::append_concurrently(
                            &store, appenders, iters, offset,
                        ));
                        offset += iters.div_ceil(appenders as u64) * appenders as u64;
                        start.elapsed()
                    })
                },
            );
        }
        store.close();
    }
    group.finish();
}

fn history_reads(c: &mut Criterion) {
    let rt = common::runtime();
    let mut group = c.benchmark_group("latest_50");
    group.throughput(Throughput::Elements(1));
    for engine in [EngineKind::Fjall, EngineKind::Sled] {
        // 100 entries per channel; the tail cache holds all of them in the first store and
        // none in the second (one entry per channel), whose reads go to the engine.
        for (label, tail) in [("tail_cache", 256), ("disk", 1)] {
            let dir = tempfile::tempdir().unwrap();
            let store = common::open_with(engine, dir.path(), |c| c.tail_cache_entries = tail);
            rt.block_on(common::create_channels(&store));
            rt.block_on(common::append_concurrently(&store, 64, 100_000, 0));
            let query = LogQuery {
                anchor: Anchor::Before(Seq(100)),
                limit: 50,
                thread: None,
            };
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(engine.as_str(), label), |b| {
                b.iter(|| {
                    i += 1;
                    let page = store
                        .read(&common::channel(i % common::CHANNELS), &query)
                        .unwrap();
                    assert_eq!(page.entries.len(), 50);
                })
            });
            store.close();
        }
    }
    group.finish();
}

criterion_group!(benches, durable_appends, history_reads);
criterion_main!(benches);
