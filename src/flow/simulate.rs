//! `parleyd simulate FLOW_ID`: chat with a flow in the terminal through the same pure engine
//! the daemon runs, with a virtual clock. No WhatsApp; the shop nodes are answered by `shop`
//! (the command line's: a scratch store holding a copy of the catalog), and `/pay` or
//! `/expire` plays the gateway's news on the payment a flow waits on.

use std::io::{BufRead, Write};

use super::sandbox::{Sandbox, Shop};
use super::{parse_duration, FlowAction, FlowError, FlowInput, FlowSet, FlowState};
use crate::whatsapp::send::OutboundMessage;

/// Run a session reading user lines from `input` and writing the bot's side to `out`; the
/// flow's shop calls are answered by `shop`.
pub fn run(
    flows: &FlowSet,
    flow_id: &str,
    input: impl BufRead,
    mut out: impl Write,
    shop: &mut dyn Shop,
) -> anyhow::Result<()> {
    if flows.get(flow_id).is_none() {
        anyhow::bail!(
            "no flow `{flow_id}`; the flows are: {}",
            flows.ids().join(", ")
        );
    }
    writeln!(out, "Simulating `{flow_id}`. Type a message; #id taps a button or row; a number picks a listed choice; /wait 2h, /http 200 {{json}}, /pay, /expire, /release, /vars, /reset, /quit.")?;
    let mut sb = Sandbox::new(flows, "simulator", 0);
    sb.contact.profile_name = Some("Simulator".into());
    let mut choices: Vec<String> = Vec::new();
    let first = sb.start(flow_id);
    show(&mut out, first, &mut choices)?;
    shop_calls(&mut sb, shop, &mut out, &mut choices)?;
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
            writeln!(out, "{}", serde_json::to_string_pretty(&sb.state.vars)?)?;
            continue;
        }
        if line == "/reset" {
            let again = sb.start(flow_id);
            show(&mut out, again, &mut choices)?;
            shop_calls(&mut sb, shop, &mut out, &mut choices)?;
            continue;
        }
        if line == "/botdone" {
            let back = sb.bot_done();
            show(&mut out, back, &mut choices)?;
            shop_calls(&mut sb, shop, &mut out, &mut choices)?;
            continue;
        }
        if line == "/release" {
            let back = sb.release();
            show(&mut out, back, &mut choices)?;
            shop_calls(&mut sb, shop, &mut out, &mut choices)?;
            continue;
        }
        if line == "/pay" || line == "/expire" {
            let report = if line == "/pay" {
                crate::payments::GatewayStatus::Paid
            } else {
                crate::payments::GatewayStatus::Expired
            };
            match sb.report_payment(shop, report, None) {
                Some(Ok(result)) => {
                    show(&mut out, result, &mut choices)?;
                    shop_calls(&mut sb, shop, &mut out, &mut choices)?;
                }
                Some(Err(e)) => writeln!(out, "(the shop could not settle it: {e})")?,
                None => writeln!(out, "(no payment is waiting)")?,
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("/http") {
            let rest = rest.trim();
            let (status, body) = rest.split_once(' ').unwrap_or((rest, ""));
            match (
                status.parse::<u16>(),
                sb.answer_http(status.parse().unwrap_or(0), body),
            ) {
                (Ok(_), Some(result)) => {
                    show(&mut out, result, &mut choices)?;
                    shop_calls(&mut sb, shop, &mut out, &mut choices)?;
                }
                (Err(_), _) => writeln!(out, "(usage: /http STATUS [JSON BODY])")?,
                (_, None) => writeln!(out, "(no HTTP call is waiting)")?,
            }
            continue;
        }
        if let Some(d) = line.strip_prefix("/wait") {
            let d = d.trim();
            let Some(ms) = parse_duration(d) else {
                writeln!(out, "(not a duration: {d})")?;
                continue;
            };
            for result in sb.advance(ms) {
                show(&mut out, result, &mut choices)?;
            }
            shop_calls(&mut sb, shop, &mut out, &mut choices)?;
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
        if sb.handed_off {
            writeln!(
                out,
                "(a human has this conversation; /release gives it back)"
            )?;
            continue;
        }
        let result = sb.input(input);
        show(&mut out, result, &mut choices)?;
        shop_calls(&mut sb, shop, &mut out, &mut choices)?;
        if !sb.state.is_active() && sb.state == FlowState::default() {
            writeln!(out, "(the flow has ended; /reset starts it again)")?;
        }
    }
    Ok(())
}

/// Answer the shop calls the flow makes, one after the other, showing what each leads to.
fn shop_calls(
    sb: &mut Sandbox<'_>,
    shop: &mut dyn Shop,
    out: &mut impl Write,
    choices: &mut Vec<String>,
) -> std::io::Result<()> {
    for result in sb.run_shop(shop) {
        show(out, result, choices)?;
    }
    Ok(())
}

fn show(
    out: &mut impl Write,
    result: Result<Vec<FlowAction>, FlowError>,
    choices: &mut Vec<String>,
) -> std::io::Result<()> {
    let actions = match result {
        Ok(a) => a,
        Err(e) => return writeln!(out, "(flow stopped: {e})"),
    };
    for action in &actions {
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
            FlowAction::StartTimer { after_ms, .. } => writeln!(
                out,
                "     (waiting {} s; /wait to move the clock)",
                after_ms / 1000
            )?,
            FlowAction::Http(call) => writeln!(
                out,
                "     (calls {} {}; answer with /http STATUS JSON)",
                call.method, call.url
            )?,
            FlowAction::Handoff { reason } => writeln!(
                out,
                "     (handed to a human: {reason}; /release gives it back)"
            )?,
            FlowAction::Commerce(call) => writeln!(
                out,
                "     (asks the shop: {})",
                serde_json::to_string(&call.op).unwrap_or_default()
            )?,
            FlowAction::Ended { flow, .. } => writeln!(out, "     (flow `{flow}` ended)")?,
            FlowAction::OutsideWindow(_) => {}
            FlowAction::StartBot { bot, .. } => writeln!(
                out,
                "     (chatbot `{bot}` talks here; no model in the simulator: /botdone ends it)"
            )?,
            FlowAction::Contact(c) => writeln!(
                out,
                "     (contact: access {}, tags [{}], fields {:?})",
                c.access.as_str(),
                c.get("tags"),
                c.fields
            )?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoShop;

    impl Shop for NoShop {
        fn answer(&mut self, _: &crate::commerce::Call, _: i64) -> crate::commerce::Answer {
            crate::commerce::Answer::Failed {
                error: "no shop".into(),
            }
        }

        fn settle(
            &mut self,
            _: i64,
            _: crate::payments::GatewayStatus,
            _: Option<&crate::domain::Money>,
            _: i64,
        ) -> Result<Option<crate::domain::PaymentStatus>, String> {
            Ok(None)
        }
    }

    #[test]
    fn the_simulator_plays_the_shop_flow() {
        let files = super::super::read_flow_files(std::path::Path::new("flows")).unwrap();
        let flows = FlowSet::load(&files).unwrap();
        let script = "1\n2\nabc\n3\nyes\n";
        let mut out = Vec::new();
        run(&flows, "shop", script.as_bytes(), &mut out, &mut NoShop).unwrap();
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

    #[test]
    fn a_reset_asks_the_shop_at_once() {
        let files = super::super::read_flow_files(std::path::Path::new("flows")).unwrap();
        let flows = FlowSet::load(&files).unwrap();
        let mut shop = crate::flow::TranscriptShop::open().unwrap();
        let mut out = Vec::new();
        run(&flows, "store", "/reset\n".as_bytes(), &mut out, &mut shop).unwrap();
        let out = String::from_utf8(out).unwrap();
        // The scratch shop is empty: the catalog says so, on the start and on the reset.
        let said = out
            .matches("bot> Sorry, there is nothing to order right now.")
            .count();
        assert_eq!(said, 2, "{out}");
    }
}
