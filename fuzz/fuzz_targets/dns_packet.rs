//! DNS query packets to the embedded resolver of user-defined networks (`dns::answer`),
//! against a record set with a few names, one of them only for a client on another
//! network too. A reply must be a well-formed header that echoes the query id.
#![no_main]

use std::net::Ipv4Addr;

use berth_overlay_net::dns::{answer, DnsDecision};
use berth_overlay_net::DnsRecords;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut records = DnsRecords::default();
    records.names.insert(
        "web".into(),
        vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)],
    );
    records
        .names
        .insert("db.example".into(), vec![Ipv4Addr::new(10, 0, 0, 4)]);
    let client = Ipv4Addr::new(10, 0, 0, 9);
    records.neighbours.insert(
        client,
        [("back".to_string(), vec![Ipv4Addr::new(10, 1, 0, 2)])].into(),
    );
    if let DnsDecision::Reply(out) = answer(data, &records, Some(client.into())) {
        assert!(out.len() >= 12);
        assert_eq!(out[0..2], data[0..2]);
    }
});
