//! How `chorusctl` prints results for people: scalars as `key: value`, arrays of objects as
//! tables, times as UTC dates, protobuf enum names as words.

#![allow(clippy::print_stdout)]

use serde_json::Value;

/// Prints a result for people: scalars as `key: value`, arrays of objects as tables.
pub(crate) fn render(value: &Value) {
    let Value::Object(map) = value else {
        println!("{value}");
        return;
    };
    let mut tables = Vec::new();
    for (key, v) in map {
        match v {
            Value::Array(rows) if rows.iter().all(Value::is_object) => tables.push((key, rows)),
            Value::Object(inner) => {
                let parts: Vec<String> = inner
                    .iter()
                    .map(|(k, v)| format!("{k}={}", scalar(k, v)))
                    .collect();
                println!("{key}: {}", parts.join(" "));
            }
            other => println!("{key}: {}", scalar(key, other)),
        }
    }
    for (key, rows) in tables {
        println!("\n{key} ({}):", rows.len());
        table(rows);
    }
}

/// Prefixes of the protocol's enum names, shown as the word after them (`CHANNEL_KIND_PUBLIC`
/// reads `public`); `--json` keeps the names.
const ENUM_PREFIXES: &[&str] = &[
    "CHANNEL_KIND_",
    "ROLE_",
    "MEMBER_ACTION_",
    "CLOSE_CODE_",
    "ERROR_CODE_",
];

/// The fields that hold enum names (a user id or a channel name may start like one too).
const ENUM_FIELDS: &[&str] = &["kind", "role", "action", "code", "my_role"];

/// Unix milliseconds after this (2001-09-09) in a `*_ms` field are times, not durations.
const TIMES_AFTER_MS: u64 = 1_000_000_000_000;

/// A value for people: times as UTC dates, enum names as words.
fn scalar(key: &str, v: &Value) -> String {
    match v {
        Value::Number(n)
            if key.ends_with("_ms") && n.as_u64().is_some_and(|ms| ms > TIMES_AFTER_MS) =>
        {
            n.as_u64().map(utc).unwrap_or_default()
        }
        Value::String(s) if ENUM_FIELDS.contains(&key) => ENUM_PREFIXES
            .iter()
            .find_map(|p| s.strip_prefix(p))
            .map_or_else(|| s.clone(), |word| word.to_lowercase().replace('_', " ")),
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `2026-12-07 10:23:13Z` for unix milliseconds (UTC, the proleptic Gregorian calendar).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn table(rows: &[Value]) {
    let Some(Value::Object(first)) = rows.first() else {
        return;
    };
    let columns: Vec<&String> = first.keys().collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| scalar(c, &r[c.as_str()])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in cells {
        line(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_times_and_words() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_796_633_891_973), "2026-12-07 08:58:11Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        let time = serde_json::json!(1_796_633_891_973u64);
        assert_eq!(scalar("created_at_ms", &time), "2026-12-07 08:58:11Z");
        // Durations and counts stay numbers.
        assert_eq!(scalar("uptime_ms", &serde_json::json!(5_000)), "5000");
        assert_eq!(scalar("members", &time), "1796633891973");
        assert_eq!(
            scalar("kind", &serde_json::json!("CHANNEL_KIND_PUBLIC")),
            "public"
        );
        assert_eq!(scalar("role", &serde_json::json!("ROLE_OWNER")), "owner");
        assert_eq!(
            scalar("action", &serde_json::json!("MEMBER_ACTION_ROLE_CHANGED")),
            "role changed"
        );
        assert_eq!(scalar("name", &serde_json::json!("team")), "team");
        assert_eq!(
            scalar("user", &serde_json::json!("ROLE_PLAYER")),
            "ROLE_PLAYER"
        );
    }
}
