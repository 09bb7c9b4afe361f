//! Erasing a user (the right to be forgotten) as a persisted job.
//!
//! An erasure is one pass over every channel's log and then over the user's memberships: on a
//! large store it takes a while, and a node stopped meanwhile used to leave it half done with
//! nothing telling the operator. Now the job is written to the store before any work
//! ([`chorus_storage::Store::begin_erasure`]); the node resumes every unfinished one when it
//! starts, and `users.erasures` reports each job's phase and counts. Every step is idempotent
//! (an entry already rewritten no longer names the user; a removed membership is gone), so a
//! resumed job simply runs the pass again.
//!
//! The job runs as a task of its own: a control client that stops waiting (or a control
//! connection cut by shutdown) does not cancel it; only the node's shutdown does, between
//! pages, leaving the job to resume.

use std::sync::{Arc, Mutex};

use chorus_protocol::ids::{ChannelId, Seq, UserId};
use chorus_protocol::v1::{self, MemberAction, channel_event::Body};
use chorus_storage::{BanScope, NewEntry};
use serde_json::{Value, json};

use super::users::{for_each_entry, stopped, tombstone};
use crate::clock::unix_ms;
use crate::control::wire::ControlError;
use crate::node::Node;
use crate::outbound::Close;

/// Memberships removed per page.
const MEMBERSHIP_PAGE: usize = 1_000;

/// Where a running erasure is, for `users.erasures`.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// `scanning`, `rewriting`, `memberships`, `finishing`.
    pub phase: &'static str,
    /// Entries of the user's that became tombstones.
    pub entries_erased: u64,
    /// Entries about the user rewritten to the anonymous id.
    pub entries_anonymised: u64,
    /// Memberships removed.
    pub memberships_removed: u64,
}

/// The erasures running in this node, by user; cloned handles share one map.
#[derive(Debug, Clone, Default)]
pub struct Running(Arc<dashmap::DashMap<UserId, Mutex<Progress>>>);

impl Running {
    fn set(&self, user: &UserId, change: impl FnOnce(&mut Progress)) {
        if let Some(p) = self.0.get(user) {
            change(&mut p.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    fn of(&self, user: &UserId) -> Option<Progress> {
        self.0
            .get(user)
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// `users.erase`: starts the erasure of `user` durably, closes the user's sessions and runs the
/// job in a task of its own, waiting for it. Refused while an erasure of the user runs.
pub(crate) async fn erase(
    node: &Arc<Node>,
    running: &Running,
    user: &UserId,
) -> Result<Value, ControlError> {
    // Claimed before anything else, atomically: a second erase of the user, or the resume at
    // start, finds the slot taken.
    let Some(claim) = claim(running, user) else {
        return Err(ControlError::new(
            "conflict",
            format!("an erasure of {user} is running; see users.erasures"),
        ));
    };
    let anonymous = format!("erased-{:016x}", rand::random::<u64>());
    // Whole seconds, like the tokens' issue times (see `users.revoke`).
    let now = unix_ms() / 1000 * 1000;
    // Durable before anything else: from here on the job resumes after any stop, and no new
    // session of the user starts while the pass runs.
    let record = node
        .store()
        .begin_erasure(user, &anonymous, now)
        .await
        .map_err(ControlError::failed)?;
    let closed = node.hub().close_user(
        user,
        &Close {
            code: v1::CloseCode::AuthInvalid,
            reason: "account erased".into(),
            reconnect_after_ms: 0,
        },
    );
    let job = spawn(node, claim, record.erasure_anonymous_id);
    let mut result = job
        .await
        .map_err(|e| ControlError::failed(format!("the erasure task failed: {e}")))??;
    result["sessions_closed"] = closed.into();
    Ok(result)
}

/// The running slot of one user's erasure; given back when dropped.
struct Claim {
    running: Running,
    user: UserId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.running.0.remove(&self.user);
    }
}

/// Takes the running slot of `user`'s erasure, or `None` when one runs.
fn claim(running: &Running, user: &UserId) -> Option<Claim> {
    match running.0.entry(user.clone()) {
        dashmap::Entry::Occupied(_) => None,
        dashmap::Entry::Vacant(v) => {
            v.insert(Mutex::new(Progress {
                phase: "scanning",
                ..Progress::default()
            }));
            Some(Claim {
                running: running.clone(),
                user: user.clone(),
            })
        }
    }
}

/// Runs the claimed job in a task of the node's background work.
fn spawn(
    node: &Arc<Node>,
    claim: Claim,
    anonymous: String,
) -> tokio::task::JoinHandle<Result<Value, ControlError>> {
    let node = node.clone();
    node.clone().background().spawn(async move {
        let user = claim.user.clone();
        let running = claim.running.clone();
        let _claim = claim;
        let result = run(&node, &running, &user, &anonymous).await;
        match &result {
            Ok(_) => tracing::info!(%user, "erasure finished"),
            Err(e) if e.code == "stopped" => {
                tracing::info!(%user, "erasure paused by shutdown; it resumes at the next start");
            }
            Err(e) => {
                tracing::warn!(%user, error = %e.message, "erasure failed; rerun users.erase")
            }
        }
        result
    })
}

/// Resumes every erasure left unfinished by an earlier run of the node (at start).
pub(crate) async fn resume_all(node: Arc<Node>, running: Running) {
    let mut after: Option<UserId> = None;
    loop {
        let jobs = match node.store().erasure_jobs(after.as_ref(), 256) {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list unfinished erasures");
                return;
            }
        };
        let Some((last, _)) = jobs.last().cloned() else {
            return;
        };
        for (user, _) in jobs {
            if node.stopping().is_cancelled() {
                return;
            }
            // An admin may have started it meanwhile, or it may have finished since listed.
            let Some(claim) = claim(&running, &user) else {
                continue;
            };
            let Some(record) = node
                .store()
                .user(&user)
                .ok()
                .flatten()
                .filter(|r| r.erasure_finished_ms == 0)
            else {
                continue;
            };
            tracing::info!(%user, "resuming an unfinished erasure");
            // One at a time: each is a pass over the whole store.
            let _ = spawn(&node, claim, record.erasure_anonymous_id).await;
        }
        after = Some(last);
    }
}

/// `users.erasures`: the unfinished erasures, with the progress of those running now.
pub(crate) fn list(node: &Node, running: &Running) -> Result<Value, ControlError> {
    let mut rows = Vec::new();
    let mut after: Option<UserId> = None;
    loop {
        let jobs = node
            .store()
            .erasure_jobs(after.as_ref(), 256)
            .map_err(ControlError::failed)?;
        let Some((last, _)) = jobs.last().cloned() else {
            break;
        };
        for (user, record) in jobs {
            let progress = running.of(&user);
            rows.push(json!({
                "user": user.as_str(),
                "anonymous_id": record.erasure_anonymous_id,
                "started_at_ms": record.erasure_started_ms,
                "state": if progress.is_some() { "running" } else { "waiting" },
                "phase": progress.as_ref().map(|p| p.phase),
                "entries_erased": progress.as_ref().map(|p| p.entries_erased),
                "entries_anonymised": progress.as_ref().map(|p| p.entries_anonymised),
                "memberships_removed": progress.as_ref().map(|p| p.memberships_removed),
            }));
        }
        after = Some(last);
    }
    Ok(json!({ "erasures": rows }))
}

/// The job: the user's entries become tombstones with the anonymous author, membership events
/// naming them name the anonymous id instead, their memberships, read markers, server ban and
/// direct-pair index entries go. Logs stay gapless. Finishes the persisted job at the end.
async fn run(
    node: &Node,
    running: &Running,
    user: &UserId,
    anonymous: &str,
) -> Result<Value, ControlError> {
    let store = node.store();
    // Content the user wrote becomes a tombstone; every other entry by or about them keeps its
    // meaning under the anonymous id (a membership change, a deletion, a channel change).
    let mut rewrites: Vec<(ChannelId, Seq, Body, bool, bool)> = Vec::new();
    let mut reactions: Vec<(ChannelId, v1::ReactionAdded)> = Vec::new();
    // Per channel: the thread roots the user replied to, for the derived records naming them
    // (thread participants; pins they made, found in the same pass).
    let mut named: std::collections::BTreeMap<ChannelId, Vec<Seq>> = Default::default();
    for_each_entry(node, |channel, e| {
        let authored = e.event.author_id == user.as_str();
        match &e.event.body {
            Some(Body::ReactionAdded(r)) if authored => {
                reactions.push((channel.clone(), r.clone()));
            }
            Some(Body::Message(m)) if authored && m.thread_parent_seq != 0 => {
                named
                    .entry(channel.clone())
                    .or_default()
                    .push(Seq(m.thread_parent_seq));
            }
            Some(Body::MessagePinned(_)) if authored => {
                named.entry(channel.clone()).or_default();
            }
            _ => {}
        }
        let body =
            match &e.event.body {
                Some(Body::Message(m)) if authored => Some((tombstone(m.thread_parent_seq), true)),
                Some(
                    Body::MessageEdited(_) | Body::ReactionAdded(_) | Body::ReactionRemoved(_),
                ) if authored => Some((tombstone(0), true)),
                Some(Body::MemberChanged(m)) if m.user_id == user.as_str() => {
                    let mut m = m.clone();
                    anonymous.clone_into(&mut m.user_id);
                    Some((Body::MemberChanged(m), false))
                }
                Some(other) if authored => Some((other.clone(), false)),
                _ => None,
            };
        if let Some((body, content)) = body {
            rewrites.push((channel.clone(), e.seq, body, content, authored));
        }
    })
    .await?;
    // The user's reactions leave the messages' counts through the log, as if they had taken
    // them back: each removal is an entry (tombstoned with the rest below), so the counts stay
    // what the log derives. A removal already made (a resumed job) is refused and skipped.
    running.set(user, |p| p.phase = "reactions");
    for (channel, r) in reactions {
        let removal = NewEntry {
            author: Some(user.clone()),
            time_ms: unix_ms(),
            body: Body::ReactionRemoved(v1::ReactionRemoved {
                target_seq: r.target_seq,
                emoji: r.emoji,
            }),
            client_msg_id: None,
            withheld: false,
        };
        match store.append(&channel, removal).await {
            Ok(a) => rewrites.push((channel, a.entry.seq, tombstone(0), true, true)),
            Err(
                chorus_storage::StoreError::ReactionNotFound { .. }
                | chorus_storage::StoreError::EntryNotFound { .. },
            ) => {}
            Err(e) => return Err(ControlError::failed(e)),
        }
    }
    for (channel, mut roots) in named {
        roots.sort_unstable();
        roots.dedup();
        store
            .anonymise_derived(&channel, &roots, user, anonymous)
            .await
            .map_err(ControlError::failed)?;
    }
    running.set(user, |p| p.phase = "rewriting");
    for (channel, seq, body, content, authored) in rewrites {
        if node.stopping().is_cancelled() {
            return Err(stopped());
        }
        let author = authored.then_some(anonymous);
        store
            .rewrite_as(&channel, seq, body, author)
            .await
            .map_err(ControlError::failed)?;
        running.set(user, |p| {
            if content {
                p.entries_erased += 1;
            } else {
                p.entries_anonymised += 1;
            }
        });
    }
    running.set(user, |p| p.phase = "memberships");
    loop {
        let channels = store
            .user_channels(user, None, MEMBERSHIP_PAGE)
            .map_err(ControlError::failed)?;
        if channels.is_empty() {
            break;
        }
        for channel in &channels {
            if node.stopping().is_cancelled() {
                return Err(stopped());
            }
            // Members see someone left, under the anonymous id: logged before the membership
            // goes, so that a job stopped in between logs it again rather than never (the
            // resumed pass finds the membership still there).
            let left = Body::MemberChanged(v1::MemberChanged {
                user_id: anonymous.to_owned(),
                action: MemberAction::Removed as i32,
                role: v1::Role::Unspecified as i32,
                until_ms: 0,
            });
            store
                .append(
                    channel,
                    NewEntry {
                        author: None,
                        time_ms: unix_ms(),
                        body: left,
                        client_msg_id: None,
                        withheld: false,
                    },
                )
                .await
                .map_err(ControlError::failed)?;
            // Also drops an index entry left without its member record, so the walk ends.
            store
                .remove_member(channel, user)
                .await
                .map_err(ControlError::failed)?;
            store
                .forget_read_marker(user, channel)
                .await
                .map_err(ControlError::failed)?;
            running.set(user, |p| p.memberships_removed += 1);
        }
    }
    running.set(user, |p| p.phase = "finishing");
    store
        .unban(BanScope::Server, user)
        .await
        .map_err(ControlError::failed)?;
    let direct_pairs = store
        .forget_direct_pairs(user)
        .await
        .map_err(ControlError::failed)?;
    // The index held their words: gone before the job says it is done (a crash before this
    // resumes the job, which comes back here).
    running.set(user, |p| p.phase = "search");
    node.search()
        .forget_author(user)
        .await
        .map_err(ControlError::failed)?;
    store
        .finish_erasure(user, unix_ms())
        .await
        .map_err(ControlError::failed)?;
    let done = running.of(user).unwrap_or_default();
    Ok(json!({
        "user": user.as_str(),
        "anonymous_id": anonymous,
        "entries_erased": done.entries_erased,
        "entries_anonymised": done.entries_anonymised,
        "memberships_removed": done.memberships_removed,
        "direct_pairs_removed": direct_pairs,
    }))
}
