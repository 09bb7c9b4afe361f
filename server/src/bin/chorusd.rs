//! `chorusd`: the Chorus node. Parses flags, the config file and `CHORUS_*` variables, sets up
//! logging and hands a shutdown future to `chorus_server::run`.

#![allow(clippy::print_stdout)] // A CLI: the token and the dev hint go to stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chorus_server::config::{Config, FileConfig, LogFilterHandle, TokenKey};
use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "chorusd", version, about = "The Chorus chat node")]
struct Cli {
    /// Development mode: data in ./chorus-data, a self-signed certificate and a token secret
    /// made on first start, listening on 127.0.0.1 only.
    #[arg(long, env = "CHORUS_DEV")]
    dev: bool,
    /// TOML config file; flags and CHORUS_* variables override it.
    #[arg(long, env = "CHORUS_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, env = "CHORUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// WebSocket listen address.
    #[arg(long, env = "CHORUS_WS_LISTEN")]
    ws_listen: Option<SocketAddr>,
    /// Serve plain ws:// instead of TLS (only on loopback in --dev).
    #[arg(long, env = "CHORUS_WS_PLAIN")]
    ws_plain: bool,
    /// QUIC listen address (UDP); default: the WebSocket address's IP and port.
    #[arg(long, env = "CHORUS_QUIC_LISTEN")]
    quic_listen: Option<SocketAddr>,
    /// HTTP listener for /metrics, /healthz and /readyz.
    #[arg(long, env = "CHORUS_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Do not serve the HTTP listener.
    #[arg(long, env = "CHORUS_NO_HTTP")]
    no_http: bool,
    /// Do not serve QUIC.
    #[arg(long, env = "CHORUS_NO_QUIC")]
    no_quic: bool,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "CHORUS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "CHORUS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// File holding the HS256 token secret.
    #[arg(long, env = "CHORUS_TOKEN_SECRET_FILE")]
    token_secret_file: Option<PathBuf>,
    /// Ed25519 public key (PEM) for EdDSA tokens.
    #[arg(long, env = "CHORUS_TOKEN_ED25519_PUBLIC_KEY")]
    token_ed25519_public_key: Option<PathBuf>,
    /// RSA public key (PEM) for RS256 tokens.
    #[arg(long, env = "CHORUS_TOKEN_RS256_PUBLIC_KEY")]
    token_rs256_public_key: Option<PathBuf>,
    /// Required token audience.
    #[arg(long, env = "CHORUS_TOKEN_AUDIENCE")]
    token_audience: Option<String>,
    /// Required token issuer.
    #[arg(long, env = "CHORUS_TOKEN_ISSUER")]
    token_issuer: Option<String>,
    /// Store engine: fjall or sled.
    #[arg(long, env = "CHORUS_STORE_ENGINE")]
    store_engine: Option<String>,
    /// Log filter (tracing env-filter syntax), e.g. "info" or "chorus_server=debug"; default:
    /// the config file's `log`, else "info,fjall=warn,lsm_tree=warn".
    #[arg(long, env = "CHORUS_LOG")]
    log: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "CHORUS_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mints a token with the node's HS256 secret.
    Token {
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// Lifetime: 90s, 30m, 12h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("bad ttl {s:?}"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("bad ttl unit in {s:?}: use s, m, h or d"),
    };
    Ok(n.saturating_mul(mult))
}

fn file_config(cli: &Cli) -> anyhow::Result<FileConfig> {
    Ok(match &cli.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    })
}

fn data_dir(cli: &Cli, file: &FileConfig) -> PathBuf {
    cli.data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| {
            PathBuf::from(if cli.dev {
                "./chorus-data"
            } else {
                "/var/lib/chorus"
            })
        })
}

/// The token key from the flags and the file: a public key, else the HS256 secret file (the
/// dev secret with `--dev`).
fn token_key(
    cli: &Cli,
    file: &FileConfig,
    dev: Option<&chorus_server::dev::DevFiles>,
) -> anyhow::Result<TokenKey> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    if let Some(p) = cli
        .token_ed25519_public_key
        .as_ref()
        .or(file.token_ed25519_public_key.as_ref())
    {
        return Ok(TokenKey::Ed25519Pem(read(p)?));
    }
    if let Some(p) = cli
        .token_rs256_public_key
        .as_ref()
        .or(file.token_rs256_public_key.as_ref())
    {
        return Ok(TokenKey::Rs256Pem(read(p)?));
    }
    let secret_file = cli
        .token_secret_file
        .clone()
        .or(file.token_secret_file.clone())
        .or(dev.map(|d| d.secret.clone()))
        .context("no token key: give --token-secret-file, a public key, or run with --dev")?;
    Ok(TokenKey::Hs256(
        chorus_server::dev::read_secret(&secret_file)
            .with_context(|| format!("reading {}", secret_file.display()))?,
    ))
}

/// `chorusd token`: mints a token with the node's HS256 secret. Needs only the key, none of
/// the listener settings.
fn mint(cli: &Cli, user: &str, ttl: &str) -> anyhow::Result<()> {
    let file = file_config(cli)?;
    let dev = if cli.dev {
        Some(chorus_server::dev::ensure(&data_dir(cli, &file))?)
    } else {
        None
    };
    let TokenKey::Hs256(secret) = token_key(cli, &file, dev.as_ref())? else {
        bail!("tokens can only be minted with an HS256 secret");
    };
    let now = chorus_server::clock::unix_ms() / 1000;
    let token = chorus_server::auth::mint_hs256(&secret, user, now, parse_ttl(ttl)?)?;
    println!("{token}");
    Ok(())
}

fn resolve(cli: &Cli) -> anyhow::Result<Config> {
    let file = file_config(cli)?;
    let data_dir = data_dir(cli, &file);
    let default_listen: SocketAddr = if cli.dev {
        ([127, 0, 0, 1], 8443).into()
    } else {
        ([0, 0, 0, 0], 8443).into()
    };
    let ws_listen = cli.ws_listen.or(file.ws_listen).unwrap_or(default_listen);
    let plain = cli.ws_plain || file.ws_plain.unwrap_or(false);
    let dev = if cli.dev {
        Some(chorus_server::dev::ensure(&data_dir)?)
    } else {
        None
    };
    if cli.dev && !ws_listen.ip().is_loopback() {
        bail!("--dev listens on loopback only; {ws_listen} is not");
    }
    let tls = if plain {
        None
    } else {
        let cert = cli
            .tls_cert
            .clone()
            .or(file.tls_cert.clone())
            .or(dev.as_ref().map(|d| d.cert.clone()));
        let key = cli
            .tls_key
            .clone()
            .or(file.tls_key.clone())
            .or(dev.as_ref().map(|d| d.key.clone()));
        match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => bail!(
                "TLS needs --tls-cert and --tls-key (or --ws-plain to serve ws:// explicitly)"
            ),
        }
    };
    let token_key = token_key(cli, &file, dev.as_ref())?;
    let mut store = chorus_storage::StoreConfig::new(data_dir.join("store"));
    if let Some(engine) = cli.store_engine.as_ref().or(file.store_engine.as_ref()) {
        store.engine = chorus_storage::EngineKind::parse(engine)
            .with_context(|| format!("unknown store engine {engine:?}"))?;
    }
    if let Some(bytes) = file.store_min_free_bytes {
        store.min_free_disk_bytes = bytes;
    }
    store.default_retention = chorus_storage::RetentionPolicy {
        max_age_ms: file.retention_max_age_ms.unwrap_or(0),
        max_entries: file.retention_max_entries.unwrap_or(0),
    };
    match file.store_durability.as_deref() {
        None | Some("sync") => {}
        Some("relaxed") => {
            store.durability = chorus_storage::Durability::RelaxedPeriodicSync {
                interval: Duration::from_millis(file.store_sync_interval_ms.unwrap_or(100)),
            };
        }
        Some(other) => bail!("store_durability must be sync or relaxed, not {other:?}"),
    }
    let node_id = file
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
    let quic_off = cli.no_quic || file.quic_disabled.unwrap_or(false) || tls.is_none();
    let quic_listen = if quic_off {
        None
    } else {
        Some(cli.quic_listen.or(file.quic_listen).unwrap_or(ws_listen))
    };
    let http_off = cli.no_http || file.http_disabled.unwrap_or(false);
    let default_http: SocketAddr = ([127, 0, 0, 1], 9090).into();
    let http_listen = if http_off {
        None
    } else {
        Some(cli.http_listen.or(file.http_listen).unwrap_or(default_http))
    };
    let control_socket = if file.control_disabled.unwrap_or(false) {
        None
    } else {
        Some(
            file.control_socket
                .clone()
                .unwrap_or_else(|| data_dir.join("control.sock")),
        )
    };
    let config = Config {
        node_id,
        data_dir,
        ws_listen,
        quic_listen,
        http_listen,
        tls,
        token_key,
        token_audience: cli.token_audience.clone().or(file.token_audience.clone()),
        token_issuer: cli.token_issuer.clone().or(file.token_issuer.clone()),
        store,
        limits: file.limits.clone(),
        moderation: file.moderation.clone(),
        search: file.search.clone(),
        cluster: file.cluster.clone(),
        shutdown_drain: Duration::from_millis(file.shutdown_drain_ms.unwrap_or(5_000)),
        retention_interval: Duration::from_millis(
            file.retention_interval_ms.unwrap_or(60_000).max(1_000),
        ),
        control_socket,
        config_file: cli.config.clone(),
        log_filter: None,
    };
    config.validate()?;
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down (a second signal forces exit)");
    tokio::spawn(async move {
        let second = tokio::signal::ctrl_c();
        tokio::select! {
            _ = second => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
}

/// The log filter when neither `--log` nor the config file sets one.
const DEFAULT_LOG: &str = "info,fjall=warn,lsm_tree=warn";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Everything the node creates (journals, tables, the audit log, exports) is private: the
    // data directory holds message text.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let file_log = match &cli.config {
        Some(path) => FileConfig::load(path)?.log,
        None => None,
    };
    let spec = cli
        .log
        .clone()
        .or(file_log)
        .unwrap_or_else(|| DEFAULT_LOG.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&spec).context("bad log filter")?;
    // The filter sits behind a reload layer so that `chorusctl log-level set` and
    // `config reload` can change it without a restart.
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    if cli.log_json {
        registry
            .with(tracing_subscriber::fmt::layer().json())
            .init();
    } else {
        registry.with(tracing_subscriber::fmt::layer()).init();
    }
    if let Some(Command::Token { user, ttl }) = &cli.command {
        return mint(&cli, user, ttl);
    }
    match chorus_server::admission::raise_fd_limit() {
        Ok(Some((from, to))) => {
            tracing::info!(from, to, "raised the open-file limit to the hard limit");
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let mut config = resolve(&cli)?;
    config.log_filter = Some(LogFilterHandle(std::sync::Arc::new(move |spec: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(spec).map_err(|e| e.to_string())?;
        reload.reload(filter).map_err(|e| e.to_string())
    })));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let scheme = if config.tls.is_some() { "wss" } else { "ws" };
        let addr = config.ws_listen;
        if cli.dev {
            println!("chorusd (dev) on {scheme}://{addr}/ — mint a token with: cargo run --release --bin chorusd -- --dev token --user alice");
        }
        chorus_server::run(config, shutdown_signal()).await
    })?;
    Ok(())
}
