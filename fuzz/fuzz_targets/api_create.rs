//! `POST /containers/create` bodies, also as a service's container spec.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    berth_node::fuzzing::container_create(data);
});
