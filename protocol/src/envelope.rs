//! Building and checking envelopes: the helpers every sender and receiver of chorus.v1 needs.

use crate::ids::RequestId;
use crate::v1::{
    ClientEnvelope, Disconnect, Error, Push, Reply, ServerEnvelope, client_envelope::Request, push,
    reply, server_envelope,
};

/// Why a decoded `ClientEnvelope` is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// `request_id` is 0.
    #[error("request_id must be nonzero")]
    ZeroRequestId,
    /// No request is set, or it is one this build does not know (a newer client).
    #[error("the envelope carries no request this server knows")]
    MissingRequest,
}

impl ClientEnvelope {
    /// An envelope carrying `request` under `request_id`.
    pub fn new(request_id: u64, request: Request) -> Self {
        Self {
            request_id,
            request: Some(request),
        }
    }

    /// The request id and the request, or why the envelope cannot be answered as a request.
    /// An envelope with an id but an unknown request should be answered with `INVALID`; one with
    /// id 0 cannot be answered at all.
    pub fn validate(&self) -> Result<(RequestId, &Request), EnvelopeError> {
        if self.request_id == 0 {
            return Err(EnvelopeError::ZeroRequestId);
        }
        let request = self.request.as_ref().ok_or(EnvelopeError::MissingRequest)?;
        Ok((RequestId(self.request_id), request))
    }
}

impl ServerEnvelope {
    /// A reply to `request_id` with a result.
    pub fn reply(request_id: u64, result: reply::Result) -> Self {
        Self {
            kind: Some(server_envelope::Kind::Reply(Reply {
                request_id,
                result: Some(result),
            })),
        }
    }

    /// A reply to `request_id` reporting `error`.
    pub fn error(request_id: u64, error: Error) -> Self {
        Self::reply(request_id, reply::Result::Error(error))
    }

    /// A push.
    pub fn push(push: push::Push) -> Self {
        Self {
            kind: Some(server_envelope::Kind::Push(Push { push: Some(push) })),
        }
    }

    /// The last frame before a close.
    pub fn disconnect(disconnect: Disconnect) -> Self {
        Self::push(push::Push::Disconnect(disconnect))
    }
}

/// Names the variants of a oneof by their protobuf field names, for logs and metric labels.
macro_rules! oneof_names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The protobuf field name of this variant, e.g. `"publish"`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name),+
                }
            }
        }
    };
}

oneof_names!(Request {
    Hello => "hello",
    RefreshToken => "refresh_token",
    Ping => "ping",
    CreateChannel => "create_channel",
    GetChannel => "get_channel",
    ListChannels => "list_channels",
    UpdateChannel => "update_channel",
    ArchiveChannel => "archive_channel",
    JoinChannel => "join_channel",
    LeaveChannel => "leave_channel",
    AddMembers => "add_members",
    RemoveMember => "remove_member",
    SetMemberRole => "set_member_role",
    ListMembers => "list_members",
    Publish => "publish",
    EditMessage => "edit_message",
    DeleteMessage => "delete_message",
    React => "react",
    Unreact => "unreact",
    PinMessage => "pin_message",
    UnpinMessage => "unpin_message",
    ListPins => "list_pins",
    ListThreads => "list_threads",
    Subscribe => "subscribe",
    Unsubscribe => "unsubscribe",
    History => "history",
    MarkRead => "mark_read",
    GetUnread => "get_unread",
    Typing => "typing",
    SetPresence => "set_presence",
    WatchPresence => "watch_presence",
    UnwatchPresence => "unwatch_presence",
    GetPresence => "get_presence",
    SendEvent => "send_event",
    Search => "search",
    MuteMember => "mute_member",
    UnmuteMember => "unmute_member",
    BanMember => "ban_member",
    UnbanMember => "unban_member",
    FlagMessage => "flag_message",
    ListFlags => "list_flags",
    ResolveFlag => "resolve_flag",
    BlockUser => "block_user",
    UnblockUser => "unblock_user",
    ListBlocks => "list_blocks",
});

oneof_names!(reply::Result {
    Error => "error",
    Done => "done",
    Welcome => "welcome",
    TokenRefreshed => "token_refreshed",
    Pong => "pong",
    Channel => "channel",
    ChannelList => "channel_list",
    MemberList => "member_list",
    Appended => "appended",
    PinList => "pin_list",
    ThreadList => "thread_list",
    Subscribed => "subscribed",
    HistoryPage => "history_page",
    ReadMarker => "read_marker",
    UnreadCounts => "unread_counts",
    PresenceList => "presence_list",
    SearchResults => "search_results",
    FlagList => "flag_list",
    BlockList => "block_list",
});

oneof_names!(push::Push {
    Event => "event",
    Typing => "typing",
    Presence => "presence",
    ReadMarker => "read_marker",
    Notice => "notice",
    Disconnect => "disconnect",
    SubscriptionEnded => "subscription_ended",
    Membership => "membership",
    CustomEvent => "custom_event",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{ErrorCode, Ping};

    #[test]
    fn validate_needs_an_id_and_a_request() {
        let ping = Request::Ping(Ping::default());
        let env = ClientEnvelope::new(3, ping.clone());
        assert_eq!(env.validate(), Ok((RequestId(3), &ping)));
        assert_eq!(
            ClientEnvelope::new(0, ping).validate(),
            Err(EnvelopeError::ZeroRequestId)
        );
        let empty = ClientEnvelope {
            request_id: 1,
            request: None,
        };
        assert_eq!(empty.validate(), Err(EnvelopeError::MissingRequest));
    }

    #[test]
    fn error_reply_carries_the_request_id() {
        let env = ServerEnvelope::error(9, Error::new(ErrorCode::Forbidden, "not a member"));
        let Some(server_envelope::Kind::Reply(reply)) = env.kind else {
            panic!("expected a reply");
        };
        assert_eq!(reply.request_id, 9);
        assert_eq!(reply.result.map(|r| r.name()), Some("error"));
    }
}
