//! The connection task: one per client, the async shell around a [`ClientSession`]. It owns the
//! transport, the timer, the app's queues and the token refresher's task, and only moves bytes,
//! time and commands between them and the session, which decides everything else (what to send,
//! when to reconnect, what the app sees).
//!
//! The `Client` handles talk to it through one bounded command channel; it talks back through
//! one-shot replies, the bounded event channel and the status watch. Events move into the app's
//! queue as far as it has room; when the session holds more (or waits to resubscribe a lagging
//! channel), the task waits for room with `Sender::reserve_many` instead of polling for it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chorus_protocol::v1::{self, client_envelope::Request};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use crate::config::{ClientConfig, TokenRefresher};
use crate::error::Error;
use crate::event::Event;
use crate::session::{Action, CallId, CallResult, ClientSession, RequestKind, SessionConfig};
use crate::status::Status;
use crate::transport::{self, Dial, Incoming, Reader, Writer};

/// How long a stopping client waits for the app to take each of its last events.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// What an app call resolves to.
pub(crate) type CallReply = oneshot::Sender<CallResult>;

/// From a `Client` handle to the task.
pub(crate) enum Command {
    Request {
        request: Request,
        kind: RequestKind,
        /// The caller stops waiting then; the session drops the request by then too.
        deadline: Instant,
        reply: CallReply,
    },
    Publish {
        publish: v1::Publish,
        reply: CallReply,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// A connection attempt in progress, with the QUIC endpoint it may have bound.
type Opening = Pin<
    Box<dyn Future<Output = (Result<(Reader, Writer), Error>, Option<quinn::Endpoint>)> + Send>,
>;

/// The session's clock: tokio's, so that tests under paused time drive the session too.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

pub(crate) struct Driver {
    session: ClientSession,
    dial: Dial,
    quic: Option<quinn::Endpoint>,
    refresher: Option<TokenRefresher>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    status: watch::Sender<Status>,
    status_version: u64,
    /// Each app call's reply channel, until the session answers it.
    calls: HashMap<CallId, CallReply>,
    opening: Option<Opening>,
    reader: Option<Reader>,
    writer: Option<Writer>,
    fetching: Option<JoinHandle<Result<String, String>>>,
    /// Learns how the first connection attempt went.
    first: Option<oneshot::Sender<Result<(), Error>>>,
    /// `close` calls waiting for the task to end.
    closing: Vec<oneshot::Sender<()>>,
    /// The app dropped its event stream: events are discarded (cursors still advance).
    app_gone: bool,
}

/// What woke the task.
enum Step {
    Incoming(Incoming),
    Opened(Result<(Reader, Writer), Error>, Option<quinn::Endpoint>),
    Command(Option<Command>),
    Fetched(Result<String, String>),
    Room { app_gone: bool },
    Tick,
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        status: watch::Sender<Status>,
    ) -> Self {
        let app = &config.app;
        let session = ClientSession::new(
            SessionConfig {
                token: config.token.clone(),
                has_refresher: config.refresher.is_some(),
                client: v1::ClientInfo {
                    name: app.name.clone(),
                    version: app.version.clone(),
                    device_id: app.device_id.clone(),
                    platform: app.platform.clone(),
                },
                connect_timeout: config.connect_timeout,
                outbox_capacity: config.outbox_capacity,
                event_capacity: config.event_capacity,
                request_queue: config.request_queue,
                backoff_base: config.backoff_base,
                backoff_cap: config.backoff_cap,
                reconnect: config.reconnect,
                seed: rand::random(),
            },
            now(),
        );
        Self {
            session,
            dial: config.dial(),
            quic: config.quic_endpoint.clone(),
            refresher: config.refresher.clone(),
            commands,
            events,
            status,
            status_version: 0,
            calls: HashMap::new(),
            opening: None,
            reader: None,
            writer: None,
            fetching: None,
            first: None,
            closing: Vec::new(),
            app_gone: false,
        }
    }

    /// Runs until the client is closed or the session stops. `first` learns how the first
    /// connection attempt went; if it failed, the task ends there.
    pub(crate) async fn run(mut self, first: oneshot::Sender<Result<(), Error>>) {
        self.first = Some(first);
        let error = loop {
            if let Some(error) = self.pump().await {
                break error;
            }
            let wake = self.session.poll_timeout();
            let room = self
                .session
                .wants_event_room()
                .filter(|_| !self.app_gone)
                .map(|n| n.min(self.events.max_capacity()));
            let take_commands = self.session.accepts_commands();
            let step = tokio::select! {
                incoming = next_incoming(&mut self.reader) => Step::Incoming(incoming),
                (opened, quic) = opened(&mut self.opening) => Step::Opened(opened, quic),
                command = self.commands.recv(), if take_commands => Step::Command(command),
                fetched = fetched(&mut self.fetching) => Step::Fetched(fetched),
                app_gone = room_for(&self.events, room) => Step::Room { app_gone },
                () = sleep_at(wake) => Step::Tick,
            };
            self.step(step).await;
        };
        self.finish(error).await;
    }

    async fn step(&mut self, step: Step) {
        let now = now();
        match step {
            Step::Incoming(Incoming::Frames(frames)) => {
                for env in frames {
                    self.session.handle_envelope(now, env);
                }
            }
            Step::Incoming(Incoming::Ended(ended)) => {
                // The server closed with a code: answer its close (RFC 6455 expects a close
                // frame back; proxies log a connection dropped without one).
                if ended.code.is_some()
                    && let Some(writer) = &mut self.writer
                {
                    writer.close().await;
                }
                self.drop_transport();
                self.session.disconnected(now, ended.code, ended.reason);
            }
            Step::Opened(result, quic) => {
                self.opening = None;
                if quic.is_some() {
                    self.quic = quic;
                }
                match result {
                    Ok((reader, writer)) => {
                        self.reader = Some(reader);
                        self.writer = Some(writer);
                        self.session.connected(now);
                    }
                    Err(e) => self.session.connect_failed(now, e),
                }
            }
            Step::Command(Some(command)) => self.command(now, command),
            // Every handle is gone: nobody can use the client any more.
            Step::Command(None) => self.session.close(now),
            Step::Fetched(result) => {
                self.fetching = None;
                self.session.token_fetched(now, result);
            }
            Step::Room { app_gone } => self.app_gone |= app_gone,
            Step::Tick => self.session.handle_timeout(now),
        }
    }

    fn command(&mut self, now: std::time::Instant, command: Command) {
        match command {
            Command::Request {
                request,
                kind,
                deadline,
                reply,
            } => {
                let call = self
                    .session
                    .request(now, request, kind, deadline.into_std());
                self.calls.insert(call, reply);
            }
            Command::Publish { publish, reply } => {
                let call = self.session.publish(now, publish);
                self.calls.insert(call, reply);
            }
            Command::Close { done } => {
                self.closing.push(done);
                self.session.close(now);
            }
        }
    }

    /// Carries out everything the session asks until it has nothing more; returns the
    /// session's error once it stopped.
    async fn pump(&mut self) -> Option<Error> {
        let mut stopped = None;
        loop {
            // Room in the app's queue first: it decides whether lagging channels are
            // resubscribed in this round's frames.
            self.deliver();
            let mut busy = false;
            while let Some(action) = self.session.poll_action() {
                busy = true;
                match action {
                    Action::Connect => {
                        self.opening = Some(Box::pin(open(self.dial.clone(), self.quic.clone())));
                    }
                    Action::Close { normal } => {
                        if normal && let Some(writer) = &mut self.writer {
                            writer.close().await;
                        }
                        self.drop_transport();
                    }
                    Action::FetchToken => self.fetch_token(),
                    Action::Ready => {
                        if let Some(first) = self.first.take() {
                            let _ = first.send(Ok(()));
                        }
                    }
                    Action::Stopped(error) => stopped = Some(error),
                }
            }
            // Frames exist only while a transport does.
            while let Some(writer) = self.writer.as_mut() {
                let Some(frames) = self.session.poll_transmit(now()) else {
                    break;
                };
                busy = true;
                if let Err(e) = writer.send(frames).await {
                    self.drop_transport();
                    self.session.disconnected(now(), None, e);
                }
            }
            if !busy {
                self.deliver();
                return stopped;
            }
        }
    }

    /// Moves replies, events and the status to the app.
    fn deliver(&mut self) {
        while let Some((call, result)) = self.session.poll_reply() {
            if let Some(reply) = self.calls.remove(&call) {
                // The caller may have stopped waiting; the call is done either way.
                let _ = reply.send(result);
            }
        }
        loop {
            if self.app_gone {
                while self.session.poll_event().is_some() {}
                self.session.set_event_room(usize::MAX);
                break;
            }
            match self.events.try_reserve() {
                Ok(permit) => match self.session.poll_event() {
                    Some(event) => permit.send(event),
                    None => break,
                },
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => self.app_gone = true,
            }
        }
        if !self.app_gone {
            self.session.set_event_room(self.events.capacity());
        }
        if self.session.status_version() != self.status_version {
            self.status_version = self.session.status_version();
            self.status.send_replace(self.session.status().clone());
        }
    }

    fn fetch_token(&mut self) {
        // A fetch still running from before serves this request as well: a fresh token is a
        // fresh token.
        if self.fetching.is_some() {
            return;
        }
        match &self.refresher {
            Some(refresher) => self.fetching = Some(tokio::spawn(refresher())),
            None => self
                .session
                .token_fetched(now(), Err("no token refresher is configured".into())),
        }
    }

    fn drop_transport(&mut self) {
        self.opening = None;
        self.reader = None;
        self.writer = None;
    }

    /// The session stopped: calls still coming in fail, the app gets its last events (the
    /// `Closed` event last), and `close` calls return.
    async fn finish(mut self, error: Error) {
        self.drop_transport();
        if let Some(task) = self.fetching.take() {
            task.abort();
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            self.command(now(), command);
        }
        self.deliver();
        if let Some(first) = self.first.take() {
            let _ = first.send(Err(error));
        }
        // An app that reads nothing for a while gets the rest dropped rather than a task that
        // never ends.
        while let Some(event) = self.session.poll_event() {
            if self.app_gone {
                break;
            }
            match timeout(CLOSE_FLUSH, self.events.send(event)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        for done in self.closing.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Opens a transport (no chorus handshake).
async fn open(
    dial: Dial,
    mut quic: Option<quinn::Endpoint>,
) -> (Result<(Reader, Writer), Error>, Option<quinn::Endpoint>) {
    let result = transport::connect(&dial, &mut quic).await;
    (result, quic)
}

async fn next_incoming(reader: &mut Option<Reader>) -> Incoming {
    match reader {
        Some(reader) => reader.next().await,
        None => std::future::pending().await,
    }
}

async fn opened(
    opening: &mut Option<Opening>,
) -> (Result<(Reader, Writer), Error>, Option<quinn::Endpoint>) {
    match opening {
        Some(opening) => opening.await,
        None => std::future::pending().await,
    }
}

async fn fetched(task: &mut Option<JoinHandle<Result<String, String>>>) -> Result<String, String> {
    match task {
        Some(task) => task.await.unwrap_or_else(|e| Err(e.to_string())),
        None => std::future::pending().await,
    }
}

/// Waits until the app's queue has `n` free slots; returns whether the app dropped its stream.
async fn room_for(events: &mpsc::Sender<Event>, n: Option<usize>) -> bool {
    match n {
        // The permits go back at once: the task only wanted to know there is room.
        Some(n) => events.reserve_many(n).await.is_err(),
        None => std::future::pending().await,
    }
}

async fn sleep_at(at: Option<std::time::Instant>) {
    match at {
        Some(at) => sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
