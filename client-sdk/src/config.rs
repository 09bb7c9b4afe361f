//! What a client connects to and how it behaves: the URL, credentials, TLS trust, timeouts and
//! queue sizes. Defaults suit a mobile or desktop app; every bound is explicit so that a slow or
//! hostile server cannot make the SDK grow without limit.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// The transports a URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`: WebSocket without TLS (development and tests only).
    Ws,
    /// `wss://`: WebSocket over TLS.
    Wss,
    /// `quic://`: QUIC (always TLS 1.3), one bidirectional stream.
    Quic,
}

/// A parsed server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The transport.
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (defaults: 80 for `ws`, 443 for `wss` and `quic`).
    pub port: u16,
    /// The WebSocket request path (and query), `/` when absent.
    pub path: String,
}

impl Endpoint {
    /// Parses `ws://host[:port][/path]`, `wss://...` or `quic://host[:port]`.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = url.split_once("://").ok_or(bad("missing scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            "quic" => Scheme::Quic,
            _ => return Err(bad("the scheme must be ws, wss or quic")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad(
                "credentials in the URL are not supported: use the token",
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(bad("unclosed IPv6 bracket"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
            None if scheme == Scheme::Ws => 80,
            None => 443,
        };
        // The path goes into the upgrade request line as it is.
        if path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
        {
            return Err(bad(
                "the path may not hold spaces, control characters or a fragment",
            ));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// `host:port` as the upgrade request's `Host` header carries it (IPv6 in brackets).
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Which server certificates the client trusts.
#[derive(Debug, Clone, Default)]
pub enum TlsTrust {
    /// The Mozilla root store compiled into the SDK (webpki roots): for public deployments.
    #[default]
    WebPkiRoots,
    /// The CA certificates in a PEM file (a private CA); names are checked as usual.
    CaFile(PathBuf),
    /// Exactly this certificate (PEM file), whatever its issuer and name: for a development
    /// node's self-signed certificate (`chorusd --dev` writes it to `chorus-data/dev-cert.pem`).
    PinnedCertFile(PathBuf),
}

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
    pub fn quic_endpoint(mut self, endpoint: &crate::raw::QuicEndpoint) -> Self {
        self.quic_endpoint = Some(endpoint.inner().clone());
        self
    }

    /// The URL this configuration connects to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_endpoints() {
        let e = Endpoint::parse("wss://chat.example.com/ws?x=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port, e.path.as_str()),
            (Scheme::Wss, "chat.example.com", 443, "/ws?x=1")
        );
        let e = Endpoint::parse("ws://127.0.0.1:7000").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.port, e.path.as_str()), (7000, "/"));
        assert_eq!(
            (e.authority().as_str(), e.path.as_str()),
            ("127.0.0.1:7000", "/")
        );
        let e = Endpoint::parse("quic://[::1]:4433").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Quic, "::1", 4433)
        );
        assert_eq!(e.authority(), "[::1]:4433");
        assert_eq!(
            Endpoint::parse("WS://h").map(|e| e.port).ok(),
            Some(80),
            "schemes are case-insensitive"
        );
        for bad in [
            "http://h",
            "h:1",
            "ws://",
            "ws://:1",
            "ws://h:99999",
            "ws://u:p@h",
            "quic://[::1",
            "ws://h/a b",
            "ws://h/a\r\nX: y",
            "ws://h/#frag",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }
}
