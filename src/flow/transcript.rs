//! Transcript tests: a conversation script run against a [`FlowSet`].
//!
//! Script lines (blank lines and lines starting with `//` are ignored):
//! - `> text`      user sends a text message
//! - `> #id`       user taps a button / list row with reply id `id`
//! - `< expected`  the next outgoing message, rendered as:
//!   - text: the body, newlines written as `\n`
//!   - buttons: `[buttons] body | title1 | title2 …`
//!   - list: `[list] body | button | row title 1 | row title 2 …`
//!   - `[http] METHOD url` for an HTTP call, `[handoff] reason` for a handoff,
//!     `[chatbot] bot` for a chatbot node, `[error] message` for a step error; other
//!     messages as `[kind]`, but a reaction as `[reaction] emoji message-id`
//! - the n-th user message (`>`) has the id `wamid.n` (the flow's `{{message_id}}`)
//! - `> [image] media-id`  user sends media (image, document, audio, video, sticker)
//! - `= 200 {"json": 1}`   the pending HTTP call answers (status 0 = no response)
//! - `^ release`   a human gives the conversation back; `^ bot done`: a chatbot node's
//!   session ends
//! - `% ad-id`     the next message comes from this Click-to-WhatsApp ad
//! - `~ 2h`        advance the clock; due timers fire (in due order)
//! - `@ Name`      set the contact's name
//! - `! max_steps N`  set the runaway guard (default 100)
//! - `? idle` | `? active flow_id` | `? var name = value` | `? contact field = value`
//!   assert on the state (`contact.access`, `contact.tags`, business fields)
//!
//! Before each `>` / `~` and at the end, every produced message must have been matched.

use std::collections::VecDeque;

use super::exec::{FlowAction, FlowError, FlowInput};
use super::expr::display;
use super::model::parse_duration;
use super::sandbox::Sandbox;
use super::validate::FlowSet;
use crate::whatsapp::send::OutboundMessage;

/// Render an outgoing message the way transcripts spell it.
pub fn render(m: &OutboundMessage) -> String {
    let esc = |s: &str| s.replace('\n', "\\n");
    match m {
        OutboundMessage::Text { body, .. } => esc(body),
        OutboundMessage::Buttons { body, buttons, .. } => {
            let mut s = format!("[buttons] {}", esc(body));
            for b in buttons {
                s.push_str(" | ");
                s.push_str(&b.title);
            }
            s
        }
        OutboundMessage::List {
            body,
            button,
            sections,
            ..
        } => {
            let mut s = format!("[list] {} | {}", esc(body), button);
            for r in sections.iter().flat_map(|s| &s.rows) {
                s.push_str(" | ");
                s.push_str(&r.title);
            }
            s
        }
        OutboundMessage::Reaction { message_id, emoji } => {
            format!("[reaction] {emoji} {message_id}")
        }
        other => format!("[{}]", other.kind_name()),
    }
}

/// Append what the bot did, as transcripts spell it.
fn collect(out: Result<Vec<FlowAction>, FlowError>, pending: &mut VecDeque<String>) {
    match out {
        Ok(actions) => {
            for a in actions {
                match a {
                    FlowAction::Send(m) => pending.push_back(render(&m)),
                    FlowAction::Http(c) => {
                        pending.push_back(format!("[http] {} {}", c.method, c.url))
                    }
                    FlowAction::Handoff { reason } => {
                        pending.push_back(format!("[handoff] {reason}"))
                    }
                    FlowAction::Commerce(c) => pending.push_back(format!(
                        "[shop] {}",
                        serde_json::to_string(&c.op).unwrap_or_default()
                    )),
                    FlowAction::StartBot { bot, .. } => {
                        pending.push_back(format!("[chatbot] {bot}"))
                    }
                    FlowAction::StartTimer { .. }
                    | FlowAction::Contact(_)
                    | FlowAction::Ended { .. }
                    | FlowAction::OutsideWindow(_) => {}
                }
            }
        }
        Err(e) => pending.push_back(format!("[error] {e}")),
    }
}

/// Run a script; `Err` describes the first mismatch with its script line number.
pub fn run_transcript(flows: &FlowSet, script: &str) -> Result<(), String> {
    let mut sb = Sandbox::new(flows, "transcript", 1_700_000_000_000);
    let mut pending: VecDeque<String> = VecDeque::new();

    for (i, raw) in script.lines().enumerate() {
        let ln = i + 1;
        let line = raw.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with("//") {
            continue;
        }
        let (cmd, arg) = line.split_at(1);
        let arg = arg.strip_prefix(' ').unwrap_or(arg);
        let unmatched = |p: &VecDeque<String>| {
            if p.is_empty() {
                Ok(())
            } else {
                Err(format!("line {ln}: unexpected output {:?}", p))
            }
        };
        match cmd {
            ">" => {
                unmatched(&pending)?;
                let media = arg.strip_prefix('[').and_then(|r| r.split_once("] "));
                let input = match (arg.strip_prefix('#'), media) {
                    (Some(id), _) => FlowInput::Message {
                        text: None,
                        reply_id: Some(id),
                    },
                    (None, Some((kind, id))) => FlowInput::Media {
                        kind,
                        id,
                        caption: None,
                    },
                    (None, None) => FlowInput::Message {
                        text: Some(arg),
                        reply_id: None,
                    },
                };
                collect(sb.input(input), &mut pending);
            }
            "<" => match pending.pop_front() {
                Some(got) if got == arg => {}
                Some(got) => {
                    return Err(format!(
                        "line {ln}: expected {arg:?}\n          got {got:?}"
                    ))
                }
                None => return Err(format!("line {ln}: expected {arg:?}, got nothing")),
            },
            "~" => {
                unmatched(&pending)?;
                let d = parse_duration(arg).ok_or(format!("line {ln}: bad duration {arg:?}"))?;
                for out in sb.advance(d) {
                    collect(out, &mut pending);
                }
            }
            "=" => {
                unmatched(&pending)?;
                let (status, body) = arg.split_once(' ').unwrap_or((arg, ""));
                let status: u16 = status
                    .parse()
                    .map_err(|_| format!("line {ln}: bad HTTP status {status:?}"))?;
                let out = sb
                    .answer_http(status, body)
                    .ok_or(format!("line {ln}: no HTTP call is pending"))?;
                collect(out, &mut pending);
            }
            "^" => {
                unmatched(&pending)?;
                let out = match arg {
                    "release" => sb.release(),
                    "bot done" => sb.bot_done(),
                    _ => return Err(format!("line {ln}: `^ release` or `^ bot done`")),
                };
                collect(out, &mut pending);
            }
            "%" => sb.referral = Some(arg.to_string()),
            "@" => sb.contact.profile_name = Some(arg.to_string()),
            "!" => {
                let n = arg
                    .strip_prefix("max_steps ")
                    .and_then(|n| n.trim().parse().ok());
                sb.max_steps = n.ok_or(format!("line {ln}: bad directive {arg:?}"))?;
            }
            "?" => {
                let state = &sb.state;
                let ok = if arg == "idle" {
                    !state.is_active()
                } else if let Some(f) = arg.strip_prefix("active ") {
                    state.flow.as_deref() == Some(f)
                } else if let Some((k, v)) =
                    arg.strip_prefix("var ").and_then(|r| r.split_once(" = "))
                {
                    state.vars.get(k.trim()).map(display).as_deref() == Some(v)
                } else if let Some((k, v)) = arg
                    .strip_prefix("contact ")
                    .and_then(|r| r.split_once(" = "))
                {
                    sb.contact.get(k.trim()) == v
                } else {
                    return Err(format!("line {ln}: bad assertion {arg:?}"));
                };
                if !ok {
                    return Err(format!(
                        "line {ln}: assertion {arg:?} failed; state = {state:?}, contact = {:?}",
                        sb.contact
                    ));
                }
            }
            _ => return Err(format!("line {ln}: unknown command {line:?}")),
        }
    }
    if !pending.is_empty() {
        return Err(format!("end of script: unexpected output {pending:?}"));
    }
    Ok(())
}
