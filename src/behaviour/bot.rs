//! A chatbot session inside the conversation: where it is kept, starting one, and applying
//! what a turn of it decided (its messages, a handoff, its record). Pure, like `logic`.

use crate::chatbot::session::{self as bot_session, BotSession, Outcome};
use crate::conversation::{
    enter_handoff, ConversationState, Effect, HandoffBy, Layer, StepContext,
};
use crate::whatsapp::event::MessageContent;

/// Key of the chatbot session inside `ConversationState::ext`.
pub(super) const BOT_KEY: &str = "bot";

pub(super) fn bot_of(state: &ConversationState) -> Option<BotSession> {
    state.ext.get(BOT_KEY).and_then(Layer::read::<BotSession>)
}

/// The text a chatbot would read from a message (None for media, reactions, …).
pub(super) fn text_of(content: &MessageContent) -> Option<&str> {
    match content {
        MessageContent::Text { body } => Some(body),
        MessageContent::ButtonReply { title, .. } | MessageContent::ListReply { title, .. } => {
            Some(title)
        }
        MessageContent::TemplateButton { text, .. } => Some(text),
        _ => None,
    }
}

/// Apply a bot outcome to the conversation; keep the session if it goes on. Returns the
/// session when it ended. `before`: the session's figures before this step (None: it began
/// in this step).
pub(super) fn settle_bot(
    state: &mut ConversationState,
    effects: &mut Vec<Effect>,
    ctx: &StepContext,
    session: BotSession,
    before: Option<crate::conversation::BotSummary>,
    out: Outcome,
) -> Option<BotSession> {
    effects.extend(out.effects);
    if let Some(reason) = out.handoff {
        let by = HandoffBy::Bot {
            bot: session.bot.clone(),
        };
        enter_handoff(state, &reason, by, ctx, effects);
    }
    // One record per session and step: this one replaces an earlier one (keeping whether the
    // session began in this step).
    let same = |r: &crate::conversation::BotSummary| {
        r.bot == session.bot && r.started_at == session.started_at
    };
    let earlier = effects.iter().find_map(|e| match e {
        Effect::BotRecord(r) if same(r) => Some(r.started),
        _ => None,
    });
    effects.retain(|e| !matches!(e, Effect::BotRecord(r) if same(r)));
    let summary = session.summary(earlier == Some(true));
    // A step that moved none of the session's figures (a customer's message, now with the
    // model) writes no row: the figures are what the store keeps, and it saves a page write
    // per turn.
    let unchanged = earlier.is_none() && before.as_ref() == Some(&summary);
    if !unchanged {
        effects.push(Effect::BotRecord(summary));
    }
    if session.active() {
        if let Some(v) = Layer::of(&session) {
            state.ext.insert(BOT_KEY.to_string(), v);
        }
        None
    } else {
        state.ext.remove(BOT_KEY);
        Some(session)
    }
}

/// Start a session with `bot` (welcome message, idle timer); with `first`, put that message
/// to the model at once.
pub(super) fn start_bot(
    bot: &crate::chatbot::Bot,
    state: &mut ConversationState,
    effects: &mut Vec<Effect>,
    ctx: &StepContext,
    from_flow: bool,
    until: Vec<String>,
    first: Option<&str>,
) {
    let (mut session, mut out) = bot_session::start(bot, ctx.now_ms, from_flow, until);
    // The first session after a human's turn tells its model so; later ones do not.
    session.human_note = state.human_handled_at.take().is_some();
    effects.push(Effect::BotRecord(session.summary(true)));
    if let Some(text) = first {
        let more = bot_session::user_text(bot, &mut session, text, ctx.now_ms);
        out.effects.extend(more.effects);
        out.handoff = more.handoff;
    }
    settle_bot(state, effects, ctx, session, None, out);
}
