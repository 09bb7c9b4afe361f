//! Pins: moderators pin and unpin messages (each a log entry); the store keeps the channel's
//! pins, the most recently pinned first, at most `max_pins_per_channel`.

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::{self, Role, channel_event::Body};

use prost::Message;

use super::{Chat, Error, channel_id, clamp_limit};

/// Pins per page when the request asks for 0.
const DEFAULT_PIN_PAGE: usize = 50;

impl Chat<'_> {
    /// Pins a live message (moderator or owner); pinning it again answers with the pin's seq
    /// (`duplicate`).
    pub async fn pin(
        &self,
        id: &ChannelId,
        target_seq: u64,
        client_msg_id: &str,
    ) -> Result<v1::Appended, Error> {
        self.moderate_message(id, target_seq)?;
        self.require_not_blocked(&self.existing_channel(id)?)?;
        let body = Body::MessagePinned(v1::MessagePinned { target_seq });
        self.append_keyed(id, body, client_msg_id).await
    }

    /// Unpins a pinned message (moderator or owner; `NOT_FOUND` when it is not pinned). A
    /// deleted message may still be unpinned.
    pub async fn unpin(
        &self,
        id: &ChannelId,
        target_seq: u64,
        client_msg_id: &str,
    ) -> Result<v1::Appended, Error> {
        let (info, _) = self.require_role(id, Role::Moderator)?;
        if info.record.archived && self.actor.user().is_some() {
            return Err(Error::Forbidden("the channel is archived".into()));
        }
        self.require_not_blocked(&info)?;
        let body = Body::MessageUnpinned(v1::MessageUnpinned { target_seq });
        self.append_keyed(id, body, client_msg_id).await
    }

    /// A page of a readable channel's pins, each with its message as it reads now, cut to
    /// `max_reply_bytes`.
    pub fn list_pins(&self, l: v1::ListPins, max_reply_bytes: usize) -> Result<v1::PinList, Error> {
        let id = channel_id("channel_id", &l.channel_id)?;
        self.readable(&id)?;
        // The cursor is the last pin's seq: the next page holds older pins.
        let before = match l.cursor.as_str() {
            "" => u64::MAX,
            c => c
                .parse()
                .map_err(|_| Error::invalid("cursor", "not a cursor of this list"))?,
        };
        let max = self.node.limits().announced().max_list_limit;
        let limit = clamp_limit(l.limit, DEFAULT_PIN_PAGE, max);
        let store = self.node.store();
        let all = store.pins(&id)?;
        let mut rest = all.into_iter().filter(|p| p.pin_seq < before).peekable();
        let mut pins: Vec<v1::Pin> = Vec::new();
        let mut left = max_reply_bytes;
        let mut cut = false;
        while pins.len() < limit {
            let Some(p) = rest.next() else { break };
            let Some(entry) = store.entry(&id, Seq(p.target_seq))? else {
                continue;
            };
            let pin = v1::Pin {
                message: Some(self.event_view(&entry)),
                pinned_by: p.pinned_by,
                pinned_at_ms: p.pinned_at_ms,
                pin_seq: p.pin_seq,
            };
            let len = pin.encoded_len() + 8;
            if len > left && !pins.is_empty() {
                cut = true;
                break;
            }
            left = left.saturating_sub(len);
            pins.push(pin);
        }
        let next_cursor = match (cut || rest.peek().is_some(), pins.last()) {
            (true, Some(last)) => last.pin_seq.to_string(),
            _ => String::new(),
        };
        Ok(v1::PinList { pins, next_cursor })
    }

    /// A live message of a channel the actor moderates.
    fn moderate_message(&self, id: &ChannelId, seq: u64) -> Result<(), Error> {
        let (role, _, _) = self.target_message(id, seq)?;
        if super::access::role_rank(role) < super::access::role_rank(Role::Moderator) {
            return Err(Error::Forbidden("needs role ROLE_MODERATOR".into()));
        }
        Ok(())
    }
}
