//! Starting and stopping a node: the store, the hub, the listeners, the background tasks, and
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::v1::CloseCode;
use chorus_storage::Store;
use quinn::VarInt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Door, FdBudget};
use crate::auth::Verifier;
use crate::config::Config;
use crate::hub::{CommitFanout, Hub};
use crate::node::Node;
use crate::outbound::Close;
use crate::transport::{quic, tcp, tls};

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
    Tls(#[from] tls::TlsError),
    /// The QUIC endpoint could not start.
    #[error("QUIC: {0}")]
    Quic(#[from] quic::QuicError),
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
    /// The search index could not open.
    #[error(transparent)]
    Search(#[from] crate::search::SearchStartError),
    /// The cluster endpoint could not start.
    #[error("cluster: {0}")]
    Cluster(#[from] chorus_cluster::ClusterError),
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
    node: Arc<Node>,
    ws_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    quic: Option<quinn::Endpoint>,
    /// Cancelled at shutdown: HTTP, retention, sampling and the control socket stop (accepting
    /// connections stops earlier, with `Node::accepting`, which a drain also cancels).
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
            Some((cert, key)) => Some(tls::server_config(cert, key, &[b"http/1.1"])?),
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
        crate::metrics::recorder();
        let hub = Arc::new(Hub::default());
        let search = Arc::new(crate::search::Search::open(&config, &store)?);
        store.set_commit_listener(Arc::new(CommitFanout(vec![
            hub.clone(),
            Arc::new(crate::search::SearchFeed(search.clone())),
        ])));
        let listener = tcp::listen(config.ws_listen).map_err(|source| StartError::Bind {
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
                Some(quic::endpoint(addr, cert, key, idle)?)
            }
        };
        let http = match config.http_listen {
            Some(addr) => Some(
                crate::http::bind(addr)
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
            Some((endpoint, info)) => (Some(endpoint), Some(Arc::new(info))),
            None => (None, None),
        };
        let cluster = match &config.cluster {
            None => None,
            Some(settings) => {
                let c = settings.to_cluster_config(&config.node_id, &config.data_dir, ws_addr)?;
                let cluster = chorus_cluster::Cluster::start(&c).await?;
                tracing::info!(
                    addr = %cluster.endpoint().local_addr()?,
                    cluster = %c.cluster_id,
                    seeds = ?c.seeds,
                    "cluster endpoint ready"
                );
                Some(Arc::new(cluster))
            }
        };
        let fd_budget = FdBudget::of_process(config.store.max_open_files as u64);
        let node = Arc::new(
            Node::new(store, hub, config, verifier, Door::new(fd_budget))
                .with_search(search)
                .with_cluster(cluster),
        );
        match fd_budget.limit {
            Some(limit) => tracing::info!(
                open_file_limit = limit,
                reserved = fd_budget.reserved,
                max_connections = node.door().max_connections(&node.limits()),
                "connection cap from the open-file limit"
            ),
            None => tracing::info!("no open-file limit: connections capped by limits only"),
        }
        node.background().spawn({
            let (own_reads, store) = (node.own_reads().clone(), node.store().clone());
            async move { own_reads.run(store).await }
        });
        let erasures = crate::control::erasure::Running::default();
        node.background().spawn(crate::control::erasure::resume_all(
            node.clone(),
            erasures.clone(),
        ));
        let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
        let server = Self {
            node,
            ws_addr,
            http_addr,
            quic,
            stop: CancellationToken::new(),
            connections_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        server.tracker.spawn(tcp::accept_loop(
            listener,
            tls,
            server.node.clone(),
            server.node.accepting().clone(),
            server.connections_stop.clone(),
            server.tracker.clone(),
        ));
        tracing::info!(addr = %ws_addr, tls = server.node.config().tls.is_some(), "websocket listener ready");
        if let Some(listener) = http {
            let router = crate::http::router(server.node.clone(), quic_socket);
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
        server.tracker.spawn(crate::background::retention::run(
            Arc::downgrade(&server.node),
            server.node.config().retention_interval,
            server.stop.clone(),
        ));
        if let Some(endpoint) = &server.quic {
            server.tracker.spawn(quic::accept_loop(
                endpoint.clone(),
                server.node.clone(),
                server.node.accepting().clone(),
                server.connections_stop.clone(),
                server.tracker.clone(),
            ));
            if let Ok(addr) = endpoint.local_addr() {
                tracing::info!(%addr, "QUIC listener ready");
            }
        }
        server.tracker.spawn(crate::background::status::sample(
            Arc::downgrade(&server.node),
            server.stop.clone(),
        ));
        server.tracker.spawn(crate::background::presence::run(
            Arc::downgrade(&server.node),
            server.stop.clone(),
        ));
        if let Some(path) = control {
            server.tracker.spawn(crate::control::serve(
                path,
                server.node.clone(),
                erasures,
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
        self.node.store()
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        self.node.hub()
    }

    /// Graceful shutdown: stop accepting, tell every client to reconnect later (`GOING_AWAY`),
    /// wait for queues to drain up to the configured deadline, make the store durable.
    pub async fn shutdown(self) {
        self.node.start_stopping();
        self.stop.cancel();
        self.node.hub().close_all(&Close {
            code: CloseCode::GoingAway,
            reason: "node shutting down".into(),
            reconnect_after_ms: 1_000,
        });
        self.tracker.close();
        // Other members see this node leave at once instead of suspecting it.
        if let Some(cluster) = self.node.cluster() {
            cluster.shutdown().await;
        }
        let drain = self.node.config().shutdown_drain;
        if tokio::time::timeout(drain, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections did not drain in {drain:?}; closing them");
            self.connections_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
        }
        self.node.own_reads().stop();
        self.node.background().close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.node.background().wait()).await;
        if let Some(endpoint) = &self.quic {
            endpoint.close(
                VarInt::from_u32(CloseCode::GoingAway.quic_code()),
                b"shutdown",
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        if let Err(e) = self.node.store().sync().await {
            tracing::error!(error = %e, "final store sync failed");
        }
        // The indexer reads the store: it stops (with a last commit) before the store closes.
        let search = self.node.search().clone();
        let _ = tokio::task::spawn_blocking(move || search.close()).await;
        self.node.store().close();
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
