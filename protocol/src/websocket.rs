//! WebSocket framing (RFC 6455) for the client side, without I/O: decoding the frames a server
//! sends and encoding the masked frames a client sends.
//!
//! The SDK and the load tester read every server message through this decoder instead of a
//! general WebSocket library: it reads into a buffer without zero-filling it first and hands
//! out each single-frame message as a slice of that buffer, so receiving a message costs no
//! copy and no per-connection lock. No extension is negotiated, so the reserved bits must be
//! clear; a server never masks; text messages are not part of the protocol.

use bytes::{Buf, Bytes, BytesMut};

/// Opcode nibbles (RFC 6455 section 5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

const FIN: u8 = 0x80;
const RESERVED: u8 = 0x70;
const MASKED: u8 = 0x80;

/// A control frame carries at most this many bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// What a server sent, one complete message or control frame at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsIncoming {
    /// A binary message, reassembled if it came in fragments.
    Message(Bytes),
    /// A ping: answer with a pong carrying the same payload ([`client_frame`] with
    /// [`WsOpcode::Pong`]).
    Ping(Bytes),
    /// The server closes: its close code and reason, when it gave one.
    Close {
        /// The WebSocket close code (chorus codes are `4000 + CloseCode`).
        code: Option<u16>,
        /// The reason, lossily decoded as UTF-8.
        reason: String,
    },
}

/// Why a server's bytes are not a valid frame stream. Every one ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsFrameError {
    /// A server frame with the mask bit set.
    #[error("a masked frame from the server")]
    Masked,
    /// Reserved bits set although no extension was negotiated.
    #[error("reserved bits set in a frame header")]
    Reserved,
    /// An opcode RFC 6455 does not define.
    #[error("unknown frame opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A text message (the protocol is binary only).
    #[error("a text message")]
    Text,
    /// A control frame that is fragmented or longer than 125 bytes.
    #[error("a fragmented or oversized control frame")]
    BadControl,
    /// A message larger than the limit; detected from the header, before buffering it.
    #[error("message of at least {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The message length known so far.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// A continuation frame with no message to continue.
    #[error("a continuation frame outside a fragmented message")]
    UnexpectedContinuation,
    /// A new message began before the fragmented one ended.
    #[error("a new message inside a fragmented message")]
    Interleaved,
    /// A close frame with a one-byte payload (a code needs two).
    #[error("a close frame with a truncated code")]
    BadClose,
}

/// Decodes a server's frames from a byte buffer the caller fills.
#[derive(Debug)]
pub struct WsDecoder {
    max_message: usize,
    /// The fragments of an unfinished message.
    partial: Option<BytesMut>,
}

impl WsDecoder {
    /// A decoder refusing messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
        }
    }

    /// Takes the next message or control frame from the front of `buf`; `Ok(None)` when `buf`
    /// holds no complete one yet (then `buf` has room reserved for the rest of the frame).
    /// Pongs are consumed and skipped. After an error the stream is not usable.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<WsIncoming>, WsFrameError> {
        loop {
            let Some((first, header_len, len)) = header(buf)? else {
                return Ok(None);
            };
            let opcode = first & 0x0F;
            let fin = first & FIN != 0;
            let is_control = opcode & 0x8 != 0;
            if is_control && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
                return Err(WsFrameError::BadControl);
            }
            // Refused from the header, before anything of its payload is buffered.
            match opcode {
                TEXT => return Err(WsFrameError::Text),
                BINARY if self.partial.is_some() => return Err(WsFrameError::Interleaved),
                CONTINUATION if self.partial.is_none() => {
                    return Err(WsFrameError::UnexpectedContinuation);
                }
                BINARY | CONTINUATION | CLOSE | PING | PONG => {}
                other => return Err(WsFrameError::UnknownOpcode(other)),
            }
            let buffered = self.partial.as_ref().map_or(0, BytesMut::len) as u64;
            if !is_control && buffered.saturating_add(len) > self.max_message as u64 {
                return Err(WsFrameError::TooLarge {
                    len: buffered.saturating_add(len),
                    max: self.max_message,
                });
            }
            // Bounded by the check above (or by 125 for control frames).
            let len = len as usize;
            let whole = header_len + len;
            if buf.len() < whole {
                buf.reserve(whole - buf.len());
                return Ok(None);
            }
            buf.advance(header_len);
            let payload = buf.split_to(len);
            match opcode {
                BINARY if fin => return Ok(Some(WsIncoming::Message(payload.freeze()))),
                BINARY => self.partial = Some(payload),
                CONTINUATION => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(WsFrameError::UnexpectedContinuation);
                    };
                    partial.extend_from_slice(&payload);
                    if fin {
                        let message = self.partial.take().unwrap_or_default();
                        return Ok(Some(WsIncoming::Message(message.freeze())));
                    }
                }
                CLOSE => return close(&payload).map(Some),
                PING => return Ok(Some(WsIncoming::Ping(payload.freeze()))),
                // Pongs are skipped; every other opcode was refused above.
                _ => {}
            }
        }
    }
}

/// The first byte, the header's length and the payload length of the frame at the front of
/// `buf`, once its header is complete.
fn header(buf: &BytesMut) -> Result<Option<(u8, usize, u64)>, WsFrameError> {
    let (Some(&first), Some(&second)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if first & RESERVED != 0 {
        return Err(WsFrameError::Reserved);
    }
    if second & MASKED != 0 {
        return Err(WsFrameError::Masked);
    }
    let short = second & 0x7F;
    let extended = match short {
        126 => 2,
        127 => 8,
        _ => return Ok(Some((first, 2, u64::from(short)))),
    };
    let Some(bytes) = buf.get(2..2 + extended) else {
        return Ok(None);
    };
    let len = bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
    Ok(Some((first, 2 + extended, len)))
}

fn close(payload: &[u8]) -> Result<WsIncoming, WsFrameError> {
    match payload {
        [] => Ok(WsIncoming::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(WsFrameError::BadClose),
        [hi, lo, reason @ ..] => Ok(WsIncoming::Close {
            code: Some(u16::from_be_bytes([*hi, *lo])),
            reason: String::from_utf8_lossy(reason).into_owned(),
        }),
    }
}

/// The kinds of frame the node and its clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsOpcode {
    /// A binary message (one frame).
    Binary,
    /// A close frame; its payload is the code and reason ([`close_payload`]).
    Close,
    /// The answer to a ping.
    Pong,
}

/// The header of a frame with FIN set: opcode, mask bit, and the payload length in 7, 7+16 or
/// 7+64 bits, the shortest that fits (RFC 6455 section 5.2). The masking key, if any, follows
/// it and is not part of it.
#[derive(Debug, Clone, Copy)]
pub struct FrameHeader {
    bytes: [u8; 10],
    len: usize,
}

impl FrameHeader {
    /// The header of a `payload_len`-byte frame; `masked` for client frames.
    pub fn new(opcode: WsOpcode, payload_len: usize, masked: bool) -> Self {
        let opcode = match opcode {
            WsOpcode::Binary => BINARY,
            WsOpcode::Close => CLOSE,
            WsOpcode::Pong => PONG,
        };
        let mask = if masked { MASKED } else { 0 };
        let mut bytes = [0u8; 10];
        bytes[0] = FIN | opcode;
        let len = if payload_len < 126 {
            bytes[1] = mask | payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = mask | 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = mask | 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    /// The header's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Appends one client frame (FIN set, masked with `mask`, as RFC 6455 requires of clients) to
/// `out`. The mask should be unpredictable (random per frame).
pub fn client_frame(out: &mut BytesMut, opcode: WsOpcode, payload: &[u8], mask: [u8; 4]) {
    out.reserve(14 + payload.len());
    out.extend_from_slice(FrameHeader::new(opcode, payload.len(), true).as_slice());
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A close frame's payload: the code, then as much of `reason` as fits in a control frame,
/// cut at a character boundary.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An unmasked frame as a server writes it.
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let len = payload.len();
        if len < 126 {
            out.push(len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            out.push(126);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    fn decode_all(wire: &[u8], max: usize) -> Result<Vec<WsIncoming>, WsFrameError> {
        let mut decoder = WsDecoder::new(max);
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        while let Some(m) = decoder.decode(&mut buf)? {
            out.push(m);
        }
        assert!(buf.is_empty(), "bytes left: {}", buf.len());
        Ok(out)
    }

    #[test]
    fn messages_pings_and_close_decode_and_pongs_are_skipped() {
        let mut wire = server_frame(0x82, b"hello");
        wire.extend(server_frame(0x8A, b"pong"));
        wire.extend(server_frame(0x89, b"ping"));
        wire.extend(server_frame(0x82, &[7; 300]));
        wire.extend(server_frame(0x88, &close_payload(4006, "slow")));
        assert_eq!(
            decode_all(&wire, 1 << 20),
            Ok(vec![
                WsIncoming::Message(Bytes::from_static(b"hello")),
                WsIncoming::Ping(Bytes::from_static(b"ping")),
                WsIncoming::Message(Bytes::from(vec![7; 300])),
                WsIncoming::Close {
                    code: Some(4006),
                    reason: "slow".into()
                },
            ])
        );
        assert_eq!(
            decode_all(&server_frame(0x88, b""), 10),
            Ok(vec![WsIncoming::Close {
                code: None,
                reason: String::new()
            }])
        );
    }

    #[test]
    fn fragments_reassemble_around_control_frames() {
        let mut wire = server_frame(0x02, b"ab");
        wire.extend(server_frame(0x89, b"p"));
        wire.extend(server_frame(0x00, b"cd"));
        wire.extend(server_frame(0x80, b"e"));
        assert_eq!(
            decode_all(&wire, 5),
            Ok(vec![
                WsIncoming::Ping(Bytes::from_static(b"p")),
                WsIncoming::Message(Bytes::from_static(b"abcde")),
            ])
        );
        assert_eq!(
            decode_all(&wire, 4),
            Err(WsFrameError::TooLarge { len: 5, max: 4 })
        );
    }

    #[test]
    fn invalid_frames_are_refused() {
        let cases: Vec<(Vec<u8>, WsFrameError)> = vec![
            (vec![0x82, 0x81, 1, 2, 3, 4, 0], WsFrameError::Masked),
            (server_frame(0xC2, b"x"), WsFrameError::Reserved),
            (server_frame(0x83, b"x"), WsFrameError::UnknownOpcode(3)),
            (server_frame(0x81, b"x"), WsFrameError::Text),
            (server_frame(0x09, b"x"), WsFrameError::BadControl),
            (server_frame(0x89, &[0; 126]), WsFrameError::BadControl),
            (
                server_frame(0x80, b"x"),
                WsFrameError::UnexpectedContinuation,
            ),
            (server_frame(0x88, b"x"), WsFrameError::BadClose),
            (
                [server_frame(0x02, b"a"), server_frame(0x82, b"b")].concat(),
                WsFrameError::Interleaved,
            ),
            (
                vec![0x82, 127, 0xFF, 0, 0, 0, 0, 0, 0, 0],
                WsFrameError::TooLarge {
                    len: 0xFF00_0000_0000_0000,
                    max: 100,
                },
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(decode_all(&wire, 100), Err(expected), "{wire:02x?}");
        }
    }

    #[test]
    fn bad_opcodes_are_refused_from_the_header_alone() {
        // Headers announcing 10 MB payloads, none of it sent: refused at once, nothing reserved.
        let big = |first: u8| vec![first, 127, 0, 0, 0, 0, 0, 0x98, 0x96, 0x80];
        let mut partial = WsDecoder::new(1 << 30);
        let mut buf = BytesMut::from(&server_frame(0x02, b"a")[..]);
        assert_eq!(partial.decode(&mut buf), Ok(None));
        for (decoder, first, expected) in [
            (&mut WsDecoder::new(1 << 30), 0x81, WsFrameError::Text),
            (
                &mut WsDecoder::new(1 << 30),
                0x83,
                WsFrameError::UnknownOpcode(3),
            ),
            (
                &mut WsDecoder::new(1 << 30),
                0x80,
                WsFrameError::UnexpectedContinuation,
            ),
            (&mut partial, 0x82, WsFrameError::Interleaved),
        ] {
            let mut buf = BytesMut::from(&big(first)[..]);
            assert_eq!(decoder.decode(&mut buf), Err(expected));
            assert!(buf.capacity() < 1024);
        }
    }

    #[test]
    fn an_incomplete_frame_reserves_room_for_the_rest() {
        let wire = server_frame(0x82, &[1; 70_000]);
        let mut decoder = WsDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&wire[..100]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(buf.capacity() >= wire.len());
        buf.extend_from_slice(&wire[100..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Some(WsIncoming::Message(m))) if m.len() == 70_000
        ));
    }

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        let header = |opcode, len| FrameHeader::new(opcode, len, false).as_slice().to_vec();
        assert_eq!(header(WsOpcode::Binary, 0), [0x82, 0]);
        assert_eq!(header(WsOpcode::Binary, 125), [0x82, 125]);
        assert_eq!(header(WsOpcode::Binary, 126), [0x82, 126, 0, 126]);
        assert_eq!(header(WsOpcode::Binary, 65_535), [0x82, 126, 0xff, 0xff]);
        assert_eq!(
            header(WsOpcode::Close, 65_536),
            [0x88, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn client_frames_are_masked() {
        let mut out = BytesMut::new();
        client_frame(&mut out, WsOpcode::Binary, b"abcde", [1, 2, 3, 4]);
        assert_eq!(
            &out[..],
            [
                0x82,
                0x85,
                1,
                2,
                3,
                4,
                b'a' ^ 1,
                b'b' ^ 2,
                b'c' ^ 3,
                b'd' ^ 4,
                b'e' ^ 1
            ]
        );
        let mut out = BytesMut::new();
        client_frame(&mut out, WsOpcode::Pong, &[0; 126], [0; 4]);
        assert_eq!(&out[..4], [0x8A, 0xFE, 0, 126]);
        let mut out = BytesMut::new();
        client_frame(&mut out, WsOpcode::Close, &[0; 70_000], [0; 4]);
        assert_eq!(&out[..10], [0x88, 0xFF, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        let payload = close_payload(4000, &"é".repeat(100));
        assert_eq!(payload.len(), 124);
        assert_eq!(&payload[..2], 4000u16.to_be_bytes());
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    proptest! {
        /// However the bytes arrive, the same messages come out, in order.
        #[test]
        fn any_split_of_a_valid_stream_decodes_the_same(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 1..8),
            fragment in 1usize..300,
            cuts in proptest::collection::vec(1usize..64, 1..50),
        ) {
            let mut wire = Vec::new();
            for m in &messages {
                let pieces: Vec<&[u8]> = if m.is_empty() { vec![&m[..]] } else { m.chunks(fragment).collect() };
                for (i, piece) in pieces.iter().enumerate() {
                    let opcode = if i == 0 { 0x2 } else { 0x0 };
                    let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
                    wire.extend(server_frame(fin | opcode, piece));
                }
                wire.extend(server_frame(0x8A, b""));
            }
            let mut decoder = WsDecoder::new(1 << 16);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut rest = &wire[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap_or(&1)).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                while let Some(m) = decoder.decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                    got.push(m);
                }
            }
            let expected: Vec<WsIncoming> = messages.into_iter().map(|m| WsIncoming::Message(Bytes::from(m))).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
