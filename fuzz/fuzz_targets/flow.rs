#![no_main]
//! See `parley::fuzzing::flow`; `tests/fuzz_corpus.rs` replays the corpus on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley::fuzzing::flow(data));
