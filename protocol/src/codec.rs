//! Frames on the wire, without I/O.
//!
//! A frame is a protobuf varint holding the envelope's length `n`, followed by the `n` bytes of one
//! encoded envelope. A WebSocket binary message carries one or more whole frames (batching); a
//! QUIC stream carries a sequence of frames cut anywhere by the transport.
//!
//! The length is checked against the maximum frame size as soon as the prefix is read, before any
//! buffer is grown for the frame, so that a peer cannot make us allocate by announcing a huge frame.
//! After any [`DecodeError`] the byte stream is out of sync: the caller must close the connection
//! (with `CLOSE_CODE_PROTOCOL_ERROR`).

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;

/// Longest varint that can encode a `u64`.
const MAX_VARINT_LEN: usize = 10;

/// Why bytes from a peer could not be decoded into frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix announces a frame over the limit. Detected before reading the frame.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length (a lower bound when the prefix itself was too long to finish).
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The length prefix is not a valid varint (more than 10 bytes, or over `u64`).
    #[error("invalid frame length prefix")]
    InvalidLengthPrefix,
    /// A WebSocket message ended inside a frame.
    #[error("message ends inside a frame: {missing} more bytes expected")]
    Truncated {
        /// How many more bytes the frame needed (at least 1).
        missing: usize,
    },
    /// A WebSocket message carried no bytes at all.
    #[error("empty message: a message must carry at least one frame")]
    EmptyMessage,
    /// The frame's bytes are not a valid encoding of the expected envelope (bad wire type,
    /// truncated field, invalid UTF-8 in a string, ...).
    #[error("malformed envelope: {0}")]
    Malformed(#[from] prost::DecodeError),
}

/// A buffer that grows as needed, so that encoding a frame into it cannot fail.
pub trait GrowableBuf: bytes::BufMut + sealed::Sealed {
    /// Makes room for at least `additional` more bytes.
    fn reserve_bytes(&mut self, additional: usize);
}

impl GrowableBuf for BytesMut {
    fn reserve_bytes(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

impl GrowableBuf for Vec<u8> {
    fn reserve_bytes(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for bytes::BytesMut {}
    impl Sealed for Vec<u8> {}
}

/// The number of bytes [`encode_frame`] writes for `msg`: prefix plus body.
pub fn frame_len(msg: &impl Message) -> usize {
    let body = msg.encoded_len();
    prost::length_delimiter_len(body) + body
}

/// Appends `msg` as one frame to `buf` and returns the number of bytes written. Appending several
/// frames to one buffer makes a batch for one WebSocket message or one stream write.
pub fn encode_frame(msg: &impl Message, buf: &mut impl GrowableBuf) -> usize {
    let len = frame_len(msg);
    buf.reserve_bytes(len);
    // prost fails only when the buffer lacks room; a growable buffer never does.
    let encoded = msg.encode_length_delimited(buf);
    debug_assert!(encoded.is_ok(), "growable buffers always have room");
    len
}

/// Encodes `msg` as one frame into its own buffer, for sharing: an event is encoded once and the
/// same `Bytes` is queued for every subscriber.
pub fn encode_frame_to_bytes(msg: &impl Message) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame_len(msg));
    encode_frame(msg, &mut buf);
    buf.freeze()
}

/// `ServerEnvelope.push` and `Push.event`: the fields [`encode_event_frame`] writes by hand.
const ENVELOPE_PUSH_FIELD: u32 = 2;
const PUSH_EVENT_FIELD: u32 = 1;

/// Encodes `event` as the frame of a `ServerEnvelope { push: Push { event } }`, byte for byte
/// what [`encode_frame_to_bytes`] makes of that envelope, without building it: the envelope
/// owns its event, so building it meant cloning every string of the event once per commit and
/// once per replayed entry, only to encode and drop the copy.
pub fn encode_event_frame(event: &crate::v1::ChannelEvent) -> Bytes {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
    let event_len = event.encoded_len();
    let push_len = key_len(PUSH_EVENT_FIELD) + encoded_len_varint(event_len as u64) + event_len;
    let envelope_len =
        key_len(ENVELOPE_PUSH_FIELD) + encoded_len_varint(push_len as u64) + push_len;
    let mut buf = BytesMut::with_capacity(prost::length_delimiter_len(envelope_len) + envelope_len);
    encode_varint(envelope_len as u64, &mut buf);
    encode_key(ENVELOPE_PUSH_FIELD, WireType::LengthDelimited, &mut buf);
    encode_varint(push_len as u64, &mut buf);
    encode_key(PUSH_EVENT_FIELD, WireType::LengthDelimited, &mut buf);
    encode_varint(event_len as u64, &mut buf);
    event.encode_raw(&mut buf);
    buf.freeze()
}

/// Reads a length prefix from the start of `bytes`.
///
/// Returns `Ok(None)` when the prefix is incomplete, or `Ok(Some((prefix_len, frame_len)))`.
/// Fails as soon as the value read so far exceeds `max`, so that an endless prefix is refused
/// without waiting for more bytes.
fn read_prefix(bytes: &[u8], max: usize) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().take(MAX_VARINT_LEN).enumerate() {
        let low = u64::from(byte & 0x7f);
        // The tenth byte may only hold the top bit of a u64.
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(DecodeError::InvalidLengthPrefix);
        }
        value |= low << (7 * i);
        if value > max as u64 {
            return Err(DecodeError::FrameTooLarge { len: value, max });
        }
        if byte & 0x80 == 0 {
            // `value <= max`, and `max` is a usize.
            return Ok(Some((i + 1, value as usize)));
        }
    }
    if bytes.len() >= MAX_VARINT_LEN {
        return Err(DecodeError::InvalidLengthPrefix);
    }
    Ok(None)
}

/// A streaming frame decoder for byte streams (QUIC) that accepts any fragmentation.
///
/// The caller appends received bytes to a `BytesMut` and calls [`FrameDecoder::decode`] until it
/// returns `Ok(None)`. The decoder consumes exactly the bytes of each complete frame and leaves
/// partial input in the buffer, so it is safe to use across `select!` cancellation.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_len: usize,
    /// Prefix and body length of a frame whose prefix was read but whose body is incomplete, so
    /// that the prefix is parsed once however the body trickles in.
    pending: Option<(usize, usize)>,
}

impl FrameDecoder {
    /// A decoder that refuses frames whose body is longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            pending: None,
        }
    }

    /// The limit this decoder enforces.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Takes the next complete frame's body out of `buf`, without decoding it.
    ///
    /// `Ok(None)` means more bytes are needed; `buf` has then been reserved to hold the whole
    /// frame, so that the next read can fill it.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        let (prefix_len, body_len) = match self.pending {
            Some(known) => known,
            None => match read_prefix(buf, self.max_frame_len)? {
                Some(known) => known,
                None => return Ok(None),
            },
        };
        let total = prefix_len + body_len;
        if buf.len() < total {
            self.pending = Some((prefix_len, body_len));
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        self.pending = None;
        buf.advance(prefix_len);
        Ok(Some(buf.split_to(body_len).freeze()))
    }

    /// Takes and decodes the next complete frame out of `buf`. `Ok(None)` means more bytes are
    /// needed.
    pub fn decode<M: Message + Default>(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<M>, DecodeError> {
        match self.next_frame(buf)? {
            Some(body) => Ok(Some(M::decode(body)?)),
            None => Ok(None),
        }
    }
}

/// Splits one WebSocket binary message into frame bodies, without decoding them.
///
/// The iterator yields each frame's body in order and stops after the first error. A message
/// must hold at least one frame and end exactly at a frame boundary.
pub fn split_frames(message: Bytes, max_frame_len: usize) -> SplitFrames {
    SplitFrames {
        rest: message,
        max_frame_len,
        first: true,
        failed: false,
    }
}

/// Decodes every frame of one WebSocket binary message.
///
/// Bodies share `message`'s buffer: `bytes` fields of the envelopes are not copied.
pub fn decode_frames<M: Message + Default>(
    message: Bytes,
    max_frame_len: usize,
) -> impl Iterator<Item = Result<M, DecodeError>> {
    split_frames(message, max_frame_len).map(|body| Ok(M::decode(body?)?))
}

/// The iterator of [`split_frames`].
#[derive(Debug)]
pub struct SplitFrames {
    rest: Bytes,
    max_frame_len: usize,
    first: bool,
    failed: bool,
}

impl Iterator for SplitFrames {
    type Item = Result<Bytes, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let first = std::mem::replace(&mut self.first, false);
        if self.rest.is_empty() {
            if first {
                self.failed = true;
                return Some(Err(DecodeError::EmptyMessage));
            }
            return None;
        }
        let result = match read_prefix(&self.rest, self.max_frame_len) {
            Ok(Some((prefix_len, body_len))) => {
                let available = self.rest.len() - prefix_len;
                if available < body_len {
                    Err(DecodeError::Truncated {
                        missing: body_len - available,
                    })
                } else {
                    self.rest.advance(prefix_len);
                    Ok(self.rest.split_to(body_len))
                }
            }
            // The message ended inside the prefix: at least one prefix byte and the body are missing.
            Ok(None) => Err(DecodeError::Truncated { missing: 1 }),
            Err(e) => Err(e),
        };
        self.failed = result.is_err();
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{ClientEnvelope, Ping, client_envelope::Request};

    fn ping(id: u64) -> ClientEnvelope {
        ClientEnvelope::new(id, Request::Ping(Ping { client_time_ms: id }))
    }

    #[test]
    fn an_event_frame_is_the_push_envelope_encoded() {
        use crate::v1::{
            ChannelEvent, Message as ChatMessage, ServerEnvelope, channel_event, push,
        };
        let big_text = "x".repeat(300);
        let events = [
            ChannelEvent::default(),
            ChannelEvent {
                channel_id: "dm-alice-bob".into(),
                seq: 1 << 40,
                author_id: "alice".into(),
                server_time_ms: 1_764_000_000_000,
                epoch: 3,
                body: Some(channel_event::Body::Message(ChatMessage {
                    client_msg_id: "c-1".into(),
                    text: big_text,
                    mentions: vec!["bob".into()],
                    custom: vec![0, 1, 2].into(),
                    ..Default::default()
                })),
            },
        ];
        for event in events {
            let by_envelope =
                encode_frame_to_bytes(&ServerEnvelope::push(push::Push::Event(event.clone())));
            let frame = encode_event_frame(&event);
            assert_eq!(frame, by_envelope, "{event:?}");
        }
    }

    #[test]
    fn frame_is_prefix_plus_body() {
        let mut buf = Vec::new();
        let n = encode_frame(&ping(1), &mut buf);
        assert_eq!(n, buf.len());
        assert_eq!(usize::from(buf[0]), buf.len() - 1);
        assert_eq!(frame_len(&ping(1)), n);
    }

    #[test]
    fn streaming_decoder_waits_for_the_whole_frame() {
        let mut wire = BytesMut::new();
        encode_frame(&ping(300), &mut wire);
        let full = wire.split().freeze();
        let mut decoder = FrameDecoder::new(64);
        let mut buf = BytesMut::new();
        for (i, byte) in full.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let got: Option<ClientEnvelope> = decoder.decode(&mut buf).unwrap();
            if i + 1 < full.len() {
                assert_eq!(got, None, "frame complete after only {} bytes", i + 1);
            } else {
                assert_eq!(got, Some(ping(300)));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_prefix_is_refused_before_the_body_arrives() {
        let mut decoder = FrameDecoder::new(1024);
        // 1025 as a varint, and no body at all.
        let mut buf = BytesMut::from(&[0x81, 0x08][..]);
        let err = decoder.decode::<ClientEnvelope>(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::FrameTooLarge {
                len: 1025,
                max: 1024
            }
        ));
        // The refusal must not have grown the buffer for the announced frame.
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn endless_prefix_is_refused_without_more_input() {
        // With a large limit the value stays under it for a while; ten continuation bytes are
        // an invalid varint.
        let err = read_prefix(&[0x80; 10], usize::MAX).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidLengthPrefix));
        // With a small limit, the running value passes it early.
        let err = read_prefix(&[0xff, 0xff], 100).unwrap_err();
        assert!(matches!(err, DecodeError::FrameTooLarge { .. }));
        assert!(read_prefix(&[0x80, 0x80], usize::MAX).unwrap().is_none());
    }

    #[test]
    fn tenth_prefix_byte_may_only_hold_one_bit() {
        let mut prefix = [0xff_u8; 10];
        prefix[9] = 0x02;
        let err = read_prefix(&prefix, usize::MAX).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidLengthPrefix));
    }

    #[test]
    fn batch_decodes_every_frame_in_order() {
        let mut buf = BytesMut::new();
        for id in 1..=3 {
            encode_frame(&ping(id), &mut buf);
        }
        let frames: Vec<ClientEnvelope> = decode_frames(buf.freeze(), 64)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(frames, vec![ping(1), ping(2), ping(3)]);
    }

    #[test]
    fn batch_with_a_cut_frame_is_truncated() {
        let mut buf = BytesMut::new();
        encode_frame(&ping(1), &mut buf);
        encode_frame(&ping(2), &mut buf);
        let whole = buf.freeze();
        let cut = whole.slice(..whole.len() - 1);
        let results: Vec<_> = decode_frames::<ClientEnvelope>(cut, 64).collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].as_ref().unwrap(), &ping(1));
        assert!(matches!(
            results[1],
            Err(DecodeError::Truncated { missing: 1 })
        ));
    }

    #[test]
    fn empty_message_is_an_error() {
        let results: Vec<_> = decode_frames::<ClientEnvelope>(Bytes::new(), 64).collect();
        assert!(matches!(results[..], [Err(DecodeError::EmptyMessage)]));
    }

    #[test]
    fn zero_length_frame_is_an_empty_envelope() {
        // Semantic checks (a request must be set) belong to the receiver, not the codec.
        let frames: Vec<ClientEnvelope> = decode_frames(Bytes::from_static(&[0]), 64)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(frames, vec![ClientEnvelope::default()]);
    }
}
