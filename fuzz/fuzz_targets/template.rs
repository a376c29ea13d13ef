#![no_main]
//! See `parley::fuzzing::template`; `tests/fuzz_corpus.rs` replays the corpus on stable.

libfuzzer_sys::fuzz_target!(|data: &[u8]| parley::fuzzing::template(data));
