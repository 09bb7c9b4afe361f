//! The permission matrix: every role (owner, moderator, member, outsider) against every managed
//! action, on group and public channels. Each cell runs on a fresh channel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chorus_protocol::v1::{self, ChannelKind, ErrorCode, Role, client_envelope::Request, reply};
use common::{Client, Node};

#[derive(Debug, Clone, Copy)]
enum Action {
    History,
    ListMembers,
    Subscribe,
    Publish,
    Join,
    AddMember,
    RemoveMember,
    SetRole,
    Update,
    Archive,
    Typing,
}

fn request(action: Action, channel: &str) -> Request {
    let ch = channel.to_owned();
    match action {
        Action::History => Request::History(v1::History {
            channel_id: ch,
            ..Default::default()
        }),
        Action::ListMembers => Request::ListMembers(v1::ListMembers {
            channel_id: ch,
            ..Default::default()
        }),
        Action::Subscribe => Request::Subscribe(v1::Subscribe {
            channel_id: ch,
            since: None,
        }),
        Action::Publish => Request::Publish(v1::Publish {
            channel_id: ch,
            message: Some(v1::Message {
                client_msg_id: "m".into(),
                text: "hi".into(),
                ..Default::default()
            }),
        }),
        Action::Join => Request::JoinChannel(v1::JoinChannel { channel_id: ch }),
        Action::AddMember => Request::AddMembers(v1::AddMembers {
            channel_id: ch,
            user_ids: vec!["newcomer".into()],
        }),
        Action::RemoveMember => Request::RemoveMember(v1::RemoveMember {
            channel_id: ch,
            user_id: "target".into(),
        }),
        Action::SetRole => Request::SetMemberRole(v1::SetMemberRole {
            channel_id: ch,
            user_id: "target".into(),
            role: Role::Moderator as i32,
        }),
        Action::Update => Request::UpdateChannel(v1::UpdateChannel {
            channel_id: ch,
            topic: Some("t".into()),
            ..Default::default()
        }),
        Action::Archive => Request::ArchiveChannel(v1::ArchiveChannel {
            channel_id: ch,
            archived: true,
        }),
        Action::Typing => Request::Typing(v1::Typing {
            channel_id: ch,
            typing: true,
            thread_parent_seq: 0,
        }),
    }
}

/// `None` = allowed.
fn outcome(r: &reply::Result) -> Option<ErrorCode> {
    match r {
        reply::Result::Error(e) => Some(e.error_code()),
        _ => None,
    }
}

use ErrorCode::{Forbidden as F, NotFound as N};
const OK: Option<ErrorCode> = None;

/// Expected outcome per action, for owner, moderator, member, outsider.
fn expected(kind: ChannelKind, action: Action) -> [Option<ErrorCode>; 4] {
    let group = kind == ChannelKind::Group;
    // Outsiders of a group cannot see it at all; of a public channel they can read.
    let hidden = if group { Some(N) } else { OK };
    let outsider_manage = if group { Some(N) } else { Some(F) };
    match action {
        Action::History | Action::ListMembers | Action::Subscribe => [OK, OK, OK, hidden],
        Action::Publish | Action::Typing => [OK, OK, OK, if group { Some(N) } else { Some(F) }],
        // A member's join of its own group succeeds and writes nothing; an outsider is not
        // told the group exists.
        Action::Join if group => [OK, OK, OK, Some(N)],
        Action::Join => [OK, OK, OK, OK],
        Action::AddMember | Action::RemoveMember => [OK, OK, Some(F), outsider_manage],
        Action::SetRole | Action::Update | Action::Archive => {
            [OK, Some(F), Some(F), outsider_manage]
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_permission_matrix() {
    let node = Node::start_with(|c| c.limits.publish_burst = 10_000).await;
    let mut owner = node.connect("owner").await;
    let mut actors: Vec<Client> = Vec::new();
    for name in ["moderator", "member", "outsider"] {
        actors.push(node.connect(name).await);
    }
    let actions = [
        Action::History,
        Action::ListMembers,
        Action::Subscribe,
        Action::Publish,
        Action::Join,
        Action::AddMember,
        Action::RemoveMember,
        Action::SetRole,
        Action::Update,
        Action::Archive,
        Action::Typing,
    ];
    let mut failures = Vec::new();
    let mut n = 0;
    for kind in [ChannelKind::Group, ChannelKind::Public] {
        for action in actions {
            let want = expected(kind, action);
            for (role_index, want) in want.iter().enumerate() {
                n += 1;
                let channel = format!("c{n}");
                owner
                    .create_group(&channel, kind, &["moderator", "member", "target"])
                    .await;
                let promote = Request::SetMemberRole(v1::SetMemberRole {
                    channel_id: channel.clone(),
                    user_id: "moderator".into(),
                    role: Role::Moderator as i32,
                });
                assert!(outcome(&owner.request(promote).await).is_none());
                let actor = match role_index {
                    0 => &mut owner,
                    i => &mut actors[i - 1],
                };
                let got = outcome(&actor.request(request(action, &channel)).await);
                if let Action::Subscribe = action
                    && got.is_none()
                {
                    let r = actor
                        .request(Request::Unsubscribe(v1::Unsubscribe {
                            channel_id: channel.clone(),
                        }))
                        .await;
                    assert!(outcome(&r).is_none());
                }
                if got != *want {
                    failures.push(format!(
                        "{kind:?} {action:?} as {}: want {want:?}, got {got:?}",
                        ["owner", "moderator", "member", "outsider"][role_index]
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "permission matrix mismatches:\n{}",
        failures.join("\n")
    );
}
