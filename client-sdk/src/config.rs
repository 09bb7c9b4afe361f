//! What a client connects to and how it behaves: the URL, credentials, TLS trust, timeouts and
//! queue sizes. Defaults suit a mobile or desktop app; every bound is explicit so that a slow or
//! hostile server cannot make the SDK grow without limit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::transport::quic::QuicEndpoint;
use crate::transport::tls::TlsTrust;
use crate::transport::{Dial, Endpoint};

/// The future a token-refresh callback returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Fetches a fresh access token (from the app's backend, usually).
pub type TokenRefresher = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// Name, version and device of the app, sent in `Hello` (shown to admins, used in logs).
#[derive(Debug, Clone)]
pub struct AppInfo {
    /// App name.
    pub name: String,
    /// App version.
    pub version: String,
    /// A stable id of this device or installation.
    pub device_id: String,
    /// "ios", "android", "linux", ...
    pub platform: String,
}

impl Default for AppInfo {
    fn default() -> Self {
        Self {
            name: "chorus-client".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            device_id: String::new(),
            platform: std::env::consts::OS.into(),
        }
    }
}

/// How a [`Client`](crate::Client) connects and behaves.
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) url: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) token: String,
    pub(crate) refresher: Option<TokenRefresher>,
    pub(crate) trust: TlsTrust,
    pub(crate) server_name: Option<String>,
    pub(crate) app: AppInfo,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) outbox_capacity: usize,
    pub(crate) event_capacity: usize,
    pub(crate) request_queue: usize,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
    pub(crate) reconnect: bool,
    pub(crate) local_addr: Option<std::net::IpAddr>,
    pub(crate) quic_endpoint: Option<quinn::Endpoint>,
    /// Replaces TCP for `ws://` URLs in unit tests: an in-memory stream lets tests run the
    /// connection task under paused time with a scripted server.
    #[cfg(test)]
    pub(crate) connector: Option<crate::transport::TestConnector>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("refresher", &self.refresher.is_some())
            .field("trust", &self.trust)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("outbox_capacity", &self.outbox_capacity)
            .field("event_capacity", &self.event_capacity)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A configuration for `url` (`wss://`, `ws://` or `quic://`) with an access token.
    pub fn new(url: &str, token: impl Into<String>) -> Result<Self, Error> {
        Ok(Self {
            url: url.to_owned(),
            endpoint: Endpoint::parse(url)?,
            token: token.into(),
            refresher: None,
            trust: TlsTrust::default(),
            server_name: None,
            app: AppInfo::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            outbox_capacity: 1_000,
            event_capacity: 4_096,
            request_queue: 1_024,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            reconnect: true,
            local_addr: None,
            quic_endpoint: None,
            #[cfg(test)]
            connector: None,
        })
    }

    /// Which certificates to trust (default: the compiled-in webpki roots).
    pub fn trust(mut self, trust: TlsTrust) -> Self {
        self.trust = trust;
        self
    }

    /// The TLS server name to verify, when it differs from the URL's host (connecting by IP to
    /// a node whose certificate names `localhost`, for example).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// A callback that returns a fresh token. The SDK calls it shortly before the current token
    /// expires (and sends `RefreshToken` in band) and when the server closes the connection
    /// because the token expired. Without it an expired token ends the client.
    pub fn token_refresher<F, Fut, E>(mut self, refresh: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.refresher = Some(Arc::new(move || {
            let fut = refresh();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        }));
        self
    }

    /// The app's name, version, device and platform, sent in `Hello`.
    pub fn app_info(mut self, app: AppInfo) -> Self {
        self.app = app;
        self
    }

    /// Time allowed for one connection attempt: TCP or QUIC, TLS, upgrade and `Hello` (10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time a request waits for its reply, queueing included (15 s). Publishes are not bound by
    /// it: they stay in the outbox until acknowledged.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Unacknowledged publishes kept for sending and resending (1,000). Beyond it `publish`
    /// fails with [`Error::OutboxFull`].
    pub fn outbox_capacity(mut self, capacity: usize) -> Self {
        self.outbox_capacity = capacity.max(1);
        self
    }

    /// Events buffered for the app (4,096). When the app falls behind, the SDK stops taking a
    /// channel's live events and later resubscribes from its cursor, so nothing is lost and
    /// memory stays bounded.
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(16);
        self
    }

    /// Requests (other than publishes) waiting to be sent, for example while reconnecting
    /// (1,024). Callers beyond it wait.
    pub fn request_queue(mut self, capacity: usize) -> Self {
        self.request_queue = capacity.max(1);
        self
    }

    /// Reconnect backoff: attempt `n` waits a random time below `min(cap, base * 2^n)`
    /// (500 ms, 30 s).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap.max(base);
        self
    }

    /// Whether to reconnect after the connection drops (default true).
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// The local address to connect from (multi-homed hosts; load tests spreading connections
    /// over 127.0.0.2, .3, ... to avoid running out of ports).
    pub fn local_addr(mut self, ip: std::net::IpAddr) -> Self {
        self.local_addr = Some(ip);
        self
    }

    /// Makes `quic://` connections through `endpoint` (one UDP socket shared with other
    /// clients) instead of a socket of this client's own. For processes that hold many clients
    /// (gateways, bots, load tests): each socket of its own costs about 2 MiB of buffers.
    pub fn quic_endpoint(mut self, endpoint: &QuicEndpoint) -> Self {
        self.quic_endpoint = Some(endpoint.inner().clone());
        self
    }

    /// The URL this configuration connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the transport needs to connect.
    pub(crate) fn dial(&self) -> Dial {
        Dial {
            url: self.url.clone(),
            endpoint: self.endpoint.clone(),
            trust: self.trust.clone(),
            server_name: self.server_name.clone(),
            local_addr: self.local_addr,
            #[cfg(test)]
            connector: self.connector.clone(),
        }
    }
}
