//! A send node compiled and checked: message shapes, the window policy, templated JSON.

use super::*;

pub(super) fn compile_send(cx: &mut Ctx, name: &str, s: &RawSend) -> NodeKind {
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
pub(super) fn window_policy(
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
pub(super) fn restricted<'r>(
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

pub(super) fn templated(cx: &mut Ctx, node: &str, v: &serde_json::Value) -> TemplatedJson {
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
