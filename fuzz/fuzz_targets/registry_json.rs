//! Registry JSON as a registry or an image archive serves it: manifest (image or index,
//! with each supported `Content-Type`), image config; then platform selection and chain
//! ids on what parsed.
#![no_main]

use berth_registry_mirror::manifest::{chain_ids, select_platform, ImageConfig, Manifest};
use berth_registry_mirror::{Digest, Platform};
use libfuzzer_sys::fuzz_target;

const TYPES: [Option<&str>; 5] = [
    None,
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let digest = Digest::of(body);
    match Manifest::parse(body, TYPES[usize::from(sel) % TYPES.len()], &digest) {
        Ok(Manifest::Index(index)) => {
            let want = Platform::parse("linux/amd64").expect("platform");
            let _ = select_platform(&index, &want);
        }
        Ok(m) => {
            let _ = m.media_type();
        }
        Err(_) => {}
    }
    if let Ok(config) = ImageConfig::parse(body, &digest) {
        let _ = chain_ids(&config.rootfs.diff_ids);
    }
});
