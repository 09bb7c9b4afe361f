//! State derived from the log: a message's reactions, the thread it roots, the channel's pins.
//!
//! An entry's derived records are computed under the channel's append lock, from the state
//! every earlier entry left, and written in the same atomic batch as the entry: they are
//! durable exactly when the entry is, and a replica applying the same entries in the same order
//! derives the same records. Earlier entries may still be on their way to disk when the next
//! one is derived, so the values they set wait in the channel's overlay (newest value per key,
//! with the seq that set it) until their entry is durable; [`read`] looks there first.
//!
//! Derivation refuses what the records forbid (a reaction over a limit, removing a reaction
//! that is not there, a pin over the limit) before a seq is assigned, and recognises what they
//! already hold (the same reaction again, pinning a pinned message) as the earlier entry's seq.

use std::sync::atomic::{AtomicU32, Ordering};

use chorus_protocol::ids::{ChannelId, Seq};
use chorus_protocol::v1::channel_event::Body;
use chorus_protocol::v1::{MessagePinned, MessageUnpinned, ReactionAdded, ReactionRemoved};
use prost::Message;

use crate::engine::{Direction, Engine, as_ref_bound, prefix_bounds};
use crate::error::{ReadError, StoreError};
use crate::keys::{self, Derived};
use crate::records::{
    EmojiRecord, MAX_THREAD_PARTICIPANTS, PinRecord, PinsRecord, ReactionsRecord, SHOWN_REACTORS,
    ThreadRecord, UserReaction, UserReactionsRecord, decode_record,
};

/// The limits derivation enforces; the node sets them from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregateLimits {
    /// Distinct emoji on one message.
    pub reactions_per_message: u32,
    /// Distinct emoji one user puts on one message.
    pub reactions_per_user: u32,
    /// Pinned messages per channel.
    pub pins_per_channel: u32,
}

impl Default for AggregateLimits {
    fn default() -> Self {
        use chorus_protocol::limits as l;
        Self {
            reactions_per_message: l::DEFAULT_MAX_REACTIONS_PER_MESSAGE,
            reactions_per_user: l::DEFAULT_MAX_REACTIONS_PER_USER,
            pins_per_channel: l::DEFAULT_MAX_PINS_PER_CHANNEL,
        }
    }
}

/// [`AggregateLimits`] as the store holds them: changed at run time by a configuration reload.
#[derive(Debug)]
pub(crate) struct SharedLimits([AtomicU32; 3]);

impl SharedLimits {
    pub(crate) fn new(limits: AggregateLimits) -> Self {
        let s = Self(Default::default());
        s.set(limits);
        s
    }

    pub(crate) fn set(&self, l: AggregateLimits) {
        self.0[0].store(l.reactions_per_message, Ordering::Relaxed);
        self.0[1].store(l.reactions_per_user, Ordering::Relaxed);
        self.0[2].store(l.pins_per_channel, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> AggregateLimits {
        AggregateLimits {
            reactions_per_message: self.0[0].load(Ordering::Relaxed),
            reactions_per_user: self.0[1].load(Ordering::Relaxed),
            pins_per_channel: self.0[2].load(Ordering::Relaxed),
        }
    }
}

/// A derived record to write: its key and value (`None`: delete it).
pub(super) type Write = (Vec<u8>, Option<Vec<u8>>);

/// A value set by an entry that is not durable yet (`None`: deleted).
pub(super) struct Pending {
    value: Option<Vec<u8>>,
    seq: Seq,
}

/// The overlay of one channel: derived values of entries still on their way to disk.
#[derive(Default)]
pub(super) struct Overlay(std::collections::HashMap<Vec<u8>, Pending>);

impl Overlay {
    /// Holds `writes` of the entry at `seq` until it is durable.
    pub(super) fn record(&mut self, writes: Vec<Write>, seq: Seq) {
        for (key, value) in writes {
            self.0.insert(key, Pending { value, seq });
        }
    }

    /// Whether no value waits.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets the values of entries up to `durable`: the engine holds them now.
    pub(super) fn settle(&mut self, durable: Seq) {
        if !self.0.is_empty() {
            self.0.retain(|_, p| p.seq > durable);
        }
    }
}

/// What an entry derives.
pub(super) enum Derivation {
    /// Records to write with the entry (`None`: delete).
    Write(Vec<Write>),
    /// The records already hold what the entry would add, from the entry at this seq.
    Already(Seq),
}

/// The engine ops of derived writes.
pub(super) fn ops(writes: &[Write]) -> Vec<crate::engine::Op> {
    use crate::engine::Op;
    writes
        .iter()
        .map(|(key, value)| match value {
            Some(v) => Op::Put(key.clone(), v.clone()),
            None => Op::Delete(key.clone()),
        })
        .collect()
}

/// The channel's state derivation reads: its overlay, and where its log starts.
pub(super) struct View<'a> {
    pub(super) overlay: &'a Overlay,
    pub(super) first_available: Seq,
}

/// What derivation needs besides the entry's body.
pub(super) struct Context<'a> {
    pub(super) engine: &'a dyn Engine,
    pub(super) channel: &'a ChannelId,
    /// The seq the entry will get.
    pub(super) seq: Seq,
    pub(super) author: &'a str,
    pub(super) time_ms: u64,
    pub(super) limits: AggregateLimits,
    /// For a thread reply: the root's author, read before the lock.
    pub(super) root_author: Option<&'a str>,
}

/// Derives the records an entry changes, or refuses it.
pub(super) fn derive(
    state: &View<'_>,
    cx: &Context<'_>,
    body: Option<&Body>,
) -> Result<Derivation, StoreError> {
    let target_ok = |target: u64| {
        if target == 0 || target < state.first_available.get() || target >= cx.seq.get() {
            Err(StoreError::EntryNotFound {
                channel: cx.channel.clone(),
                seq: Seq(target),
            })
        } else {
            Ok(Seq(target))
        }
    };
    let mut w = Writes::default();
    match body {
        Some(Body::Message(m)) if m.thread_parent_seq != 0 => {
            let root = target_ok(m.thread_parent_seq)?;
            reply(state, cx, root, &mut w)?;
        }
        Some(Body::ReactionAdded(ReactionAdded { target_seq, emoji })) => {
            let target = target_ok(*target_seq)?;
            if let Some(seq) = react(state, cx, target, emoji, &mut w)? {
                return Ok(Derivation::Already(seq));
            }
        }
        Some(Body::ReactionRemoved(ReactionRemoved { target_seq, emoji })) => {
            let target = target_ok(*target_seq)?;
            unreact(state, cx, target, emoji, &mut w)?;
        }
        Some(Body::MessagePinned(MessagePinned { target_seq })) => {
            let target = target_ok(*target_seq)?;
            if let Some(seq) = pin(state, cx, target, &mut w)? {
                return Ok(Derivation::Already(seq));
            }
        }
        Some(Body::MessageUnpinned(MessageUnpinned { target_seq })) => {
            let target = target_ok(*target_seq)?;
            unpin(state, cx, target, &mut w)?;
        }
        _ => {}
    }
    Ok(Derivation::Write(w.0))
}

#[derive(Default)]
struct Writes(Vec<Write>);

impl Writes {
    fn put(&mut self, key: Vec<u8>, record: &impl Message) {
        self.0.push((key, Some(record.encode_to_vec())));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.0.push((key, None));
    }
}

/// A derived record as the channel's entries so far left it: the overlay, then the engine.
pub(super) fn read<M: Message + Default>(
    state: &View<'_>,
    engine: &dyn Engine,
    key: &[u8],
) -> Result<Option<M>, ReadError> {
    let value = match state.overlay.0.get(key) {
        Some(p) => p.value.clone(),
        None => engine.get(key)?,
    };
    value.map(|v| decode_record(key, &v)).transpose()
}

fn reply(state: &View<'_>, cx: &Context<'_>, root: Seq, w: &mut Writes) -> Result<(), StoreError> {
    let key = keys::derived(cx.channel, root, Derived::Thread).into_vec();
    let mut thread: ThreadRecord = match read(state, cx.engine, &key)? {
        Some(t) => t,
        None => ThreadRecord {
            participants: cx.root_author.map(str::to_owned).into_iter().collect(),
            ..Default::default()
        },
    };
    if thread.last_reply_seq != 0 {
        w.delete(keys::thread_activity(
            cx.channel,
            Seq(thread.last_reply_seq),
            root,
        ));
    }
    thread.reply_count = thread.reply_count.saturating_add(1);
    thread.last_reply_seq = cx.seq.get();
    thread.last_reply_ms = cx.time_ms;
    if thread.participants.len() < MAX_THREAD_PARTICIPANTS
        && !thread.participants.iter().any(|p| p == cx.author)
    {
        thread.participants.push(cx.author.to_owned());
    }
    w.put(key, &thread);
    w.0.push((
        keys::thread_activity(cx.channel, cx.seq, root),
        Some(Vec::new()),
    ));
    Ok(())
}

/// Adds a reaction; `Some(seq)` when the user already reacted with this emoji.
fn react(
    state: &View<'_>,
    cx: &Context<'_>,
    target: Seq,
    emoji: &str,
    w: &mut Writes,
) -> Result<Option<Seq>, StoreError> {
    let ukey = keys::derived(cx.channel, target, Derived::UserReactions)
        .str(cx.author)
        .into_vec();
    let mut mine: UserReactionsRecord = read(state, cx.engine, &ukey)?.unwrap_or_default();
    if let Some(r) = mine.reactions.iter().find(|r| r.emoji == emoji) {
        return Ok(Some(Seq(r.seq)));
    }
    let too_many = |max, per_user| StoreError::TooManyReactions {
        channel: cx.channel.clone(),
        target,
        max,
        per_user,
    };
    if mine.reactions.len() >= cx.limits.reactions_per_user as usize {
        return Err(too_many(cx.limits.reactions_per_user, true));
    }
    let rkey = keys::derived(cx.channel, target, Derived::Reactions).into_vec();
    let mut all: ReactionsRecord = read(state, cx.engine, &rkey)?.unwrap_or_default();
    match all.emojis.iter_mut().find(|e| e.emoji == emoji) {
        Some(e) => {
            e.count = e.count.saturating_add(1);
            if e.users.len() < SHOWN_REACTORS {
                e.users.push(cx.author.to_owned());
            }
        }
        None => {
            if all.emojis.len() >= cx.limits.reactions_per_message as usize {
                return Err(too_many(cx.limits.reactions_per_message, false));
            }
            all.emojis.push(EmojiRecord {
                emoji: emoji.to_owned(),
                count: 1,
                users: vec![cx.author.to_owned()],
            });
        }
    }
    mine.reactions.push(UserReaction {
        emoji: emoji.to_owned(),
        seq: cx.seq.get(),
    });
    all.last_seq = cx.seq.get();
    w.put(rkey, &all);
    w.put(ukey, &mine);
    w.0.push((
        emoji_user_key(cx.channel, target, emoji, cx.author),
        Some(Vec::new()),
    ));
    Ok(None)
}

fn emoji_user_key(c: &ChannelId, target: Seq, emoji: &str, user: &str) -> Vec<u8> {
    keys::derived(c, target, Derived::EmojiUser)
        .str(emoji)
        .str(user)
        .into_vec()
}

fn unreact(
    state: &View<'_>,
    cx: &Context<'_>,
    target: Seq,
    emoji: &str,
    w: &mut Writes,
) -> Result<(), StoreError> {
    let ukey = keys::derived(cx.channel, target, Derived::UserReactions)
        .str(cx.author)
        .into_vec();
    let mut mine: UserReactionsRecord = read(state, cx.engine, &ukey)?.unwrap_or_default();
    let Some(at) = mine.reactions.iter().position(|r| r.emoji == emoji) else {
        return Err(StoreError::ReactionNotFound {
            channel: cx.channel.clone(),
            target,
            emoji: emoji.to_owned(),
        });
    };
    mine.reactions.remove(at);
    let rkey = keys::derived(cx.channel, target, Derived::Reactions).into_vec();
    let mut all: ReactionsRecord = read(state, cx.engine, &rkey)?.unwrap_or_default();
    if let Some(i) = all.emojis.iter().position(|e| e.emoji == emoji) {
        let e = &mut all.emojis[i];
        e.count = e.count.saturating_sub(1);
        e.users.retain(|u| u != cx.author);
        if e.count == 0 {
            all.emojis.remove(i);
        } else if e.users.len() < SHOWN_REACTORS.min(e.count as usize) {
            refill(state, cx, target, e)?;
        }
    }
    // Kept when empty, so that a reader still learns which entries it reflects.
    all.last_seq = cx.seq.get();
    w.put(rkey, &all);
    if mine.reactions.is_empty() {
        w.delete(ukey);
    } else {
        w.put(ukey, &mine);
    }
    w.delete(emoji_user_key(cx.channel, target, emoji, cx.author));
    Ok(())
}

/// Names other reactors in a shown list that lost one, from the emoji's user index. The index is
/// scanned in the engine: a reaction still on its way to disk may be missed, which only
/// shortens the list; a removal on its way is in the overlay, and its user is skipped.
fn refill(
    state: &View<'_>,
    cx: &Context<'_>,
    target: Seq,
    e: &mut EmojiRecord,
) -> Result<(), ReadError> {
    let prefix = keys::derived(cx.channel, target, Derived::EmojiUser)
        .str(&e.emoji)
        .into_vec();
    let (start, end) = prefix_bounds(&prefix);
    let rows = cx.engine.scan(
        as_ref_bound(&start),
        as_ref_bound(&end),
        Direction::Forward,
        SHOWN_REACTORS * 2 + 1,
    )?;
    for (k, _) in rows {
        if state.overlay.0.get(&k).is_some_and(|p| p.value.is_none()) {
            continue;
        }
        let Some(user) = keys::trailing_str(&k, prefix.len()) else {
            continue;
        };
        if e.users.len() >= SHOWN_REACTORS {
            break;
        }
        if user != cx.author && !e.users.iter().any(|u| u == user) {
            e.users.push(user.to_owned());
        }
    }
    Ok(())
}

/// The channel's pins without those of messages retention removed.
fn live_pins(state: &View<'_>, engine: &dyn Engine, key: &[u8]) -> Result<PinsRecord, ReadError> {
    let mut pins: PinsRecord = read(state, engine, key)?.unwrap_or_default();
    let first = state.first_available.get();
    pins.pins.retain(|p| p.target_seq >= first);
    Ok(pins)
}

/// Pins a message; `Some(seq)` when it is pinned already.
fn pin(
    state: &View<'_>,
    cx: &Context<'_>,
    target: Seq,
    w: &mut Writes,
) -> Result<Option<Seq>, StoreError> {
    let key = keys::pins(cx.channel);
    let mut pins = live_pins(state, cx.engine, &key)?;
    if let Some(p) = pins.pins.iter().find(|p| p.target_seq == target.get()) {
        return Ok(Some(Seq(p.pin_seq)));
    }
    if pins.pins.len() >= cx.limits.pins_per_channel as usize {
        return Err(StoreError::TooManyPins {
            channel: cx.channel.clone(),
            max: cx.limits.pins_per_channel,
        });
    }
    pins.pins.insert(
        0,
        PinRecord {
            target_seq: target.get(),
            pinned_by: cx.author.to_owned(),
            pinned_at_ms: cx.time_ms,
            pin_seq: cx.seq.get(),
        },
    );
    pins.last_seq = cx.seq.get();
    w.put(key, &pins);
    Ok(None)
}

fn unpin(
    state: &View<'_>,
    cx: &Context<'_>,
    target: Seq,
    w: &mut Writes,
) -> Result<(), StoreError> {
    let key = keys::pins(cx.channel);
    let mut pins = live_pins(state, cx.engine, &key)?;
    let before = pins.pins.len();
    pins.pins.retain(|p| p.target_seq != target.get());
    if pins.pins.len() == before {
        return Err(StoreError::NotPinned {
            channel: cx.channel.clone(),
            target,
        });
    }
    pins.last_seq = cx.seq.get();
    w.put(key, &pins);
    Ok(())
}

/// The writes that put `anonymous` in place of `user` in the derived records naming them: the
/// participants of the threads rooted at `roots`, and the channel's pins they made.
pub(super) fn anonymise(
    state: &View<'_>,
    engine: &dyn Engine,
    channel: &ChannelId,
    roots: &[Seq],
    user: &str,
    anonymous: &str,
) -> Result<Vec<Write>, ReadError> {
    let mut w = Writes::default();
    for &root in roots {
        let key = keys::derived(channel, root, Derived::Thread).into_vec();
        if let Some(mut t) = read::<ThreadRecord>(state, engine, &key)?
            && t.participants.iter().any(|p| p == user)
        {
            for p in &mut t.participants {
                if p == user {
                    anonymous.clone_into(p);
                }
            }
            w.put(key, &t);
        }
    }
    let key = keys::pins(channel);
    if let Some(mut pins) = read::<PinsRecord>(state, engine, &key)?
        && pins.pins.iter().any(|p| p.pinned_by == user)
    {
        for p in &mut pins.pins {
            if p.pinned_by == user {
                anonymous.clone_into(&mut p.pinned_by);
            }
        }
        w.put(key, &pins);
    }
    Ok(w.0)
}
