//! The in-place reader of the host's serialised header maps: any buffer, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mlcanary_filter::headers::HeaderPairs;

fuzz_target!(|data: &[u8]| {
    let m = HeaderPairs::new(data.to_vec());
    let n = m.iter().count();
    assert!(n <= data.len() / 8 + 1);
    let _ = m.get_str(":authority");
    let _ = m.all_str("cookie").count();
});
