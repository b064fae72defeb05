//! The proxy-wasm ABI (0.2.1) as this filter uses it: the host functions it imports, wrapped so
//! that every status is a `Result` (never a panic, which would trap the VM), and the constants of
//! the ABI's enums.
//!
//! Why not the SDK: the host calls an exported callback only if the module exports it, and each call
//! crosses into V8. The SDK exports every callback of the ABI (request bodies, trailers, `on_done`,
//! …) and dispatches each through a SipHash map of boxed trait objects; this filter exports only the
//! callbacks it acts on (`super`), keeps its streams in one map keyed by a cheap hash, and its
//! wrappers neither allocate per call nor panic on an unexpected status.

use std::ptr::null_mut;

/// A host status other than `Ok` (0): 1 not found, 2 bad argument, … — logged, never fatal.
pub type Status = u32;

pub const LOG_DEBUG: u32 = 1;
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;
pub const LOG_CRITICAL: u32 = 5;

/// Header maps (`MapType`).
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const RESPONSE_TRAILERS: u32 = 3;

/// Buffers (`BufferType`).
pub const REQUEST_BODY: u32 = 0;
pub const RESPONSE_BODY: u32 = 1;
pub const PLUGIN_CONFIGURATION: u32 = 7;

/// Metric kinds (`MetricType`).
pub const COUNTER: u32 = 0;
pub const HISTOGRAM: u32 = 2;

/// A callback's verdict (`Action`). Headers always go on (a paused header callback pauses the
/// body too); only two bodies are held: a reply that gets a ticket and a feedback request, each
/// until it is whole.
pub const CONTINUE: u32 = 0;
/// Bodies: `StopIterationAndBuffer` (the host keeps the chunks, and the last call's buffer holds
/// the whole body). Headers: only after the filter answered the stream itself.
pub const PAUSE: u32 = 1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> Status;
    fn proxy_get_current_time_nanoseconds(out: *mut u64) -> Status;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max_size: usize,
        out_data: *mut *mut u8,
        out_size: *mut usize,
    ) -> Status;
    fn proxy_get_header_map_pairs(map: u32, out_data: *mut *mut u8, out_size: *mut usize)
        -> Status;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> Status;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> Status;
    fn proxy_set_buffer_bytes(
        buffer: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> Status;
    fn proxy_define_metric(
        kind: u32,
        name: *const u8,
        name_size: usize,
        out_id: *mut u32,
    ) -> Status;
    fn proxy_increment_metric(id: u32, offset: i64) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
    fn proxy_record_metric(id: u32, value: u64) -> Status;
}

fn ok(status: Status) -> Result<(), Status> {
    if status == 0 {
        Ok(())
    } else {
        Err(status)
    }
}

/// Take ownership of a buffer the host returned: it allocated `size` bytes through this module's
/// [`proxy_on_memory_allocate`], so it is a `Vec` of exactly that length and capacity.
///
/// # Safety
/// `data` is null or the host's allocation of `size` bytes, returned once.
unsafe fn host_bytes(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        // SAFETY: as documented above.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }
}

/// Memory the host writes returned buffers into (header maps, bodies, config).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: `MaybeUninit` needs no initialisation; the boxed slice has exactly `size` bytes, which
    // is what `host_bytes` relies on when it rebuilds the Vec.
    unsafe { v.set_len(size) };
    Box::into_raw(v.into_boxed_slice()).cast::<u8>()
}

/// The ABI version this module speaks; the host reads it from the export's name.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

pub fn log(level: u32, message: &str) {
    // SAFETY: a pointer and length of a live `str`.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// Nanoseconds since the epoch; 0 if the host refuses (a duration then reads as 0).
pub fn now_ns() -> u64 {
    let mut t = 0;
    // SAFETY: `t` outlives the call.
    let _ = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    t
}

/// Up to `max` bytes of a buffer from `start`; `Ok(None)` when there is none.
pub fn buffer(kind: u32, start: usize, max: usize) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: out-pointers to locals; the returned buffer is taken by `host_bytes` once.
    unsafe {
        match proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) {
            0 => Ok(host_bytes(data, size)),
            1 | 7 => Ok(None), // not found, empty
            s => Err(s),
        }
    }
}

/// Every pair of a header map, serialised (read in place by `HeaderPairs`); `None` when the map is
/// absent or the host refuses.
pub fn header_pairs(map: u32) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: as in `buffer`.
    unsafe {
        match proxy_get_header_map_pairs(map, &mut data, &mut size) {
            0 => host_bytes(data, size),
            _ => None,
        }
    }
}

/// Set `name` to `value`, replacing every value it had.
pub fn replace_header(map: u32, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: live `str`s for the call.
    ok(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Add one more value of `name`.
pub fn add_header(map: u32, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: live `str`s for the call.
    ok(unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Remove every value of `name`.
pub fn remove_header(map: u32, name: &str) -> Result<(), Status> {
    // SAFETY: a live `str` for the call.
    ok(unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

/// Replace `size` bytes of a buffer from `start` with `data`.
pub fn set_buffer(kind: u32, start: usize, size: usize, data: &[u8]) -> Result<(), Status> {
    // SAFETY: a live slice for the call.
    ok(unsafe { proxy_set_buffer_bytes(kind, start, size, data.as_ptr(), data.len()) })
}

/// A metric's id; defining an existing name returns the same metric.
pub fn define_metric(kind: u32, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: live `str` and a local out-pointer.
    ok(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment(id: u32, by: i64) {
    // SAFETY: plain values.
    let _ = unsafe { proxy_increment_metric(id, by) };
}

pub fn record(id: u32, value: u64) {
    // SAFETY: plain values.
    let _ = unsafe { proxy_record_metric(id, value) };
}

/// Answer the stream from the filter: `status` with a JSON `body`; the request goes no further.
pub fn send_json(status: u32, details: &str, body: &str) -> Result<(), Status> {
    // The ABI's header map: count, each (key, value) length, then each key and value NUL-ended.
    let (k, v) = ("content-type", "application/json");
    let mut map = Vec::with_capacity(16 + k.len() + v.len());
    for n in [1, k.len(), v.len()] {
        map.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for s in [k, v] {
        map.extend_from_slice(s.as_bytes());
        map.push(0);
    }
    // SAFETY: live buffers for the call; -1: no gRPC status.
    ok(unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    })
}
