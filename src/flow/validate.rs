//! Loading + validation: parse every file, compile it, and collect ALL errors as
//! `file:line:col: message`. Semantic error positions come from a line scan of the source.

pub use crate::definitions::{content_hash, normalize, yaml_error};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use regex::Regex;
use rust_decimal::Decimal;

use super::expr;
use super::model::*;
use super::template::{Template, UrlTemplate, UrlTemplateError};
use crate::whatsapp::send::{ListRow, ListSection, OutboundMessage, ReplyButton};

/// All loaded, validated flows.
#[derive(Debug, Clone, Default)]
pub struct FlowSet {
    flows: Vec<Flow>,
    /// (bot id, the error to report if no such bot) of every chatbot node.
    bot_refs: Vec<(String, String)>,
}

impl FlowSet {
    /// Parse + validate every `(path, contents)`; all errors are returned as `file:line:col: msg`.
    pub fn load(files: &[(String, String)]) -> Result<FlowSet, Vec<String>> {
        let mut errors = Vec::new();
        let mut flows: Vec<Flow> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        // (target flow, the error to report if it does not exist)
        let mut jumps: Vec<(String, String)> = Vec::new();
        let mut bot_refs: Vec<(String, String)> = Vec::new();
        // (variable read, the error to report if no flow ever sets it)
        let mut reads: Vec<(String, String)> = Vec::new();
        // The engine sets `message_id` on every user message a flow takes.
        let mut written: HashSet<String> = HashSet::from([super::exec::MESSAGE_ID_VAR.to_string()]);
        for (path, text) in files {
            let src = Src::new(path, text);
            match compile(&src, &mut errors) {
                Some(flow) => {
                    for (node_id, node) in &flow.nodes {
                        written.extend(node_writes(node).into_iter().map(str::to_string));
                        for var in node_reads(node) {
                            let (l, c) = src.in_node(node_id, var);
                            reads.push((
                                var.to_string(),
                                src.fmt(l, c, &format!(
                                    "node `{node_id}`: variable `{var}` is never set by any flow (set it, save it from an ask, or write {{{{{var} | default('…')}}}})"
                                )),
                            ));
                        }
                        if let NodeKind::Chatbot { bot, .. } = &node.kind {
                            let (l, c) = src.in_node(node_id, bot);
                            bot_refs.push((
                                bot.clone(),
                                src.fmt(
                                    l,
                                    c,
                                    &format!("chatbot `{bot}` does not exist (flows/bots/)"),
                                ),
                            ));
                        }
                        if let NodeKind::JumpFlow { flow: target, .. } = &node.kind {
                            let (l, c) = src.in_node(node_id, target);
                            jumps.push((
                                target.clone(),
                                src.fmt(
                                    l,
                                    c,
                                    &format!("jump target flow `{target}` does not exist"),
                                ),
                            ));
                        }
                    }
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
        let mut reported = HashSet::new();
        for (var, error) in reads {
            if !written.contains(&var) && reported.insert(error.clone()) {
                errors.push(error);
            }
        }
        for (target, error) in jumps {
            if !seen.contains_key(&target) {
                errors.push(error);
            }
        }
        if errors.is_empty() {
            Ok(FlowSet { flows, bot_refs })
        } else {
            Err(errors)
        }
    }

    /// Every chatbot node's bot must be one `has_bot` knows; the errors name the flow file.
    pub fn check_bots(&self, has_bot: impl Fn(&str) -> bool) -> Result<(), Vec<String>> {
        let errors: Vec<String> = self
            .bot_refs
            .iter()
            .filter(|(id, _)| !has_bot(id))
            .map(|(_, e)| e.clone())
            .collect();
        if errors.is_empty() {
            Ok(())
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
    /// 0-based line index of a node definition under `nodes:` (its first, if repeated).
    fn node_line(&self, node: &str) -> Option<usize> {
        self.node_keys()
            .into_iter()
            .find(|(k, _, _)| k == node)
            .map(|(_, line, _)| line - 1)
    }
    /// (name, line, col), 1-based, of every node key under `nodes:` in block YAML, in file
    /// order (a name may repeat: the parsed map keeps only the last).
    fn node_keys(&self) -> Vec<(String, usize, usize)> {
        let Some(start) = self
            .lines
            .iter()
            .position(|l| indent(l) == 0 && is_key(l, "nodes"))
        else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        let mut node_indent = None;
        for (i, l) in self.lines.iter().enumerate().skip(start + 1) {
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let ind = indent(l);
            if ind == 0 {
                break;
            }
            if *node_indent.get_or_insert(ind) != ind {
                continue;
            }
            let key = match t.chars().next() {
                Some(q @ ('"' | '\'')) => t[1..].split(q).next(),
                _ => t.split(':').next(),
            };
            if let Some(k) = key.map(str::trim).filter(|k| !k.is_empty()) {
                keys.push((k.to_string(), i + 1, ind + 1));
            }
        }
        keys
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
            errors.push(yaml_error(src.path, &e));
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
    // The nodes map keeps the last of two nodes with one id: name every later one.
    let mut seen = BTreeSet::new();
    for (key, l, c) in src.node_keys() {
        if !seen.insert(key.clone()) {
            let msg = format!("duplicate node id `{key}` (an earlier node has it)");
            cx.errors.push(src.fmt(l, c, &msg));
        }
    }
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
    let access = match raw.access.as_deref() {
        None => AccessLevel::Public,
        Some(a) => AccessLevel::parse(a).unwrap_or_else(|| {
            top_err(
                &mut cx,
                "access",
                format!("access `{a}` must be public, registered or activated"),
            );
            AccessLevel::Public
        }),
    };
    if let Some(n) = &raw.on_expire {
        if !names.contains(n.as_str()) {
            top_err(
                &mut cx,
                "on_expire",
                format!("on_expire node `{n}` does not exist"),
            );
        }
        if raw.session_timeout.is_none() {
            top_err(
                &mut cx,
                "on_expire",
                "on_expire needs a session_timeout".into(),
            );
        }
    }
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
        let kinds = [
            t.keyword.is_some(),
            t.button.is_some(),
            t.regex.is_some(),
            t.referral.is_some(),
            t.default,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let on = match (&t.keyword, &t.button, &t.regex) {
            _ if kinds != 1 => {
                top_err(
                    &mut cx,
                    "triggers",
                    "each trigger needs exactly one of `keyword`, `button`, `regex`, `referral` or `default`".into(),
                );
                None
            }
            (None, None, None) if t.default => Some(Trigger::Default {
                start: t.start.clone(),
            }),
            (None, None, None) => Some(Trigger::Referral {
                ad: t.referral.clone().filter(|a| a != "*"),
                start: t.start.clone(),
            }),
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
            _ => None,
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
    roots.extend(raw.on_expire.clone());
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
    let instant = |n: &Node| {
        !matches!(
            n.kind,
            NodeKind::Ask(_)
                | NodeKind::Wait { .. }
                | NodeKind::Http(_)
                | NodeKind::Handoff { .. }
                | NodeKind::Chatbot { .. }
        )
    };
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
        source: src.text.into(),
        triggers,
        start: raw.start.clone(),
        session_timeout_ms,
        on_expire: raw.on_expire.clone(),
        access,
        on_update,
        nodes,
    })
}

/// Variables a node reads (templates without a `default(...)`, expressions).
fn node_reads(n: &Node) -> Vec<&str> {
    fn json<'a>(t: &'a TemplatedJson, out: &mut Vec<&'a str>) {
        match t {
            TemplatedJson::Str(t) => out.extend(t.required_vars()),
            TemplatedJson::Other(_) => {}
            TemplatedJson::Arr(a) => a.iter().for_each(|x| json(x, out)),
            TemplatedJson::Obj(o) => o.iter().for_each(|(_, x)| json(x, out)),
        }
    }
    fn tpl<'a>(t: Option<&'a Template>, out: &mut Vec<&'a str>) {
        if let Some(t) = t {
            out.extend(t.required_vars());
        }
    }
    let mut out = Vec::new();
    match &n.kind {
        NodeKind::Send(SendSpec::Text(t)) => tpl(Some(t), &mut out),
        NodeKind::Send(SendSpec::Message(t, _)) => json(t, &mut out),
        NodeKind::Send(SendSpec::Buttons {
            header,
            body,
            footer,
            ..
        })
        | NodeKind::Send(SendSpec::List {
            header,
            body,
            footer,
            ..
        }) => {
            tpl(header.as_ref(), &mut out);
            tpl(Some(body), &mut out);
            tpl(footer.as_ref(), &mut out);
        }
        NodeKind::Ask(a) => {
            tpl(a.prompt.as_ref(), &mut out);
            tpl(a.retry.as_ref(), &mut out);
        }
        NodeKind::Condition { cond, .. } => cond.vars(&mut out),
        NodeKind::Set(ops) => {
            for op in ops {
                match op {
                    SetOp::Var(_, e) | SetOp::Contact(_, e) | SetOp::Access(e) => e.vars(&mut out),
                    SetOp::TagAdd(_) | SetOp::TagRemove(_) => {}
                }
            }
        }
        NodeKind::Http(h) => {
            out.extend(h.url.required_vars());
            for (_, v) in &h.headers {
                tpl(Some(v), &mut out);
            }
            if let Some(b) = &h.body {
                json(b, &mut out);
            }
        }
        NodeKind::Handoff { message, .. } => tpl(message.as_ref(), &mut out),
        _ => {}
    }
    out
}

/// Variables a node sets.
fn node_writes(n: &Node) -> Vec<&str> {
    match &n.kind {
        NodeKind::Ask(a) => a.save.iter().map(String::as_str).collect(),
        NodeKind::Set(ops) => ops
            .iter()
            .filter_map(|op| match op {
                SetOp::Var(k, _) => Some(k.as_str()),
                _ => None,
            })
            .collect(),
        NodeKind::Split { save, .. } => vec![save.as_str()],
        NodeKind::Http(h) => h
            .save
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(["http_status"])
            .collect(),
        NodeKind::Wait {
            on_reply: Some(_), ..
        } => vec!["reply"],
        _ => Vec::new(),
    }
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
        NodeKind::Http(h) => v.extend(h.on_error.iter().cloned()),
        NodeKind::Wait { on_reply, .. } => v.extend(on_reply.iter().cloned()),
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
        rn.http.is_some(),
        rn.handoff.is_some(),
        rn.chatbot.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if kinds > 1 {
        cx.at(
            name,
            name,
            "a node may have only one of send/ask/condition/set/jump/wait/split/http/handoff/chatbot",
        );
    }
    if rn.on_error.is_some() && rn.http.is_none() {
        cx.at(name, "on_error", "`on_error` is only allowed on http nodes");
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
        const MEDIA: [&str; 5] = ["image", "document", "audio", "video", "sticker"];
        for t in &a.media_types {
            if a.kind != AskType::Media {
                cx.at(
                    name,
                    "media_types",
                    "`media_types` is only for ask type media",
                );
            } else if !MEDIA.contains(&t.as_str()) {
                cx.at(
                    name,
                    t,
                    format!("media type `{t}` must be one of {}", MEDIA.join(", ")),
                );
            }
        }
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
            media_types: a.media_types.clone(),
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
            if var == "tag.add" || var == "tag.remove" {
                let tags: Vec<String> = match v {
                    serde_norway::Value::String(t) => vec![t.clone()],
                    serde_norway::Value::Sequence(list) => list
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                if tags.is_empty() || tags.iter().any(|t| t.trim().is_empty()) {
                    cx.at(
                        name,
                        var,
                        format!("`set.{var}` takes a tag name or a list of them"),
                    );
                }
                out.push(if var == "tag.add" {
                    SetOp::TagAdd(tags)
                } else {
                    SetOp::TagRemove(tags)
                });
                continue;
            }
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
            let e = match expr::parse(&src) {
                Ok(e) => e,
                Err(e) => {
                    cx.at(name, var, format!("bad expression `{src}`: {e}"));
                    continue;
                }
            };
            out.push(match var.strip_prefix("contact.") {
                Some("access") => SetOp::Access(e),
                Some(f @ ("name" | "wa_id" | "phone" | "user_id" | "tags")) => {
                    cx.at(
                        name,
                        var,
                        format!("`contact.{f}` comes from WhatsApp and cannot be set"),
                    );
                    continue;
                }
                Some(f) if !f.is_empty() && f.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                    SetOp::Contact(f.to_string(), e)
                }
                Some(_) => {
                    cx.at(name, var, format!("bad contact field `{var}`"));
                    continue;
                }
                None => SetOp::Var(var.clone(), e),
            });
        }
        NodeKind::Set(out)
    } else if let Some(j) = &rn.jump {
        match (&j.to, &j.flow) {
            (Some(t), None) => {
                check_target(cx, "jump.to", t);
                NodeKind::JumpNode(t.clone())
            }
            (None, Some(f)) => NodeKind::JumpFlow {
                flow: f.clone(),
                ret: j.ret,
            },
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
        if let Some(r) = &w.on_reply {
            check_target(cx, "on_reply", r);
        }
        let ms = w.duration.as_ref().and_then(|d| {
            let ms = parse_duration(d);
            if ms.is_none() {
                cx.at(name, "for", format!("bad duration `{d}`"));
            }
            ms
        });
        let until_minute = w.until.as_ref().and_then(|u| {
            let m = u.split_once(':').and_then(|(h, m)| {
                let (h, m): (u32, u32) = (h.trim().parse().ok()?, m.trim().parse().ok()?);
                (h < 24 && m < 60).then_some(h * 60 + m)
            });
            if m.is_none() {
                cx.at(
                    name,
                    "until",
                    format!("`until: {u}` must be a time of day HH:MM"),
                );
            }
            m
        });
        if w.duration.is_some() == w.until.is_some() {
            cx.at(name, "wait", "wait needs exactly one of `for` or `until`");
        }
        NodeKind::Wait {
            ms,
            until_minute,
            on_reply: w.on_reply.clone(),
        }
    } else if let Some(h) = &rn.http {
        if let Some(e) = &rn.on_error {
            check_target(cx, "on_error", e);
        }
        let method = h
            .method
            .clone()
            .unwrap_or_else(|| "GET".into())
            .to_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            cx.at(
                name,
                "method",
                format!("method `{method}` must be GET, POST, PUT, PATCH or DELETE"),
            );
        }
        let url = match UrlTemplate::parse(&h.url) {
            Ok(u) => u,
            Err(e) => {
                let needle = match &e {
                    UrlTemplateError::VariableInAuthority { var, .. } => var.as_str(),
                    _ => "url",
                };
                cx.at(name, needle, e.to_string());
                UrlTemplate::placeholder()
            }
        };
        let timeout_ms = match &h.timeout {
            None => 10_000,
            Some(t) => match parse_duration(t) {
                Some(ms) if ms > 0 && ms as u64 <= crate::outcall::MAX_TIMEOUT_MS => ms as u64,
                _ => {
                    cx.at(
                        name,
                        "timeout",
                        format!("timeout `{t}` must be a duration up to 30s"),
                    );
                    10_000
                }
            },
        };
        let body = h.body.as_ref().and_then(|b| match serde_json::to_value(b) {
            Ok(j) => Some(templated(cx, name, &j)),
            Err(e) => {
                cx.at(name, "body", format!("body is not plain data: {e}"));
                None
            }
        });
        NodeKind::Http(Box::new(HttpSpec {
            method,
            url,
            headers: h
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), cx.tpl(name, v)))
                .collect(),
            body,
            timeout_ms,
            save: h.save.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            on_error: rn.on_error.clone(),
        }))
    } else if let Some(c) = &rn.chatbot {
        NodeKind::Chatbot {
            bot: c.bot.clone(),
            until: c.until.clone(),
        }
    } else if let Some(h) = &rn.handoff {
        NodeKind::Handoff {
            reason: h
                .reason
                .clone()
                .unwrap_or_else(|| format!("flow node `{name}`")),
            message: h.message.as_ref().map(|m| cx.tpl(name, m)),
        }
    } else {
        NodeKind::Noop
    };
    let outside_window = rn
        .send
        .as_ref()
        .and_then(|s| s.outside_window.as_ref())
        .and_then(|v| window_policy(cx, name, v));
    Node {
        kind,
        next: rn.next.clone(),
        end,
        outside_window,
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
        let restricted = restricted(cx, name, b.buttons.iter().map(|b| (&b.id, &b.access)));
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
                restricted,
            },
        )
    } else {
        let l = s.list.as_ref().expect("checked");
        let restricted = restricted(
            cx,
            name,
            l.sections
                .iter()
                .flat_map(|s| &s.rows)
                .map(|r| (&r.id, &r.access)),
        );
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
                restricted,
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

/// `fail` | `hold` | `{template: {name, language, body_params: [...]}}`.
fn window_policy(
    cx: &mut Ctx,
    node: &str,
    v: &serde_norway::Value,
) -> Option<crate::conversation::WindowPolicy> {
    use crate::conversation::WindowPolicy;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct T {
        name: String,
        language: String,
        #[serde(default)]
        body_params: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped {
        template: T,
    }
    match v {
        serde_norway::Value::String(s) if s == "fail" => Some(WindowPolicy::Fail),
        serde_norway::Value::String(s) if s == "hold" => Some(WindowPolicy::Hold),
        other => match serde_norway::from_value::<Wrapped>(other.clone()) {
            Ok(Wrapped { template: t }) => {
                let mut components = Vec::new();
                if !t.body_params.is_empty() {
                    components.push(serde_json::json!({
                        "type": "body",
                        "parameters": t.body_params.iter().map(|p| serde_json::json!({"type": "text", "text": p})).collect::<Vec<_>>(),
                    }));
                }
                Some(WindowPolicy::Template(OutboundMessage::Template {
                    name: t.name,
                    language: t.language,
                    components,
                }))
            }
            Err(e) => {
                cx.at(
                    node,
                    "outside_window",
                    format!("outside_window must be fail, hold or {{template: {{name, language, body_params}}}}: {e}"),
                );
                None
            }
        },
    }
}

/// The (id, level) of the options that need more than public access.
fn restricted<'r>(
    cx: &mut Ctx,
    node: &str,
    items: impl Iterator<Item = (&'r String, &'r Option<String>)>,
) -> Vec<(String, AccessLevel)> {
    let mut out = Vec::new();
    for (id, access) in items {
        let Some(a) = access else { continue };
        match AccessLevel::parse(a) {
            Some(AccessLevel::Public) => {}
            Some(level) => out.push((id.clone(), level)),
            None => cx.at(
                node,
                a,
                format!("access `{a}` must be public, registered or activated"),
            ),
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        match FlowSet::load(&[("calls.yaml".into(), yaml.into())]) {
            Ok(_) => Vec::new(),
            Err(e) => e,
        }
    }

    #[test]
    fn a_variable_in_an_http_urls_scheme_or_host_is_refused_at_its_position() {
        let yaml = r#"id: calls
triggers: [{keyword: go}]
start: s
nodes:
  a:
    http:
      url: "https://{{host}}/orders/{{id}}"
    next: b
  b:
    http: {url: "{{base}}/orders"}
    next: c
  c:
    http:
      url: "https://api.example:{{port}}/x"
    next: d
  d:
    http:
      url: "https://api.example/orders/{{id}}?q={{id}}#{{id}}"
  s:
    set: {id: "'A1'"}
    next: a
"#;
        let errs = errors(yaml);
        let want = [
            "calls.yaml:7:21: node `a`: template variable `{{host}}` is in the url's host",
            "calls.yaml:10:18: node `b`: template variable `{{base}}` is in the url's scheme",
            "calls.yaml:14:33: node `c`: template variable `{{port}}` is in the url's port",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.starts_with(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn a_literal_dot_segment_in_an_http_url_is_refused() {
        let yaml = "start: a\nnodes:\n  a:\n    http:\n      url: \"https://api.example/a/../b\"\n";
        let errs = errors(yaml);
        assert_eq!(
            errs,
            vec!["calls.yaml:5:7: node `a`: the url's path has a `..` segment: write the path it stands for"]
        );
    }
}
