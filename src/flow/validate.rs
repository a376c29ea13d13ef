//! Loading + validation: parse every file, compile it, and collect ALL errors as
//! `file:line:col: message`. Semantic error positions come from a line scan of the source.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use regex::Regex;
use rust_decimal::Decimal;

use super::expr;
use super::model::*;
use super::template::Template;
use crate::whatsapp::send::{ListRow, ListSection, OutboundMessage, ReplyButton};

/// All loaded, validated flows.
#[derive(Debug, Clone, Default)]
pub struct FlowSet {
    flows: Vec<Flow>,
}

impl FlowSet {
    /// Parse + validate every `(path, contents)`; all errors are returned as `file:line:col: msg`.
    pub fn load(files: &[(String, String)]) -> Result<FlowSet, Vec<String>> {
        let mut errors = Vec::new();
        let mut flows: Vec<Flow> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for (path, text) in files {
            let src = Src::new(path, text);
            match compile(&src, &mut errors) {
                Some(flow) => {
                    if let Some(other) = seen.get(&flow.id) {
                        let (l, c) = src.top_key("id").unwrap_or((1, 1));
                        errors.push(src.fmt(
                            l,
                            c,
                            &format!("duplicate flow id `{}` (also defined in {other})", flow.id),
                        ));
                    } else {
                        seen.insert(flow.id.clone(), path.clone());
                        flows.push(flow);
                    }
                }
                None => continue,
            }
        }
        if errors.is_empty() {
            Ok(FlowSet { flows })
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, id: &str) -> Option<&Flow> {
        self.flows.iter().find(|f| f.id == id)
    }

    pub fn ids(&self) -> Vec<String> {
        self.flows.iter().map(|f| f.id.clone()).collect()
    }

    /// Flows in load (priority) order.
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }
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

struct Src<'a> {
    path: &'a str,
    text: &'a str,
    lines: Vec<&'a str>,
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

fn is_key(line: &str, key: &str) -> bool {
    let t = line.trim_start().trim_start_matches("- ");
    for k in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
        if let Some(r) = t.strip_prefix(&k) {
            if r.starts_with(':') {
                return true;
            }
        }
    }
    false
}

impl<'a> Src<'a> {
    fn new(path: &'a str, text: &'a str) -> Self {
        Src {
            path,
            text,
            lines: text.lines().collect(),
        }
    }
    fn fmt(&self, line: usize, col: usize, msg: &str) -> String {
        format!("{}:{}:{}: {}", self.path, line, col, msg)
    }
    /// (line, col), 1-based, of a top-level key.
    fn top_key(&self, key: &str) -> Option<(usize, usize)> {
        self.lines
            .iter()
            .position(|l| indent(l) == 0 && is_key(l, key))
            .map(|i| (i + 1, 1))
    }
    /// 0-based line index of a node definition under `nodes:`.
    fn node_line(&self, node: &str) -> Option<usize> {
        let start = self
            .lines
            .iter()
            .position(|l| indent(l) == 0 && is_key(l, "nodes"))?;
        let mut node_indent = None;
        for (i, l) in self.lines.iter().enumerate().skip(start + 1) {
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let ind = indent(l);
            if ind == 0 {
                return None;
            }
            if node_indent.is_none() {
                node_indent = Some(ind);
            }
            if Some(ind) == node_indent && is_key(l, node) {
                return Some(i);
            }
        }
        None
    }
    fn node_pos(&self, node: &str) -> (usize, usize) {
        match self.node_line(node) {
            Some(i) => (i + 1, indent(self.lines[i]) + 1),
            None => (1, 1),
        }
    }
    /// Position of `needle` inside the node's block (falls back to the node line).
    fn in_node(&self, node: &str, needle: &str) -> (usize, usize) {
        let Some(i) = self.node_line(node) else {
            return (1, 1);
        };
        let ind = indent(self.lines[i]);
        for (j, l) in self.lines.iter().enumerate().skip(i) {
            if j > i && !l.trim().is_empty() && !l.trim_start().starts_with('#') && indent(l) <= ind
            {
                break;
            }
            if let Some(c) = l.find(needle) {
                return (j + 1, c + 1);
            }
        }
        (i + 1, ind + 1)
    }
}

struct Ctx<'a, 'b> {
    src: &'b Src<'a>,
    errors: &'b mut Vec<String>,
}

impl Ctx<'_, '_> {
    fn at(&mut self, node: &str, needle: &str, msg: impl AsRef<str>) {
        let (l, c) = self.src.in_node(node, needle);
        let m = format!("node `{node}`: {}", msg.as_ref());
        self.errors.push(self.src.fmt(l, c, &m));
    }
    fn tpl(&mut self, node: &str, s: &str) -> Template {
        match Template::parse(s) {
            Ok(t) => t,
            Err(e) => {
                self.at(node, s.lines().next().unwrap_or(s), e);
                Template::literal(s)
            }
        }
    }
    fn dec(&mut self, node: &str, key: &str, v: &Option<serde_norway::Value>) -> Option<Decimal> {
        let v = v.as_ref()?;
        let s = match v {
            serde_norway::Value::Number(n) => n.to_string(),
            serde_norway::Value::String(s) => s.clone(),
            _ => String::new(),
        };
        match Decimal::from_str(&s) {
            Ok(d) => Some(d),
            Err(_) => {
                self.at(node, key, format!("`{key}` must be a number"));
                None
            }
        }
    }
}

fn compile(src: &Src<'_>, errors: &mut Vec<String>) -> Option<Flow> {
    let raw: RawFlow = match serde_norway::from_str(src.text) {
        Ok(r) => r,
        Err(e) => {
            let (l, c) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let msg = e.to_string();
            // serde_norway appends " at line X column Y"; strip it (we prefix the position).
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            errors.push(src.fmt(l, c, &msg));
            return None;
        }
    };
    let mut cx = Ctx { src, errors };
    let id = raw.id.clone().unwrap_or_else(|| {
        std::path::Path::new(src.path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let names: BTreeSet<&str> = raw.nodes.keys().map(|s| s.as_str()).collect();
    let top_err = |cx: &mut Ctx, key: &str, msg: String| {
        let (l, c) = cx.src.top_key(key).unwrap_or((1, 1));
        cx.errors.push(cx.src.fmt(l, c, &msg));
    };
    if !names.contains(raw.start.as_str()) {
        top_err(
            &mut cx,
            "start",
            format!("start node `{}` does not exist", raw.start),
        );
    }
    let session_timeout_ms = match &raw.session_timeout {
        Some(s) => match parse_duration(s) {
            Some(ms) => Some(ms),
            None => {
                top_err(&mut cx, "session_timeout", format!("bad duration `{s}`"));
                None
            }
        },
        None => None,
    };
    let on_update = match raw.on_update.as_deref() {
        None | Some("pin") => OnUpdate::Pin,
        Some("migrate") => OnUpdate::Migrate,
        Some("restart") => OnUpdate::Restart,
        Some(other) => {
            top_err(
                &mut cx,
                "on_update",
                format!("on_update `{other}` must be pin, migrate or restart"),
            );
            OnUpdate::Pin
        }
    };
    let mut triggers = Vec::new();
    for t in &raw.triggers {
        if let Some(s) = &t.start {
            if !names.contains(s.as_str()) {
                top_err(
                    &mut cx,
                    "triggers",
                    format!("trigger start node `{s}` does not exist"),
                );
            }
        }
        let on = match (&t.keyword, &t.button, &t.regex) {
            (Some(k), None, None) => Some(Trigger::Keyword {
                word: normalize(k),
                kind: t.match_kind,
                start: t.start.clone(),
            }),
            (None, Some(b), None) => Some(Trigger::Button {
                id: b.clone(),
                start: t.start.clone(),
            }),
            (None, None, Some(r)) => match Regex::new(r) {
                Ok(re) => Some(Trigger::Regex {
                    re,
                    start: t.start.clone(),
                }),
                Err(e) => {
                    top_err(
                        &mut cx,
                        "triggers",
                        format!("trigger regex `{r}` is invalid: {e}"),
                    );
                    None
                }
            },
            _ => {
                top_err(
                    &mut cx,
                    "triggers",
                    "each trigger needs exactly one of `keyword`, `button` or `regex`".into(),
                );
                None
            }
        };
        if let Some(on) = on {
            triggers.push(TriggerSpec {
                on,
                priority: t.priority,
                global: t.global,
            });
        }
    }

    let mut nodes = BTreeMap::new();
    for (name, rn) in &raw.nodes {
        let node = compile_node(&mut cx, name, rn, &names);
        nodes.insert(name.clone(), node);
    }

    // Reachability from start + trigger starts.
    let mut roots = vec![raw.start.clone()];
    roots.extend(raw.triggers.iter().filter_map(|t| t.start.clone()));
    let mut seen = BTreeSet::new();
    while let Some(n) = roots.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        if let Some(node) = nodes.get(&n) {
            roots.extend(successors(node));
        }
    }
    for name in nodes.keys() {
        if !seen.contains(name) && names.contains(raw.start.as_str()) {
            let (l, c) = src.node_pos(name);
            let m = format!("node `{name}` is unreachable");
            cx.errors.push(src.fmt(l, c, &m));
        }
    }

    // Instant loops: a cycle through nodes that never wait for input.
    let instant = |n: &Node| !matches!(n.kind, NodeKind::Ask(_) | NodeKind::Wait { .. });
    let mut color: HashMap<&str, u8> = HashMap::new();
    let mut reported = BTreeSet::new();
    for start in nodes.keys() {
        // iterative DFS with explicit stack of (node, successors, idx)
        if color.get(start.as_str()).copied().unwrap_or(0) != 0 || !instant(&nodes[start]) {
            continue;
        }
        let mut stack: Vec<(&str, Vec<String>, usize)> =
            vec![(start.as_str(), successors(&nodes[start]), 0)];
        color.insert(start.as_str(), 1);
        while let Some(top) = stack.last_mut() {
            if top.2 >= top.1.len() {
                color.insert(top.0, 2);
                stack.pop();
                continue;
            }
            let nxt = top.1[top.2].clone();
            top.2 += 1;
            let from = top.0;
            let Some((k, nn)) = nodes.get_key_value(&nxt) else {
                continue;
            };
            if !instant(nn) {
                continue;
            }
            match color.get(k.as_str()).copied().unwrap_or(0) {
                0 => {
                    color.insert(k.as_str(), 1);
                    stack.push((k.as_str(), successors(nn), 0));
                }
                1 if reported.insert(from.to_string()) => {
                    let (l, c) = src.node_pos(from);
                    let m = format!(
                        "node `{from}` closes a loop back to `{k}` without any ask/wait (runaway loop)"
                    );
                    cx.errors.push(src.fmt(l, c, &m));
                }
                _ => {}
            }
        }
    }

    Some(Flow {
        id,
        version: content_hash(src.text),
        triggers,
        start: raw.start.clone(),
        session_timeout_ms,
        on_update,
        nodes,
    })
}

fn successors(n: &Node) -> Vec<String> {
    let mut v: Vec<String> = n.next.iter().cloned().collect();
    match &n.kind {
        NodeKind::Condition {
            then, otherwise, ..
        } => {
            v.push(then.clone());
            v.push(otherwise.clone());
        }
        NodeKind::JumpNode(t) => v.push(t.clone()),
        NodeKind::Split { variants, .. } => v.extend(variants.iter().map(|(_, _, n)| n.clone())),
        NodeKind::Ask(a) => {
            v.extend(a.on_fail.iter().cloned());
            v.extend(a.branches.values().cloned());
        }
        _ => {}
    }
    v
}

fn compile_node(cx: &mut Ctx, name: &str, rn: &RawNode, names: &BTreeSet<&str>) -> Node {
    let check_target = |cx: &mut Ctx, key: &str, target: &str| {
        if !names.contains(target) {
            cx.at(
                name,
                target,
                format!("`{key}` target `{target}` does not exist"),
            );
        }
    };
    let kinds = [
        rn.send.is_some(),
        rn.ask.is_some(),
        rn.condition.is_some(),
        rn.set.is_some(),
        rn.jump.is_some(),
        rn.wait.is_some(),
        rn.split.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if kinds > 1 {
        cx.at(
            name,
            name,
            "a node may have only one of send/ask/condition/set/jump/wait",
        );
    }
    if let Some(n) = &rn.next {
        check_target(cx, "next", n);
    }
    if rn.branches.is_some() && rn.ask.is_none() {
        cx.at(name, "branches", "`branches` is only allowed on ask nodes");
    }
    let end = match &rn.end {
        None | Some(serde_norway::Value::Bool(false)) => false,
        Some(serde_norway::Value::Bool(true)) | Some(serde_norway::Value::Mapping(_)) => true,
        Some(_) => {
            cx.at(name, "end", "`end` must be true or {}");
            false
        }
    };
    let kind = if let Some(s) = &rn.send {
        compile_send(cx, name, s)
    } else if let Some(a) = &rn.ask {
        for (k, t) in rn.branches.iter().flatten() {
            check_target(cx, &format!("branches.{k}"), t);
        }
        if let Some(f) = &a.on_fail {
            check_target(cx, "on_fail", f);
        }
        let pattern = match (a.kind, &a.pattern) {
            (AskType::Regex, Some(p)) => match Regex::new(p) {
                Ok(r) => Some(r),
                Err(e) => {
                    let first = e.to_string().lines().last().unwrap_or("").to_string();
                    cx.at(name, "pattern", format!("invalid regex `{p}`: {first}"));
                    None
                }
            },
            (AskType::Regex, None) => {
                cx.at(name, "ask", "ask type regex needs `pattern`");
                None
            }
            _ => None,
        };
        if a.kind == AskType::Options && a.options.is_empty() {
            cx.at(
                name,
                "ask",
                "ask type options needs a non-empty `options` list",
            );
        }
        let branches = rn
            .branches
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect();
        NodeKind::Ask(Box::new(AskSpec {
            kind: a.kind,
            prompt: a.prompt.as_ref().map(|p| cx.tpl(name, p)),
            options: a.options.clone(),
            min: cx.dec(name, "min", &a.min),
            max: cx.dec(name, "max", &a.max),
            pattern,
            save: a.save.clone(),
            retry: a.retry.as_ref().map(|p| cx.tpl(name, p)),
            max_retries: a.max_retries.unwrap_or(3),
            on_fail: a.on_fail.clone(),
            branches,
        }))
    } else if let Some(c) = &rn.condition {
        check_target(cx, "then", &c.then);
        check_target(cx, "else", &c.otherwise);
        let cond = match expr::parse(&c.cond) {
            Ok(e) => e,
            Err(e) => {
                cx.at(name, "if", format!("bad expression `{}`: {e}", c.cond));
                expr::Expr::Lit(Value::Bool(false))
            }
        };
        NodeKind::Condition {
            cond,
            then: c.then.clone(),
            otherwise: c.otherwise.clone(),
        }
    } else if let Some(set) = &rn.set {
        let mut out = Vec::new();
        for (var, v) in set {
            let src = match v {
                serde_norway::Value::String(s) => s.clone(),
                serde_norway::Value::Number(n) => n.to_string(),
                serde_norway::Value::Bool(b) => b.to_string(),
                _ => {
                    cx.at(
                        name,
                        var,
                        format!("`set.{var}` must be an expression string"),
                    );
                    continue;
                }
            };
            match expr::parse(&src) {
                Ok(e) => out.push((var.clone(), e)),
                Err(e) => cx.at(name, var, format!("bad expression `{src}`: {e}")),
            }
        }
        NodeKind::Set(out)
    } else if let Some(j) = &rn.jump {
        match (&j.to, &j.flow) {
            (Some(t), None) => {
                check_target(cx, "jump.to", t);
                NodeKind::JumpNode(t.clone())
            }
            (None, Some(f)) => NodeKind::JumpFlow(f.clone()),
            _ => {
                cx.at(name, "jump", "jump needs exactly one of `to` or `flow`");
                NodeKind::Noop
            }
        }
    } else if let Some(sp) = &rn.split {
        let mut names = std::collections::HashSet::new();
        if sp.variants.len() < 2 {
            cx.at(name, "split", "a split needs at least two variants");
        }
        for v in &sp.variants {
            if v.weight == 0 {
                cx.at(name, &v.name, format!("variant `{}` has weight 0", v.name));
            }
            if !names.insert(v.name.clone()) {
                cx.at(
                    name,
                    &v.name,
                    format!("variant `{}` is listed twice", v.name),
                );
            }
            check_target(cx, "split.next", &v.next);
        }
        NodeKind::Split {
            variants: sp
                .variants
                .iter()
                .map(|v| (v.name.clone(), v.weight, v.next.clone()))
                .collect(),
            save: sp.save.clone().unwrap_or_else(|| "variant".into()),
        }
    } else if let Some(w) = &rn.wait {
        match parse_duration(&w.duration) {
            Some(ms) => NodeKind::Wait { ms },
            None => {
                cx.at(name, "for", format!("bad duration `{}`", w.duration));
                NodeKind::Noop
            }
        }
    } else {
        NodeKind::Noop
    };
    Node {
        kind,
        next: rn.next.clone(),
        end,
    }
}

fn compile_send(cx: &mut Ctx, name: &str, s: &RawSend) -> NodeKind {
    let count = [
        s.text.is_some(),
        s.buttons.is_some(),
        s.list.is_some(),
        s.message.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if count != 1 {
        cx.at(
            name,
            "send",
            "send needs exactly one of `text`, `buttons`, `list` or `message`",
        );
        return NodeKind::Noop;
    }
    let (msg, spec) = if let Some(m) = &s.message {
        let json = match serde_json::to_value(m) {
            Ok(j) => j,
            Err(e) => {
                cx.at(name, "message", format!("message is not plain data: {e}"));
                return NodeKind::Noop;
            }
        };
        let msg: OutboundMessage = match serde_json::from_value(json.clone()) {
            Ok(OutboundMessage::MarkRead { .. }) => {
                cx.at(name, "message", "mark_read is not a message a flow sends");
                return NodeKind::Noop;
            }
            Ok(msg) => msg,
            Err(e) => {
                cx.at(name, "message", format!("not a message: {e}"));
                return NodeKind::Noop;
            }
        };
        let spec = SendSpec::Message(templated(cx, name, &json), Box::new(msg.clone()));
        (msg, spec)
    } else if let Some(t) = &s.text {
        (
            OutboundMessage::Text {
                body: t.clone(),
                preview_url: false,
            },
            SendSpec::Text(cx.tpl(name, t)),
        )
    } else if let Some(b) = &s.buttons {
        let buttons: Vec<ReplyButton> = b
            .buttons
            .iter()
            .map(|b| ReplyButton {
                id: b.id.clone(),
                title: b.title.clone(),
            })
            .collect();
        (
            OutboundMessage::Buttons {
                header: b.header.clone(),
                body: b.body.clone(),
                footer: b.footer.clone(),
                buttons: buttons.clone(),
            },
            SendSpec::Buttons {
                header: b.header.as_ref().map(|h| cx.tpl(name, h)),
                body: cx.tpl(name, &b.body),
                footer: b.footer.as_ref().map(|h| cx.tpl(name, h)),
                buttons,
            },
        )
    } else {
        let l = s.list.as_ref().expect("checked");
        let sections: Vec<ListSection> = l
            .sections
            .iter()
            .map(|s| ListSection {
                title: s.title.clone(),
                rows: s
                    .rows
                    .iter()
                    .map(|r| ListRow {
                        id: r.id.clone(),
                        title: r.title.clone(),
                        description: r.description.clone(),
                    })
                    .collect(),
            })
            .collect();
        (
            OutboundMessage::List {
                header: l.header.clone(),
                body: l.body.clone(),
                footer: l.footer.clone(),
                button: l.button.clone(),
                sections: sections.clone(),
            },
            SendSpec::List {
                header: l.header.as_ref().map(|h| cx.tpl(name, h)),
                body: cx.tpl(name, &l.body),
                footer: l.footer.as_ref().map(|h| cx.tpl(name, h)),
                button: l.button.clone(),
                sections,
            },
        )
    };
    if let Err(errs) = msg.validate() {
        for e in errs {
            cx.at(name, "send", format!("WhatsApp limit: {e}"));
        }
    }
    NodeKind::Send(spec)
}

fn templated(cx: &mut Ctx, node: &str, v: &serde_json::Value) -> TemplatedJson {
    match v {
        serde_json::Value::String(s) => TemplatedJson::Str(cx.tpl(node, s)),
        serde_json::Value::Array(a) => {
            TemplatedJson::Arr(a.iter().map(|x| templated(cx, node, x)).collect())
        }
        serde_json::Value::Object(o) => TemplatedJson::Obj(
            o.iter()
                .map(|(k, x)| (k.clone(), templated(cx, node, x)))
                .collect(),
        ),
        other => TemplatedJson::Other(other.clone()),
    }
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
