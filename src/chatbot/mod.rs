//! AI chatbots: definitions in files (`{flows.dir}/bots/*.yaml`), validated and reloaded
//! with the flows; a pure session (`session.rs`) that runs inside the conversation step; and
//! provider clients (`provider.rs`) that the actor calls off the conversation, the answer
//! coming back as an event.
//!
//! # Bot file
//! ```yaml
//! id: assistant                 # optional, defaults to the file stem
//! provider: openai              # a name under [ai.providers] in the config
//! model: gpt-4o-mini
//! system_prompt: "You are the shop's assistant. Answer briefly."
//! welcome: "Hi! Ask me anything about our shop."   # optional, sent when a session starts
//! fallback: "Sorry, I cannot answer right now."      # sent when the provider fails
//! triggers: [assistant, tanya]  # keywords that start a session when no flow takes a message
//! timeout: 30m                  # a session idle this long ends (Timeout)
//! max_turns: 20                 # answers per session; on the user's next message:
//! on_max_turns: end             # `end` (default): send the closing message, end (Completed)
//!                               # `handoff`: hand the conversation to a human (HandedOff)
//! max_turns_message: "That's all I can answer here; send agent for a person."
//!                               # the closing message; with `end` it defaults to `fallback`,
//!                               # with `handoff` it is sent only when set
//! context_messages: 10          # the last N messages go to the model (from a user message)
//! temperature: 0.3
//! max_tokens: 300
//! max_cost: "0.50"              # per session, in the price table's currency; then handoff
//! handoff:
//!   keywords: [agent, human]    # the user asks for a person
//!   tool: true                  # the model may call a `handoff` tool
//!   after_failures: 3           # consecutive provider failures
//! prices:                       # per 1,000 tokens, Decimal strings
//!   input: "0.00015"
//!   output: "0.0006"
//! ```
//!
//! A session ended by `on_max_turns: end` is over: with the account's default bot, the
//! user's next message starts a new one.

pub mod provider;
pub mod session;

use std::path::Path;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::definitions::{normalize, parse_duration};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawBot {
    id: Option<String>,
    provider: String,
    model: String,
    system_prompt: String,
    welcome: Option<String>,
    fallback: Option<String>,
    #[serde(default)]
    triggers: Vec<String>,
    timeout: Option<String>,
    max_turns: Option<u32>,
    on_max_turns: Option<String>,
    max_turns_message: Option<String>,
    context_messages: Option<usize>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    max_cost: Option<String>,
    #[serde(default)]
    handoff: RawHandoff,
    #[serde(default)]
    prices: RawPrices,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawHandoff {
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    tool: bool,
    after_failures: Option<u32>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    input: Option<String>,
    output: Option<String>,
}

/// What a session does with the user's message after its `max_turns`-th answer. Never
/// nothing: the user hears why the bot stopped, or a human takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMaxTurns {
    /// Send the closing message and end the session (Completed).
    End,
    /// Hand the conversation to a human (HandedOff).
    Handoff,
}

/// A validated bot.
#[derive(Debug, Clone, PartialEq)]
pub struct Bot {
    pub id: String,
    pub provider: String,
    pub model: String,
    pub system_prompt: String,
    pub welcome: Option<String>,
    pub fallback: String,
    /// Normalized keywords.
    pub triggers: Vec<String>,
    pub timeout_ms: i64,
    pub max_turns: u32,
    pub on_max_turns: OnMaxTurns,
    /// Sent when `max_turns` is reached (with `End`, `fallback` when unset).
    pub max_turns_message: Option<String>,
    pub context_messages: usize,
    pub temperature: f32,
    pub max_tokens: u32,
    pub max_cost: Option<Decimal>,
    pub handoff_keywords: Vec<String>,
    pub handoff_tool: bool,
    pub handoff_after_failures: u32,
    /// Price per 1,000 input / output tokens.
    pub price_in: Decimal,
    pub price_out: Decimal,
}

/// All loaded bots.
#[derive(Debug, Clone, Default)]
pub struct BotSet {
    bots: Vec<Bot>,
}

impl BotSet {
    pub fn get(&self, id: &str) -> Option<&Bot> {
        self.bots.iter().find(|b| b.id == id)
    }

    pub fn bots(&self) -> &[Bot] {
        &self.bots
    }

    /// The bot whose trigger keyword is `text` (normalized), if any.
    pub fn triggered_by(&self, text: &str) -> Option<&Bot> {
        let n = normalize(text);
        self.bots.iter().find(|b| b.triggers.contains(&n))
    }

    /// Parse and validate every `(path, contents)`; every error as `file:line:col: message`.
    /// With `providers`, a bot naming another provider is an error.
    pub fn load(
        files: &[(String, String)],
        providers: Option<&[String]>,
    ) -> Result<BotSet, Vec<String>> {
        let mut errors = Vec::new();
        let mut bots: Vec<Bot> = Vec::new();
        for (path, text) in files {
            if let Some(bot) = compile(path, text, providers, &mut errors) {
                if bots.iter().any(|b| b.id == bot.id) {
                    let (l, c) = key_pos(text, "id");
                    errors.push(format!("{path}:{l}:{c}: duplicate bot id `{}`", bot.id));
                } else {
                    bots.push(bot);
                }
            }
        }
        if errors.is_empty() {
            Ok(BotSet { bots })
        } else {
            Err(errors)
        }
    }
}

/// (line, col) of the first `key:` in `text`, else (1, 1).
fn key_pos(text: &str, key: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.strip_prefix(key).is_some_and(|r| r.starts_with(':')) {
            return (i + 1, line.len() - t.len() + 1);
        }
    }
    (1, 1)
}

fn compile(
    path: &str,
    text: &str,
    providers: Option<&[String]>,
    errors: &mut Vec<String>,
) -> Option<Bot> {
    let raw: RawBot = match serde_norway::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            errors.push(crate::definitions::yaml_error(path, &e));
            return None;
        }
    };
    let before = errors.len();
    let mut err = |key: &str, msg: String| {
        let (l, c) = key_pos(text, key);
        errors.push(format!("{path}:{l}:{c}: {msg}"));
    };
    let id = raw.id.clone().unwrap_or_else(|| {
        Path::new(path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    if let Some(known) = providers {
        if !known.contains(&raw.provider) {
            err(
                "provider",
                format!(
                    "provider `{}` is not configured (ai.providers has: {})",
                    raw.provider,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }
    for (key, v) in [("model", &raw.model), ("system_prompt", &raw.system_prompt)] {
        if v.trim().is_empty() {
            err(key, format!("`{key}` must not be empty"));
        }
    }
    let timeout_ms = match raw.timeout.as_deref().map(|t| (t, parse_duration(t))) {
        None => 30 * 60_000,
        Some((_, Some(ms))) if ms > 0 => ms,
        Some((t, _)) => {
            err("timeout", format!("bad duration `{t}`"));
            0
        }
    };
    let temperature = raw.temperature.unwrap_or(0.3);
    if !(0.0..=2.0).contains(&temperature) {
        err("temperature", "temperature must be between 0 and 2".into());
    }
    let max_turns = raw.max_turns.unwrap_or(20);
    if max_turns == 0 {
        err("max_turns", "max_turns must be at least 1".into());
    }
    let on_max_turns = match raw.on_max_turns.as_deref().map(str::trim) {
        None | Some("end") => OnMaxTurns::End,
        Some("handoff") => OnMaxTurns::Handoff,
        Some(other) => {
            err(
                "on_max_turns",
                format!("on_max_turns must be `end` or `handoff`, got `{other}`"),
            );
            OnMaxTurns::End
        }
    };
    if raw
        .max_turns_message
        .as_ref()
        .is_some_and(|m| m.trim().is_empty())
    {
        err(
            "max_turns_message",
            "`max_turns_message` must not be empty".into(),
        );
    }
    let context_messages = raw.context_messages.unwrap_or(10);
    if context_messages == 0 {
        err(
            "context_messages",
            "context_messages must be at least 1".into(),
        );
    }
    let mut dec = |key: &str, v: &Option<String>| -> Option<Decimal> {
        let s = v.as_ref()?;
        match Decimal::from_str(s.trim()) {
            Ok(d) if !d.is_sign_negative() => Some(d),
            _ => {
                err(
                    key,
                    format!("`{key}` must be a non-negative decimal, got `{s}`"),
                );
                None
            }
        }
    };
    let price_in = dec("input", &raw.prices.input).unwrap_or_default();
    let price_out = dec("output", &raw.prices.output).unwrap_or_default();
    let max_cost = dec("max_cost", &raw.max_cost);
    if errors.len() > before {
        return None;
    }
    Some(Bot {
        id,
        provider: raw.provider,
        model: raw.model,
        system_prompt: raw.system_prompt,
        welcome: raw.welcome,
        fallback: raw
            .fallback
            .unwrap_or_else(|| "Sorry, I cannot answer right now. Please try again later.".into()),
        triggers: raw.triggers.iter().map(|t| normalize(t)).collect(),
        timeout_ms,
        max_turns,
        on_max_turns,
        max_turns_message: raw.max_turns_message,
        context_messages,
        temperature,
        max_tokens: raw.max_tokens.unwrap_or(300),
        max_cost,
        handoff_keywords: raw.handoff.keywords.iter().map(|t| normalize(t)).collect(),
        handoff_tool: raw.handoff.tool,
        handoff_after_failures: raw.handoff.after_failures.unwrap_or(3).max(1),
        price_in,
        price_out,
    })
}

/// The bot files of `{flows_dir}/bots/` (a missing folder is no bots).
pub fn read_bot_files(flows_dir: &Path) -> Result<Vec<(String, String)>, Vec<String>> {
    crate::definitions::read_flow_files(&flows_dir.join("bots"))
}

/// Load the bots of `{flows_dir}/bots/`.
pub fn load_bots(flows_dir: &Path, providers: Option<&[String]>) -> Result<BotSet, Vec<String>> {
    BotSet::load(&read_bot_files(flows_dir)?, providers)
}

/// Price of a call: tokens / 1000 × price per 1K, exact.
pub fn cost(bot: &Bot, tokens_in: u64, tokens_out: u64) -> Decimal {
    let k = Decimal::from(1000);
    Decimal::from(tokens_in) * bot.price_in / k + Decimal::from(tokens_out) * bot.price_out / k
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "provider: openai\nmodel: m\nsystem_prompt: be brief\ntriggers: [Tanya Bot]\nprices: {input: \"0.5\", output: \"1.5\"}\nmax_cost: \"0.01\"\n";

    #[test]
    fn a_bot_file_loads_and_prices_are_exact() {
        let set = BotSet::load(
            &[("bots/helper.yaml".into(), GOOD.into())],
            Some(&["openai".into()]),
        )
        .unwrap();
        let bot = set.get("helper").unwrap();
        assert_eq!(bot.triggers, vec!["tanya bot"]);
        assert!(set.triggered_by("  TANYA   bot ").is_some());
        assert_eq!(cost(bot, 1000, 2000).to_string(), "3.5");
        assert_eq!(bot.max_cost, Some(Decimal::from_str("0.01").unwrap()));
        assert_eq!(
            (bot.on_max_turns, bot.max_turns_message.as_deref()),
            (OnMaxTurns::End, None)
        );

        let handoff =
            format!("{GOOD}on_max_turns: handoff\nmax_turns_message: A person will help.\n");
        let set = BotSet::load(&[("bots/h.yaml".into(), handoff)], None).unwrap();
        let bot = set.get("h").unwrap();
        assert_eq!(bot.on_max_turns, OnMaxTurns::Handoff);
        assert_eq!(
            bot.max_turns_message.as_deref(),
            Some("A person will help.")
        );

        // The example shipped in flows/bots/ loads.
        let example = include_str!("../../flows/bots/assistant.yaml.example");
        let set = BotSet::load(&[("assistant.yaml".into(), example.into())], None).unwrap();
        assert_eq!(
            set.get("assistant").unwrap().on_max_turns,
            OnMaxTurns::Handoff
        );
    }

    #[test]
    fn bad_bot_files_name_file_line_and_column() {
        let bad = "provider: nope\nmodel: \"\"\nsystem_prompt: x\ntemperature: 3\nprices: {input: \"-1\"}\non_max_turns: later\nmax_turns_message: \" \"\n";
        let errs = BotSet::load(&[("b.yaml".into(), bad.into())], Some(&["openai".into()]))
            .unwrap_err()
            .join("\n");
        for needle in [
            "b.yaml:1:1: provider `nope` is not configured",
            "b.yaml:2:1: `model` must not be empty",
            "b.yaml:4:1: temperature must be between 0 and 2",
            "`input` must be a non-negative decimal",
            "b.yaml:6:1: on_max_turns must be `end` or `handoff`, got `later`",
            "b.yaml:7:1: `max_turns_message` must not be empty",
        ] {
            assert!(errs.contains(needle), "{needle:?} missing in {errs}");
        }
        let syntax = BotSet::load(&[("s.yaml".into(), "provider: [\n".into())], None).unwrap_err();
        assert!(syntax[0].starts_with("s.yaml:"), "{syntax:?}");
        let unknown =
            BotSet::load(&[("u.yaml".into(), format!("{GOOD}colour: red\n"))], None).unwrap_err();
        assert!(unknown[0].contains("colour"), "{unknown:?}");
    }
}
