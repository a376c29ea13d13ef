//! Definition files (flows, chatbots): reading a folder of them, YAML errors as
//! `file:line:col: message`, the text normalisation their keywords use, durations, and the
//! content hash that versions them.

use std::path::Path;

/// Every `*.yaml`, `*.yml` and `*.json` flow file under `dir` (not recursive), sorted by name,
/// as (path for messages, contents). A missing folder holds no flows.
pub fn read_flow_files(dir: &Path) -> Result<Vec<(String, String)>, Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(vec![format!(
                "{}: cannot read the flows folder: {e}",
                dir.display()
            )])
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            matches!(ext, "yaml" | "yml" | "json") && !name.ends_with(".schema.json")
        })
        .collect();
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for p in paths {
        match std::fs::read_to_string(&p) {
            Ok(text) => files.push((p.display().to_string(), text)),
            Err(e) => errors.push(format!("{}:1:1: cannot read: {e}", p.display())),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// A YAML syntax or shape error as `file:line:col: message`.
pub fn yaml_error(path: &str, e: &serde_norway::Error) -> String {
    let (l, c) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let msg = e.to_string();
    // serde_norway appends " at line X column Y"; strip it (we prefix the position).
    let msg = msg.split(" at line ").next().unwrap_or(&msg);
    format!("{path}:{l}:{c}: {msg}")
}

/// Parse `500ms`, `6s`, `10m`, `24h`, `2d` into milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// FNV-1a 64-bit, hex: stable across builds.
pub fn content_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Lowercase, fold common Latin accents, trim and collapse whitespace.
pub fn normalize(s: &str) -> String {
    let folded: String = s
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
            'è' | 'é' | 'ê' | 'ë' | 'ē' => 'e',
            'ì' | 'í' | 'î' | 'ï' | 'ī' => 'i',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => 'o',
            'ù' | 'ú' | 'û' | 'ü' | 'ū' => 'u',
            'ñ' => 'n',
            'ç' => 'c',
            'ý' | 'ÿ' => 'y',
            c => c,
        })
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}
