//! The Engine API's `filters` query parameter (JSON) as the list, prune and events
//! endpoints read it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        berth_node::fuzzing::filters(s);
    }
});
