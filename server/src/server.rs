//! Starting and stopping a node: the store, the hub, the listener, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::v1::CloseCode;
use chorus_storage::Store;
use quinn::VarInt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::config::Config;
use crate::hub::Hub;
use crate::outbound::Close;
use crate::session::Shared;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] chorus_storage::OpenError),
    /// The token key could not be loaded.
    #[error("token key: {0}")]
    Token(#[from] crate::auth::TokenError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The QUIC endpoint could not start.
    #[error("QUIC: {0}")]
    Quic(#[from] crate::quic::QuicError),
    /// The data directory could not be created or made private.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The control socket could not be created.
    #[error("control socket {path}: {source}")]
    Control {
        /// The socket path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// QUIC needs a certificate.
    #[error("QUIC needs TLS: configure a certificate or disable QUIC")]
    QuicWithoutTls,
    /// A listener could not bind.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A running node.
pub struct Server {
    shared: Arc<Shared>,
    ws_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    quic: Option<quinn::Endpoint>,
    /// Cancelled at shutdown: HTTP, retention, sampling and the control socket stop (accepting
    /// connections stops earlier, with `Shared::accepting`, which a drain also cancels).
    stop: CancellationToken,
    connections_stop: CancellationToken,
    tracker: TaskTracker,
}

impl Server {
    /// Opens the store, binds the listener and starts accepting.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let verifier = Verifier::new(
            &config.token_key,
            config.token_audience.as_deref(),
            config.token_issuer.as_deref(),
        )?;
        let tls = match &config.tls {
            Some((cert, key)) => Some(crate::tls::server_config(cert, key, &[b"http/1.1"])?),
            None => None,
        };
        let tightened =
            crate::data_dir::secure(&config.data_dir).map_err(|source| StartError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        if tightened.not_ours > 0 {
            tracing::warn!(
                dir = %config.data_dir.display(),
                entries = tightened.not_ours,
                "entries of the data directory readable by other users belong to another user; left as they are"
            );
        }
        if tightened.entries > 0 {
            tracing::warn!(
                dir = %config.data_dir.display(),
                entries = tightened.entries,
                examples = ?tightened.examples,
                "the data directory was readable by other users; removed their permissions (directories 0700, files 0600)"
            );
        }
        let store = Store::open(config.store.clone())?;
        // Installed before anything registers a metric handle (the hub's, the connections').
        crate::observe::recorder();
        let hub = Arc::new(Hub::default());
        store.set_commit_listener(hub.clone());
        let listener = listen(config.ws_listen).map_err(|source| StartError::Bind {
            addr: config.ws_listen,
            source,
        })?;
        let ws_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.ws_listen,
            source,
        })?;
        let quic = match (config.quic_listen, &config.tls) {
            (None, _) => None,
            (Some(_), None) => return Err(StartError::QuicWithoutTls),
            (Some(addr), Some((cert, key))) => {
                let idle = Duration::from_millis(u64::from(config.limits.idle_timeout_ms));
                Some(crate::quic::endpoint(addr, cert, key, idle)?)
            }
        };
        let http = match config.http_listen {
            Some(addr) => Some(
                crate::observe::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };
        // Bound before anything is accepted, so that a second node on the same data directory
        // fails here (the store lock already refused it) and admins can reach a node at once.
        let control = match &config.control_socket {
            Some(path) => {
                Some(
                    crate::control::bind(path).map_err(|source| StartError::Control {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let (quic, quic_socket) = match quic {
            Some((endpoint, info)) => (Some(endpoint), Some(info)),
            None => (None, None),
        };
        let mut shared = Shared::new(store, hub, config, verifier);
        shared.quic_socket = quic_socket;
        shared.fd_budget =
            crate::admission::FdBudget::of_process(shared.config.store.max_open_files as u64);
        match shared.fd_budget.limit {
            Some(limit) => tracing::info!(
                open_file_limit = limit,
                reserved = shared.fd_budget.reserved,
                max_connections = crate::admission::max_connections(&shared),
                "connection cap from the open-file limit"
            ),
            None => tracing::info!("no open-file limit: connections capped by limits only"),
        }
        let shared = Arc::new(shared);
        shared.background.spawn({
            let (own_reads, store) = (shared.own_reads.clone(), shared.store.clone());
            async move { own_reads.run(store).await }
        });
        shared
            .background
            .spawn(crate::control::erasure::resume_all(shared.clone()));
        let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
        let server = Self {
            shared,
            ws_addr,
            http_addr,
            quic,
            stop: CancellationToken::new(),
            connections_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        server.tracker.spawn(accept_loop(
            listener,
            tls,
            server.shared.clone(),
            server.shared.accepting.clone(),
            server.connections_stop.clone(),
            server.tracker.clone(),
        ));
        tracing::info!(addr = %ws_addr, tls = server.shared.config.tls.is_some(), "websocket listener ready");
        if let Some(listener) = http {
            let router = crate::observe::router(server.shared.clone());
            let stop = server.stop.clone();
            server.tracker.spawn(async move {
                let serve =
                    axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
                if let Err(e) = serve.await {
                    tracing::warn!(error = %e, "HTTP listener failed");
                }
            });
            if let Some(addr) = http_addr {
                tracing::info!(%addr, "HTTP listener ready (/metrics, /healthz, /readyz)");
            }
        }
        server.tracker.spawn(retention_loop(
            server.shared.store.clone(),
            Arc::downgrade(&server.shared),
            server.shared.config.retention_interval,
            server.stop.clone(),
        ));
        if let Some(endpoint) = &server.quic {
            server.tracker.spawn(crate::quic::accept_loop(
                endpoint.clone(),
                server.shared.clone(),
                server.shared.accepting.clone(),
                server.connections_stop.clone(),
                server.tracker.clone(),
            ));
            if let Ok(addr) = endpoint.local_addr() {
                tracing::info!(%addr, "QUIC listener ready");
            }
        }
        server.tracker.spawn(crate::stats::sample(
            Arc::downgrade(&server.shared),
            server.stop.clone(),
        ));
        if let Some(path) = control {
            server.tracker.spawn(crate::control::serve(
                path,
                server.shared.clone(),
                server.stop.clone(),
            ));
        }
        Ok(server)
    }

    /// The WebSocket listener's address.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// The HTTP listener's address (metrics and health), if on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The QUIC listener's address, if QUIC is on.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic.as_ref().and_then(|e| e.local_addr().ok())
    }

    /// The store (for tests and admin tools in the same process).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    /// Graceful shutdown: stop accepting, tell every client to reconnect later (`GOING_AWAY`),
    /// wait for queues to drain up to the configured deadline, make the store durable.
    pub async fn shutdown(self) {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.accepting.cancel();
        self.shared.stopping.cancel();
        self.stop.cancel();
        self.shared.hub.close_all(&Close {
            code: CloseCode::GoingAway,
            reason: "node shutting down".into(),
            reconnect_after_ms: 1_000,
        });
        self.tracker.close();
        let drain = self.shared.config.shutdown_drain;
        if tokio::time::timeout(drain, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections did not drain in {drain:?}; closing them");
            self.connections_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
        }
        self.shared.own_reads.stop();
        self.shared.background.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.shared.background.wait()).await;
        if let Some(endpoint) = &self.quic {
            endpoint.close(
                VarInt::from_u32(CloseCode::GoingAway.quic_code()),
                b"shutdown",
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        if let Err(e) = self.shared.store.sync().await {
            tracing::error!(error = %e, "final store sync failed");
        }
        self.shared.store.close();
        tracing::info!("node stopped");
    }
}

/// Runs a node until `shutdown` completes, then stops it gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let server = Server::start(config).await?;
    shutdown.await;
    server.shutdown().await;
    Ok(())
}

/// Applies retention policies, and forgets idle per-address admission entries, periodically,
/// until `stop`.
async fn retention_loop(
    store: Store,
    shared: std::sync::Weak<Shared>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        if let Some(shared) = shared.upgrade() {
            crate::admission::sweep_idle_budgets(&shared);
        }
        match store.run_retention(crate::clock::unix_ms()).await {
            Ok(report) if report.entries_removed > 0 => {
                tracing::info!(
                    channels = report.channels,
                    removed = report.entries_removed,
                    "retention pass"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}

/// Connections the kernel may hold for `accept` (capped by `net.core.somaxconn`). Tokio's
/// default of 1,024 overflowed during connect bursts: the dropped SYNs came back a second later
/// and put a second into the p99 connect time.
const LISTEN_BACKLOG: u32 = 8_192;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    connections_stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(admission) = crate::admission::admit(&shared, peer) else {
            // Over a limit: drop before any work (no TLS, no upgrade).
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        let stop = connections_stop.clone();
        tracker.spawn(async move {
            // Each branch boxed: the task's own size is that of its largest branch (a TLS
            // stream alone is over a KiB), and an idle plain connection should not pay for it.
            match tls {
                None => Box::pin(crate::ws::serve(shared, tcp, peer, stop, admission)).await,
                Some(config) => {
                    Box::pin(serve_tls(shared, config, tcp, peer, stop, admission)).await
                }
            }
        });
    }
}

/// The TLS handshake within the handshake deadline, then the WebSocket connection over it.
async fn serve_tls(
    shared: Arc<Shared>,
    config: Arc<rustls::ServerConfig>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
    admission: crate::admission::Admission,
) {
    let deadline = Duration::from_millis(u64::from(shared.limits().handshake_timeout_ms));
    // Boxed: the TLS handshake's state is freed once done instead of staying in this future;
    // and the stream is taken out of the result before the long await below, so that no
    // temporary keeps room for it here.
    let accepted =
        tokio::time::timeout(deadline, Box::pin(crate::tls_stream::accept(config, tcp))).await;
    let Some(stream) = crate::connection::handshake_step(accepted, peer, "TLS handshake") else {
        return;
    };
    Box::pin(crate::ws::serve(shared, stream, peer, stop, admission)).await;
}
