//! One authenticated connection: request dispatch, permission checks, subscriptions with gapless
//! recovery. Transport-independent: the transport feeds decoded envelopes and drains the
//! session's outbound queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chorus_protocol::codec::encode_frame_to_bytes;
use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::limits::{MAX_CLIENT_MSG_ID_BYTES, MAX_SERVER_FRAME_BYTES};
use chorus_protocol::v1::{
    self, ChannelKind, ChannelSummary, Error, ErrorCode, MemberAction, RecoveryFailure, Role,
    ServerEnvelope, channel_event::Body, client_envelope::Request, reply,
};
use chorus_storage::{Anchor, ChannelInfo, LogQuery, NewChannel, NewEntry, Store, StoreError};
use dashmap::DashMap;
use prost::Message;

use crate::auth::{Identity, Verifier};
use crate::clock::unix_ms;
use crate::config::Config;
use crate::hub::{Hub, SessionKey, SubState, Subscription};
use crate::outbound::Outbound;
use crate::ratelimit::TokenBucket;

/// Entries read per step of a replay.
const REPLAY_PAGE: usize = 256;
/// Memberships read per step of a walk over a user's channels.
const MEMBERSHIP_PAGE: usize = 512;
/// Reply results are at most this many bytes: larger pages are cut.
const MAX_REPLY_BYTES: usize = MAX_SERVER_FRAME_BYTES as usize / 2;

/// What every session shares.
pub struct Shared {
    /// The store.
    pub store: Store,
    /// The registries.
    pub hub: Arc<Hub>,
    /// The node's configuration.
    pub config: Config,
    /// Token verification.
    pub verifier: Verifier,
    /// Publish budgets, per user (all of a user's sessions share one).
    pub publish_buckets: DashMap<UserId, Mutex<TokenBucket>>,
    /// Budgets for memberships a user takes (`CreateChannel`, `JoinChannel`), per user.
    pub membership_buckets: DashMap<UserId, Mutex<TokenBucket>>,
    /// Connections and handshake budget per source address.
    pub per_ip: DashMap<std::net::IpAddr, crate::admission::PerIp>,
    /// Open connections of the node (the node-wide cap).
    pub connections: crate::admission::ConnectionCount,
    /// What the process's open-file limit allows (set at start).
    pub fd_budget: crate::admission::FdBudget,
    /// Background work sessions start; shutdown waits for it, so that nothing holds the store
    /// after the node stops.
    pub background: tokio_util::task::TaskTracker,
    /// Read markers moved by users' own posts, written in the background.
    pub own_reads: Arc<crate::own_reads::OwnReads>,
    /// Set when shutdown starts: `/readyz` turns 503.
    pub draining: std::sync::atomic::AtomicBool,
    /// Cancelled when shutdown starts: long background jobs (erasures) stop between steps.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The erasures running now, with their progress.
    pub erasures: crate::control::erasure::Running,
    /// The limits in force; `config reload` replaces them (new connections and new requests
    /// see the new ones).
    limits: std::sync::RwLock<Arc<crate::config::LimitsConfig>>,
    /// When the node started.
    pub started: std::time::Instant,
    /// Cancelled to stop accepting connections (drain, shutdown).
    pub accepting: tokio_util::sync::CancellationToken,
    /// Live counters for `status`.
    pub stats: crate::stats::NodeStats,
    /// The QUIC socket, when QUIC is on (its drops go into `/metrics`).
    pub quic_socket: Option<crate::quic::SocketInfo>,
    next_key: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Shared state for a node.
    pub fn new(store: Store, hub: Arc<Hub>, config: Config, verifier: Verifier) -> Self {
        Self {
            store,
            hub,
            verifier,
            publish_buckets: DashMap::new(),
            membership_buckets: DashMap::new(),
            per_ip: DashMap::new(),
            connections: Default::default(),
            fd_budget: crate::admission::FdBudget::new(None, 0),
            background: tokio_util::task::TaskTracker::new(),
            own_reads: Arc::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            stopping: tokio_util::sync::CancellationToken::new(),
            erasures: Default::default(),
            limits: std::sync::RwLock::new(Arc::new(config.limits.clone())),
            started: std::time::Instant::now(),
            accepting: tokio_util::sync::CancellationToken::new(),
            stats: crate::stats::NodeStats::default(),
            quic_socket: None,
            next_key: std::sync::atomic::AtomicU64::new(1),
            config,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Arc<crate::config::LimitsConfig> {
        self.limits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts new limits in force. Publish budgets restart with the new rates.
    pub fn set_limits(&self, limits: crate::config::LimitsConfig) {
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(limits);
        self.publish_buckets.clear();
        self.membership_buckets.clear();
    }

    /// A fresh session key.
    pub fn next_key(&self) -> SessionKey {
        self.next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Takes one token from `user`'s bucket in `buckets`, made with `rate` and `burst` on first
/// use; `Err` holds the milliseconds until a token is available.
pub(crate) fn take_budget(
    buckets: &DashMap<UserId, Mutex<TokenBucket>>,
    user: &UserId,
    rate: u32,
    burst: u32,
) -> Result<(), u32> {
    let take = |bucket: &Mutex<TokenBucket>| {
        bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now())
    };
    // Looked up before inserting: an insert needs the user id by value, a copy per call where
    // the bucket nearly always exists (this is on every publish).
    match buckets.get(user) {
        Some(bucket) => take(&bucket),
        None => take(
            &buckets
                .entry(user.clone())
                .or_insert_with(|| Mutex::new(TokenBucket::new(rate, burst, Instant::now()))),
        ),
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::new(code, message)
}

/// Also what a non-member is told of a private channel: it is not revealed.
fn channel_not_found(id: &ChannelId) -> Error {
    err(ErrorCode::NotFound, format!("channel {id} not found"))
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::new(ErrorCode::Invalid, message).with_field(field)
}

/// Maps store failures to protocol errors.
pub fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::ChannelNotFound(c) => {
            err(ErrorCode::NotFound, format!("channel {c} not found"))
        }
        StoreError::ChannelExists(c) => err(ErrorCode::Conflict, format!("channel {c} exists")),
        StoreError::NotMember { .. } => err(ErrorCode::NotFound, "not a member"),
        StoreError::EntryNotFound { seq, .. } => {
            err(ErrorCode::NotFound, format!("entry {seq} not found"))
        }
        StoreError::Invalid(m) => err(ErrorCode::Invalid, m),
        // Refused before the engine saw it: nothing changed.
        StoreError::ReadOnly(_) | StoreError::Closed => {
            err(ErrorCode::Unavailable, "storage unavailable").with_retry_after_ms(1000)
        }
        // Refused before anything was assigned: nothing changed, and writes resume by
        // themselves once space is freed.
        StoreError::DiskFull { .. } => {
            err(ErrorCode::Unavailable, "storage almost full").with_retry_after_ms(5000)
        }
        // The engine failed while writing this request: it may be stored. INTERNAL is the
        // code whose outcome the spec leaves unknown; an idempotent retry settles it.
        StoreError::OutcomeUnknown(cause) => err(
            ErrorCode::Internal,
            format!("outcome unknown, retry with the same client_msg_id: {cause}"),
        ),
        other => err(ErrorCode::Internal, other.to_string()),
    }
}

fn channel_id(field: &str, s: &str) -> Result<ChannelId, Error> {
    ChannelId::new(s).map_err(|e| invalid(field, e.to_string()))
}

fn user_id(field: &str, s: &str) -> Result<UserId, Error> {
    UserId::new(s).map_err(|e| invalid(field, e.to_string()))
}

pub(crate) fn random_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

/// A reply that waits for something durable (a publish): the connection keeps reading
/// meanwhile and sends the reply when it resolves.
pub type PendingReply =
    std::pin::Pin<Box<dyn std::future::Future<Output = (u64, reply::Result)> + Send>>;

/// The durable half of a request.
type Durable =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<reply::Result, Error>> + Send>>;

/// What a replay does after finding no more entries.
enum ReplayStep {
    /// Switched to live, or the subscription ended elsewhere.
    Stop,
    /// Read again.
    Again,
    /// End the subscription with this reason.
    End(Error),
}

/// What a subscribe decided; the replay runs after its reply is queued.
pub struct ReplayPlan {
    channel: ChannelId,
    sub: Arc<Subscription>,
    from: Seq,
}

/// One authenticated connection.
pub struct Session {
    shared: Arc<Shared>,
    /// The hub key.
    pub key: SessionKey,
    /// The id announced in `Welcome`.
    pub session_id: String,
    /// Who.
    pub identity: Identity,
    /// The connection's queue.
    pub outbound: Arc<Outbound>,
    subscriptions: HashMap<ChannelId, Arc<Subscription>>,
    ephemeral: TokenBucket,
    /// Read receipts this session may send to other members (its own bucket, so that typing
    /// and reading do not starve each other).
    receipts: TokenBucket,
}

impl Session {
    /// A session for a verified identity; the caller registers it in the hub.
    pub fn new(
        shared: Arc<Shared>,
        key: SessionKey,
        session_id: String,
        identity: Identity,
        outbound: Arc<Outbound>,
    ) -> Self {
        let rate = shared.limits().ephemeral_rate_per_sec;
        Self {
            session_id,
            ephemeral: TokenBucket::new(rate, rate.max(1) * 2, Instant::now()),
            receipts: TokenBucket::new(rate, rate.max(1) * 2, Instant::now()),
            shared,
            key,
            identity,
            outbound,
            subscriptions: HashMap::new(),
        }
    }

    /// The largest reply body sent: under both the frame limit and half the outbound budget,
    /// so that one reply can never close its own connection as a slow consumer.
    fn max_reply_bytes(&self) -> usize {
        MAX_REPLY_BYTES.min(self.shared.limits().max_outbound_queue_bytes as usize / 2)
    }

    /// Channels this session is subscribed to.
    pub fn subscribed(&self) -> Vec<ChannelId> {
        self.subscriptions.keys().cloned().collect()
    }

    /// Queues a reply.
    pub fn reply(&self, request_id: u64, result: reply::Result) {
        self.outbound
            .push(encode_frame_to_bytes(&ServerEnvelope::reply(
                request_id, result,
            )));
    }

    /// Handles one request (not `Hello`: the handshake took it) and queues its reply.
    pub async fn handle(&mut self, request_id: u64, request: Request) -> Option<PendingReply> {
        let name = request.name();
        let result = match request {
            Request::Publish(p) => match self.publish(p).await {
                Ok(durable) => {
                    let session = self.session_id.clone();
                    return Some(Box::pin(async move {
                        let result = durable.await.unwrap_or_else(|e| {
                            tracing::debug!(%session, request = "publish", error = %e, "request failed");
                            reply::Result::Error(e)
                        });
                        (request_id, result)
                    }));
                }
                Err(e) => Err(e),
            },
            Request::Subscribe(s) => match self.subscribe(s).await {
                Ok((subscribed, plan)) => {
                    self.reply(request_id, reply::Result::Subscribed(subscribed));
                    self.replay(plan).await;
                    return None;
                }
                Err(e) => Err(e),
            },
            other => self.dispatch(other).await,
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(session = %self.session_id, request = name, error = %e, "request failed");
                reply::Result::Error(e)
            }
        };
        self.reply(request_id, result);
        None
    }

    async fn dispatch(&mut self, request: Request) -> Result<reply::Result, Error> {
        match request {
            Request::Hello(_) => Err(err(
                ErrorCode::Invalid,
                "the session is already established",
            )),
            Request::Ping(p) => Ok(reply::Result::Pong(v1::Pong {
                client_time_ms: p.client_time_ms,
                server_time_ms: unix_ms(),
            })),
            Request::RefreshToken(r) => self.refresh(&r.token),
            Request::CreateChannel(c) => self.create_channel(c).await,
            Request::GetChannel(g) => {
                let id = channel_id("channel_id", &g.channel_id)?;
                let info = self.readable(&id)?;
                Ok(reply::Result::Channel(self.summary(&info)?))
            }
            Request::ListChannels(l) => self.list_channels(l),
            Request::JoinChannel(j) => self.join(j).await,
            Request::LeaveChannel(l) => self.leave(l).await,
            Request::AddMembers(a) => self.add_members(a).await,
            Request::RemoveMember(r) => self.remove_member(r).await,
            Request::SetMemberRole(s) => self.set_role(s).await,
            Request::ListMembers(l) => self.list_members(l),
            Request::Publish(_) => Err(err(ErrorCode::Internal, "publish is dispatched by handle")),
            Request::Unsubscribe(u) => {
                let id = channel_id("channel_id", &u.channel_id)?;
                let removed = self.subscriptions.remove(&id);
                if removed.is_some() {
                    metrics::gauge!("chorus_subscriptions").decrement(1.0);
                }
                let was_live = removed.is_some_and(|s| {
                    *s.state.lock().unwrap_or_else(|p| p.into_inner()) != SubState::Ended
                });
                if !was_live {
                    return Err(err(ErrorCode::NotFound, "not subscribed"));
                }
                self.shared.hub.unsubscribe(&id, self.key);
                Ok(reply::Result::Done(v1::Done {}))
            }
            Request::History(h) => self.history(h),
            Request::MarkRead(m) => {
                let id = channel_id("channel_id", &m.channel_id)?;
                let info = self.readable(&id)?;
                let store = &self.shared.store;
                let user = &self.identity.user;
                let moved = store
                    .advance_read_marker(user, &id, Seq(m.seq), unix_ms())
                    .await
                    .map_err(store_error)?;
                let state = self.read_state(&id)?;
                let marker = v1::ReadMarker {
                    channel_id: id.to_string(),
                    user_id: user.to_string(),
                    seq: state.last_read.get(),
                    unread_count: state.unread,
                    updated_at_ms: state.updated_at_ms,
                };
                if moved {
                    self.tell_read(&id, &info, &marker);
                }
                Ok(reply::Result::ReadMarker(marker))
            }
            Request::GetUnread(g) => self.unread(g),
            Request::Typing(t) => self.typing(t),
            Request::EditMessage(e) => self.edit(e).await,
            Request::DeleteMessage(d) => self.delete(d).await,
            Request::UpdateChannel(u) => {
                let id = channel_id("channel_id", &u.channel_id)?;
                let patch = chorus_storage::ChannelPatch {
                    name: u.name.clone(),
                    topic: u.topic.clone(),
                    custom: u.custom.clone(),
                    ..Default::default()
                };
                let change = v1::ChannelChanged {
                    name: u.name,
                    topic: u.topic,
                    archived: None,
                    custom: u.custom,
                };
                self.change_channel(&id, patch, change).await
            }
            Request::ArchiveChannel(a) => {
                let id = channel_id("channel_id", &a.channel_id)?;
                let patch = chorus_storage::ChannelPatch {
                    archived: Some(a.archived),
                    ..Default::default()
                };
                let change = v1::ChannelChanged {
                    archived: Some(a.archived),
                    ..Default::default()
                };
                self.change_channel(&id, patch, change).await
            }
            other => Err(err(
                ErrorCode::Unimplemented,
                format!("{} is not implemented by this node yet", other.name()),
            )),
        }
    }

    fn refresh(&mut self, token: &str) -> Result<reply::Result, Error> {
        let identity = self
            .shared
            .verifier
            .verify(token)
            .map_err(|e| err(ErrorCode::Unauthenticated, e.to_string()))?;
        if identity.user != self.identity.user {
            return Err(err(ErrorCode::Forbidden, "the token names another user"));
        }
        crate::connection::admissible(&self.shared, &identity)
            .map_err(|(code, message, _)| err(code, message))?;
        let expires = identity.expires_at_ms;
        self.identity = identity;
        Ok(reply::Result::TokenRefreshed(v1::TokenRefreshed {
            token_expires_at_ms: expires,
        }))
    }

    /// A marker moved: the user's other sessions get it (with the unread count, to clear their
    /// badges). The other subscribers get it as a read receipt (without the count, which is the
    /// user's own) when the reader is a member, the channel has at most
    /// `read_receipt_max_members` members and subscribers (a public channel's readers need not
    /// be members), and the session is within its receipt rate: every receipt is one push per
    /// subscriber.
    fn tell_read(&mut self, id: &ChannelId, info: &ChannelInfo, marker: &v1::ReadMarker) {
        let push = |m: v1::ReadMarker| {
            encode_frame_to_bytes(&ServerEnvelope::push(v1::push::Push::ReadMarker(m)))
        };
        let user = &self.identity.user;
        self.shared
            .hub
            .push_to_user(user, &push(marker.clone()), self.key);
        let limit = self.shared.limits().read_receipt_max_members;
        let skipped = if limit == 0 {
            Some("off")
        } else if info.record.member_count > limit {
            Some("too_many_members")
        } else if !matches!(self.role(id), Ok(Some(_))) {
            Some("not_member")
        } else if self.receipts.take(Instant::now()).is_err() {
            Some("rate_limited")
        } else {
            None
        };
        if let Some(reason) = skipped {
            metrics::counter!("chorus_read_receipts_skipped_total", "reason" => reason)
                .increment(1);
            return;
        }
        let receipt = v1::ReadMarker {
            unread_count: 0,
            ..marker.clone()
        };
        self.shared.hub.broadcast_to_others(
            id,
            &push(receipt),
            &self.identity.user,
            limit as usize,
        );
    }

    /// The channel, if this user may read it.
    fn readable(&self, id: &ChannelId) -> Result<ChannelInfo, Error> {
        let info = self.existing_channel(id)?;
        if info.record.kind() == ChannelKind::Public || self.role(id)?.is_some() {
            return Ok(info);
        }
        // Private channels are not revealed to non-members.
        Err(channel_not_found(id))
    }

    fn existing_channel(&self, id: &ChannelId) -> Result<ChannelInfo, Error> {
        self.shared
            .store
            .channel(id)
            .map_err(store_error)?
            .ok_or_else(|| channel_not_found(id))
    }

    /// [`Self::readable`] and the caller's membership, read once: a publish needs both, and
    /// reading the member record twice (once for visibility, once for the mute) was a third of
    /// the record reads of every publish to a private channel.
    fn readable_with_member(
        &self,
        id: &ChannelId,
    ) -> Result<(ChannelInfo, Option<chorus_storage::MemberRecord>), Error> {
        let info = self.existing_channel(id)?;
        let member = self
            .shared
            .store
            .member(id, &self.identity.user)
            .map_err(store_error)?;
        if info.record.kind() == ChannelKind::Public || member.is_some() {
            return Ok((info, member));
        }
        Err(channel_not_found(id))
    }

    fn role(&self, id: &ChannelId) -> Result<Option<Role>, Error> {
        Ok(self
            .shared
            .store
            .member(id, &self.identity.user)
            .map_err(store_error)?
            .map(|m| m.role()))
    }

    /// The caller's role, which must be at least `min`, on a readable channel.
    fn require_role(&self, id: &ChannelId, min: Role) -> Result<(ChannelInfo, Role), Error> {
        let info = self.readable(id)?;
        let role = self.role(id)?.unwrap_or(Role::Unspecified);
        if role_rank(role) < role_rank(min) {
            return Err(err(
                ErrorCode::Forbidden,
                format!("needs role {}", min.as_str_name()),
            ));
        }
        Ok((info, role))
    }

    fn summary(&self, info: &ChannelInfo) -> Result<ChannelSummary, Error> {
        summary_for(&self.shared, &self.identity.user, info)
    }

    async fn append_event(&self, id: &ChannelId, body: Body) -> Result<v1::Appended, Error> {
        self.append_keyed(id, body, "").await
    }

    async fn member_event(
        &self,
        id: &ChannelId,
        user: &UserId,
        action: MemberAction,
        role: Role,
    ) -> Result<(), Error> {
        self.append_event(
            id,
            Body::MemberChanged(v1::MemberChanged {
                user_id: user.to_string(),
                action: action as i32,
                role: role as i32,
                until_ms: 0,
            }),
        )
        .await?;
        tell_membership(&self.shared, user, id, action);
        Ok(())
    }

    /// Takes one membership the caller acquires itself (creating or joining a channel) from
    /// the caller's budget.
    fn take_membership_budget(&self) -> Result<(), Error> {
        let limits = self.shared.limits();
        take_budget(
            &self.shared.membership_buckets,
            &self.identity.user,
            limits.membership_rate_per_sec,
            limits.membership_burst,
        )
        .map_err(|wait_ms| {
            metrics::counter!("chorus_rate_limited_total", "kind" => "membership").increment(1);
            err(
                ErrorCode::RateLimited,
                "channel creation and join rate exceeded",
            )
            .with_retry_after_ms(wait_ms)
        })
    }

    /// Refuses a change that writes a record and then logs it (membership changes) while the
    /// store takes no new entries (free-space watermark): refused before the record is
    /// written, so that `UNAVAILABLE` stays true and the log never misses the change.
    fn can_log(&self) -> Result<(), Error> {
        self.shared.store.check_growth().map_err(store_error)
    }

    /// Refuses a new membership for any of `users` already at `max_memberships_per_user`.
    fn check_membership_room<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        field: &str,
    ) -> Result<(), Error> {
        membership_room(&self.shared, users).map_err(|e| e.with_field(field))
    }

    async fn create_channel(&mut self, c: v1::CreateChannel) -> Result<reply::Result, Error> {
        let kind = ChannelKind::try_from(c.kind).unwrap_or(ChannelKind::Unspecified);
        let now = unix_ms();
        let store = &self.shared.store;
        let me = self.identity.user.clone();
        if c.name.len() > 256 || c.topic.len() > 1024 {
            return Err(err(ErrorCode::TooLarge, "name or topic too long"));
        }
        if c.custom.len() > self.shared.limits().max_message_bytes as usize {
            return Err(err(ErrorCode::TooLarge, "custom data too large").with_field("custom"));
        }
        let info = match kind {
            ChannelKind::Direct => {
                let [other] = c.member_ids.as_slice() else {
                    return Err(invalid(
                        "member_ids",
                        "a direct channel names exactly one other user",
                    ));
                };
                let other = user_id("member_ids", other)?;
                if other == me {
                    return Err(invalid(
                        "member_ids",
                        "a direct channel needs two different users",
                    ));
                }
                if store
                    .direct_channel_of(&me, &other)
                    .map_err(store_error)?
                    .is_none()
                {
                    self.check_membership_room([&me, &other], "member_ids")?;
                    self.take_membership_budget()?;
                }
                let id = channel_id("channel_id", &random_id("dm-"))?;
                let (info, created) = store
                    .direct_channel(&me, &other, id, now)
                    .await
                    .map_err(store_error)?;
                if created {
                    self.member_event(&info.id, &me, MemberAction::Joined, Role::Owner)
                        .await?;
                    self.member_event(&info.id, &other, MemberAction::Added, Role::Owner)
                        .await?;
                }
                info
            }
            ChannelKind::Group | ChannelKind::Public => {
                let id = if c.channel_id.is_empty() {
                    random_id("c-")
                } else {
                    c.channel_id.clone()
                };
                let id = channel_id("channel_id", &id)?;
                let mut members: Vec<(UserId, Role)> = Vec::with_capacity(c.member_ids.len());
                for m in &c.member_ids {
                    let user = user_id("member_ids", m)?;
                    // Named twice, added once: one `ADDED` entry per member.
                    if !members.iter().any(|(u, _)| *u == user) {
                        members.push((user, Role::Member));
                    }
                }
                if members.len() > 1000 {
                    return Err(err(ErrorCode::TooLarge, "at most 1000 initial members"));
                }
                self.check_membership_room(
                    std::iter::once(&me).chain(members.iter().map(|(u, _)| u)),
                    "member_ids",
                )?;
                self.take_membership_budget()?;
                let info = store
                    .create_channel(NewChannel {
                        id: id.clone(),
                        kind,
                        name: c.name,
                        topic: c.topic,
                        created_by: me.clone(),
                        created_at_ms: now,
                        members: members.clone(),
                        custom: c.custom,
                        retention: Default::default(),
                    })
                    .await
                    .map_err(store_error)?;
                self.member_event(&id, &me, MemberAction::Joined, Role::Owner)
                    .await?;
                for (user, _) in &members {
                    if *user != me {
                        self.member_event(&id, user, MemberAction::Added, Role::Member)
                            .await?;
                    }
                }
                info
            }
            _ => return Err(invalid("kind", "kind must be direct, group or public")),
        };
        let info = store
            .channel(&info.id)
            .map_err(store_error)?
            .unwrap_or(info);
        Ok(reply::Result::Channel(self.summary(&info)?))
    }

    /// The user's channels, newest activity first (the time of the newest entry, or the
    /// creation for an empty log; ties by id). Every membership is read to sort them, at most
    /// `max_memberships_per_user`.
    fn list_channels(&self, l: v1::ListChannels) -> Result<reply::Result, Error> {
        let limit = clamp_limit(l.limit, 50, self.shared.limits().announced().max_list_limit);
        let store = &self.shared.store;
        let after = if l.cursor.is_empty() {
            None
        } else {
            Some(ActivityCursor::parse(&l.cursor).ok_or_else(|| invalid("cursor", "bad cursor"))?)
        };
        let max = self.shared.limits().max_memberships_per_user as usize;
        let mut mine: Vec<(ActivityCursor, ChannelInfo)> = Vec::new();
        let mut from: Option<ChannelId> = None;
        while mine.len() < max {
            let page = store
                .user_channels(
                    &self.identity.user,
                    from.as_ref(),
                    MEMBERSHIP_PAGE.min(max - mine.len()),
                )
                .map_err(store_error)?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for id in page {
                if let Some(info) = store.channel(&id).map_err(store_error)? {
                    mine.push((ActivityCursor::of(store, &info)?, info));
                }
            }
            from = Some(last);
        }
        mine.sort_by(|a, b| a.0.cmp(&b.0));
        // Public channels found below carry no cursor: such a listing is one page.
        let mut infos: Vec<(Option<ActivityCursor>, ChannelInfo)> = mine
            .into_iter()
            .filter(|(key, _)| after.as_ref().is_none_or(|a| key > a))
            .map(|(key, info)| (Some(key), info))
            .take(limit + 1)
            .collect();
        let more_mine = infos.len() > limit;
        infos.truncate(limit);
        if l.include_public && infos.len() < limit {
            // Public channels the user has not joined, after the joined ones.
            let mut from = None;
            while infos.len() < limit {
                let page = store.channels(from.as_ref(), 256).map_err(store_error)?;
                let Some(last) = page.last().cloned() else {
                    break;
                };
                for id in page {
                    if infos.len() >= limit || infos.iter().any(|(_, i)| i.id == id) {
                        continue;
                    }
                    if let Some(info) = store.channel(&id).map_err(store_error)?
                        && info.record.kind() == ChannelKind::Public
                        && self.role(&id)?.is_none()
                    {
                        infos.push((None, info));
                    }
                }
                from = Some(last);
            }
        }
        let mut channels = Vec::with_capacity(infos.len());
        let mut bytes = 0;
        let mut cut_after: Option<ActivityCursor> = None;
        for (key, info) in &infos {
            let summary = self.summary(info)?;
            bytes += summary.encoded_len() + 8;
            if bytes > self.max_reply_bytes() && !channels.is_empty() {
                break;
            }
            channels.push(summary);
            cut_after = key.clone();
        }
        let full_page = more_mine || channels.len() < infos.len();
        let next_cursor = if full_page && !l.include_public {
            cut_after.map(|c| c.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(reply::Result::ChannelList(v1::ChannelList {
            channels,
            next_cursor,
        }))
    }

    async fn join(&mut self, j: v1::JoinChannel) -> Result<reply::Result, Error> {
        let id = channel_id("channel_id", &j.channel_id)?;
        let info = self.readable(&id)?;
        if self.role(&id)?.is_some() {
            // Already a member, of any kind of channel: nothing to write.
            return Ok(reply::Result::Channel(self.summary(&info)?));
        }
        if info.record.kind() != ChannelKind::Public {
            return Err(err(
                ErrorCode::Forbidden,
                "only public channels can be joined",
            ));
        }
        if self.banned_from(&id)? {
            return Err(err(ErrorCode::Forbidden, "banned from this channel"));
        }
        self.check_membership_room([&self.identity.user], "channel_id")?;
        self.can_log()?;
        self.take_membership_budget()?;
        let me = self.identity.user.clone();
        if self
            .shared
            .store
            .add_member(&id, &me, Role::Member, unix_ms())
            .await
            .map_err(store_error)?
        {
            self.member_event(&id, &me, MemberAction::Joined, Role::Member)
                .await?;
        }
        let info = self.readable(&id)?;
        Ok(reply::Result::Channel(self.summary(&info)?))
    }

    fn banned_from(&self, id: &ChannelId) -> Result<bool, Error> {
        Ok(self
            .shared
            .store
            .ban_of(
                chorus_storage::BanScope::Channel(id),
                &self.identity.user,
                unix_ms(),
            )
            .map_err(store_error)?
            .is_some())
    }

    async fn leave(&mut self, l: v1::LeaveChannel) -> Result<reply::Result, Error> {
        let id = channel_id("channel_id", &l.channel_id)?;
        let role = self
            .role(&id)?
            .ok_or_else(|| err(ErrorCode::NotFound, "not a member"))?;
        if role == Role::Owner && self.owner_count(&id)? <= 1 {
            let info = self.readable(&id)?;
            if info.record.kind() != ChannelKind::Direct && info.record.member_count > 1 {
                return Err(err(
                    ErrorCode::Conflict,
                    "the last owner must hand over ownership first",
                ));
            }
        }
        self.can_log()?;
        let me = self.identity.user.clone();
        self.shared
            .store
            .remove_member(&id, &me)
            .await
            .map_err(store_error)?;
        self.member_event(&id, &me, MemberAction::Left, Role::Unspecified)
            .await?;
        Ok(reply::Result::Done(v1::Done {}))
    }

    fn owner_count(&self, id: &ChannelId) -> Result<usize, Error> {
        let mut count = 0;
        let mut after: Option<UserId> = None;
        loop {
            let page = self
                .shared
                .store
                .members(id, after.as_ref(), 500)
                .map_err(store_error)?;
            let Some((last, _)) = page.last().cloned() else {
                break;
            };
            count += page.iter().filter(|(_, m)| m.role() == Role::Owner).count();
            after = Some(last);
        }
        Ok(count)
    }

    async fn add_members(&mut self, a: v1::AddMembers) -> Result<reply::Result, Error> {
        let id = channel_id("channel_id", &a.channel_id)?;
        let (info, _) = self.require_role(&id, Role::Moderator)?;
        if info.record.kind() == ChannelKind::Direct {
            return Err(err(
                ErrorCode::Forbidden,
                "direct channels have exactly two members",
            ));
        }
        if a.user_ids.len() > 1000 {
            return Err(err(ErrorCode::TooLarge, "at most 1000 users at once"));
        }
        let users = a
            .user_ids
            .iter()
            .map(|u| user_id("user_ids", u))
            .collect::<Result<Vec<_>, _>>()?;
        // Checked for all before adding any: the request adds everyone or no one.
        let mut new_users = Vec::with_capacity(users.len());
        for user in &users {
            if self
                .shared
                .store
                .member(&id, user)
                .map_err(store_error)?
                .is_none()
            {
                new_users.push(user);
            }
        }
        self.check_membership_room(new_users, "user_ids")?;
        self.can_log()?;
        for user in users {
            if self
                .shared
                .store
                .add_member(&id, &user, Role::Member, unix_ms())
                .await
                .map_err(store_error)?
            {
                self.member_event(&id, &user, MemberAction::Added, Role::Member)
                    .await?;
            }
        }
        Ok(reply::Result::Done(v1::Done {}))
    }

    async fn remove_member(&mut self, r: v1::RemoveMember) -> Result<reply::Result, Error> {
        let id = channel_id("channel_id", &r.channel_id)?;
        let (info, my_role) = self.require_role(&id, Role::Moderator)?;
        if info.record.kind() == ChannelKind::Direct {
            return Err(err(
                ErrorCode::Forbidden,
                "direct channels have exactly two members",
            ));
        }
        let user = user_id("user_id", &r.user_id)?;
        if user == self.identity.user {
            // Leaving has its own rules (the last owner stays).
            return Err(invalid("user_id", "use LeaveChannel to leave a channel"));
        }
        let theirs = self
            .shared
            .store
            .member(&id, &user)
            .map_err(store_error)?
            .ok_or_else(|| err(ErrorCode::NotFound, "not a member"))?
            .role();
        if role_rank(theirs) >= role_rank(my_role) && user != self.identity.user {
            return Err(err(
                ErrorCode::Forbidden,
                "cannot remove a member of equal or higher role",
            ));
        }
        self.can_log()?;
        self.shared
            .store
            .remove_member(&id, &user)
            .await
            .map_err(store_error)?;
        self.member_event(&id, &user, MemberAction::Removed, Role::Unspecified)
            .await?;
        Ok(reply::Result::Done(v1::Done {}))
    }

    async fn set_role(&mut self, s: v1::SetMemberRole) -> Result<reply::Result, Error> {
        let id = channel_id("channel_id", &s.channel_id)?;
        let (info, _) = self.require_role(&id, Role::Owner)?;
        if info.record.kind() == ChannelKind::Direct {
            return Err(err(
                ErrorCode::Forbidden,
                "both users of a direct channel are owners",
            ));
        }
        let user = user_id("user_id", &s.user_id)?;
        let role = Role::try_from(s.role).unwrap_or(Role::Unspecified);
        if role == Role::Unspecified {
            return Err(invalid("role", "role must be member, moderator or owner"));
        }
        if self
            .shared
            .store
            .member(&id, &user)
            .map_err(store_error)?
            .is_none()
        {
            return Err(err(ErrorCode::NotFound, "not a member"));
        }
        if user == self.identity.user && role != Role::Owner && self.owner_count(&id)? <= 1 {
            return Err(err(ErrorCode::Conflict, "the last owner cannot step down"));
        }
        self.can_log()?;
        self.shared
            .store
            .put_member(&id, &user, role, unix_ms())
            .await
            .map_err(store_error)?;
        self.member_event(&id, &user, MemberAction::RoleChanged, role)
            .await?;
        Ok(reply::Result::Done(v1::Done {}))
    }

    fn list_members(&self, l: v1::ListMembers) -> Result<reply::Result, Error> {
        let id = channel_id("channel_id", &l.channel_id)?;
        self.readable(&id)?;
        let limit = clamp_limit(
            l.limit,
            100,
            self.shared.limits().announced().max_list_limit,
        );
        let after = if l.cursor.is_empty() {
            None
        } else {
            Some(user_id("cursor", &l.cursor)?)
        };
        let page = self
            .shared
            .store
            .members(&id, after.as_ref(), limit)
            .map_err(store_error)?;
        let next_cursor = if page.len() >= limit {
            page.last().map(|(u, _)| u.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(reply::Result::MemberList(v1::MemberList {
            members: page
                .into_iter()
                .map(|(u, m)| v1::Member {
                    user_id: u.to_string(),
                    role: m.role,
                    joined_at_ms: m.joined_at_ms,
                    muted_until_ms: m.muted_until_ms,
                })
                .collect(),
            next_cursor,
        }))
    }

    async fn publish(&mut self, p: v1::Publish) -> Result<Durable, Error> {
        let id = channel_id("channel_id", &p.channel_id)?;
        let message = p
            .message
            .ok_or_else(|| invalid("message", "message is required"))?;
        let limits = &self.shared.limits();
        if message.client_msg_id.is_empty() || message.client_msg_id.len() > MAX_CLIENT_MSG_ID_BYTES
        {
            return Err(invalid(
                "message.client_msg_id",
                "client_msg_id must be 1 to 64 bytes",
            ));
        }
        let content = message.text.len()
            + message.custom.len()
            + message
                .attachments
                .iter()
                .map(Message::encoded_len)
                .sum::<usize>();
        if content > limits.max_message_bytes as usize {
            return Err(err(
                ErrorCode::TooLarge,
                format!("message content over {} bytes", limits.max_message_bytes),
            )
            .with_field("message"));
        }
        if message.mentions.len() > limits.max_mentions as usize {
            return Err(
                err(ErrorCode::TooLarge, "too many mentions").with_field("message.mentions")
            );
        }
        if message.attachments.len() > limits.max_attachments as usize {
            return Err(
                err(ErrorCode::TooLarge, "too many attachments").with_field("message.attachments")
            );
        }
        for m in &message.mentions {
            user_id("message.mentions", m)?;
        }
        let (info, member) = self.readable_with_member(&id)?;
        let member = member.ok_or_else(|| err(ErrorCode::Forbidden, "join the channel to post"))?;
        let now = unix_ms();
        if member.muted_until_ms > now {
            return Err(err(ErrorCode::Forbidden, "muted in this channel"));
        }
        if info.record.archived {
            return Err(err(ErrorCode::Forbidden, "the channel is archived"));
        }
        if message.thread_parent_seq > info.position.head.get() {
            return Err(invalid("message.thread_parent_seq", "no such message"));
        }
        if let Err(wait_ms) = take_budget(
            &self.shared.publish_buckets,
            &self.identity.user,
            limits.publish_rate_per_sec,
            limits.publish_burst,
        ) {
            metrics::counter!("chorus_rate_limited_total", "kind" => "publish").increment(1);
            return Err(
                err(ErrorCode::RateLimited, "publish rate exceeded").with_retry_after_ms(wait_ms)
            );
        }
        let key = message.client_msg_id.clone();
        let started = Instant::now();
        // Seq assigned and queued now, in request order; the reply waits for durability without
        // holding up the connection's next requests.
        let ticket = self
            .shared
            .store
            .begin_append(
                &id,
                NewEntry {
                    author: Some(self.identity.user.clone()),
                    time_ms: now,
                    body: Body::Message(message),
                    client_msg_id: Some(key),
                },
            )
            .await
            .map_err(store_error)?;
        let shared = self.shared.clone();
        let user = self.identity.user.clone();
        Ok(Box::pin(async move {
            let appended = ticket.durable().await.map_err(store_error)?;
            if !appended.duplicate {
                let hot = crate::observe::HotMetrics::get();
                hot.commit.record(started.elapsed().as_secs_f64());
                hot.publishes.increment(1);
            }
            // Posting means having read the channel; the marker moves in the background.
            shared.own_reads.note(user, id, appended.entry.seq);
            Ok(reply::Result::Appended(appended_message(&appended)))
        }))
    }

    /// A subscription from `Hello.resume`: failures are reported per channel in `Welcome`.
    pub async fn subscribe_for_resume(
        &mut self,
        s: v1::Subscribe,
    ) -> Result<(v1::Subscribed, ReplayPlan), (String, Error)> {
        let channel = s.channel_id.clone();
        self.subscribe(s).await.map_err(|e| (channel, e))
    }

    async fn subscribe(&mut self, s: v1::Subscribe) -> Result<(v1::Subscribed, ReplayPlan), Error> {
        let id = channel_id("channel_id", &s.channel_id)?;
        if let Some(existing) = self.subscriptions.get(&id) {
            let ended =
                *existing.state.lock().unwrap_or_else(|p| p.into_inner()) == SubState::Ended;
            if !ended {
                return Err(err(ErrorCode::Conflict, "already subscribed"));
            }
            self.subscriptions.remove(&id);
            metrics::gauge!("chorus_subscriptions").decrement(1.0);
        }
        if self.subscriptions.len() >= self.shared.limits().max_subscriptions as usize {
            return Err(err(ErrorCode::LimitExceeded, "too many subscriptions"));
        }
        self.readable(&id)?;
        // Registered before the head is read: every entry committed after this point reaches
        // the subscription, either through the replay or live.
        let sub = Arc::new(Subscription {
            user: self.identity.user.clone(),
            outbound: self.outbound.clone(),
            state: Mutex::new(SubState::Replaying),
        });
        self.shared.hub.subscribe(&id, self.key, sub.clone());
        self.subscriptions.insert(id.clone(), sub.clone());
        metrics::gauge!("chorus_subscriptions").increment(1.0);
        let position = self.shared.store.position(&id).map_err(store_error)?;
        let head = position.head;
        let max_replay = u64::from(self.shared.limits().max_recovery_entries);
        let (failure, from) = match s.since {
            None => (RecoveryFailure::NoCursor, head),
            Some(c) if c.epoch != position.epoch.get() => (RecoveryFailure::EpochChanged, head),
            Some(c) if c.seq > head.get() => (RecoveryFailure::CursorAhead, head),
            Some(c) if c.seq + 1 < position.first_available.get() => {
                (RecoveryFailure::EntriesExpired, head)
            }
            Some(c) if head.get() - c.seq > max_replay => (RecoveryFailure::TooFarBehind, head),
            Some(c) => (RecoveryFailure::Unspecified, Seq(c.seq)),
        };
        let subscribed = v1::Subscribed {
            channel_id: id.to_string(),
            epoch: position.epoch.get(),
            head_seq: head.get(),
            recovered: failure == RecoveryFailure::Unspecified,
            failure: failure as i32,
            first_available_seq: position.first_available.get(),
            error: None,
        };
        Ok((
            subscribed,
            ReplayPlan {
                channel: id,
                sub,
                from,
            },
        ))
    }

    /// Sends every entry after `plan.from` from the store, then switches the subscription to
    /// live delivery at the exact seq where the replay ended.
    pub async fn replay(&mut self, plan: ReplayPlan) {
        let store = self.shared.store.clone();
        let mut cursor = plan.from;
        loop {
            let page = match store.read(
                &plan.channel,
                &LogQuery {
                    anchor: Anchor::After(cursor),
                    limit: REPLAY_PAGE,
                    thread: None,
                },
            ) {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(channel = %plan.channel, error = %e, "replay failed");
                    self.end_subscription(&plan.channel, store_error(e));
                    return;
                }
            };
            // Retention removed entries this replay had not sent yet: say so, never skip them.
            if page.position.first_available.get() > cursor.get() + 1 {
                self.end_subscription(
                    &plan.channel,
                    err(
                        ErrorCode::NotFound,
                        "entries after the cursor expired during the replay; reload the channel (History), then subscribe again",
                    ),
                );
                return;
            }
            for entry in &page.entries {
                if *plan.sub.state.lock().unwrap_or_else(|p| p.into_inner()) == SubState::Ended {
                    // The user left or was removed meanwhile; the hub has said so.
                    return;
                }
                let frame = chorus_protocol::codec::encode_event_frame(&entry.event);
                if !self.outbound.push_when_room(frame).await {
                    return;
                }
                cursor = entry.seq;
            }
            if page.entries.is_empty() {
                // Under the subscription's lock: an entry committed after this head check is
                // delivered live; one committed before it is read by the next loop turn.
                let next = {
                    let mut state = plan.sub.state.lock().unwrap_or_else(|p| p.into_inner());
                    if *state == SubState::Ended {
                        ReplayStep::Stop
                    } else {
                        match store.position(&plan.channel) {
                            Ok(position) if position.head <= cursor => {
                                *state = SubState::Live { last: cursor };
                                ReplayStep::Stop
                            }
                            Ok(position) if position.first_available.get() > cursor.get() + 1 => {
                                ReplayStep::End(err(
                                    ErrorCode::NotFound,
                                    "entries after the cursor expired during the replay; reload the channel (History), then subscribe again",
                                ))
                            }
                            // Entries committed since the read: read again (they are readable).
                            Ok(_) => ReplayStep::Again,
                            Err(e) => ReplayStep::End(store_error(e)),
                        }
                    }
                };
                match next {
                    ReplayStep::Stop => return,
                    ReplayStep::End(e) => {
                        self.end_subscription(&plan.channel, e);
                        return;
                    }
                    ReplayStep::Again => tokio::task::yield_now().await,
                }
            }
        }
    }

    fn end_subscription(&mut self, id: &ChannelId, reason: Error) {
        if self.subscriptions.remove(id).is_some() {
            metrics::gauge!("chorus_subscriptions").decrement(1.0);
        }
        self.shared.hub.unsubscribe(id, self.key);
        let frame = encode_frame_to_bytes(&ServerEnvelope::push(
            v1::push::Push::SubscriptionEnded(v1::SubscriptionEnded {
                channel_id: id.to_string(),
                reason: Some(reason),
            }),
        ));
        self.outbound.push(frame);
    }

    fn history(&self, h: v1::History) -> Result<reply::Result, Error> {
        let id = channel_id("channel_id", &h.channel_id)?;
        self.readable(&id)?;
        let announced = self.shared.limits().announced();
        let limit = clamp_limit(
            h.limit,
            announced.default_history_limit as usize,
            announced.max_history_limit,
        );
        let anchor = match h.anchor {
            None => Anchor::Latest,
            Some(v1::history::Anchor::BeforeSeq(s)) => Anchor::Before(Seq(s)),
            Some(v1::history::Anchor::AfterSeq(s)) => Anchor::After(Seq(s)),
            Some(v1::history::Anchor::AroundSeq(s)) => Anchor::Around(Seq(s)),
        };
        let thread = (h.thread_parent_seq != 0).then_some(Seq(h.thread_parent_seq));
        let page = self
            .shared
            .store
            .read(
                &id,
                &LogQuery {
                    anchor,
                    limit,
                    thread,
                },
            )
            .map_err(store_error)?;
        let mut events = Vec::with_capacity(page.entries.len());
        let mut bytes = 0;
        let mut cut = false;
        for e in &page.entries {
            bytes += e.event.encoded_len() + 8;
            if bytes > self.max_reply_bytes() {
                cut = true;
                break;
            }
            events.push(e.event.clone());
        }
        Ok(reply::Result::HistoryPage(v1::HistoryPage {
            channel_id: id.to_string(),
            epoch: page.position.epoch.get(),
            events,
            has_more_before: page.has_more_before,
            has_more_after: page.has_more_after || cut,
            first_available_seq: page.position.first_available.get(),
            head_seq: page.position.head.get(),
        }))
    }

    /// The caller's read state in a channel.
    fn read_state(&self, id: &ChannelId) -> Result<chorus_storage::ReadState, Error> {
        read_state_of(&self.shared, &self.identity.user, id)
    }

    fn unread(&self, g: v1::GetUnread) -> Result<reply::Result, Error> {
        let store = &self.shared.store;
        let user = &self.identity.user;
        let unread = |id: &ChannelId| -> Result<v1::ChannelUnread, Error> {
            let state = self.read_state(id)?;
            Ok(v1::ChannelUnread {
                channel_id: id.to_string(),
                last_read_seq: state.last_read.get(),
                head_seq: state.head.get(),
                unread_count: state.unread,
                mention_count: state.mentions,
            })
        };
        // Every membership, page by page; at most `max_memberships_per_user` of them, which
        // is also the most a user can hold.
        let max = self.shared.limits().max_memberships_per_user as usize;
        let mut all = Vec::new();
        let mut after: Option<ChannelId> = None;
        while all.len() < max {
            let page = store
                .user_channels(user, after.as_ref(), MEMBERSHIP_PAGE.min(max - all.len()))
                .map_err(store_error)?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for id in &page {
                all.push(unread(id)?);
            }
            after = Some(last);
        }
        let total_unread = all.iter().map(|c| c.unread_count).sum();
        let listed = if g.channel_ids.is_empty() {
            all
        } else {
            let mut listed = Vec::with_capacity(g.channel_ids.len());
            for c in &g.channel_ids {
                let id = channel_id("channel_ids", c)?;
                if store.member(&id, user).map_err(store_error)?.is_none() {
                    return Err(err(ErrorCode::NotFound, format!("not a member of {id}"))
                        .with_field("channel_ids"));
                }
                listed.push(unread(&id)?);
            }
            listed
        };
        // Cut to what one reply holds (about 10,000 entries); ask by `channel_ids` for more.
        let mut channels = Vec::with_capacity(listed.len());
        let mut bytes = 0;
        for c in listed {
            bytes += c.encoded_len() + 4;
            if bytes > self.max_reply_bytes() {
                break;
            }
            channels.push(c);
        }
        Ok(reply::Result::UnreadCounts(v1::UnreadCounts {
            channels,
            total_unread,
        }))
    }

    /// The message at `seq`, which must be a live message of a channel the user belongs to.
    fn target_message(
        &self,
        id: &ChannelId,
        seq: u64,
    ) -> Result<(Role, Arc<chorus_storage::LogEntry>, v1::Message), Error> {
        let (info, role) = self.require_role(id, Role::Member)?;
        if info.record.archived {
            return Err(err(ErrorCode::Forbidden, "the channel is archived"));
        }
        let entry = self
            .shared
            .store
            .entry(id, Seq(seq))
            .map_err(store_error)?
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no entry {seq}")))?;
        match &entry.event.body {
            Some(Body::Message(m)) => {
                let m = m.clone();
                Ok((role, entry, m))
            }
            _ => Err(err(
                ErrorCode::NotFound,
                format!("entry {seq} is not a message"),
            )),
        }
    }

    async fn append_keyed(
        &self,
        id: &ChannelId,
        body: Body,
        key: &str,
    ) -> Result<v1::Appended, Error> {
        if key.len() > MAX_CLIENT_MSG_ID_BYTES {
            return Err(invalid(
                "client_msg_id",
                "client_msg_id must be at most 64 bytes",
            ));
        }
        let appended = self
            .shared
            .store
            .append(
                id,
                NewEntry {
                    author: Some(self.identity.user.clone()),
                    time_ms: unix_ms(),
                    body,
                    client_msg_id: (!key.is_empty()).then(|| key.to_owned()),
                },
            )
            .await
            .map_err(store_error)?;
        Ok(appended_message(&appended))
    }

    async fn edit(&mut self, e: v1::EditMessage) -> Result<reply::Result, Error> {
        let id = channel_id("channel_id", &e.channel_id)?;
        let (_, entry, _) = self.target_message(&id, e.target_seq)?;
        if entry.event.author_id != self.identity.user.as_str() {
            return Err(err(ErrorCode::Forbidden, "only the author edits a message"));
        }
        let limits = &self.shared.limits();
        let content = e.text.len()
            + e.custom.len()
            + e.attachments
                .iter()
                .map(Message::encoded_len)
                .sum::<usize>();
        if content > limits.max_message_bytes as usize {
            return Err(err(ErrorCode::TooLarge, "message content too large").with_field("text"));
        }
        if e.mentions.len() > limits.max_mentions as usize
            || e.attachments.len() > limits.max_attachments as usize
        {
            return Err(err(ErrorCode::TooLarge, "too many mentions or attachments"));
        }
        let body = Body::MessageEdited(v1::MessageEdited {
            target_seq: e.target_seq,
            text: e.text,
            mentions: e.mentions,
            attachments: e.attachments,
            custom: e.custom,
        });
        Ok(reply::Result::Appended(
            self.append_keyed(&id, body, &e.client_msg_id).await?,
        ))
    }

    async fn delete(&mut self, d: v1::DeleteMessage) -> Result<reply::Result, Error> {
        let id = channel_id("channel_id", &d.channel_id)?;
        let (role, entry, message) = self.target_message(&id, d.target_seq)?;
        let own = entry.event.author_id == self.identity.user.as_str();
        if !own && role_rank(role) < role_rank(Role::Moderator) {
            return Err(err(
                ErrorCode::Forbidden,
                "only the author or a moderator deletes a message",
            ));
        }
        let body = Body::MessageDeleted(v1::MessageDeleted {
            target_seq: d.target_seq,
            by_moderator: !own,
        });
        let appended = self.append_keyed(&id, body, &d.client_msg_id).await?;
        // The content goes; the seq stays, so the log has no gap.
        let tombstone = Body::Tombstone(v1::Tombstone {
            reason: v1::tombstone::Reason::Deleted as i32,
            thread_parent_seq: message.thread_parent_seq,
        });
        self.shared
            .store
            .rewrite(&id, Seq(d.target_seq), tombstone)
            .await
            .map_err(store_error)?;
        Ok(reply::Result::Appended(appended))
    }

    async fn change_channel(
        &mut self,
        id: &ChannelId,
        patch: chorus_storage::ChannelPatch,
        change: v1::ChannelChanged,
    ) -> Result<reply::Result, Error> {
        let (info, _) = self.require_role(id, Role::Owner)?;
        if info.record.kind() == ChannelKind::Direct {
            return Err(err(
                ErrorCode::Forbidden,
                "direct channels have no settings",
            ));
        }
        if patch.name.as_ref().is_some_and(|n| n.len() > 256)
            || patch.topic.as_ref().is_some_and(|t| t.len() > 1024)
        {
            return Err(err(ErrorCode::TooLarge, "name or topic too long"));
        }
        if patch
            .custom
            .as_ref()
            .is_some_and(|c| c.len() > self.shared.limits().max_message_bytes as usize)
        {
            return Err(err(ErrorCode::TooLarge, "custom data too large").with_field("custom"));
        }
        self.shared
            .store
            .update_channel(id, patch)
            .await
            .map_err(store_error)?;
        self.append_event(id, Body::ChannelChanged(change)).await?;
        let info = self.readable(id)?;
        Ok(reply::Result::Channel(self.summary(&info)?))
    }

    fn typing(&mut self, t: v1::Typing) -> Result<reply::Result, Error> {
        let id = channel_id("channel_id", &t.channel_id)?;
        self.require_role(&id, Role::Member)?;
        if let Err(wait) = self.ephemeral.take(Instant::now()) {
            metrics::counter!("chorus_rate_limited_total", "kind" => "typing").increment(1);
            return Err(
                err(ErrorCode::RateLimited, "typing rate exceeded").with_retry_after_ms(wait)
            );
        }
        let frame: Bytes = encode_frame_to_bytes(&ServerEnvelope::push(v1::push::Push::Typing(
            v1::TypingEvent {
                channel_id: id.to_string(),
                user_id: self.identity.user.to_string(),
                typing: t.typing,
                thread_parent_seq: t.thread_parent_seq,
                expires_in_ms: 6_000,
            },
        )));
        self.shared.hub.broadcast(&id, &frame, self.key);
        Ok(reply::Result::Done(v1::Done {}))
    }
}

/// `LIMIT_EXCEEDED` when one of `users` already belongs to `max_memberships_per_user`
/// channels. Counting stops at the limit, so a check costs at most that many key reads.
pub(crate) fn membership_room<'a>(
    shared: &Shared,
    users: impl IntoIterator<Item = &'a UserId>,
) -> Result<(), Error> {
    let max = shared.limits().max_memberships_per_user as usize;
    for user in users {
        let count = shared
            .store
            .user_channel_count(user, max)
            .map_err(store_error)?;
        if count >= max {
            metrics::counter!("chorus_limit_exceeded_total", "kind" => "memberships").increment(1);
            return Err(err(
                ErrorCode::LimitExceeded,
                format!("{user} already belongs to {max} channels (max_memberships_per_user)"),
            ));
        }
    }
    Ok(())
}

/// `user`'s read state in a channel, counting the marker the user's own latest posts moved
/// even before that marker is written: one's own messages never count as unread.
fn read_state_of(
    shared: &Shared,
    user: &UserId,
    id: &ChannelId,
) -> Result<chorus_storage::ReadState, Error> {
    let floor = shared.own_reads.pending(user, id);
    shared
        .store
        .read_state_at_least(user, id, floor)
        .map_err(store_error)
}

/// A channel as `user` sees it.
fn summary_for(
    shared: &Shared,
    user: &UserId,
    info: &ChannelInfo,
) -> Result<ChannelSummary, Error> {
    let store = &shared.store;
    let state = read_state_of(shared, user, &info.id)?;
    let last = newest_entry(store, &info.id)?;
    let role = store
        .member(&info.id, user)
        .map_err(store_error)?
        .map_or(Role::Unspecified, |m| m.role());
    Ok(ChannelSummary {
        channel: Some(channel_message(info)),
        my_role: role as i32,
        last_read_seq: state.last_read.get(),
        unread_count: state.unread,
        last_message: last.map(|e| e.event.clone()),
    })
}

/// The newest entry of a channel's log, if any.
fn newest_entry(
    store: &Store,
    id: &ChannelId,
) -> Result<Option<Arc<chorus_storage::LogEntry>>, Error> {
    let page = store
        .read(
            id,
            &LogQuery {
                anchor: Anchor::Latest,
                limit: 1,
                thread: None,
            },
        )
        .map_err(store_error)?;
    Ok(page.entries.last().cloned())
}

/// After a membership change of `user` in `id` (joined, added, removed, left, role changed),
/// pushes `MembershipUpdate` to every session of that user, so that channel lists stay
/// current. Best effort: the change itself is durable already, and a session that misses the
/// push finds it in `ListChannels` or the channel's log.
pub(crate) fn tell_membership(
    shared: &Shared,
    user: &UserId,
    id: &ChannelId,
    action: MemberAction,
) {
    if !matches!(
        action,
        MemberAction::Joined
            | MemberAction::Added
            | MemberAction::Removed
            | MemberAction::Left
            | MemberAction::RoleChanged
    ) {
        return;
    }
    let summary = match shared.store.channel(id) {
        Ok(Some(info)) => summary_for(shared, user, &info),
        Ok(None) => return,
        Err(e) => Err(store_error(e)),
    };
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%user, channel = %id, error = %e, "membership push skipped");
            return;
        }
    };
    let member = summary.my_role != Role::Unspecified as i32;
    let frame = encode_frame_to_bytes(&ServerEnvelope::push(v1::push::Push::Membership(
        v1::MembershipUpdate {
            channel: Some(summary),
            member,
        },
    )));
    shared
        .hub
        .push_to_user(user, &frame, crate::hub::NO_SESSION);
}

/// A channel's place in a `ListChannels` listing, newest activity first, and the cursor that
/// continues after it (`<activity_ms>:<channel_id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ActivityCursor {
    activity_ms: u64,
    id: ChannelId,
}

impl ActivityCursor {
    /// When the channel was last active: its newest entry's time, else its creation.
    fn of(store: &Store, info: &ChannelInfo) -> Result<Self, Error> {
        let activity_ms = newest_entry(store, &info.id)?
            .map_or(info.record.created_at_ms, |e| e.event.server_time_ms);
        Ok(Self {
            activity_ms,
            id: info.id.clone(),
        })
    }

    fn parse(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once(':')?;
        Some(Self {
            activity_ms: ms.parse().ok()?,
            id: ChannelId::new(id).ok()?,
        })
    }
}

impl std::fmt::Display for ActivityCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.activity_ms, self.id)
    }
}

/// Listing order: newest activity first, then by id.
impl Ord for ActivityCursor {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .activity_ms
            .cmp(&self.activity_ms)
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for ActivityCursor {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn role_rank(role: Role) -> u8 {
    match role {
        Role::Owner => 3,
        Role::Moderator => 2,
        Role::Member => 1,
        Role::Unspecified => 0,
    }
}

fn clamp_limit(asked: u32, default: usize, max: u32) -> usize {
    if asked == 0 {
        default
    } else {
        (asked as usize).min(max as usize)
    }
    .max(1)
}

fn channel_message(info: &ChannelInfo) -> v1::Channel {
    let r = &info.record;
    v1::Channel {
        channel_id: info.id.to_string(),
        kind: r.kind,
        name: r.name.clone(),
        topic: r.topic.clone(),
        created_by: r.created_by.clone(),
        created_at_ms: r.created_at_ms,
        archived: r.archived,
        epoch: info.position.epoch.get(),
        head_seq: info.position.head.get(),
        first_available_seq: info.position.first_available.get(),
        member_count: r.member_count,
        custom: r.custom.clone(),
    }
}

fn appended_message(a: &chorus_storage::Appended) -> v1::Appended {
    v1::Appended {
        channel_id: a.entry.event.channel_id.clone(),
        seq: a.entry.seq.get(),
        epoch: a.entry.event.epoch,
        server_time_ms: a.entry.event.server_time_ms,
        duplicate: a.duplicate,
    }
}
