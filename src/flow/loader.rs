//! Reading flow files from `flows.dir`.

use std::path::Path;

use super::FlowSet;

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

/// Read and validate the whole folder.
pub fn load_dir(dir: &Path) -> Result<FlowSet, Vec<String>> {
    FlowSet::load(&read_flow_files(dir)?)
}

/// The flows of `dir` and the bots of `dir/bots/`, checked together (a chatbot node must
/// name a bot; with `providers`, a bot must name a configured provider). Every error of
/// both, or both sets.
pub fn load_all(
    dir: &Path,
    providers: Option<&[String]>,
) -> Result<(FlowSet, crate::chatbot::BotSet), Vec<String>> {
    let flows = load_dir(dir);
    let bots = crate::chatbot::load_bots(dir, providers);
    match (flows, bots) {
        (Ok(f), Ok(b)) => {
            f.check_bots(&b)?;
            Ok((f, b))
        }
        (f, b) => Err(f.err().into_iter().chain(b.err()).flatten().collect()),
    }
}
