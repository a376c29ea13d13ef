//! Every file of `fuzz/corpus/<target>/` and every crash kept in `fuzz/artifacts/<target>/`
//! goes through the same harness the fuzz target runs (`parley_testkit::fuzz`), so stable CI
//! keeps checking what fuzzing found without nightly or libFuzzer.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for kind in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files.into_iter().filter(|p| p.is_file()) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} panics", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn every_corpus_file_and_past_crash_replays_without_a_panic() {
    for (target, run) in parley_testkit::fuzz::TARGETS {
        let n = replay(target, run);
        assert!(n > 0, "fuzz/corpus/{target}/ is empty");
        eprintln!("{target}: {n} input(s) replayed");
    }
}
