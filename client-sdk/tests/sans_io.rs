//! The client's state machine (`src/session/`) stays sans-IO: no async runtime, no async code,
//! no sockets, and no clock reading outside its tests (time is passed in), so that its tests
//! drive it without sockets or sleeps and other SDKs can follow the same rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Words that must not appear anywhere under `src/session/`, comments included.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "async",
    "std::net",
    "crate::transport",
    "crate::driver",
];

/// Clock readings, allowed only in test code (a test needs one starting instant).
const CLOCKS: &[&str] = &["Instant::now", "SystemTime"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_session_mentions_no_runtime_and_reads_no_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/session");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    files.sort();
    assert!(files.len() >= 5, "the session's files: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(&dir).unwrap().display().to_string();
        for (n, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                if line.contains(word) {
                    found.push(format!("{name}:{}: {word}", n + 1));
                }
            }
        }
        // Code before the file's inline test module, unless the whole file is tests.
        if name.starts_with("tests") {
            continue;
        }
        let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            for word in CLOCKS {
                if line.contains(word) {
                    found.push(format!("{name}:{}: {word}", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/session/ must stay sans-IO: {found:?}"
    );
}
