//! Blocklists: words and phrases refused or flagged in posts, compiled for matching. A leaf:
//! the node keeps the server's list, channels keep theirs in their records.
//!
//! Text is normalised to its lowercase words (runs of letters and digits); a blocked word
//! matches one of them, a blocked phrase the same words in a row. One publish costs one pass
//! over its text plus a hash lookup per word, and a substring search per phrase.

use std::collections::HashSet;

use crate::config::ModerationConfig;

/// What a match does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The post is refused.
    Refuse,
    /// The post passes and a flag is raised.
    Flag,
}

/// A compiled blocklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocklist {
    words: HashSet<String>,
    /// Phrases as " w1 w2 ", to find in " t1 t2 t3 ".
    phrases: Vec<String>,
    /// What a match does.
    pub action: Action,
}

impl Blocklist {
    /// A list of `entries` with `action`.
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a str>, action: Action) -> Self {
        let mut words = HashSet::new();
        let mut phrases = Vec::new();
        for e in entries {
            let norm = words_of(e);
            match norm.len() {
                0 => {}
                1 => {
                    words.insert(norm.into_iter().next().unwrap_or_default());
                }
                _ => phrases.push(format!(" {} ", norm.join(" "))),
            }
        }
        Self {
            words,
            phrases,
            action,
        }
    }

    /// The server's list, from its configuration.
    pub fn server(m: &ModerationConfig) -> Self {
        let action = match m.blocked_words_action.as_deref() {
            Some("flag") => Action::Flag,
            _ => Action::Refuse,
        };
        Self::new(m.blocked_words.iter().map(String::as_str), action)
    }

    /// Whether the list holds nothing.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty() && self.phrases.is_empty()
    }

    /// The first blocked entry `text` holds, if any.
    pub fn find(&self, text: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let words = words_of(text);
        if let Some(w) = words.iter().find(|w| self.words.contains(w.as_str())) {
            return Some(w.clone());
        }
        if self.phrases.is_empty() {
            return None;
        }
        let joined = format!(" {} ", words.join(" "));
        self.phrases
            .iter()
            .find(|p| joined.contains(p.as_str()))
            .map(|p| p.trim().to_owned())
    }
}

/// The first of `entries`, stored normalised (lowercase words joined by single spaces, as
/// [`words_of`] and `join(" ")` make them), that `text` holds: a channel's list, checked as it
/// is in the channel record, without compiling it.
pub fn find_normalised(entries: &[String], text: &str) -> Option<String> {
    if entries.is_empty() {
        return None;
    }
    let words = words_of(text);
    let set: HashSet<&str> = words.iter().map(String::as_str).collect();
    let mut joined = None;
    for e in entries {
        let hit = if e.contains(' ') {
            let j = joined.get_or_insert_with(|| format!(" {} ", words.join(" ")));
            j.contains(&format!(" {e} "))
        } else {
            set.contains(e.as_str())
        };
        if hit {
            return Some(e.clone());
        }
    }
    None
}

/// The lowercase words of `text`: runs of letters and digits.
pub fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_match_whole_words_and_phrases_words_in_a_row() {
        let list = Blocklist::new(["Spam", "buy now", "  "], Action::Refuse);
        assert_eq!(list.find("this is SPAM!"), Some("spam".into()));
        assert_eq!(list.find("spammer here"), None, "a whole word only");
        assert_eq!(
            list.find("please Buy   now, friends"),
            Some("buy now".into())
        );
        assert_eq!(list.find("buy it now"), None, "the words in a row");
        assert_eq!(list.find("nowbuy"), None);
        assert!(Blocklist::new(["", " "], Action::Flag).is_empty());
        let stored = ["spam".to_owned(), "buy now".to_owned()];
        assert_eq!(find_normalised(&stored, "SPAM!"), Some("spam".into()));
        assert_eq!(
            find_normalised(&stored, "please Buy now"),
            Some("buy now".into())
        );
        assert_eq!(find_normalised(&stored, "buy it now, spammer"), None);
    }
}
