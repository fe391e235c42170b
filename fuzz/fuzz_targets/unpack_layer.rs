//! A layer tar (uncompressed, as the image store hands it to the unpacker) applied to a
//! scratch directory. Besides not panicking, nothing outside the destination may change:
//! a sibling file and the scratch root's entries are checked after every input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = tempfile::tempdir().expect("scratch dir");
    let dest = base.path().join("dest");
    let sentinel = base.path().join("sentinel");
    std::fs::create_dir(&dest).expect("dest");
    std::fs::write(&sentinel, b"untouched").expect("sentinel");
    let _ = berth_runtime::unpack::unpack_layer(data, &dest);
    assert_eq!(
        std::fs::read(&sentinel).expect("sentinel kept"),
        b"untouched"
    );
    let mut names: Vec<_> = std::fs::read_dir(base.path())
        .expect("scratch dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["dest", "sentinel"],
        "unpack wrote outside its destination"
    );
});
