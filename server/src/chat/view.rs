//! How store records look on the wire.

use chorus_protocol::v1;
use chorus_storage::{Appended, ChannelInfo};

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
