//! What an actor reads from the server, decoded as a mirror of `ServerEnvelope` that keeps only
//! the fields the checks need: publish replies (request id, seq or error code) and channel
//! events (channel, seq, the message's `custom` payload).
//!
//! Decoding the full envelope allocated six strings per delivery (channel, author, text,
//! client_msg_id, ...) and was 15 % of a subscriber's CPU at 50,000 deliveries/s. Here the
//! fields that are kept are slices of the received frame and everything else is skipped by
//! length. Same tags as `chorus/v1/*.proto`; the tests encode real envelopes and decode them
//! as the mirror, so a renumbered field fails them.

use bytes::Bytes;
use chorus_protocol::v1::ServerEnvelope;
use prost::Message as _;

/// `ServerEnvelope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// `kind`.
    #[prost(oneof = "Kind", tags = "1, 2")]
    pub kind: Option<Kind>,
}

/// `ServerEnvelope.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// `reply`.
    #[prost(message, tag = "1")]
    Reply(Reply),
    /// `push`.
    #[prost(message, tag = "2")]
    Push(Push),
}

/// `Reply`: other results than these two decode as `None`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {
    /// `request_id`.
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
    /// `result`.
    #[prost(oneof = "ReplyResult", tags = "2, 40")]
    pub result: Option<ReplyResult>,
}

/// `Reply.result`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ReplyResult {
    /// `error`.
    #[prost(message, tag = "2")]
    Error(Error),
    /// `appended`.
    #[prost(message, tag = "40")]
    Appended(Appended),
}

/// `Error`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    /// `code`: an `ErrorCode`.
    #[prost(int32, tag = "1")]
    pub code: i32,
}

impl Error {
    /// The code's name, as the report counts errors by it.
    pub fn code_name(&self) -> &'static str {
        chorus_protocol::v1::ErrorCode::try_from(self.code)
            .map_or("UNKNOWN_ERROR_CODE", |c| c.as_str_name())
    }
}

/// `Appended`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Appended {
    /// `seq`.
    #[prost(uint64, tag = "2")]
    pub seq: u64,
}

/// `Push`: other pushes than events decode as `None`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Push {
    /// `push`.
    #[prost(oneof = "PushKind", tags = "1")]
    pub push: Option<PushKind>,
}

/// `Push.push`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PushKind {
    /// `event`.
    #[prost(message, tag = "1")]
    Event(Event),
}

/// `ChannelEvent`: bodies other than a message decode as `None`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// `channel_id` (a string on the wire; kept as the frame's bytes).
    #[prost(bytes = "bytes", tag = "1")]
    pub channel_id: Bytes,
    /// `seq`.
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// `body`.
    #[prost(oneof = "Body", tags = "10")]
    pub body: Option<Body>,
}

impl Event {
    /// The channel id; not UTF-8 only if the server broke the protocol.
    pub fn channel(&self) -> Option<&str> {
        std::str::from_utf8(&self.channel_id).ok()
    }
}

/// `ChannelEvent.body`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    /// `message`.
    #[prost(message, tag = "10")]
    Message(Message),
}

/// `Message`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// `custom`.
    #[prost(bytes = "bytes", tag = "6")]
    pub custom: Bytes,
}

/// A fully decoded envelope (one that came with a reply, before the actor ran) as the mirror.
pub fn from_full(env: &ServerEnvelope) -> Envelope {
    // Re-encoding a valid envelope and decoding its subset cannot fail; an empty envelope
    // (ignored by the actor) stands in should it ever.
    Envelope::decode(env.encode_to_vec().as_slice()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chorus_protocol::v1::{self, channel_event, push, reply, server_envelope};

    use super::*;

    fn event(body: channel_event::Body) -> ServerEnvelope {
        ServerEnvelope {
            kind: Some(server_envelope::Kind::Push(v1::Push {
                push: Some(push::Push::Event(v1::ChannelEvent {
                    channel_id: "room-7".into(),
                    seq: 42,
                    epoch: 3,
                    server_time_ms: 1_700_000_000_000,
                    author_id: "alice".into(),
                    body: Some(body),
                })),
            })),
        }
    }

    /// The mirror of an envelope that must decode as an event.
    fn as_event(full: &ServerEnvelope) -> Event {
        match from_full(full).kind {
            Some(Kind::Push(Push {
                push: Some(PushKind::Event(e)),
            })) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    fn reply(result: reply::Result) -> ServerEnvelope {
        ServerEnvelope {
            kind: Some(server_envelope::Kind::Reply(v1::Reply {
                request_id: 9,
                result: Some(result),
            })),
        }
    }

    #[test]
    fn a_message_event_keeps_channel_seq_and_custom() {
        let full = event(channel_event::Body::Message(v1::Message {
            client_msg_id: "c-1".into(),
            text: "hello".repeat(20),
            thread_parent_seq: 5,
            mentions: vec!["bob".into()],
            custom: Bytes::from_static(b"payload-bytes"),
            ..Default::default()
        }));
        let e = as_event(&full);
        assert_eq!(e.channel(), Some("room-7"));
        assert_eq!(e.seq, 42);
        assert_eq!(
            e.body,
            Some(Body::Message(Message {
                custom: Bytes::from_static(b"payload-bytes")
            }))
        );
    }

    #[test]
    fn other_bodies_and_pushes_are_skipped_not_errors() {
        let full = event(channel_event::Body::MessageDeleted(v1::MessageDeleted {
            target_seq: 3,
            ..Default::default()
        }));
        let e = as_event(&full);
        assert_eq!((e.seq, e.body), (42, None));

        let typing = ServerEnvelope {
            kind: Some(server_envelope::Kind::Push(v1::Push {
                push: Some(push::Push::Typing(v1::TypingEvent {
                    channel_id: "room-7".into(),
                    user_id: "bob".into(),
                    typing: true,
                    ..Default::default()
                })),
            })),
        };
        assert_eq!(
            from_full(&typing).kind,
            Some(Kind::Push(Push { push: None }))
        );
    }

    #[test]
    fn publish_replies_keep_seq_or_error_code() {
        let appended = reply(reply::Result::Appended(v1::Appended {
            channel_id: "room-7".into(),
            seq: 77,
            epoch: 1,
            server_time_ms: 5,
            duplicate: true,
        }));
        assert_eq!(
            from_full(&appended).kind,
            Some(Kind::Reply(Reply {
                request_id: 9,
                result: Some(ReplyResult::Appended(Appended { seq: 77 })),
            }))
        );
        let error = reply(reply::Result::Error(v1::Error {
            code: v1::ErrorCode::RateLimited as i32,
            message: "slow down".into(),
            retry_after_ms: 100,
            field: String::new(),
        }));
        let Some(Kind::Reply(Reply {
            result: Some(ReplyResult::Error(e)),
            ..
        })) = from_full(&error).kind
        else {
            panic!("not an error reply");
        };
        assert_eq!(e.code_name(), v1::ErrorCode::RateLimited.as_str_name());
        let done = reply(reply::Result::Done(v1::Done::default()));
        assert_eq!(
            from_full(&done).kind,
            Some(Kind::Reply(Reply {
                request_id: 9,
                result: None
            }))
        );
    }
}
