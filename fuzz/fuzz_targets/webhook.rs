#![no_main]
//! See `parley_testkit::fuzz::webhook`; `tests/fuzz_corpus.rs` replays the corpus on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley_testkit::fuzz::webhook(data));
