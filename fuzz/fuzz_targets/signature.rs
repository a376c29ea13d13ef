#![no_main]
//! See `parley::fuzzing::signature`; `tests/fuzz_corpus.rs` replays the corpus on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley::fuzzing::signature(data));
