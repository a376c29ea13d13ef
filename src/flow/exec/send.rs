//! A send node's message rendered for the contact: templates filled, buttons and list
//! rows above the contact's access level left out; templated JSON.

use super::*;

pub(super) fn render_send(s: &SendSpec, env: &Env<'_>, access: AccessLevel) -> OutboundMessage {
    let shown = |restricted: &[(String, AccessLevel)], id: &str| {
        restricted
            .iter()
            .all(|(r, level)| r != id || *level <= access)
    };
    let opt = |t: &Option<super::super::template::Template>| t.as_ref().map(|t| t.render(env));
    match s {
        SendSpec::Message(t, as_written) => {
            // Only string leaves are templated, so a message that decoded at load decodes now;
            // should it not, the message as written goes out.
            serde_json::from_value(render_json(t, env)).unwrap_or_else(|_| (**as_written).clone())
        }
        SendSpec::Text(t) => OutboundMessage::Text {
            body: t.render(env),
            preview_url: false,
        },
        SendSpec::Buttons {
            header,
            body,
            footer,
            buttons,
            restricted,
        } => OutboundMessage::Buttons {
            header: opt(header),
            body: body.render(env),
            footer: opt(footer),
            buttons: buttons
                .iter()
                .filter(|b| shown(restricted, &b.id))
                .cloned()
                .collect(),
        },
        SendSpec::List {
            header,
            body,
            footer,
            button,
            sections,
            restricted,
        } => OutboundMessage::List {
            header: opt(header),
            body: body.render(env),
            footer: opt(footer),
            button: button.clone(),
            sections: sections
                .iter()
                .map(|s| {
                    let mut s = s.clone();
                    s.rows.retain(|r| shown(restricted, &r.id));
                    s
                })
                .filter(|s| !s.rows.is_empty())
                .collect(),
        },
    }
}

pub(super) fn render_json(
    t: &super::super::model::TemplatedJson,
    env: &Env<'_>,
) -> serde_json::Value {
    use super::super::model::TemplatedJson as T;
    match t {
        T::Str(tpl) => serde_json::Value::String(tpl.render(env)),
        T::Other(v) => v.clone(),
        T::Arr(a) => serde_json::Value::Array(a.iter().map(|x| render_json(x, env)).collect()),
        T::Obj(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), render_json(x, env)))
                .collect(),
        ),
    }
}
