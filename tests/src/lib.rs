//! End-to-end tests of berth live in `tests/*.rs`; this library is empty.
