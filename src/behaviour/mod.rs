//! The behaviours together: flows and chatbots loaded and checked as one set, and the
//! conversation logic that runs a flow or a bot for each event (the core's
//! [`ConversationLogic`](crate::conversation::ConversationLogic)). `flow` and `chatbot` do
//! not know each other; this floor joins them.

mod bot;
mod logic;

use std::path::Path;

use crate::chatbot::{load_bots, BotSet};
use crate::flow::FlowSet;

pub use crate::flow::MAX_STEPS;
pub use logic::{FlowLogic, FlowRegistry};

/// The flows of `dir` and the bots of `dir/bots/`, checked together (a chatbot node must
/// name a bot; with `providers`, a bot must name a configured provider). Every error of
/// both, or both sets.
pub fn load_all(
    dir: &Path,
    providers: Option<&[String]>,
) -> Result<(FlowSet, BotSet), Vec<String>> {
    let flows = crate::flow::load_dir(dir);
    let bots = load_bots(dir, providers);
    match (flows, bots) {
        (Ok(f), Ok(b)) => {
            f.check_bots(|id| b.get(id).is_some())?;
            Ok((f, b))
        }
        (f, b) => Err(f.err().into_iter().chain(b.err()).flatten().collect()),
    }
}
