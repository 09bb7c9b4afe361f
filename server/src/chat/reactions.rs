//! Reactions: an emoji added to or taken from a message, each a log entry. The store keeps
//! per-message aggregates beside the log (see `chorus_storage`'s derived records), so that
//! history shows counts without reading the reactions back.

use chorus_protocol::limits::MAX_EMOJI_BYTES;
use chorus_protocol::v1::{self, channel_event::Body};
use unicode_segmentation::UnicodeSegmentation;

use super::{Actor, Chat, Error, channel_id};

impl Chat<'_> {
    /// Adds the user's reaction; the same emoji again stores nothing and answers with the
    /// first reaction's seq (`duplicate`).
    pub async fn react(&self, r: v1::React) -> Result<v1::Appended, Error> {
        let id = channel_id("channel_id", &r.channel_id)?;
        validate_emoji(&r.emoji)?;
        let withheld = self.reactable(&id, r.target_seq)?;
        let body = Body::ReactionAdded(v1::ReactionAdded {
            target_seq: r.target_seq,
            emoji: r.emoji,
        });
        // A shadow-banned member's reaction is withheld, and counts nowhere.
        self.append_as(&id, body, &r.client_msg_id, withheld).await
    }

    /// Takes back the user's reaction (`NOT_FOUND` when there is none).
    pub async fn unreact(&self, r: v1::Unreact) -> Result<v1::Appended, Error> {
        let id = channel_id("channel_id", &r.channel_id)?;
        validate_emoji(&r.emoji)?;
        let withheld = self.reactable(&id, r.target_seq)?;
        let body = Body::ReactionRemoved(v1::ReactionRemoved {
            target_seq: r.target_seq,
            emoji: r.emoji,
        });
        self.append_as(&id, body, &r.client_msg_id, withheld).await
    }

    /// A user who may post reacts to a live message; reactions share the publish budget.
    /// Returns whether the reaction is withheld (the member is shadow-banned).
    fn reactable(&self, id: &chorus_protocol::ids::ChannelId, seq: u64) -> Result<bool, Error> {
        if !matches!(self.actor, Actor::User(_)) {
            return Err(Error::Forbidden("a user reacts".into()));
        }
        self.target_message(id, seq)?;
        let (_, member) = self.poster(id)?;
        self.take_publish_budget(&self.node.limits())?;
        Ok(member.shadowed_until_ms > crate::clock::unix_ms())
    }
}

/// An emoji is one grapheme that is not a letter, digit, space or control (`👍🏽`, `🇫🇷`), or a
/// short name `:name:` of ASCII letters, digits, `_`, `+` and `-`; at most 64 bytes.
pub fn validate_emoji(emoji: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::invalid("emoji", why.to_owned()));
    if emoji.is_empty() || emoji.len() > MAX_EMOJI_BYTES {
        return bad("an emoji is 1 to 64 bytes");
    }
    if let Some(name) = emoji
        .strip_prefix(':')
        .and_then(|rest| rest.strip_suffix(':'))
    {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'));
        return if ok {
            Ok(())
        } else {
            bad("a short name is :name: of ASCII letters, digits, _, + and -")
        };
    }
    let mut graphemes = emoji.graphemes(true);
    let (Some(g), None) = (graphemes.next(), graphemes.next()) else {
        return bad("an emoji is one character (grapheme) or a :short_name:");
    };
    if g.chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c.is_whitespace() || c.is_control())
    {
        return bad("an emoji is not a letter, digit, space or control character");
    }
    Ok(())
}

#[cfg(test)]
mod emoji_tests {
    use super::validate_emoji;

    #[test]
    fn one_grapheme_or_a_short_name_passes() {
        for ok in [
            "👍",
            "👍🏽",
            "🇫🇷",
            "👨‍👩‍👧",
            "❤️",
            ":party:",
            ":+1:",
            ":thumbs_up-2:",
            "★",
        ] {
            assert!(validate_emoji(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn text_several_graphemes_and_bad_short_names_are_refused() {
        let long = format!(":{}:", "a".repeat(63));
        for bad in [
            "", "a", "7", " ", "\n", "👍👍", "ok", "::", ":a b:", ":é:", &long,
        ] {
            assert!(validate_emoji(bad).is_err(), "{bad:?}");
        }
    }
}
