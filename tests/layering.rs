//! The floors of `src/lib.rs`: every `crate::` import in `src/` points to a lower floor, and
//! modules of one floor do not import each other, so no import circle can form among the
//! top-level modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The floors as `src/lib.rs` states them: lines `//! - N [`module`]: what it is.`
fn floors(lib: &str) -> BTreeMap<String, u32> {
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - "))
        .filter_map(|l| {
            let (n, rest) = l.split_once(' ')?;
            let name = rest.strip_prefix("[`")?.split_once("`]")?.0;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// The product's code of a file: its test module and comments left out.
fn product_code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names through `crate::`, directly
/// (`crate::store::X`) or in a group (`crate::{store, config::Settings}`).
fn named_modules(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: those at brace depth 0, after `{` or `,`.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        let name = ident(&group[j..]);
                        if !name.is_empty() {
                            out.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every (from, to) import between top-level modules, with a file that makes it.
fn imports(src: &Path) -> BTreeMap<(String, String), String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut edges = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel.iter().next().unwrap().to_string_lossy().to_string();
        if first == "bin" || first == "lib.rs" || first == "main.rs" {
            continue;
        }
        let from = first.trim_end_matches(".rs").to_string();
        let code = product_code(&std::fs::read_to_string(&file).unwrap());
        for to in named_modules(&code) {
            if to != from {
                edges
                    .entry((from.clone(), to))
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    edges
}

#[test]
fn every_import_points_down_a_floor() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let floors = floors(&lib);
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    let unplaced: Vec<&String> = declared
        .iter()
        .filter(|m| !floors.contains_key(*m))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules without a floor in src/lib.rs's list: {unplaced:?}"
    );

    let mut up = BTreeMap::new();
    for ((from, to), file) in imports(&src) {
        let (Some(f), Some(t)) = (floors.get(&from), floors.get(&to)) else {
            continue; // an item of lib.rs itself, or a name that is not a module
        };
        if t >= f {
            up.insert((from, to), file);
        }
    }
    let up: Vec<String> = up
        .iter()
        .map(|((a, b), file)| {
            format!(
                "{a} (floor {}) imports {b} (floor {}) in src/{file}",
                floors[a], floors[b]
            )
        })
        .collect();
    assert!(
        up.is_empty(),
        "imports that point up a floor or across one (move the shared piece down, or hand \
         the upper module in as a trait or a callback):\n{}",
        up.join("\n")
    );
}

#[test]
fn the_check_reads_direct_and_grouped_imports_and_skips_tests_and_comments() {
    let code = product_code(
        "use crate::store::Store;\n\
         use crate::{config::{A, B}, metrics};\n\
         // crate::app::x in a comment\n\
         fn f() { crate::whatsapp::x(); }\n\
         #[cfg(test)]\nmod tests { use crate::app; }\n",
    );
    let names: Vec<String> = named_modules(&code).into_iter().collect();
    assert_eq!(names, ["config", "metrics", "store", "whatsapp"]);
    let floors = floors("//! - 0 [`whatsapp`]: wire.\n//! - 12 [`app`]: wiring.\n");
    assert_eq!(floors["whatsapp"], 0);
    assert_eq!(floors["app"], 12);
}
