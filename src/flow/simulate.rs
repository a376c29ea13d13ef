//! `parleyd simulate FLOW_ID`: chat with a flow in the terminal through the same pure engine
//! the daemon runs, with a virtual clock. No WhatsApp, no store.

use std::io::{BufRead, Write};

use super::exec::start;
use super::{
    parse_duration, step, FlowAction, FlowContext, FlowInput, FlowSet, FlowState, MAX_STEPS,
};
use crate::whatsapp::send::OutboundMessage;

/// Run a session reading user lines from `input` and writing the bot's side to `out`.
pub fn run(
    flows: &FlowSet,
    flow_id: &str,
    input: impl BufRead,
    mut out: impl Write,
) -> anyhow::Result<()> {
    if flows.get(flow_id).is_none() {
        anyhow::bail!(
            "no flow `{flow_id}`; the flows are: {}",
            flows.ids().join(", ")
        );
    }
    writeln!(out, "Simulating `{flow_id}`. Type a message; #id taps a button or row; a number picks a listed choice; /wait 2h, /vars, /reset, /quit.")?;
    let mut now: i64 = 0;
    let mut timers: Vec<(i64, String)> = Vec::new();
    let mut choices: Vec<String> = Vec::new();
    let ctx = |now| FlowContext {
        now_ms: now,
        contact_name: Some("Simulator"),
        contact_key: Some("simulator"),
        max_steps: MAX_STEPS,
    };
    let (mut state, actions) =
        start(flows, flow_id, &ctx(now)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    show(&mut out, &actions, now, &mut timers, &mut choices)?;
    for line in input.lines() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" {
            break;
        }
        if line == "/vars" {
            writeln!(out, "{}", serde_json::to_string_pretty(&state.vars)?)?;
            continue;
        }
        if line == "/reset" {
            timers.clear();
            let (s, actions) =
                start(flows, flow_id, &ctx(now)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            state = s;
            show(&mut out, &actions, now, &mut timers, &mut choices)?;
            continue;
        }
        if let Some(d) = line.strip_prefix("/wait ") {
            let Some(ms) = parse_duration(d) else {
                writeln!(out, "(not a duration: {d})")?;
                continue;
            };
            now += ms;
            timers.sort();
            while timers.first().is_some_and(|(due, _)| *due <= now) {
                let (_, name) = timers.remove(0);
                let (s, actions) = step(flows, state, FlowInput::Timer { name: &name }, &ctx(now))
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                state = s;
                show(&mut out, &actions, now, &mut timers, &mut choices)?;
            }
            continue;
        }
        let picked = line
            .parse::<usize>()
            .ok()
            .and_then(|n| choices.get(n.wrapping_sub(1)).cloned());
        let (text, reply_id) = match (line.strip_prefix('#'), picked) {
            (Some(id), _) => (None, Some(id.to_string())),
            (None, Some(id)) => (None, Some(id)),
            (None, None) => (Some(line.to_string()), None),
        };
        let input = FlowInput::Message {
            text: text.as_deref().or(reply_id.as_deref()),
            reply_id: reply_id.as_deref(),
        };
        match step(flows, state.clone(), input, &ctx(now)) {
            Ok((s, actions)) => {
                state = s;
                show(&mut out, &actions, now, &mut timers, &mut choices)?;
                if !state.is_active() && state == FlowState::default() {
                    writeln!(out, "(the flow has ended; /reset starts it again)")?;
                }
            }
            Err(e) => writeln!(out, "(flow stopped: {e:?})")?,
        }
    }
    Ok(())
}

fn show(
    out: &mut impl Write,
    actions: &[FlowAction],
    now: i64,
    timers: &mut Vec<(i64, String)>,
    choices: &mut Vec<String>,
) -> std::io::Result<()> {
    for action in actions {
        match action {
            FlowAction::Send(message) => {
                choices.clear();
                match message {
                    OutboundMessage::Text { body, .. } => writeln!(out, "bot> {body}")?,
                    OutboundMessage::Buttons { body, buttons, .. } => {
                        writeln!(out, "bot> {body}")?;
                        for b in buttons {
                            choices.push(b.id.clone());
                            writeln!(out, "     {}) {} [#{}]", choices.len(), b.title, b.id)?;
                        }
                    }
                    OutboundMessage::List { body, sections, .. } => {
                        writeln!(out, "bot> {body}")?;
                        for row in sections.iter().flat_map(|s| &s.rows) {
                            choices.push(row.id.clone());
                            writeln!(out, "     {}) {} [#{}]", choices.len(), row.title, row.id)?;
                        }
                    }
                    other => writeln!(out, "bot> ({})", other.kind_name())?,
                }
            }
            FlowAction::StartTimer { name, after_ms } => {
                timers.push((now + after_ms, name.clone()));
                writeln!(
                    out,
                    "     (waiting {} s; /wait to move the clock)",
                    after_ms / 1000
                )?;
            }
            FlowAction::SwitchFlow(id) => writeln!(out, "     (switches to flow `{id}`)")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulator_plays_the_shop_flow() {
        let files = super::super::read_flow_files(std::path::Path::new("flows")).unwrap();
        let flows = FlowSet::load(&files).unwrap();
        let script = "1\n2\nabc\n3\nyes\n";
        let mut out = Vec::new();
        run(&flows, "shop", script.as_bytes(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        for expected in [
            "bot> Welcome! What would you like?",
            "1) Catalog [#catalog]",
            "Which product number?",
            "bot> How many?",
            "bot> Please send a number",
            "bot> Total: 45000. Reply yes to confirm",
            "bot> Order confirmed",
            "(the flow has ended",
        ] {
            assert!(out.contains(expected), "{expected:?} missing in:\n{out}");
        }
    }
}
