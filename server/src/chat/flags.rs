//! The moderation queue: readers flag a message or a user, moderators and owners (and admins,
//! through `chorusctl`) list the channel's flags and close them. Flags are records, not log
//! entries: members never see who reported whom.

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::{self, FlagResolution, Role};
use chorus_storage::{FlagRecord, NewFlag};
use prost::Message;

use super::{Chat, Error, clamp_limit, user_id};
use crate::clock::unix_ms;

/// Flags per page when the request asks for 0.
const DEFAULT_FLAG_PAGE: usize = 50;
/// Longest reason or note, bytes.
const MAX_REASON_BYTES: usize = 1024;
/// Flags examined per page at most, whatever their state: bounds a page of open flags in a
/// queue of many closed ones.
const FLAG_SCAN: usize = 1000;

impl Chat<'_> {
    /// Flags a message (`seq` nonzero) or a user of a readable channel. The same report while
    /// the first is open changes nothing. Takes from the publish budget.
    pub async fn flag(&self, f: &v1::FlagMessage, id: &ChannelId) -> Result<(), Error> {
        let Some(me) = self.actor.user() else {
            return Err(Error::Forbidden("a user flags".into()));
        };
        if f.reason.len() > MAX_REASON_BYTES {
            return Err(Error::too_large("reason", "a reason is at most 1024 bytes"));
        }
        self.readable(id)?;
        let user = if f.seq != 0 {
            let entry = self
                .node
                .store()
                .entry(id, Seq(f.seq))?
                .ok_or_else(|| Error::NotFound(format!("no entry {}", f.seq)))?;
            let view = self.event_view(&entry);
            if !matches!(view.body, Some(v1::channel_event::Body::Message(_))) {
                return Err(Error::NotAMessage(f.seq));
            }
            view.author_id
        } else {
            // A flagged user is a member: reports stay bounded by the channel's members.
            let user = user_id("user_id", &f.user_id)?;
            if self.node.store().member(id, &user)?.is_none() {
                return Err(Error::NotFoundIn {
                    field: "user_id",
                    message: format!("{user} is not a member of {id}"),
                });
            }
            user.to_string()
        };
        self.take_publish_budget(&self.node.limits())?;
        let (id_, created) = self
            .node
            .store()
            .raise_flag(
                id,
                NewFlag {
                    target_seq: f.seq,
                    user_id: user,
                    reporter_id: me.to_string(),
                    reason: f.reason.clone(),
                    now_ms: unix_ms(),
                },
            )
            .await?;
        if created {
            tracing::info!(target: "chorus::audit", channel = %id, flag = id_, by = %me, seq = f.seq, "flag raised");
        }
        Ok(())
    }

    /// A page of the channel's flags, newest first (moderators, owners, admins), cut to
    /// `max_reply_bytes`.
    pub fn list_flags(
        &self,
        l: &v1::ListFlags,
        id: &ChannelId,
        max_reply_bytes: usize,
    ) -> Result<v1::FlagList, Error> {
        self.require_role(id, Role::Moderator)?;
        let before = match l.cursor.as_str() {
            "" => None,
            c => Some(
                c.parse()
                    .map_err(|_| Error::invalid("cursor", "not a cursor of this list"))?,
            ),
        };
        let max = self.node.limits().announced().max_list_limit;
        let limit = clamp_limit(l.limit, DEFAULT_FLAG_PAGE, max);
        let page = self
            .node
            .store()
            .flags(id, before, l.include_resolved, limit, FLAG_SCAN)?;
        let mut flags = Vec::with_capacity(page.flags.len());
        let mut next = page.next;
        let mut left = max_reply_bytes;
        for (flag_id, record) in page.flags {
            let flag = self.flag_view(id, flag_id, record)?;
            let len = flag.encoded_len() + 8;
            if len > left && !flags.is_empty() {
                next = flags.last().and_then(|f: &v1::Flag| f.flag_id.parse().ok());
                break;
            }
            left = left.saturating_sub(len);
            flags.push(flag);
        }
        Ok(v1::FlagList {
            flags,
            next_cursor: next.map(|n| n.to_string()).unwrap_or_default(),
        })
    }

    /// Closes a flag (moderators, owners, admins).
    pub async fn resolve_flag(&self, r: &v1::ResolveFlag, id: &ChannelId) -> Result<(), Error> {
        self.require_role(id, Role::Moderator)?;
        let flag_id: u64 = r
            .flag_id
            .parse()
            .map_err(|_| Error::invalid("flag_id", "not a flag id"))?;
        let resolution =
            FlagResolution::try_from(r.resolution).unwrap_or(FlagResolution::Unspecified);
        if resolution == FlagResolution::Unspecified {
            return Err(Error::invalid("resolution", "dismissed or actioned"));
        }
        if r.note.len() > MAX_REASON_BYTES {
            return Err(Error::too_large("note", "a note is at most 1024 bytes"));
        }
        let by = self.actor.user().map(|u| u.to_string()).unwrap_or_default();
        self.node
            .store()
            .resolve_flag(id, flag_id, &by, resolution as i32, &r.note, unix_ms())
            .await?
            .ok_or_else(|| Error::NotFoundIn {
                field: "flag_id",
                message: format!("no flag {flag_id} in {id}"),
            })?;
        tracing::info!(target: "chorus::audit", channel = %id, flag = flag_id, by = %by, resolution = resolution.as_str_name(), "flag resolved");
        Ok(())
    }

    /// A flag as moderators see it, with the flagged message as it reads now.
    pub fn flag_view(
        &self,
        id: &ChannelId,
        flag_id: u64,
        r: FlagRecord,
    ) -> Result<v1::Flag, Error> {
        let message = match r.target_seq {
            0 => None,
            seq => self
                .node
                .store()
                .entry(id, Seq(seq))?
                .map(|e| self.event_view(&e)),
        };
        Ok(v1::Flag {
            flag_id: flag_id.to_string(),
            channel_id: id.to_string(),
            seq: r.target_seq,
            user_id: r.user_id,
            reporter_id: r.reporter_id,
            reason: r.reason,
            created_at_ms: r.created_at_ms,
            message,
            resolution: r.resolution,
            resolved_by: r.resolved_by,
            resolved_at_ms: r.resolved_at_ms,
            note: r.note,
        })
    }
}

/// Raises the flag a blocklist asks for on a stored post (`author`'s message at `seq`). Best
/// effort: the post is stored and acknowledged either way, so a failure is logged, not returned.
pub async fn flag_blocked(
    store: &chorus_storage::Store,
    id: &ChannelId,
    seq: Seq,
    author: &str,
    word: &str,
) {
    let raised = store
        .raise_flag(
            id,
            NewFlag {
                target_seq: seq.get(),
                user_id: author.to_owned(),
                reporter_id: String::new(),
                reason: format!("blocklist: {word}"),
                now_ms: unix_ms(),
            },
        )
        .await;
    match raised {
        Ok(_) => {
            tracing::info!(target: "chorus::audit", channel = %id, seq = seq.get(), author, word, "flag raised by a blocklist");
        }
        Err(e) => {
            tracing::warn!(channel = %id, seq = seq.get(), error = %e, "the blocklist's flag was not raised");
        }
    }
}
