//! A chatbot session inside a conversation: pure, like the rest of `step`. It decides what
//! to ask the model and what to do with its answer; the actor makes the call.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Bot, OnMaxTurns};
use crate::conversation::Effect;
use crate::definitions::{content_hash, normalize};
use crate::whatsapp::send::OutboundMessage;

/// Timer that ends a session idle for the bot's `timeout`.
pub const BOT_TIMER: &str = "bot:timeout";
/// Messages kept while the model is answering (the rest are dropped).
const MAX_DEFERRED: usize = 20;
/// What the first session after a human's turn tells the model, ahead of the context.
pub const HUMAN_NOTE: &str =
    "[Note: a human agent handled this conversation before you; continue politely from there.]";

pub use crate::conversation::{BotAnswer, BotCall, Role, Turn};
pub use crate::domain::BotStatus;

/// A conversation's session with one bot (stored in the conversation state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotSession {
    pub bot: String,
    pub status: BotStatus,
    pub started_at: i64,
    pub last_activity: i64,
    /// Answers given.
    pub turns: u32,
    /// The last messages, oldest first (at most the bot's `context_messages`), opening with
    /// one of the user's.
    pub context: Vec<Turn>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost: Decimal,
    /// Id of the call in flight (its request is the context: see [`pending_call`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// The first session after a human handled the conversation: every call of it tells the
    /// model so (the conversation's `human_handled_at` is consumed when the session starts).
    #[serde(
        default,
        alias = "pending_noted",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub human_note: bool,
    /// Messages that came while the model was answering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
    /// Consecutive failed calls.
    pub failures: u32,
    /// Started by a flow's chatbot node: the flow continues when the session ends.
    #[serde(default)]
    pub from_flow: bool,
    /// Normalized keywords that end the session (the flow node's `until`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub until: Vec<String>,
    /// Sum of answer latencies (ms), for the average.
    pub response_ms: u64,
}

/// What one event did to a session.
#[derive(Debug, Default)]
pub struct Outcome {
    pub effects: Vec<Effect>,
    /// Hand the conversation to a human, for this reason.
    pub handoff: Option<String>,
}

impl BotSession {
    /// Its figures for the store.
    pub fn summary(&self, started: bool) -> crate::conversation::BotSummary {
        crate::conversation::BotSummary {
            bot: self.bot.clone(),
            started_at: self.started_at,
            status: self.status,
            started,
            turns: self.turns,
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            cost: self.cost,
            response_ms: self.response_ms,
        }
    }

    pub fn active(&self) -> bool {
        self.status == BotStatus::Active
    }

    fn end(&mut self, status: BotStatus) {
        self.status = status;
        self.pending = None;
        self.deferred.clear();
    }

    fn remember(&mut self, bot: &Bot, role: Role, text: String) {
        self.context.push(Turn { role, text });
        let over = self.context.len().saturating_sub(bot.context_messages);
        self.context.drain(..over);
        // The window opens with the user: Anthropic rejects a conversation whose first
        // message is the model's ("first message must use the user role"), a 400 that would
        // end every long session on the fallback.
        let lead = self
            .context
            .iter()
            .take_while(|t| t.role == Role::Assistant)
            .count();
        self.context.drain(..lead);
    }
}

fn text(body: impl Into<String>) -> Effect {
    Effect::Send {
        message: OutboundMessage::Text {
            body: body.into(),
            preview_url: false,
        },
        reply_to: None,
        policy: None,
    }
}

fn timer(since: i64, due_at: i64) -> Effect {
    Effect::StartTimer {
        name: BOT_TIMER.to_string(),
        due_at,
        payload: serde_json::json!({ "since": since }),
    }
}

/// A new session with `bot`.
pub fn start(bot: &Bot, now: i64, from_flow: bool, until: Vec<String>) -> (BotSession, Outcome) {
    let s = BotSession {
        bot: bot.id.clone(),
        status: BotStatus::Active,
        started_at: now,
        last_activity: now,
        turns: 0,
        context: Vec::new(),
        tokens_in: 0,
        tokens_out: 0,
        cost: Decimal::ZERO,
        pending: None,
        human_note: false,
        deferred: Vec::new(),
        failures: 0,
        from_flow,
        until: until.iter().map(|u| normalize(u)).collect(),
        response_ms: 0,
    };
    let mut out = Outcome::default();
    if let Some(w) = &bot.welcome {
        out.effects.push(text(w.clone()));
    }
    out.effects.push(timer(now, now + bot.timeout_ms));
    (s, out)
}

fn asks_for_human(bot: &Bot, normalized: &str) -> bool {
    bot.handoff_keywords.iter().any(|k| {
        normalized == k
            || normalized.split(' ').any(|w| w == k)
            || (k.contains(' ') && normalized.contains(k.as_str()))
    })
}

/// The user wrote `text`.
pub fn user_text(bot: &Bot, s: &mut BotSession, text_in: &str, now: i64) -> Outcome {
    let mut out = Outcome::default();
    let n = normalize(text_in);
    s.last_activity = now;
    if s.until.contains(&n) {
        s.end(BotStatus::Completed);
        return out;
    }
    if asks_for_human(bot, &n) {
        s.end(BotStatus::HandedOff);
        out.handoff = Some(format!("asked for a person ({})", bot.id));
        return out;
    }
    if s.pending.is_some() {
        if s.deferred.len() < MAX_DEFERRED {
            s.deferred.push(text_in.to_string());
        }
        return out;
    }
    ask(bot, s, text_in.to_string(), now, &mut out);
    out
}

/// Put the user's message to the model, unless a limit says otherwise.
fn ask(bot: &Bot, s: &mut BotSession, user: String, now: i64, out: &mut Outcome) {
    if s.turns >= bot.max_turns {
        match bot.on_max_turns {
            OnMaxTurns::End => {
                let closing = bot.max_turns_message.as_ref().unwrap_or(&bot.fallback);
                out.effects.push(text(closing.clone()));
                s.end(BotStatus::Completed);
            }
            OnMaxTurns::Handoff => {
                out.effects
                    .extend(bot.max_turns_message.iter().map(|m| text(m.clone())));
                s.end(BotStatus::HandedOff);
                out.handoff = Some(format!(
                    "{} reached its max_turns ({})",
                    bot.id, bot.max_turns
                ));
            }
        }
        return;
    }
    if bot.max_cost.is_some_and(|max| s.cost >= max) {
        s.end(BotStatus::HandedOff);
        out.handoff = Some(format!("cost limit of {} reached", bot.id));
        return;
    }
    s.remember(bot, Role::User, user);
    let key = format!("{}\0{}\0{}\0{now}", bot.id, s.started_at, s.turns);
    s.pending = Some(format!("bot-{}", content_hash(&key)));
    out.effects
        .extend(pending_call(bot, s).map(Effect::BotCall));
}

/// The request of the call in flight, rebuilt from the session (so the stored state holds
/// the context once; a restart makes the same call again).
pub fn pending_call(bot: &Bot, s: &BotSession) -> Option<BotCall> {
    let id = s.pending.clone()?;
    // The note opens the context (not the system prompt, which is the bot's own): it is not
    // stored, so the sliding window never drops it and it costs no slot of it.
    let note = s.human_note.then(|| Turn {
        role: Role::User,
        text: HUMAN_NOTE.to_string(),
    });
    Some(BotCall {
        id,
        bot: bot.id.clone(),
        provider: bot.provider.clone(),
        model: bot.model.clone(),
        system: bot.system_prompt.clone(),
        messages: note.into_iter().chain(s.context.iter().cloned()).collect(),
        temperature: bot.temperature,
        max_tokens: bot.max_tokens,
        handoff_tool: bot.handoff_tool,
    })
}

/// The model answered (or failed).
pub fn answer(bot: &Bot, s: &mut BotSession, ans: &BotAnswer, now: i64) -> Outcome {
    let mut out = Outcome::default();
    if s.pending.as_ref().is_none_or(|id| *id != ans.id) {
        return out; // not the call we wait for
    }
    s.pending = None;
    s.last_activity = now;
    s.tokens_in += ans.tokens_in;
    s.tokens_out += ans.tokens_out;
    s.cost += super::cost(bot, ans.tokens_in, ans.tokens_out);
    if ans.error.is_some() {
        s.failures += 1;
        out.effects.push(text(bot.fallback.clone()));
        if s.failures >= bot.handoff_after_failures {
            s.end(BotStatus::HandedOff);
            out.handoff = Some(format!("{} failed {} times in a row", bot.id, s.failures));
            return out;
        }
    } else {
        s.failures = 0;
        s.turns += 1;
        s.response_ms += ans.latency_ms;
        if let Some(t) = ans.text.as_ref().filter(|t| !t.trim().is_empty()) {
            out.effects.push(text(t.clone()));
            s.remember(bot, Role::Assistant, t.clone());
        }
        if ans.handoff {
            s.end(BotStatus::HandedOff);
            out.handoff = Some(format!("{} handed off", bot.id));
            return out;
        }
    }
    if !s.deferred.is_empty() {
        let next = std::mem::take(&mut s.deferred).join("\n");
        ask(bot, s, next, now, &mut out);
    }
    out
}

/// A human took the conversation: the session ends without a word, and the answer of a call
/// still in flight is not waited for (it is ignored when it comes).
pub fn handed_to_human(s: &mut BotSession, now: i64) {
    s.last_activity = now;
    s.end(BotStatus::HandedOff);
}

/// The session's idle timer fired.
pub fn timer_fired(bot: &Bot, s: &mut BotSession, since: Option<i64>, now: i64) -> Outcome {
    let mut out = Outcome::default();
    if since != Some(s.started_at) || !s.active() {
        return out;
    }
    let due = s.last_activity + bot.timeout_ms;
    if now >= due {
        s.end(BotStatus::Timeout);
    } else {
        out.effects.push(timer(s.started_at, due));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> Bot {
        let yaml = "provider: p\nmodel: m\nsystem_prompt: be brief\nwelcome: hi\nmax_turns: 2\ncontext_messages: 3\nhandoff: {keywords: [agent], tool: true, after_failures: 2}\nprices: {input: \"1\", output: \"2\"}\nmax_cost: \"0.01\"\n";
        super::super::BotSet::load(&[("b.yaml".into(), yaml.into())], None)
            .unwrap()
            .get("b")
            .unwrap()
            .clone()
    }

    fn call_of(out: &Outcome) -> BotCall {
        out.effects
            .iter()
            .find_map(|e| match e {
                Effect::BotCall(c) => Some(c.clone()),
                _ => None,
            })
            .expect("a call")
    }

    fn ok(call: &BotCall, text: &str) -> BotAnswer {
        BotAnswer {
            id: call.id.clone(),
            text: Some(text.into()),
            handoff: false,
            tokens_in: 1,
            tokens_out: 1,
            latency_ms: 100,
            error: None,
        }
    }

    #[test]
    fn a_session_asks_answers_keeps_context_and_stops_at_max_turns() {
        let b = bot();
        let (mut s, out) = start(&b, 0, false, vec![]);
        assert!(matches!(&out.effects[0], Effect::Send { .. }));
        let o = user_text(&b, &mut s, "one", 1);
        let c1 = call_of(&o);
        // A message while the model thinks waits for the answer.
        assert!(user_text(&b, &mut s, "two", 2).effects.is_empty());
        let o = answer(&b, &mut s, &ok(&c1, "a1"), 3);
        assert!(
            matches!(&o.effects[0], Effect::Send { message: OutboundMessage::Text { body, .. }, .. } if body == "a1")
        );
        let c2 = call_of(&o);
        assert_eq!(
            c2.messages
                .iter()
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>(),
            vec!["one", "a1", "two"]
        );
        let o = answer(&b, &mut s, &ok(&c2, "a2"), 4);
        assert_eq!(o.effects.len(), 1);
        assert_eq!(s.cost.to_string(), "0.006");
        // Two turns given: the next message ends the session, saying so.
        let o = user_text(&b, &mut s, "three", 5);
        assert_eq!(
            sent(&o),
            vec!["Sorry, I cannot answer right now. Please try again later."]
        );
        assert!(o.handoff.is_none());
        assert_eq!(s.status, BotStatus::Completed);
    }

    fn sent(out: &Outcome) -> Vec<&str> {
        out.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send {
                    message: OutboundMessage::Text { body, .. },
                    ..
                } => Some(body.as_str()),
                _ => None,
            })
            .collect()
    }

    fn texts_of(call: &BotCall) -> Vec<(Role, &str)> {
        call.messages
            .iter()
            .map(|t| (t.role, t.text.as_str()))
            .collect()
    }

    #[test]
    fn reaching_max_turns_closes_the_session_or_hands_off_never_silently() {
        // `end` with its own closing message.
        let mut b = bot();
        b.max_turns = 1;
        b.max_turns_message = Some("That is all I can answer.".into());
        let (mut s, _) = start(&b, 0, false, vec![]);
        let c = call_of(&user_text(&b, &mut s, "q1", 1));
        answer(&b, &mut s, &ok(&c, "a1"), 2);
        let o = user_text(&b, &mut s, "q2", 3);
        assert_eq!(sent(&o), vec!["That is all I can answer."]);
        assert!(o.handoff.is_none());
        assert!(!o.effects.iter().any(|e| matches!(e, Effect::BotCall(_))));
        assert_eq!((s.status, s.turns), (BotStatus::Completed, 1));

        // `handoff`: a human takes the conversation; no message unless one is set.
        b.on_max_turns = OnMaxTurns::Handoff;
        b.max_turns_message = None;
        let (mut s, _) = start(&b, 0, false, vec![]);
        let c = call_of(&user_text(&b, &mut s, "q1", 1));
        answer(&b, &mut s, &ok(&c, "a1"), 2);
        let o = user_text(&b, &mut s, "q2", 3);
        assert!(sent(&o).is_empty());
        assert_eq!(o.handoff.as_deref(), Some("b reached its max_turns (1)"));
        assert_eq!(s.status, BotStatus::HandedOff);

        // A message that waited for the last answer meets the limit when that answer comes.
        b.max_turns_message = Some("A colleague will take over.".into());
        let (mut s, _) = start(&b, 0, false, vec![]);
        let c = call_of(&user_text(&b, &mut s, "q1", 1));
        assert!(user_text(&b, &mut s, "q2", 2).effects.is_empty());
        let o = answer(&b, &mut s, &ok(&c, "a1"), 3);
        assert_eq!(sent(&o), vec!["a1", "A colleague will take over."]);
        assert_eq!(o.handoff.as_deref(), Some("b reached its max_turns (1)"));
        assert!(s.deferred.is_empty() && s.pending.is_none());
        assert_eq!(s.status, BotStatus::HandedOff);
    }

    #[test]
    fn the_context_window_keeps_the_last_messages_opening_with_the_user() {
        let mut b = bot();
        b.max_turns = 10;
        b.max_cost = None;
        b.context_messages = 3;
        let (mut s, _) = start(&b, 0, false, vec![]);
        let c = call_of(&user_text(&b, &mut s, "q1", 1));
        answer(&b, &mut s, &ok(&c, "a1"), 2);
        let c = call_of(&user_text(&b, &mut s, "q2", 3));
        assert_eq!(
            texts_of(&c),
            vec![
                (Role::User, "q1"),
                (Role::Assistant, "a1"),
                (Role::User, "q2")
            ]
        );
        answer(&b, &mut s, &ok(&c, "a2"), 4);
        // [a1, q2, a2]: the model's a1 would open the window, so it goes too.
        assert_eq!(
            s.context
                .iter()
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>(),
            vec!["q2", "a2"]
        );
        let c = call_of(&user_text(&b, &mut s, "q3", 5));
        assert_eq!(
            texts_of(&c),
            vec![
                (Role::User, "q2"),
                (Role::Assistant, "a2"),
                (Role::User, "q3")
            ]
        );

        // An even window: [a2, q3, a3, q4] would open with the model; it sends the last
        // three.
        b.context_messages = 4;
        answer(&b, &mut s, &ok(&c, "a3"), 6);
        let c = call_of(&user_text(&b, &mut s, "q4", 7));
        assert_eq!(
            texts_of(&c),
            vec![
                (Role::User, "q3"),
                (Role::Assistant, "a3"),
                (Role::User, "q4")
            ]
        );
        // A failed call leaves the question in the window; the next one follows it.
        let fail = BotAnswer {
            error: Some("timeout".into()),
            text: None,
            ..ok(&c, "")
        };
        answer(&b, &mut s, &fail, 8);
        let c = call_of(&user_text(&b, &mut s, "q5", 9));
        assert_eq!(
            texts_of(&c),
            vec![
                (Role::User, "q3"),
                (Role::Assistant, "a3"),
                (Role::User, "q4"),
                (Role::User, "q5")
            ]
        );
    }

    #[test]
    fn costs_add_up_exactly_in_decimal() {
        let mut b = bot();
        b.max_turns = 10;
        b.max_cost = None;
        b.price_in = "0.1".parse().unwrap();
        b.price_out = "0.00015".parse().unwrap();
        let (mut s, _) = start(&b, 0, false, vec![]);
        let call = |s: &mut BotSession, q: &str, tokens_in: u64, tokens_out: u64, at: i64| {
            let c = call_of(&user_text(&b, s, q, at));
            let mut a = ok(&c, "a");
            (a.tokens_in, a.tokens_out) = (tokens_in, tokens_out);
            answer(&b, s, &a, at + 1);
        };
        // 0.1 + 0.2 in binary floating point is 0.30000000000000004.
        call(&mut s, "q1", 1000, 0, 1);
        call(&mut s, "q2", 2000, 0, 3);
        assert_eq!(s.cost.to_string(), "0.3");
        // 7 output tokens at 0.00015 per 1K: 0.00000105, below a millionth's rounding.
        call(&mut s, "q3", 0, 7, 5);
        assert_eq!(s.cost.to_string(), "0.30000105");
        assert_eq!((s.tokens_in, s.tokens_out), (3000, 7));
    }

    #[test]
    fn failures_fall_back_then_hand_off_and_keywords_and_tools_hand_off() {
        let b = bot();
        let (mut s, _) = start(&b, 0, false, vec![]);
        s.human_note = true;
        let c = call_of(&user_text(&b, &mut s, "q", 1));
        assert_eq!(c.system, "be brief");
        assert_eq!(
            texts_of(&c),
            vec![(Role::User, HUMAN_NOTE), (Role::User, "q")]
        );
        let fail = |c: &BotCall| BotAnswer {
            id: c.id.clone(),
            text: None,
            handoff: false,
            tokens_in: 0,
            tokens_out: 0,
            latency_ms: 0,
            error: Some("503".into()),
        };
        let o = answer(&b, &mut s, &fail(&c), 2);
        assert!(o.handoff.is_none());
        let c = call_of(&user_text(&b, &mut s, "q2", 3));
        let o = answer(&b, &mut s, &fail(&c), 4);
        assert!(o.handoff.is_some());
        assert_eq!(s.status, BotStatus::HandedOff);

        let (mut s, _) = start(&b, 0, false, vec![]);
        assert!(user_text(&b, &mut s, "I want an AGENT please", 1)
            .handoff
            .is_some());

        let (mut s, _) = start(&b, 0, false, vec![]);
        let c = call_of(&user_text(&b, &mut s, "q", 1));
        let mut a = ok(&c, "Passing you on");
        a.handoff = true;
        let o = answer(&b, &mut s, &a, 2);
        assert!(o.handoff.is_some() && o.effects.len() == 1);
    }

    #[test]
    fn the_idle_timer_ends_only_an_idle_session_and_cost_limits_hand_off() {
        let b = bot();
        let (mut s, _) = start(&b, 0, true, vec!["done".into()]);
        s.last_activity = 10;
        let o = timer_fired(&b, &mut s, Some(0), b.timeout_ms);
        assert!(s.active() && !o.effects.is_empty());
        timer_fired(&b, &mut s, Some(0), 10 + b.timeout_ms);
        assert_eq!(s.status, BotStatus::Timeout);

        let (mut s, _) = start(&b, 0, true, vec!["Done".into()]);
        user_text(&b, &mut s, "done", 1);
        assert_eq!(s.status, BotStatus::Completed);

        let (mut s, _) = start(&b, 0, false, vec![]);
        s.cost = Decimal::new(2, 2);
        assert!(user_text(&b, &mut s, "q", 1).handoff.is_some());
    }
}
