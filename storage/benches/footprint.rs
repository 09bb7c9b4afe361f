//! Append-to-durable latency at a fixed rate, and disk and memory footprint after 1M entries.
//! Prints one table per engine; the figures go to docs/benchmarks.md.
//!
//! `cargo bench -p chorus-storage --bench footprint` (`CHORUS_BENCH_ENTRIES` and
//! `CHORUS_BENCH_RATE` change the defaults of 1,000,000 entries and 50,000 appends/s,
//! `CHORUS_BENCH_SECONDS` the 5 s of the fixed-rate run, `CHORUS_BENCH_APPENDERS` the 256
//! appenders of the throughput run, `CHORUS_BENCH_ENGINE` picks one engine)

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

mod common;

// The allocator chorusd uses; the system allocator costs about a third of the append rate here.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_storage::EngineKind;
use hdrhistogram::Histogram;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Appends at `rate` per second for `seconds`, each append its own task, and records the time
/// from the scheduled start to the durable acknowledgement.
async fn fixed_rate_latency(
    store: &chorus_storage::Store,
    rate: u64,
    seconds: u64,
) -> Histogram<u64> {
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let total = rate * seconds;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    // Ticks of 1 ms; each tick releases rate/1000 appends.
    let per_tick = (rate / 1000).max(1);
    let mut n = 0u64;
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while n < total {
        interval.tick().await;
        let due = start + Duration::from_micros(n * 1_000_000 / rate);
        for _ in 0..per_tick {
            let store = store.clone();
            let hist = hist.clone();
            let i = n;
            tasks.push(tokio::spawn(async move {
                let ch = common::channel((i as usize * 7919) % common::CHANNELS);
                store
                    .append(&ch, common::payload_entry(10_000_000 + i))
                    .await
                    .unwrap();
                let us = due.elapsed().as_micros() as u64;
                hist.lock().unwrap().record(us.max(1)).unwrap();
            }));
            n += 1;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(hist).unwrap().into_inner().unwrap()
}

fn main() {
    let entries = env_u64("CHORUS_BENCH_ENTRIES", 1_000_000);
    let rate = env_u64("CHORUS_BENCH_RATE", 50_000);
    let only = std::env::var("CHORUS_BENCH_ENGINE").ok();
    // `cargo bench` passes --bench; nothing else to parse.
    let rt = common::runtime();
    for engine in [EngineKind::Fjall, EngineKind::Sled] {
        if only.as_deref().is_some_and(|o| o != engine.as_str()) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = common::open(engine, dir.path());
        rt.block_on(common::create_channels(&store));

        let seconds = env_u64("CHORUS_BENCH_SECONDS", 5);
        let hist = rt.block_on(fixed_rate_latency(&store, rate, seconds));
        {
            use std::sync::atomic::Ordering::Relaxed;
            let s = store.commit_stats();
            println!(
                "{:>5} longest write {:.1} ms, longest sync {:.1} ms",
                engine.as_str(),
                s.max_write_nanos.load(Relaxed) as f64 / 1e6,
                s.max_sync_nanos.load(Relaxed) as f64 / 1e6
            );
        }
        println!(
            "{:>5} latency at {rate} appends/s: p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            engine.as_str(),
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0,
            hist.value_at_quantile(0.999) as f64 / 1000.0,
            hist.max() as f64 / 1000.0,
        );

        let appenders = env_u64("CHORUS_BENCH_APPENDERS", 256) as usize;
        let before = (stats_tuple(&store), Instant::now());
        let start = Instant::now();
        rt.block_on(common::append_concurrently(&store, appenders, entries, 0));
        let elapsed = start.elapsed();
        rt.block_on(store.sync()).unwrap();
        let stats = store.commit_stats();
        let payload = entries * common::PAYLOAD as u64;
        let disk = store.disk_bytes().unwrap();
        println!(
            "{:>5} {entries} appends (256 appenders): {:.0}/s, {:.1} entries per sync; disk {:.1} MiB for {:.1} MiB payload ({:.2} bytes per payload byte); peak RSS {:.1} MiB",
            engine.as_str(),
            entries as f64 / elapsed.as_secs_f64(),
            stats.requests.load(std::sync::atomic::Ordering::Relaxed) as f64
                / stats
                    .syncs
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(1) as f64,
            disk as f64 / 1048576.0,
            payload as f64 / 1048576.0,
            disk as f64 / payload as f64,
            peak_rss_kib() as f64 / 1024.0,
        );
        let after = stats_tuple(&store);
        println!(
            "{:>5} writer: {} syncs, {:.3} ms per sync, {:.3} ms per write, busy {:.0}% of {:.2} s",
            engine.as_str(),
            after.0 - (before.0).0,
            (after.1 - (before.0).1) as f64 / 1e6 / (after.0 - (before.0).0).max(1) as f64,
            (after.2 - (before.0).2) as f64 / 1e6 / (after.0 - (before.0).0).max(1) as f64,
            (after.1 + after.2 - (before.0).1 - (before.0).2) as f64
                / 1e7
                / before.1.elapsed().as_secs_f64(),
            before.1.elapsed().as_secs_f64(),
        );
        store.close();
    }
}

fn stats_tuple(store: &chorus_storage::Store) -> (u64, u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = store.commit_stats();
    (
        s.syncs.load(Relaxed),
        s.sync_nanos.load(Relaxed),
        s.write_nanos.load(Relaxed),
    )
}
