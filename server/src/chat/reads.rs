//! Read state: markers, unread counts, and read receipts to the other members.

use std::time::Instant;

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1::{self, push::Push};
use chorus_storage::{ChannelInfo, ReadState};
use prost::Message;

use super::channels::MEMBERSHIP_PAGE;
use super::{Actor, Chat, Error, channel_id};
use crate::clock::unix_ms;
use crate::ids::SessionKey;
use crate::ratelimit::TokenBucket;

/// What a session brings to a read-marker move: its key (its own pushes skip it) and its
/// budget of receipts to the other members.
pub struct Reader<'s> {
    /// The session moving the marker.
    pub session: SessionKey,
    /// Its read-receipt budget (its own, so that typing and reading do not starve each other).
    pub receipts: &'s mut TokenBucket,
}

impl Chat<'_> {
    /// Moves the acting user's read marker forward to `seq` (never back), and tells the
    /// user's other sessions and, as a receipt, the channel's other subscribers.
    pub async fn mark_read(
        &self,
        id: &ChannelId,
        seq: u64,
        reader: Reader<'_>,
    ) -> Result<v1::ReadMarker, Error> {
        let Actor::User(user) = self.actor else {
            return Err(Error::Forbidden("a user reads".into()));
        };
        let info = self.readable(id)?;
        let moved = self
            .node
            .store()
            .advance_read_marker(user, id, Seq(seq), unix_ms())
            .await?;
        let state = self.read_state_of(user, id)?;
        let marker = v1::ReadMarker {
            channel_id: id.to_string(),
            user_id: user.to_string(),
            seq: state.last_read.get(),
            unread_count: state.unread,
            updated_at_ms: state.updated_at_ms,
        };
        if moved {
            self.tell_read(id, &info, &marker, reader);
        }
        Ok(marker)
    }

    /// A marker moved: the user's other sessions get it (with the unread count, to clear their
    /// badges). The other subscribers get it as a read receipt (without the count, which is
    /// the user's own) when the reader is a member, the channel has at most
    /// `read_receipt_max_members` members and subscribers (a public channel's readers need not
    /// be members), and the session is within its receipt rate: every receipt is one push per
    /// subscriber.
    fn tell_read(
        &self,
        id: &ChannelId,
        info: &ChannelInfo,
        marker: &v1::ReadMarker,
        reader: Reader<'_>,
    ) {
        let Actor::User(user) = self.actor else {
            return;
        };
        let hub = self.node.hub();
        hub.push_to_user(user, Push::ReadMarker(marker.clone()), reader.session);
        let limit = self.node.limits().read_receipt_max_members;
        let skipped = if limit == 0 {
            Some("off")
        } else if info.record.member_count > limit {
            Some("too_many_members")
        } else if !matches!(self.role(id), Ok(Some(_))) {
            Some("not_member")
        } else if reader.receipts.take(Instant::now()).is_err() {
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
        hub.broadcast_to_others(id, Push::ReadMarker(receipt), user, limit as usize);
    }

    /// `user`'s read state in a channel, counting the marker the user's own latest posts moved
    /// even before that marker is written: one's own messages never count as unread.
    pub(crate) fn read_state_of(&self, user: &UserId, id: &ChannelId) -> Result<ReadState, Error> {
        let floor = self.node.own_reads().pending(user, id);
        Ok(self.node.store().read_state_at_least(user, id, floor)?)
    }

    /// Unread counts of the acting user's channels (or of those named), with the total over
    /// all of them, cut to `max_reply_bytes`.
    pub fn unread(
        &self,
        g: v1::GetUnread,
        max_reply_bytes: usize,
    ) -> Result<v1::UnreadCounts, Error> {
        let Actor::User(user) = self.actor else {
            return Err(Error::Forbidden("a user has unread counts".into()));
        };
        let store = self.node.store();
        let unread = |id: &ChannelId| -> Result<v1::ChannelUnread, Error> {
            let state = self.read_state_of(user, id)?;
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
        let max = self.node.limits().max_memberships_per_user as usize;
        let mut all = Vec::new();
        let mut after: Option<ChannelId> = None;
        while all.len() < max {
            let page =
                store.user_channels(user, after.as_ref(), MEMBERSHIP_PAGE.min(max - all.len()))?;
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
                if store.member(&id, user)?.is_none() {
                    return Err(Error::NotFoundIn {
                        field: "channel_ids",
                        message: format!("not a member of {id}"),
                    });
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
            if bytes > max_reply_bytes {
                break;
            }
            channels.push(c);
        }
        Ok(v1::UnreadCounts {
            channels,
            total_unread,
        })
    }
}
