//! Engine API query-parameter values (`until`, `since`, signals, names) and the string
//! forms inside create bodies (`-v` binds, `--add-host`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        berth_node::fuzzing::query_value(s);
    }
});
