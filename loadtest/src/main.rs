//! `chorus-loadtest`: load scenarios against Chorus nodes on this machine.
//!
//! ```text
//! chorus-loadtest --token-secret-file chorus-data/dev-token-secret \
//!     --pin-cert chorus-data/dev-cert.pem --server-pid $(pgrep chorusd) \
//!     --json fanout.json fanout --subscribers 1000 --window 64
//! ```
//!
//! Exit status: 0 clean; 3 entries lost, duplicated or reordered; 4 acknowledged entries not
//! delivered by the end; 5 errors (failed connects, refused publishes, actors that did not
//! drain or catch up); 1 the run could not be set up.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::Context;
use chorus_client::TlsTrust;
use chorus_loadtest::scenario::{self, Setup};
use chorus_loadtest::server_metrics::MetricsUrl;
use chorus_loadtest::token::Minter;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "chorus-loadtest",
    version,
    about = "Load scenarios for Chorus nodes (loopback only)"
)]
struct Cli {
    /// A node URL (repeat for several nodes; connections go to them in turn). Loopback only.
    #[arg(
        long = "target",
        default_value = "wss://127.0.0.1:8443/",
        global = true
    )]
    targets: Vec<String>,
    /// Transport: ws (the targets' ws:// or wss://) or quic (same host and port over QUIC).
    #[arg(long, default_value = "ws", value_parser = ["ws", "quic"], global = true)]
    transport: String,
    /// The node's HS256 token secret, to sign tokens for synthetic users.
    #[arg(long, env = "CHORUS_TOKEN_SECRET_FILE", global = true)]
    token_secret_file: Option<PathBuf>,
    /// Trust exactly this certificate (a dev node's self-signed cert).
    #[arg(long, global = true)]
    pin_cert: Option<PathBuf>,
    /// Trust the CAs in this PEM file.
    #[arg(long, global = true, conflicts_with = "pin_cert")]
    ca_file: Option<PathBuf>,
    /// New connections per second.
    #[arg(long, default_value_t = 2_000, global = true)]
    connect_rate: u32,
    /// Local source addresses to spread connections over (127.0.0.2 onwards).
    #[arg(long, default_value_t = 8, global = true)]
    source_ips: usize,
    /// Largest UDP payload the tester's QUIC sockets accept, so the largest packets the node
    /// may send them (1200 ..= 65527; loopback's MTU allows all; 1472 is an Ethernet path's).
    #[arg(long, global = true, default_value_t = chorus_client::raw::DEFAULT_MAX_UDP_PAYLOAD,
          value_parser = clap::value_parser!(u16).range(1200..=65527))]
    quic_max_udp_payload: u16,
    /// UDP sockets the tester's QUIC connections share (spread over the source addresses).
    #[arg(long, global = true, default_value_t = chorus_loadtest::scenario::DEFAULT_QUIC_SOCKETS as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    quic_sockets: u64,
    /// The node's pid: its CPU and memory go into the report.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// The node's metrics URL (loopback, e.g. http://127.0.0.1:9091/metrics): its commit
    /// latency and syncs over the measured phase go into the report.
    #[arg(long, global = true, value_parser = MetricsUrl::parse)]
    server_metrics: Option<MetricsUrl>,
    /// Write the JSON report here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Worker threads (default: the machine's cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N connections at a rate and hold them; connect latency and memory per connection.
    Connect(scenario::connect::Args),
    /// One channel, S subscribers, P publishers; fixed rate or maximum throughput.
    Fanout(scenario::fanout::Args),
    /// N connections in N/2 direct channels at a fixed total rate.
    Pairs(scenario::pairs::Args),
    /// Users in rooms of Zipf-distributed popularity, with typing and read markers.
    Rooms(scenario::rooms::Args),
    /// Every session kicked at once; time until all SDK clients are back and caught up.
    ReconnectStorm(scenario::storm::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The tester shares the machine with the node, so its own costs are the node's loss. With
    // transparent huge pages the allocator's fresh memory faults in 2 MiB at a time, each
    // zeroed whole, a large share of the machine's CPU while thousands of connections open
    // (docs/benchmarks.md, "Decisions"). The node's setting is its own.
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("note: transparent huge pages stay on for the tester: {e}");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = cli.threads {
        runtime.worker_threads(t.max(1));
    }
    let runtime = runtime.enable_all().build()?;
    let report = runtime.block_on(run(&cli))?;
    eprintln!("\n{}", report.table());
    if let Some(path) = &cli.json {
        std::fs::write(path, format!("{:#}\n", serde_json::to_value(&report)?))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    let clean = report.lost == 0 && report.duplicates == 0 && report.reordered == 0;
    if !clean {
        eprintln!("DELIVERY CHECK FAILED: lost, duplicated or reordered entries");
        std::process::exit(3);
    }
    if report.undelivered > 0 {
        eprintln!(
            "NOT CAUGHT UP: {} acknowledged entries had not reached their subscribers when the \
             run ended (the node could not keep up with this load, or lost them)",
            report.undelivered
        );
        std::process::exit(4);
    }
    if !report.errors.is_empty() {
        let count: u64 = report.errors.values().sum();
        eprintln!(
            "ERRORS: {count} (by kind in the table above); the figures cover less than asked"
        );
        std::process::exit(5);
    }
    Ok(())
}

async fn run(cli: &Cli) -> anyhow::Result<chorus_loadtest::report::Report> {
    let secret = cli
        .token_secret_file
        .as_deref()
        .context("--token-secret-file is needed to sign tokens for synthetic users")?;
    let trust = match (&cli.pin_cert, &cli.ca_file) {
        (Some(p), _) => TlsTrust::PinnedCertFile(p.clone()),
        (None, Some(c)) => TlsTrust::CaFile(c.clone()),
        (None, None) => TlsTrust::WebPkiRoots,
    };
    let setup = Setup::new(
        &cli.targets,
        cli.transport == "quic",
        trust,
        Minter::from_file(secret)?,
        cli.source_ips,
        cli.connect_rate,
        cli.server_pid,
    )?
    .with_quic_sockets(cli.quic_sockets as usize, cli.quic_max_udp_payload)
    .with_server_metrics(cli.server_metrics.clone());
    match &cli.scenario {
        Scenario::Connect(a) => scenario::connect::run(&setup, a).await,
        Scenario::Fanout(a) => scenario::fanout::run(&setup, a).await,
        Scenario::Pairs(a) => scenario::pairs::run(&setup, a).await,
        Scenario::Rooms(a) => scenario::rooms::run(&setup, a).await,
        Scenario::ReconnectStorm(a) => scenario::storm::run(&setup, a).await,
    }
}
