//! How store records look on the wire.

use chorus_protocol::v1;
use chorus_storage::{Appended, ChannelInfo, LogEntry};

use super::Chat;

impl Chat<'_> {
    /// An entry as the actor may see it (a withheld post reads as a tombstone for anyone but
    /// its author and operators).
    pub fn event_view(&self, entry: &LogEntry) -> v1::ChannelEvent {
        entry
            .event_for(self.actor.user().map(|u| u.as_str()))
            .into_owned()
    }
}

/// A channel's record and log position as `v1::Channel`.
pub fn channel_message(info: &ChannelInfo) -> v1::Channel {
    let r = &info.record;
    v1::Channel {
        channel_id: info.id.to_string(),
        kind: r.kind,
        name: r.name.clone(),
        topic: r.topic.clone(),
        created_by: r.created_by.clone(),
        created_at_ms: r.created_at_ms,
        archived: r.archived,
        epoch: info.position.epoch.get(),
        head_seq: info.position.head.get(),
        first_available_seq: info.position.first_available.get(),
        member_count: r.member_count,
        custom: r.custom.clone(),
        slow_mode_ms: r.slow_mode_ms,
        moderation_log: r.moderation_log,
        // Shown to moderators by `Chat::summary`; a plain view carries none.
        blocklist: None,
    }
}

/// An append's outcome as `v1::Appended`.
pub fn appended_message(a: &Appended) -> v1::Appended {
    v1::Appended {
        channel_id: a.entry.event.channel_id.clone(),
        seq: a.entry.seq.get(),
        epoch: a.entry.event.epoch,
        server_time_ms: a.entry.event.server_time_ms,
        duplicate: a.duplicate,
    }
}
