//! The one raw host call the SDK does not offer in the shape we need: every header of a map at
//! once, kept serialised. `hostcalls::get_map_bytes` would allocate a `String` and a `Vec` per
//! header on every request; this reads one buffer and `HeaderPairs` scans it in place.

use std::ptr::null_mut;

use proxy_wasm::types::{MapType, Status};

use crate::headers::HeaderPairs;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// All pairs of `map`; empty when the host has none or refuses (never a panic).
pub fn header_pairs(map: MapType) -> HeaderPairs {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes it allocated through this module's
    // `proxy_on_memory_allocate` (the SDK's global allocator), so the buffer is ours to own and
    // free as a Vec of exactly that length and capacity — as the SDK's own `get_map_bytes` does.
    unsafe {
        match proxy_get_header_map_pairs(map, &mut data, &mut size) {
            Status::Ok if !data.is_null() => {
                HeaderPairs::new(Vec::from_raw_parts(data, size, size))
            }
            _ => HeaderPairs::default(),
        }
    }
}
