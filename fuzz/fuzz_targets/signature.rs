#![no_main]
//! See `parley_testkit::fuzz::signature`; `tests/fuzz_corpus.rs` replays the corpus on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_testkit::fuzz::signature(data));
