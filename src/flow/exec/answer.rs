//! An answer to an `ask` node: checked against its type, its options (those the
//! contact's access level is shown), its bounds; retried, saved, branched on.

use super::*;

impl Run<'_, '_> {
    pub(super) fn answer(
        &mut self,
        mut st: FlowState,
        ans: Answer<'_>,
    ) -> Result<FlowState, FlowError> {
        let flow = self.flow(&st).expect("valid");
        let node_id = st.node.clone().unwrap_or_default();
        let node = &flow.nodes[&node_id];
        if let (NodeKind::Catalog(c), Answer::Text { text, reply_id }) = (&node.kind, ans) {
            return Ok(self.catalog_reply(st, c, text, reply_id));
        }
        let NodeKind::Ask(a) = &node.kind else {
            return Ok(FlowState::default());
        };
        // An option shown only from an access level up is not one of the options for a
        // contact below it (typing its id must not reach what the menu hides).
        let access = self.contact.access;
        let reachable = |o: &str| option_level(flow, o) <= access;
        match validate_answer(a, ans, reachable) {
            Some(v) => {
                st.awaiting_input = false;
                st.retries = 0;
                let key = expr::display(&v).to_lowercase();
                if let Some(s) = &a.save {
                    st.vars.insert(s.clone(), v);
                }
                if node.end {
                    return self.end(st);
                }
                let next = a.branches.get(&key).cloned().or_else(|| node.next.clone());
                self.run(st, next)
            }
            None => {
                st.retries += 1;
                if st.retries > a.max_retries {
                    st.awaiting_input = false;
                    st.retries = 0;
                    return match a.on_fail.clone() {
                        Some(f) => self.run(st, Some(f)),
                        None => self.end(st),
                    };
                }
                let env = Env {
                    vars: &st.vars,
                    contact: &self.contact,
                };
                let body = match &a.retry {
                    Some(t) => t.render(&env),
                    None => "Sorry, that is not a valid answer. Please try again.".to_string(),
                };
                self.actions.push(FlowAction::Send(OutboundMessage::Text {
                    body,
                    preview_url: false,
                }));
                Ok(st)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Answer<'a> {
    Text {
        text: Option<&'a str>,
        reply_id: Option<&'a str>,
    },
    Media {
        kind: &'a str,
        id: &'a str,
    },
}

/// `2026-11-22`, `22/11/2026` or `22-11-2026` as `YYYY-MM-DD`, if it is a real date.
fn parse_date(t: &str) -> Option<String> {
    let parts: Vec<&str> = t.split(['-', '/', '.']).collect();
    let [a, b, c] = parts.as_slice() else {
        return None;
    };
    let (y, m, d) = if a.len() == 4 { (a, b, c) } else { (c, b, a) };
    let (y, m, d): (i32, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if y.to_string().len() != 4 || !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    (d <= days[(m - 1) as usize]).then(|| format!("{y:04}-{m:02}-{d:02}"))
}

/// The lowest access level that is shown option `id` in `flow`: the lowest level of any
/// button or list row of the flow with that id (public when one shows it to everyone, or
/// when no button or row has it).
fn option_level(flow: &Flow, id: &str) -> AccessLevel {
    let mut level: Option<AccessLevel> = None;
    let mut consider = |shown: &str, restricted: &[(String, AccessLevel)]| {
        if shown.eq_ignore_ascii_case(id) {
            let l = restricted
                .iter()
                .find(|(r, _)| r.eq_ignore_ascii_case(shown))
                .map_or(AccessLevel::Public, |(_, l)| *l);
            level = Some(level.map_or(l, |m| m.min(l)));
        }
    };
    for node in flow.nodes.values() {
        match &node.kind {
            NodeKind::Send(SendSpec::Buttons {
                buttons,
                restricted,
                ..
            }) => buttons.iter().for_each(|b| consider(&b.id, restricted)),
            NodeKind::Send(SendSpec::List {
                sections,
                restricted,
                ..
            }) => sections
                .iter()
                .flat_map(|s| &s.rows)
                .for_each(|r| consider(&r.id, restricted)),
            _ => {}
        }
    }
    level.unwrap_or(AccessLevel::Public)
}

fn validate_answer(
    a: &AskSpec,
    ans: Answer<'_>,
    reachable: impl Fn(&str) -> bool,
) -> Option<Value> {
    let (text, reply_id) = match ans {
        Answer::Media { kind, id } => {
            let ok = a.kind == AskType::Media
                && (a.media_types.is_empty() || a.media_types.iter().any(|t| t == kind));
            return ok.then(|| Value::Str(id.to_string()));
        }
        Answer::Text { text, reply_id } => (text, reply_id),
    };
    let t = text.map(str::trim).unwrap_or("");
    match a.kind {
        AskType::Options => {
            for o in a.options.iter().filter(|o| reachable(o)) {
                if reply_id.is_some_and(|r| r.eq_ignore_ascii_case(o))
                    || normalize(t) == normalize(o)
                {
                    return Some(Value::Str(o.clone()));
                }
            }
            None
        }
        AskType::Media => None,
        _ if t.is_empty() => None,
        AskType::Text => Some(Value::Str(t.to_string())),
        AskType::Number | AskType::Decimal => {
            let d = if a.kind == AskType::Number {
                t.parse::<i64>().ok().map(Decimal::from)
            } else {
                Decimal::from_str(&t.replace(',', ".")).ok()
            }?;
            if a.min.is_some_and(|m| d < m) || a.max.is_some_and(|m| d > m) {
                return None;
            }
            Some(Value::Num(d.normalize()))
        }
        AskType::Email => {
            let (user, domain) = t.split_once('@')?;
            let ok = !user.is_empty()
                && !t.contains(char::is_whitespace)
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.');
            ok.then(|| Value::Str(t.to_string()))
        }
        AskType::Phone => {
            let digits = t.strip_prefix('+').unwrap_or(t);
            let ok = digits.chars().all(|c| c.is_ascii_digit()) && (7..=15).contains(&digits.len());
            ok.then(|| Value::Str(t.to_string()))
        }
        AskType::Date => parse_date(t).map(Value::Str),
        AskType::Regex => a
            .pattern
            .as_ref()
            .is_some_and(|p| p.is_match(t))
            .then(|| Value::Str(t.to_string())),
    }
}
