//! Cookie and query parsing: any header text, any name; a found value is a slice of the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mlcanary_filter::rules::{cookie_value, query_value};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (name, header) = s.split_once('\n').unwrap_or(("uid", s));
    if let Some(v) = cookie_value(header, name) {
        assert!(header.contains(v));
    }
    if let Some(v) = query_value(header, name) {
        assert!(header.contains(v));
    }
});
