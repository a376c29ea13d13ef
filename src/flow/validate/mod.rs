//! Loading + validation: parse every file, compile it, and collect ALL errors as
//! `file:line:col: message`. Semantic error positions come from a line scan of the source.
//!
//! `mod.rs` the set, the source scan and a flow's compilation; `nodes.rs` each node and
//! what it reads, writes and leads to; `send.rs` send nodes.

pub use crate::definitions::{content_hash, normalize, yaml_error};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use regex::Regex;
use rust_decimal::Decimal;

use super::expr;
use super::model::*;
use super::template::{Template, UrlTemplate, UrlTemplateError};
use crate::whatsapp::send::{ListRow, ListSection, OutboundMessage, ReplyButton};

mod nodes;
mod send;
mod shop;

use nodes::*;
use send::*;
use shop::*;

/// All loaded, validated flows.
#[derive(Debug, Clone, Default)]
pub struct FlowSet {
    flows: Vec<Flow>,
    /// (bot id, the error to report if no such bot) of every chatbot node.
    bot_refs: Vec<(String, String)>,
    /// Every payment node: its provider (None: the account's), its method, and where it is
    /// (`file:line:col: node `x``), to check against the configured providers.
    payment_refs: Vec<PaymentRef>,
}

/// A payment node, as `parleyd check` matches it against `[payments.providers]`.
#[derive(Debug, Clone)]
pub struct PaymentRef {
    pub provider: Option<String>,
    pub method: crate::domain::PaymentMethod,
    /// `file:line:col: node `x`` of the node's `payment:`.
    pub at: String,
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
        let mut payment_refs: Vec<PaymentRef> = Vec::new();
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
                        if let NodeKind::Payment(p) = &node.kind {
                            let (l, c) = src.in_node(node_id, "payment");
                            payment_refs.push(PaymentRef {
                                provider: p.provider.clone(),
                                method: p.method,
                                at: src.fmt(l, c, &format!("node `{node_id}`")),
                            });
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
            Ok(FlowSet {
                flows,
                bot_refs,
                payment_refs,
            })
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

    /// Every payment node (for `parleyd check` against the configured providers).
    pub fn payment_refs(&self) -> &[PaymentRef] {
        &self.payment_refs
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

pub(super) struct Src<'a> {
    pub(super) path: &'a str,
    pub(super) text: &'a str,
    pub(super) lines: Vec<&'a str>,
}

pub(super) fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

pub(super) fn is_key(line: &str, key: &str) -> bool {
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
    pub(super) fn new(path: &'a str, text: &'a str) -> Self {
        Src {
            path,
            text,
            lines: text.lines().collect(),
        }
    }
    pub(super) fn fmt(&self, line: usize, col: usize, msg: &str) -> String {
        format!("{}:{}:{}: {}", self.path, line, col, msg)
    }
    /// (line, col), 1-based, of a top-level key.
    pub(super) fn top_key(&self, key: &str) -> Option<(usize, usize)> {
        self.lines
            .iter()
            .position(|l| indent(l) == 0 && is_key(l, key))
            .map(|i| (i + 1, 1))
    }
    /// 0-based line index of a node definition under `nodes:` (its first, if repeated).
    pub(super) fn node_line(&self, node: &str) -> Option<usize> {
        self.node_keys()
            .into_iter()
            .find(|(k, _, _)| k == node)
            .map(|(_, line, _)| line - 1)
    }
    /// (name, line, col), 1-based, of every node key under `nodes:` in block YAML, in file
    /// order (a name may repeat: the parsed map keeps only the last).
    pub(super) fn node_keys(&self) -> Vec<(String, usize, usize)> {
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
    pub(super) fn node_pos(&self, node: &str) -> (usize, usize) {
        match self.node_line(node) {
            Some(i) => (i + 1, indent(self.lines[i]) + 1),
            None => (1, 1),
        }
    }
    /// Position of `needle` inside the node's block (falls back to the node line).
    pub(super) fn in_node(&self, node: &str, needle: &str) -> (usize, usize) {
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

pub(super) struct Ctx<'a, 'b> {
    pub(super) src: &'b Src<'a>,
    pub(super) errors: &'b mut Vec<String>,
}

impl Ctx<'_, '_> {
    pub(super) fn at(&mut self, node: &str, needle: &str, msg: impl AsRef<str>) {
        let (l, c) = self.src.in_node(node, needle);
        let m = format!("node `{node}`: {}", msg.as_ref());
        self.errors.push(self.src.fmt(l, c, &m));
    }
    pub(super) fn tpl(&mut self, node: &str, s: &str) -> Template {
        match Template::parse(s) {
            Ok(t) => t,
            Err(e) => {
                self.at(node, s.lines().next().unwrap_or(s), e);
                Template::literal(s)
            }
        }
    }
    pub(super) fn dec(
        &mut self,
        node: &str,
        key: &str,
        v: &Option<serde_norway::Value>,
    ) -> Option<Decimal> {
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

pub(super) fn compile(src: &Src<'_>, errors: &mut Vec<String>) -> Option<Flow> {
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
            t.order,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let on = match (&t.keyword, &t.button, &t.regex) {
            _ if kinds != 1 => {
                top_err(
                    &mut cx,
                    "triggers",
                    "each trigger needs exactly one of `keyword`, `button`, `regex`, `referral`, `order` or `default`".into(),
                );
                None
            }
            (None, None, None) if t.default => Some(Trigger::Default {
                start: t.start.clone(),
            }),
            (None, None, None) if t.order => Some(Trigger::Order {
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
        ) && !n.kind.is_shop()
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
