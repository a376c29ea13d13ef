//! `parleyd flows graph FLOW_ID`: the flow as a Mermaid flowchart.

use std::fmt::Write;

use super::model::{CartSpec, Flow, NodeKind, Trigger};

/// Mermaid `flowchart TD` text for `flow`: a box per node labelled with its kind, an edge per
/// way out (next, branches, condition outcomes, retries exhausted, jumps), and the triggers.
pub fn mermaid(flow: &Flow) -> String {
    let id = |n: &str| format!("n_{}", n.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let mut out = String::from("flowchart TD\n");
    for (i, t) in flow.triggers.iter().enumerate() {
        let label = match &t.on {
            Trigger::Keyword { word, .. } => format!("keyword: {word}"),
            Trigger::Button { id, .. } => format!("button: {id}"),
            Trigger::Regex { re, .. } => format!("regex: {}", re.as_str()),
            Trigger::Referral { ad: Some(ad), .. } => format!("ad: {ad}"),
            Trigger::Referral { ad: None, .. } => "any ad".to_string(),
            Trigger::Order { .. } => "catalog order".to_string(),
            Trigger::Default { .. } => "default".to_string(),
        };
        let start = t.start().map(String::as_str).unwrap_or(&flow.start);
        let _ = writeln!(
            out,
            "    t{i}([\"{}\"]) --> {}",
            label.replace('"', "'"),
            id(start)
        );
    }
    for (name, node) in &flow.nodes {
        let kind = match &node.kind {
            NodeKind::Noop => "step".to_string(),
            NodeKind::Send(_) => "send".to_string(),
            NodeKind::Ask(a) => format!("ask {:?}", a.kind).to_lowercase(),
            NodeKind::Condition { .. } => "condition".to_string(),
            NodeKind::Set(_) => "set".to_string(),
            NodeKind::JumpNode(_) => "jump".to_string(),
            NodeKind::JumpFlow { flow, ret: false } => format!("to flow {flow}"),
            NodeKind::JumpFlow { flow, ret: true } => format!("subflow {flow}"),
            NodeKind::Wait {
                ms, until_minute, ..
            } => match (ms, until_minute) {
                (Some(ms), _) => format!("wait {} s", ms / 1000),
                (None, Some(m)) => format!("wait until {:02}:{:02}", m / 60, m % 60),
                (None, None) => "wait".to_string(),
            },
            NodeKind::Http(h) => format!("http {}", h.method),
            NodeKind::Handoff { .. } => "handoff to a human".to_string(),
            NodeKind::Chatbot { bot, .. } => format!("chatbot {bot}"),
            NodeKind::Split { .. } => "A/B split".to_string(),
            NodeKind::Catalog(_) => "catalog".to_string(),
            NodeKind::Cart(CartSpec::Add { .. }) => "cart add".to_string(),
            NodeKind::Cart(CartSpec::Remove { .. }) => "cart remove".to_string(),
            NodeKind::Cart(CartSpec::Clear) => "cart clear".to_string(),
            NodeKind::Cart(CartSpec::Show) => "cart show".to_string(),
            NodeKind::Checkout { .. } => "checkout".to_string(),
            NodeKind::OrderStatus { .. } => "order status".to_string(),
            NodeKind::Payment(p) => format!("payment {}", p.method),
            NodeKind::Voucher { .. } => "voucher".to_string(),
            NodeKind::CustomOrder { .. } => "custom order".to_string(),
        };
        let shape = if matches!(node.kind, NodeKind::Condition { .. }) {
            format!("{{\"{name}<br/>{kind}\"}}")
        } else {
            format!("[\"{name}<br/>{kind}\"]")
        };
        let _ = writeln!(out, "    {}{shape}", id(name));
        let mut edge = |label: Option<&str>, to: &str| {
            let _ = match label {
                Some(l) => writeln!(
                    out,
                    "    {} -->|{}| {}",
                    id(name),
                    l.replace('|', "/"),
                    id(to)
                ),
                None => writeln!(out, "    {} --> {}", id(name), id(to)),
            };
        };
        match &node.kind {
            NodeKind::Condition {
                then, otherwise, ..
            } => {
                edge(Some("yes"), then);
                edge(Some("no"), otherwise);
            }
            NodeKind::Ask(a) => {
                for (value, to) in &a.branches {
                    edge(Some(value), to);
                }
                if let Some(to) = &a.on_fail {
                    edge(Some("retries exhausted"), to);
                }
            }
            NodeKind::JumpNode(to) => edge(None, to),
            NodeKind::Http(h) => {
                if let Some(to) = &h.on_error {
                    edge(Some("error"), to);
                }
            }
            NodeKind::Wait {
                on_reply: Some(to), ..
            } => edge(Some("reply"), to),
            NodeKind::Split { variants, .. } => {
                for (variant, weight, to) in variants {
                    edge(Some(&format!("{variant} ({weight})")), to);
                }
            }
            _ => {}
        }
        for (result, to) in &node.results {
            edge(Some(result), to);
        }
        if let Some(to) = &node.on_error {
            edge(Some("error"), to);
        }
        if let Some(next) = &node.next {
            edge(None, next);
        }
        if node.end {
            let _ = writeln!(out, "    {} --> done((end))", id(name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shop_flow_draws_every_edge() {
        let files = super::super::read_flow_files(std::path::Path::new("flows")).unwrap();
        let flows = super::super::FlowSet::load(&files).unwrap();
        let text = super::mermaid(flows.get("shop").unwrap());
        assert!(text.starts_with("flowchart TD\n"));
        assert!(
            text.contains("t0([\"keyword: menu\"]) --> n_welcome"),
            "{text}"
        );
        assert!(
            text.contains("n_choose -->|catalog| n_show_catalog"),
            "{text}"
        );
        assert!(
            text.contains("n_pick_price -->|yes| n_price_kopi"),
            "{text}"
        );
        assert!(text.contains("n_done --> done((end))"), "{text}");
    }
}
