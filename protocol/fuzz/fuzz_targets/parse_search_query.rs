//! `Search.query` is peer input: parsing any string must end in a query or a typed error,
//! and a parsed query written back must parse to itself.
#![no_main]

use chorus_protocol::search::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = parse(text) {
        assert_eq!(parse(&query.to_string()), Ok(query));
    }
});
