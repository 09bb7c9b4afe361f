//! The router: the one match on `Request`. Each arm parses what the chat domain needs, calls
//! it as this session's user, and wraps its answer in the reply.

use std::future::Future;
use std::pin::Pin;

use chorus_protocol::v1::{self, ErrorCode, client_envelope::Request, reply};

use super::Session;
use crate::chat::reads::Reader;
use crate::chat::{Chat, channel_id};
use crate::clock::unix_ms;

/// A reply that waits for something durable (a publish): the connection keeps reading
/// meanwhile and sends the reply when it resolves.
pub type PendingReply = Pin<Box<dyn Future<Output = (u64, reply::Result)> + Send>>;

impl Session {
    /// Handles one request (not `Hello`: the handshake took it) and queues its reply, or
    /// returns the reply still waiting for durability.
    pub async fn handle(&mut self, request_id: u64, request: Request) -> Option<PendingReply> {
        let name = request.name();
        let result = match request {
            Request::Publish(p) => match self.chat().publish(p).await {
                Ok(durable) => {
                    let session = self.session_id.clone();
                    return Some(Box::pin(async move {
                        let result = match durable.await {
                            Ok(appended) => reply::Result::Appended(appended),
                            Err(e) => {
                                tracing::debug!(%session, request = "publish", error = %e, "request failed");
                                reply::Result::Error(e.into())
                            }
                        };
                        (request_id, result)
                    }));
                }
                Err(e) => Err(e.into()),
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
        let result = result.unwrap_or_else(|e| {
            tracing::debug!(session = %self.session_id, request = name, error = %e, "request failed");
            reply::Result::Error(e)
        });
        self.reply(request_id, result);
        None
    }

    async fn dispatch(&mut self, request: Request) -> Result<reply::Result, v1::Error> {
        use reply::Result as R;
        let done = || R::Done(v1::Done {});
        // Built from the fields, not `self.chat()`: the arms that pass the session's own
        // budgets borrow those mutably while `chat` lives.
        let chat = Chat::user(&self.node, &self.identity.user);
        let result = match request {
            Request::Hello(_) => {
                return Err(v1::Error::new(
                    ErrorCode::Invalid,
                    "the session is already established",
                ));
            }
            Request::Ping(p) => R::Pong(v1::Pong {
                client_time_ms: p.client_time_ms,
                server_time_ms: unix_ms(),
            }),
            Request::RefreshToken(r) => return self.refresh(&r.token),
            Request::CreateChannel(c) => R::Channel(chat.create_channel(c).await?),
            Request::GetChannel(g) => {
                R::Channel(chat.get_channel(&channel_id("channel_id", &g.channel_id)?)?)
            }
            Request::ListChannels(l) => {
                R::ChannelList(chat.list_channels(l, self.max_reply_bytes())?)
            }
            Request::JoinChannel(j) => {
                R::Channel(chat.join(&channel_id("channel_id", &j.channel_id)?).await?)
            }
            Request::LeaveChannel(l) => {
                chat.leave(&channel_id("channel_id", &l.channel_id)?)
                    .await?;
                done()
            }
            Request::AddMembers(a) => {
                let id = channel_id("channel_id", &a.channel_id)?;
                chat.add_members(&id, &a.user_ids, v1::Role::Member).await?;
                done()
            }
            Request::RemoveMember(r) => {
                let id = channel_id("channel_id", &r.channel_id)?;
                chat.remove_member(&id, &r.user_id).await?;
                done()
            }
            Request::SetMemberRole(s) => {
                let id = channel_id("channel_id", &s.channel_id)?;
                let role = v1::Role::try_from(s.role).unwrap_or(v1::Role::Unspecified);
                chat.set_role(&id, &s.user_id, role).await?;
                done()
            }
            Request::ListMembers(l) => R::MemberList(chat.list_members(l)?),
            Request::Publish(_) | Request::Subscribe(_) => {
                return Err(v1::Error::new(
                    ErrorCode::Internal,
                    "publish and subscribe are handled before the router's match",
                ));
            }
            Request::Unsubscribe(u) => {
                self.unsubscribe(&channel_id("channel_id", &u.channel_id)?)?;
                done()
            }
            Request::History(h) => R::HistoryPage(chat.history(h, self.max_reply_bytes())?),
            Request::MarkRead(m) => {
                let id = channel_id("channel_id", &m.channel_id)?;
                let reader = Reader {
                    session: self.key,
                    receipts: &mut self.receipts,
                };
                R::ReadMarker(chat.mark_read(&id, m.seq, reader).await?)
            }
            Request::GetUnread(g) => R::UnreadCounts(chat.unread(g, self.max_reply_bytes())?),
            Request::Typing(t) => {
                chat.typing(t, self.key, &mut self.ephemeral)?;
                done()
            }
            Request::SetPresence(p) => {
                chat.set_presence(&p, &mut self.ephemeral)?;
                done()
            }
            Request::WatchPresence(w) => R::PresenceList(chat.watch_presence(
                &w.user_ids,
                self.key,
                &mut self.watching,
                &mut self.ephemeral,
            )?),
            Request::UnwatchPresence(w) => {
                chat.unwatch_presence(&w.user_ids, self.key, &mut self.watching)?;
                done()
            }
            Request::GetPresence(g) => {
                R::PresenceList(chat.get_presence(&g.user_ids, &mut self.ephemeral)?)
            }
            Request::SendEvent(e) => {
                chat.send_event(e, self.key, &mut self.ephemeral)?;
                done()
            }
            Request::EditMessage(e) => R::Appended(chat.edit(e).await?),
            Request::DeleteMessage(d) => {
                let id = channel_id("channel_id", &d.channel_id)?;
                R::Appended(chat.delete(&id, d.target_seq, &d.client_msg_id).await?)
            }
            Request::React(r) => R::Appended(chat.react(r).await?),
            Request::Unreact(r) => R::Appended(chat.unreact(r).await?),
            Request::PinMessage(p) => {
                let id = channel_id("channel_id", &p.channel_id)?;
                R::Appended(chat.pin(&id, p.target_seq, &p.client_msg_id).await?)
            }
            Request::UnpinMessage(p) => {
                let id = channel_id("channel_id", &p.channel_id)?;
                R::Appended(chat.unpin(&id, p.target_seq, &p.client_msg_id).await?)
            }
            Request::ListPins(l) => R::PinList(chat.list_pins(l, self.max_reply_bytes())?),
            Request::ListThreads(l) => R::ThreadList(chat.list_threads(l, self.max_reply_bytes())?),
            Request::MuteMember(m) => {
                let id = channel_id("channel_id", &m.channel_id)?;
                chat.mute(&id, &m.user_id, m.duration_ms, &m.reason).await?;
                done()
            }
            Request::UnmuteMember(m) => {
                let id = channel_id("channel_id", &m.channel_id)?;
                chat.unmute(&id, &m.user_id).await?;
                done()
            }
            Request::BanMember(b) => {
                let id = channel_id("channel_id", &b.channel_id)?;
                chat.ban(&b, &id).await?;
                done()
            }
            Request::UnbanMember(b) => {
                let id = channel_id("channel_id", &b.channel_id)?;
                chat.unban(&id, &b.user_id).await?;
                done()
            }
            Request::BlockUser(b) => {
                chat.block(&b.user_id).await?;
                done()
            }
            Request::UnblockUser(b) => {
                chat.unblock(&b.user_id).await?;
                done()
            }
            Request::ListBlocks(l) => R::BlockList(chat.list_blocks(&l)?),
            Request::UpdateChannel(u) => {
                let info = chat.update_channel(u).await?;
                R::Channel(chat.summary(&info)?)
            }
            Request::FlagMessage(f) => {
                let id = channel_id("channel_id", &f.channel_id)?;
                chat.flag(&f, &id).await?;
                done()
            }
            Request::ListFlags(l) => {
                let id = channel_id("channel_id", &l.channel_id)?;
                R::FlagList(chat.list_flags(&l, &id, self.max_reply_bytes())?)
            }
            Request::ResolveFlag(r) => {
                let id = channel_id("channel_id", &r.channel_id)?;
                chat.resolve_flag(&r, &id).await?;
                done()
            }
            Request::ArchiveChannel(a) => {
                let id = channel_id("channel_id", &a.channel_id)?;
                let info = chat.archive(&id, a.archived).await?;
                R::Channel(chat.summary(&info)?)
            }
            #[cfg(feature = "search")]
            Request::Search(q) => R::SearchResults(chat.search(q, self.max_reply_bytes()).await?),
            #[cfg(not(feature = "search"))]
            Request::Search(_) => {
                return Err(v1::Error::new(
                    ErrorCode::Unimplemented,
                    "this node is built without search",
                ));
            }
        };
        Ok(result)
    }
}
