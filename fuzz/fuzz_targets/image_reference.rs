//! Image references (`docker pull NAME`, `FROM`, `docker tag`), platform strings and
//! digests: parse, normalise, and every accessor on what parsed.
#![no_main]

use berth_registry_mirror::{Digest, Platform, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for r in [Reference::parse(s), Reference::parse_normalized(s)]
        .into_iter()
        .flatten()
    {
        let _ = (r.domain(), r.path(), r.tag(), r.digest(), r.registry_host());
        let _ = (r.name(), r.familiar_name(), r.familiar_tagged());
        let _ = r.manifest_reference();
        let _ = r.with_tag("latest");
        let _ = r.with_tag(s);
    }
    let _ = berth_registry_mirror::reference::valid_repository_path(s);
    if let Ok(p) = Platform::parse(s) {
        let _ = p.matches(&p);
    }
    if let Ok(d) = Digest::parse(s) {
        let _ = (d.hex(), d.short(), d.algorithm());
    }
});
