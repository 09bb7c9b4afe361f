//! A channel's posting policy: slow mode (a member waits between two posts; moderators and
//! owners do not) and blocklists (the server's and the channel's words and phrases, refused or
//! flagged). Checked on every publish and edit before anything is stored.

use chorus_protocol::v1::{self, BlockAction, Role};
use chorus_storage::{ChannelInfo, MemberRecord};

use super::access::role_rank;
use super::{Actor, Chat, Error};
use crate::blocklist::Action;
use crate::config::MAX_BLOCKED_WORDS;

/// Longest slow mode, ms (6 hours).
pub const MAX_SLOW_MODE_MS: u32 = 6 * 60 * 60 * 1000;

/// A post that passed with a blocked entry the policy flags rather than refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flagged(pub String);

impl Chat<'_> {
    /// Checks `text` against the blocklists and, for a new post, slow mode. `Ok(Some(_))`: the
    /// post passes, and a flag is to be raised once it is stored.
    pub(crate) fn posting_policy(
        &self,
        info: &ChannelInfo,
        member: Option<&MemberRecord>,
        text: &str,
        field: &'static str,
        new_post: bool,
    ) -> Result<Option<Flagged>, Error> {
        let flagged = self.blocked(info, text, field)?;
        if new_post {
            self.slow_mode(info, member)?;
        }
        Ok(flagged)
    }

    fn blocked(
        &self,
        info: &ChannelInfo,
        text: &str,
        field: &'static str,
    ) -> Result<Option<Flagged>, Error> {
        let server = self.node.blocklist();
        let r = &info.record;
        let channel_action = match BlockAction::try_from(r.block_action) {
            Ok(BlockAction::Flag) => Action::Flag,
            _ => Action::Refuse,
        };
        let hits = [
            (server.find(text), server.action),
            (
                crate::blocklist::find_normalised(&r.blocked_words, text),
                channel_action,
            ),
        ];
        let mut flagged = None;
        for (hit, action) in hits {
            if let Some(word) = hit {
                match action {
                    Action::Refuse => {
                        return Err(Error::Blocked {
                            field,
                            message: format!("contains the blocked {word:?}"),
                        });
                    }
                    Action::Flag => flagged = Some(Flagged(word)),
                }
            }
        }
        Ok(flagged)
    }

    /// A member of a channel in slow mode posts at most once per `slow_mode_ms`; the refusal
    /// says when the next post passes. Moderators, owners and admins are exempt.
    fn slow_mode(&self, info: &ChannelInfo, member: Option<&MemberRecord>) -> Result<(), Error> {
        let cooldown = info.record.slow_mode_ms;
        let Actor::User(user) = self.actor else {
            return Ok(());
        };
        if cooldown == 0
            || member.is_some_and(|m| role_rank(m.role()) >= role_rank(Role::Moderator))
        {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let next = now + std::time::Duration::from_millis(u64::from(cooldown));
        let mut slot = self
            .node
            .slow_mode()
            .entry((info.id.clone(), user.clone()))
            .or_insert(now);
        if *slot > now {
            let wait = slot.duration_since(now).as_millis();
            return Err(Error::RateLimited {
                message: "slow mode: wait before posting again",
                retry_after_ms: u32::try_from(wait).unwrap_or(u32::MAX).max(1),
            });
        }
        *slot = next;
        Ok(())
    }
}

/// The blocklist an `UpdateChannel` sets, checked and normalised (lowercase, trimmed, no
/// duplicates); `None` when the request leaves it alone.
pub fn blocklist_patch(b: Option<&v1::Blocklist>) -> Result<Option<(Vec<String>, i32)>, Error> {
    let Some(b) = b else {
        return Ok(None);
    };
    if b.words.len() > MAX_BLOCKED_WORDS {
        return Err(Error::LimitExceeded {
            field: Some("blocklist.words"),
            message: format!("a blocklist holds at most {MAX_BLOCKED_WORDS} entries"),
        });
    }
    let mut words: Vec<String> = Vec::with_capacity(b.words.len());
    for w in &b.words {
        let norm = crate::blocklist::words_of(w).join(" ");
        if norm.is_empty() || w.len() > 64 {
            return Err(Error::invalid(
                "blocklist.words",
                "an entry is 1 to 64 bytes with at least one letter or digit",
            ));
        }
        if !words.contains(&norm) {
            words.push(norm);
        }
    }
    Ok(Some((words, b.action)))
}

/// A slow mode an `UpdateChannel` sets, checked.
pub fn slow_mode_patch(ms: Option<u32>) -> Result<Option<u32>, Error> {
    match ms {
        Some(ms) if ms > MAX_SLOW_MODE_MS => Err(Error::invalid(
            "slow_mode_ms",
            format!("slow mode is at most {MAX_SLOW_MODE_MS} ms"),
        )),
        other => Ok(other),
    }
}

/// The channel as a moderator sees it: with its blocklist.
pub fn with_blocklist(channel: &mut v1::Channel, info: &ChannelInfo, role: Option<Role>) {
    if role.is_none_or(|r| role_rank(r) >= role_rank(Role::Moderator)) {
        channel.blocklist = Some(v1::Blocklist {
            words: info.record.blocked_words.clone(),
            action: info.record.block_action,
        });
    }
}
