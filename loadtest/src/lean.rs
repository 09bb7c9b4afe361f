//! A lean connection: the SDK's bare transport plus `Hello`, request ids and a reply wait that
//! keeps pushes for later. One per simulated user; no task, no queue of its own.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use chorus_client::ClientConfig;
use chorus_client::raw::{self, RawIncoming, RawReader, RawWriter};
use chorus_protocol::codec::encode_frame;
use chorus_protocol::limits::PROTOCOL_VERSION;
use chorus_protocol::v1::{
    self, ClientEnvelope, ServerEnvelope, client_envelope::Request, reply, server_envelope,
};

/// How long a request may wait for its reply: a node that never answers fails the run
/// instead of hanging it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection that said `Hello` and got `Welcome`.
pub struct Lean {
    /// Receiving half.
    pub reader: RawReader,
    /// Sending half.
    pub writer: RawWriter,
    /// The server's `Welcome`.
    pub welcome: v1::Welcome,
    /// Envelopes read while waiting for a reply, not yet handed out.
    pub pending: VecDeque<ServerEnvelope>,
    next_id: u64,
}

impl std::fmt::Debug for Lean {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lean")
            .field("session", &self.welcome.session_id)
            .finish_non_exhaustive()
    }
}

impl Lean {
    /// Connects (QUIC through `quic` when given) and says `Hello` with the token.
    pub async fn connect(
        config: &ClientConfig,
        token: &str,
        quic: Option<&raw::QuicEndpoint>,
    ) -> anyhow::Result<Self> {
        let (reader, writer) = raw::connect_via(config, quic).await?;
        let mut lean = Self {
            reader,
            writer,
            welcome: v1::Welcome::default(),
            pending: VecDeque::new(),
            next_id: 1,
        };
        let hello = Request::Hello(v1::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token.to_owned(),
            client: Some(v1::ClientInfo {
                name: "chorus-loadtest".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            resume: None,
        });
        match lean.request(hello).await? {
            reply::Result::Welcome(w) => lean.welcome = w,
            reply::Result::Error(e) => bail!("hello refused: {}", e.message),
            other => bail!("hello answered with {}", other.name()),
        }
        Ok(lean)
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends requests as one message (at most 256 per message, as the server accepts).
    pub async fn send(&mut self, requests: Vec<(u64, Request)>) -> anyhow::Result<()> {
        for chunk in requests.chunks(256) {
            let mut buf = BytesMut::new();
            for (id, request) in chunk {
                encode_frame(&ClientEnvelope::new(*id, request.clone()), &mut buf);
            }
            self.writer.send(buf.freeze()).await?;
        }
        Ok(())
    }

    /// Sends one request and waits for its reply; pushes that arrive meanwhile are kept.
    pub async fn request(&mut self, request: Request) -> anyhow::Result<reply::Result> {
        let id = self.next_id();
        let mut kept = VecDeque::new();
        let wait = async {
            self.send(vec![(id, request)]).await?;
            loop {
                let frames = match self.reader.next().await {
                    RawIncoming::Frames(f) => f,
                    RawIncoming::Closed { code, reason } => {
                        bail!("connection closed ({code:?}): {reason}")
                    }
                };
                let mut found = None;
                for env in frames {
                    match &env.kind {
                        Some(server_envelope::Kind::Reply(r))
                            if r.request_id == id && found.is_none() =>
                        {
                            found = Some(r.result.clone().context("empty reply")?);
                        }
                        _ => kept.push_back(env),
                    }
                }
                if let Some(r) = found {
                    break Ok(r);
                }
            }
        };
        let result = tokio::time::timeout(REPLY_TIMEOUT, wait).await;
        self.pending.extend(kept);
        result.map_err(|_| anyhow::anyhow!("no reply within {REPLY_TIMEOUT:?}"))?
    }

    /// Creates a public channel named after its id.
    pub async fn create_public(&mut self, channel: &str) -> anyhow::Result<()> {
        match self
            .request(Request::CreateChannel(v1::CreateChannel {
                kind: v1::ChannelKind::Public as i32,
                channel_id: channel.to_owned(),
                name: channel.to_owned(),
                ..Default::default()
            }))
            .await?
        {
            reply::Result::Channel(_) => Ok(()),
            other => bail!("creating {channel}: {other:?}"),
        }
    }

    /// Subscribes; returns the channel's head at that moment.
    pub async fn subscribe(&mut self, channel: &str) -> anyhow::Result<u64> {
        match self
            .request(Request::Subscribe(v1::Subscribe {
                channel_id: channel.to_owned(),
                since: None,
            }))
            .await?
        {
            reply::Result::Subscribed(s) => Ok(s.head_seq),
            reply::Result::Error(e) => bail!("subscribe {channel}: {}", e.message),
            other => bail!("subscribe answered with {}", other.name()),
        }
    }
}
