//! The search query language of `Search.query` (docs/protocol.md, section 6.9): words,
//! `"phrases"`, `prefix*`, operators (`from:alice`, `in:general`, `has:attachment`,
//! `mentions:me`, `before:2026-12-01`, `after:`, `on:`, `thread:42`, `is:reply`) and `-` to
//! exclude any of them. Parsing is total: every string either parses or gives a typed
//! [`QueryError`]; a word that looks like an operator with an unknown name (`http://x`) is a
//! word.

use std::fmt;

use crate::ids::{ChannelId, IdError, UserId};

/// Most clauses (words, phrases, operators) in one query.
pub const MAX_CLAUSES: usize = 32;

/// One milliseconds-per-day, for the date operators.
const DAY_MS: u64 = 86_400_000;

/// A parsed query: clauses that must all hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// In the order written.
    pub clauses: Vec<Clause>,
}

/// One clause, possibly negated (`-word`, `-from:bob`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// The clause must not hold.
    pub negated: bool,
    /// What it asks.
    pub kind: ClauseKind,
}

/// What a clause asks of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClauseKind {
    /// A word of the text (as the server's analyzer reads it).
    Word(String),
    /// Words in this order.
    Phrase(String),
    /// Words in this order, the last one a prefix (`deplo*`, `"ship it to*"`).
    Prefix(String),
    /// `from:user`.
    From(UserId),
    /// `in:channel`.
    In(ChannelId),
    /// `has:...`.
    Has(HasKind),
    /// `mentions:user`, or `mentions:me` for the searching user.
    Mentions(Mentioned),
    /// `before:date`: sent before this instant (unix ms): the start of that day (UTC), or the
    /// instant given in unix ms.
    Before(u64),
    /// `after:date`: sent at or after this instant (unix ms): the end of that day (UTC), or
    /// just after the instant given in unix ms.
    After(u64),
    /// `on:date`: `[start, end)` of that day, in unix ms.
    On(u64, u64),
    /// `thread:seq`: the thread rooted at that seq (its root and replies); needs one channel.
    Thread(u64),
    /// `is:reply`: a reply in a thread.
    IsReply,
}

/// What `has:` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HasKind {
    /// At least one attachment.
    Attachment,
    /// A link (`http://` or `https://`) in the text.
    Link,
    /// At least one mention.
    Mention,
}

impl HasKind {
    /// The operator's value: `attachment`, `link`, `mention`.
    pub fn name(self) -> &'static str {
        match self {
            HasKind::Attachment => "attachment",
            HasKind::Link => "link",
            HasKind::Mention => "mention",
        }
    }
}

/// Who `mentions:` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mentioned {
    /// The searching user.
    Me,
    /// A user by id.
    User(UserId),
}

/// Why a query does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// Nothing to search for: no words and no operators.
    #[error("the query is empty")]
    Empty,
    /// A query that only excludes matches everything else; at least one clause must include.
    #[error("the query only excludes (every clause starts with '-')")]
    OnlyNegated,
    /// More clauses than [`MAX_CLAUSES`].
    #[error("the query has more than {max} words and operators")]
    TooManyClauses {
        /// The limit.
        max: usize,
    },
    /// A `"` without its closing `"`.
    #[error("a quoted phrase is not closed")]
    UnclosedQuote,
    /// An operator without a value (`from:`).
    #[error("`{op}:` needs a value")]
    MissingValue {
        /// The operator's name.
        op: &'static str,
    },
    /// An operator's value that is not one it takes.
    #[error("`{op}:{value}`: {reason}")]
    BadValue {
        /// The operator's name.
        op: &'static str,
        /// The value given.
        value: String,
        /// What it should be.
        reason: String,
    },
}

impl QueryError {
    fn bad(op: &'static str, value: &str, reason: impl Into<String>) -> Self {
        QueryError::BadValue {
            op,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    fn id(op: &'static str, value: &str, e: IdError) -> Self {
        Self::bad(op, value, e.to_string())
    }
}

/// Parses `input`.
pub fn parse(input: &str) -> Result<Query, QueryError> {
    let mut clauses = Vec::new();
    let mut rest = input;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        if clauses.len() == MAX_CLAUSES {
            return Err(QueryError::TooManyClauses { max: MAX_CLAUSES });
        }
        let negated = rest.starts_with('-') && rest[1..].starts_with(|c: char| !c.is_whitespace());
        if negated {
            rest = &rest[1..];
        }
        let (kind, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or(QueryError::UnclosedQuote)?;
            let phrase = quoted[..end].trim();
            let after = &quoted[end + 1..];
            let (prefix, after) = match after.strip_prefix('*') {
                Some(a) => (true, a),
                None => (false, after),
            };
            let kind = match (phrase.is_empty(), prefix) {
                (true, _) => None,
                (false, true) => Some(ClauseKind::Prefix(phrase.to_owned())),
                (false, false) => Some(ClauseKind::Phrase(phrase.to_owned())),
            };
            (kind, after)
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (Some(word_or_operator(&rest[..end])?), &rest[end..])
        };
        if let Some(kind) = kind {
            clauses.push(Clause { negated, kind });
        }
        rest = after;
    }
    if clauses.is_empty() {
        return Err(QueryError::Empty);
    }
    if clauses.iter().all(|c| c.negated) {
        return Err(QueryError::OnlyNegated);
    }
    Ok(Query { clauses })
}

fn word_or_operator(token: &str) -> Result<ClauseKind, QueryError> {
    let Some((name, value)) = token.split_once(':') else {
        return Ok(word(token));
    };
    let op: &'static str = match name.to_ascii_lowercase().as_str() {
        "from" => "from",
        "in" => "in",
        "has" => "has",
        "mentions" => "mentions",
        "before" => "before",
        "after" => "after",
        "on" => "on",
        "thread" => "thread",
        "is" => "is",
        _ => return Ok(word(token)),
    };
    if value.is_empty() {
        return Err(QueryError::MissingValue { op });
    }
    Ok(match op {
        "from" => ClauseKind::From(UserId::new(value).map_err(|e| QueryError::id(op, value, e))?),
        "in" => ClauseKind::In(ChannelId::new(value).map_err(|e| QueryError::id(op, value, e))?),
        "mentions" if value.eq_ignore_ascii_case("me") => ClauseKind::Mentions(Mentioned::Me),
        "mentions" => ClauseKind::Mentions(Mentioned::User(
            UserId::new(value).map_err(|e| QueryError::id(op, value, e))?,
        )),
        "has" => ClauseKind::Has(match value.to_ascii_lowercase().as_str() {
            "attachment" | "attachments" | "file" => HasKind::Attachment,
            "link" | "links" => HasKind::Link,
            "mention" | "mentions" => HasKind::Mention,
            _ => {
                return Err(QueryError::bad(
                    op,
                    value,
                    "one of attachment, link, mention",
                ));
            }
        }),
        "is" => match value.to_ascii_lowercase().as_str() {
            "reply" | "thread" => ClauseKind::IsReply,
            _ => return Err(QueryError::bad(op, value, "`reply`")),
        },
        "thread" => match value.parse::<u64>() {
            Ok(seq) if seq > 0 => ClauseKind::Thread(seq),
            _ => return Err(QueryError::bad(op, value, "a message seq")),
        },
        _ => {
            let day = day_start(value).ok_or_else(|| {
                QueryError::bad(op, value, "a date as YYYY-MM-DD (UTC) or unix milliseconds")
            })?;
            match (op, day) {
                ("before", Day::Date(start) | Day::Instant(start)) => ClauseKind::Before(start),
                ("after", Day::Date(start)) => ClauseKind::After(start.saturating_add(DAY_MS)),
                ("after", Day::Instant(ms)) => ClauseKind::After(ms.saturating_add(1)),
                (_, Day::Date(start)) => ClauseKind::On(start, start + DAY_MS),
                (_, Day::Instant(_)) => {
                    return Err(QueryError::bad(op, value, "a date as YYYY-MM-DD (UTC)"));
                }
            }
        }
    })
}

fn word(token: &str) -> ClauseKind {
    match token.strip_suffix('*') {
        Some(stem) if !stem.is_empty() && !stem.ends_with('*') => {
            ClauseKind::Prefix(stem.to_owned())
        }
        _ => ClauseKind::Word(token.to_owned()),
    }
}

enum Day {
    /// The start of a calendar day.
    Date(u64),
    /// An instant given in unix ms.
    Instant(u64),
}

fn day_start(value: &str) -> Option<Day> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Day::Instant);
    }
    let mut parts = value.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    u64::try_from(days).ok().map(|d| Day::Date(d * DAY_MS))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Query {
    /// The query written back in the language, one clause per space; parsing it gives the
    /// same query.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.clauses.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if c.negated {
                f.write_str("-")?;
            }
            match &c.kind {
                ClauseKind::Word(w) => f.write_str(w)?,
                ClauseKind::Phrase(p) => write!(f, "\"{p}\"")?,
                // A phrase's prefix (no quotes in it) is written quoted when, bare, it would
                // read as several words, a negation, an operator or a word ending in `**`.
                ClauseKind::Prefix(p)
                    if !p.contains('"')
                        && (p.contains(|ch: char| ch.is_whitespace() || ch == ':')
                            || p.ends_with('*')
                            || (p.starts_with('-') && !c.negated)) =>
                {
                    write!(f, "\"{p}\"*")?
                }
                ClauseKind::Prefix(p) => write!(f, "{p}*")?,
                ClauseKind::From(u) => write!(f, "from:{u}")?,
                ClauseKind::In(ch) => write!(f, "in:{ch}")?,
                ClauseKind::Has(h) => write!(f, "has:{}", h.name())?,
                ClauseKind::Mentions(Mentioned::Me) => f.write_str("mentions:me")?,
                ClauseKind::Mentions(Mentioned::User(u)) => write!(f, "mentions:{u}")?,
                ClauseKind::Before(ms) => write!(f, "before:{ms}")?,
                ClauseKind::After(ms) => write!(f, "after:{}", ms.saturating_sub(1))?,
                ClauseKind::On(start, _) => {
                    let (y, m, d) = civil_from_days(start / DAY_MS);
                    write!(f, "on:{y:04}-{m:02}-{d:02}")?
                }
                ClauseKind::Thread(s) => write!(f, "thread:{s}")?,
                ClauseKind::IsReply => f.write_str("is:reply")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(q: &str) -> Vec<(bool, ClauseKind)> {
        parse(q)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .clauses
            .into_iter()
            .map(|c| (c.negated, c.kind))
            .collect()
    }

    #[test]
    fn words_phrases_prefixes_and_negation() {
        assert_eq!(
            kinds(r#"ship "release notes" depl* -draft -"not this" "to th"*"#),
            vec![
                (false, ClauseKind::Word("ship".into())),
                (false, ClauseKind::Phrase("release notes".into())),
                (false, ClauseKind::Prefix("depl".into())),
                (true, ClauseKind::Word("draft".into())),
                (true, ClauseKind::Phrase("not this".into())),
                (false, ClauseKind::Prefix("to th".into())),
            ]
        );
        // A lone '-' or '*' is a word the analyzer drops, not an operator.
        assert_eq!(
            kinds("a -"),
            vec![
                (false, ClauseKind::Word("a".into())),
                (false, ClauseKind::Word("-".into()))
            ]
        );
    }

    #[test]
    fn operators() {
        let alice = UserId::new("alice").unwrap();
        assert_eq!(
            kinds(
                "from:alice in:general has:attachment mentions:me mentions:alice is:reply thread:7"
            ),
            vec![
                (false, ClauseKind::From(alice.clone())),
                (false, ClauseKind::In(ChannelId::new("general").unwrap())),
                (false, ClauseKind::Has(HasKind::Attachment)),
                (false, ClauseKind::Mentions(Mentioned::Me)),
                (false, ClauseKind::Mentions(Mentioned::User(alice))),
                (false, ClauseKind::IsReply),
                (false, ClauseKind::Thread(7)),
            ]
        );
        // Unknown operator names, and URLs, are words.
        assert_eq!(
            kinds("https://example.com/x color:red"),
            vec![
                (false, ClauseKind::Word("https://example.com/x".into())),
                (false, ClauseKind::Word("color:red".into())),
            ]
        );
    }

    #[test]
    fn dates_are_utc_days() {
        // 2026-12-07T00:00:00Z.
        let day = 1_796_601_600_000;
        assert_eq!(kinds("x before:2026-12-07")[1].1, ClauseKind::Before(day));
        assert_eq!(
            kinds("x after:2026-12-07")[1].1,
            ClauseKind::After(day + DAY_MS)
        );
        assert_eq!(
            kinds("x on:2026-12-07")[1].1,
            ClauseKind::On(day, day + DAY_MS)
        );
        assert_eq!(
            kinds("x before:1796601600123")[1].1,
            ClauseKind::Before(1_796_601_600_123)
        );
        assert_eq!(
            kinds("x after:1796601600123")[1].1,
            ClauseKind::After(1_796_601_600_124)
        );
        assert!(matches!(
            parse("on:1796601600123"),
            Err(QueryError::BadValue { op: "on", .. })
        ));
        assert_eq!(civil_from_days(day / DAY_MS), (2026, 12, 7));
        assert_eq!(
            kinds("x after:2024-02-29")[1].1,
            ClauseKind::After(1_709_251_200_000)
        );
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "1969-12-31",
            "yesterday",
            "2026-1",
        ] {
            assert!(
                matches!(
                    parse(&format!("before:{bad}")),
                    Err(QueryError::BadValue { op: "before", .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_quoted_prefix_ending_in_a_star_stays_quoted() {
        let q = parse("\"*\"*").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.to_string(), "\"*\"*");
        assert_eq!(parse(&q.to_string()), Ok(q));
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(parse("   "), Err(QueryError::Empty));
        assert_eq!(parse("\"\""), Err(QueryError::Empty));
        assert_eq!(parse("-spam -from:bob"), Err(QueryError::OnlyNegated));
        assert_eq!(parse("say \"hi"), Err(QueryError::UnclosedQuote));
        assert_eq!(parse("from:"), Err(QueryError::MissingValue { op: "from" }));
        assert!(matches!(
            parse("has:gif"),
            Err(QueryError::BadValue { op: "has", .. })
        ));
        assert!(matches!(
            parse("thread:0"),
            Err(QueryError::BadValue { op: "thread", .. })
        ));
        let long = "w ".repeat(MAX_CLAUSES + 1);
        assert_eq!(
            parse(&long),
            Err(QueryError::TooManyClauses { max: MAX_CLAUSES })
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_is_total_and_display_round_trips(input in "\\PC{0,80}") {
            if let Ok(q) = parse(&input) {
                let again = parse(&q.to_string());
                proptest::prop_assert_eq!(again, Ok(q));
            }
        }

        #[test]
        fn operator_shaped_input_round_trips(
            words in proptest::collection::vec(
                "(-)?(from|in|has|mentions|on|before|after|thread|is|x)?:?[a-z0-9*\"-]{0,12}", 1..8)
        ) {
            let input = words.join(" ");
            if let Ok(q) = parse(&input) {
                proptest::prop_assert_eq!(parse(&q.to_string()), Ok(q));
            }
        }
    }
}
