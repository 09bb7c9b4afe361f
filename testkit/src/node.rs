//! A node in-process: `chorus-server` started on 127.0.0.1:0 in a temporary directory.

use std::net::SocketAddr;

use chorus_server::Server;
use chorus_server::config::Config;

use crate::raw::Client;
use crate::token::{SECRET, token};

/// A node in a temporary directory.
pub struct Node {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub tweak: fn(&mut Config),
}

impl Node {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: fn(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = Self::boot(dir.path(), tweak).await;
        Self {
            server: Some(server),
            dir,
            tweak,
        }
    }

    async fn boot(dir: &std::path::Path, tweak: fn(&mut Config)) -> Server {
        let mut config = Config::for_tests(dir, SECRET);
        tweak(&mut config);
        Server::start(config).await.unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().ws_addr()
    }

    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(self.addr(), &token(user)).await
    }

    /// Graceful shutdown and a new node on the same data directory (new port).
    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await;
        self.server = Some(Self::boot(self.dir.path(), self.tweak).await);
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}
