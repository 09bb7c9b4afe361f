//! One frame per stream direction: the writer sends one framed message and finishes the
//! stream; the reader reads to the end, at most the frame limit, and expects exactly one frame.
//! A stream is a request (or the handshake), so there is no interleaving to manage.

use bytes::Bytes;
use chorus_protocol::codec::{decode_frames, encode_frame_to_bytes};
use prost::Message;

use crate::error::ClusterError;

/// The bytes a varint length prefix takes at most.
const MAX_PREFIX: usize = 10;

/// Writes `msg` as the stream's only frame and finishes the stream.
pub(crate) async fn write_one(
    send: &mut quinn::SendStream,
    msg: &impl Message,
    peer: &str,
) -> Result<(), ClusterError> {
    let lost = |e: &dyn std::fmt::Display| ClusterError::ConnectionLost {
        peer: peer.to_owned(),
        reason: e.to_string(),
    };
    send.write_all(&encode_frame_to_bytes(msg))
        .await
        .map_err(|e| lost(&e))?;
    send.finish().map_err(|e| lost(&e))
}

/// Reads the stream's only frame.
pub(crate) async fn read_one<M: Message + Default>(
    recv: &mut quinn::RecvStream,
    max: usize,
    peer: &str,
) -> Result<M, ClusterError> {
    let bytes = recv
        .read_to_end(max + MAX_PREFIX)
        .await
        .map_err(|e| match e {
            quinn::ReadToEndError::TooLong => ClusterError::FrameTooLarge { max },
            quinn::ReadToEndError::Read(e) => ClusterError::ConnectionLost {
                peer: peer.to_owned(),
                reason: e.to_string(),
            },
        })?;
    decode_single(Bytes::from(bytes), max)
}

/// Exactly one frame of at most `max` bytes.
pub(crate) fn decode_single<M: Message + Default>(
    bytes: Bytes,
    max: usize,
) -> Result<M, ClusterError> {
    let mut frames = decode_frames::<M>(bytes, max);
    let first = match frames.next() {
        Some(Ok(m)) => m,
        Some(Err(chorus_protocol::DecodeError::FrameTooLarge { .. })) => {
            return Err(ClusterError::FrameTooLarge { max });
        }
        Some(Err(e)) => return Err(ClusterError::BadFrame(e.to_string())),
        None => return Err(ClusterError::BadFrame("empty stream".into())),
    };
    if frames.next().is_some() {
        return Err(ClusterError::BadFrame("more than one frame".into()));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::codec::encode_frame;
    use chorus_protocol::peer::{Ping, Request, request};

    fn ping(n: usize) -> Request {
        Request {
            id: 1,
            deadline_ms: 10,
            body: Some(request::Body::Ping(Ping {
                payload: vec![7; n].into(),
            })),
        }
    }

    #[test]
    fn one_frame_decodes_and_anything_else_is_refused() {
        let one = encode_frame_to_bytes(&ping(3));
        assert_eq!(
            decode_single::<Request>(one.clone(), 100).ok(),
            Some(ping(3))
        );
        let mut two = bytes::BytesMut::new();
        encode_frame(&ping(3), &mut two);
        encode_frame(&ping(3), &mut two);
        assert!(matches!(
            decode_single::<Request>(two.freeze(), 100),
            Err(ClusterError::BadFrame(_))
        ));
        assert!(matches!(
            decode_single::<Request>(Bytes::new(), 100),
            Err(ClusterError::BadFrame(_))
        ));
        assert!(matches!(
            decode_single::<Request>(encode_frame_to_bytes(&ping(500)), 100),
            Err(ClusterError::FrameTooLarge { max: 100 })
        ));
        assert!(matches!(
            decode_single::<Request>(Bytes::from_static(&[3, 0xff, 0xff, 0xff]), 100),
            Err(ClusterError::BadFrame(_))
        ));
    }
}
