//! Raw serde structs for flow YAML files, plus the compiled (validated) flow model.
//!
//! # File format (one flow per file; id = `id:` or the file stem)
//! ```yaml
//! id: shop                      # optional, defaults to the file stem
//! triggers:                     # used only when no flow is active (first file wins)
//!   - keyword: menu             # match: exact (default) | prefix | contains;
//!     match: exact              #   case-, accent- and whitespace-insensitive
//!   - regex: "^order \\d+$"     # a regular expression over the text
//!     priority: 10              # higher wins when several match (default 0; ties: file order)
//!   - keyword: menu
//!     global: true              # also fires while a flow waits for an answer, leaving it
//!   - button: catalog           # a button/list reply id
//!     start: show_catalog       # optional start node for this trigger
//! start: welcome                # first node
//! session_timeout: 24h          # optional: 500ms, 6s, 10m, 24h, 2d
//! on_update: pin                # on reload, conversations in progress: pin | migrate | restart
//! nodes:
//!   welcome:
//!     send: {text: "Hi {{contact.name}}"}     # or buttons: {body, header?, footer?, buttons: [{id,title}]}
//!                                              # or message: {kind: cta_url|template|media|location|reaction, ...}
//!     next: ask_qty                            # or list: {body, button, sections: [{title?, rows: [{id,title,description?}]}]}
//!   ask_qty:
//!     ask:
//!       type: number            # text|number|decimal|email|phone|options|regex
//!       prompt: "How many?"     # optional text sent before waiting
//!       min: 1                  # number/decimal only
//!       max: 10
//!       options: [a, b]         # options only: matched against reply id or text
//!       pattern: "^[A-Z]+$"     # regex only
//!       save: qty               # variable receiving the value (number/decimal as Decimal)
//!       retry: "Send a number"  # sent on invalid input
//!       max_retries: 3          # invalid answers allowed with a retry; the next one fails
//!       on_fail: bye            # node after too many invalid answers (default: end flow)
//!     branches: {a: node_a}     # optional: saved value -> node (case-insensitive); else `next`
//!     next: calc
//!   calc:
//!     set: {total: "price * qty", label: "'x'"}   # variable -> expression
//!     next: check
//!   check:
//!     condition: {if: "total > 100 and not vip", then: big, else: small}
//!   jumpy:
//!     jump: {to: other_node}    # or jump: {flow: other_flow} -> FlowAction::SwitchFlow, flow ends
//!   ab:
//!     split:                    # A/B: sticky per contact by weight; the name goes to `save`
//!       variants: [{name: a, weight: 50, next: offer_a}, {name: b, weight: 50, next: offer_b}]
//!       save: variant           # default `variant`
//!   pause:
//!     wait: {for: 2h}           # FlowAction::StartTimer, resumes at `next` when it fires
//!     next: bye
//!   bye:
//!     send: {text: "Bye"}
//!     end: true                 # (or `end: {}`) ends the flow after the node's action
//! ```
//! Every node has at most one kind (send/ask/condition/set/jump/wait); a node with none just
//! follows `next`. A node without `next` (and not a condition/jump) ends the flow.
//!
//! Expressions: Decimal literals, 'single'/"double" quoted strings, true/false, `vars.x` or `x`,
//! `contact.name`, `+ - * /`, `== != < <= > >=`, `contains`, `matches '<regex literal>'`,
//! `and or not`, parentheses.
//!
//! Templates: `{{x}}`, `{{vars.x}}`, `{{contact.name}}`, filters `upper`, `lower`,
//! `default('...')`, `number`; single pass, unknown variable renders as "".

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::expr::Expr;
use super::template::Template;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFlow {
    pub id: Option<String>,
    #[serde(default)]
    pub triggers: Vec<RawTrigger>,
    pub start: String,
    pub session_timeout: Option<String>,
    /// What a conversation in progress does when this flow changes: pin (default) | migrate
    /// | restart.
    pub on_update: Option<String>,
    pub nodes: BTreeMap<String, RawNode>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    pub keyword: Option<String>,
    pub button: Option<String>,
    /// A regular expression over the message text.
    pub regex: Option<String>,
    /// Higher wins when several triggers match (default 0; ties: file order).
    #[serde(default)]
    pub priority: i32,
    /// Also fires while a flow is waiting for an answer, leaving it (e.g. `menu`).
    #[serde(default)]
    pub global: bool,
    #[serde(rename = "match", default)]
    pub match_kind: MatchKind,
    pub start: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    #[default]
    Exact,
    Prefix,
    Contains,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub send: Option<RawSend>,
    pub ask: Option<RawAsk>,
    pub condition: Option<RawCondition>,
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub set: Option<BTreeMap<String, serde_norway::Value>>,
    pub jump: Option<RawJump>,
    pub wait: Option<RawWait>,
    pub split: Option<RawSplit>,
    pub next: Option<String>,
    pub branches: Option<BTreeMap<String, String>>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub end: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSend {
    pub text: Option<String>,
    pub buttons: Option<RawButtons>,
    pub list: Option<RawList>,
    /// Any other message in Parley's form: `{kind: cta_url | template | media | location |
    /// reaction, ...}` (see `OutboundMessage`); every string in it may use templates.
    #[schemars(with = "Option<serde_json::Value>")]
    pub message: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawButtons {
    pub header: Option<String>,
    pub body: String,
    pub footer: Option<String>,
    pub buttons: Vec<RawButton>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawButton {
    pub id: String,
    pub title: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawList {
    pub header: Option<String>,
    pub body: String,
    pub footer: Option<String>,
    pub button: String,
    pub sections: Vec<RawSection>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSection {
    pub title: Option<String>,
    pub rows: Vec<RawRow>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRow {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AskType {
    Text,
    Number,
    Decimal,
    Email,
    Phone,
    Options,
    Regex,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAsk {
    #[serde(rename = "type")]
    pub kind: AskType,
    pub prompt: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub min: Option<serde_norway::Value>,
    #[schemars(with = "Option<serde_json::Value>")]
    pub max: Option<serde_norway::Value>,
    pub pattern: Option<String>,
    pub save: Option<String>,
    pub retry: Option<String>,
    pub max_retries: Option<u32>,
    pub on_fail: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    #[serde(rename = "if")]
    pub cond: String,
    pub then: String,
    #[serde(rename = "else")]
    pub otherwise: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJump {
    pub to: Option<String>,
    pub flow: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWait {
    #[serde(rename = "for")]
    pub duration: String,
}

/// `split: {variants: [{name: a, weight: 50, next: node_a}, ...], save: variant}`: an A/B
/// test. Each contact lands in one variant by weight and stays there; the name is saved.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    pub variants: Vec<RawVariant>,
    pub save: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVariant {
    pub name: String,
    pub weight: u32,
    pub next: String,
}

// ---------------------------------------------------------------- compiled model

/// A variable value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    Str(String),
    Num(rust_decimal::Decimal),
    Bool(bool),
}

#[derive(Debug, Clone)]
pub enum Trigger {
    Keyword {
        word: String,
        kind: MatchKind,
        start: Option<String>,
    },
    Button {
        id: String,
        start: Option<String>,
    },
    Regex {
        re: Regex,
        start: Option<String>,
    },
}

/// A trigger with its priority and reach.
#[derive(Debug, Clone)]
pub struct TriggerSpec {
    pub on: Trigger,
    pub priority: i32,
    pub global: bool,
}

impl TriggerSpec {
    pub fn start(&self) -> Option<&String> {
        match &self.on {
            Trigger::Keyword { start, .. }
            | Trigger::Button { start, .. }
            | Trigger::Regex { start, .. } => start.as_ref(),
        }
    }
}

/// A message whose string leaves are templates.
#[derive(Debug, Clone)]
pub enum TemplatedJson {
    Str(Template),
    Other(serde_json::Value),
    Arr(Vec<TemplatedJson>),
    Obj(Vec<(String, TemplatedJson)>),
}

#[derive(Debug, Clone)]
pub enum SendSpec {
    Text(Template),
    /// cta_url, template, media, location, reaction; with the message as written (checked at
    /// load) should a rendering not decode.
    Message(TemplatedJson, Box<crate::whatsapp::send::OutboundMessage>),
    Buttons {
        header: Option<Template>,
        body: Template,
        footer: Option<Template>,
        buttons: Vec<crate::whatsapp::send::ReplyButton>,
    },
    List {
        header: Option<Template>,
        body: Template,
        footer: Option<Template>,
        button: String,
        sections: Vec<crate::whatsapp::send::ListSection>,
    },
}

#[derive(Debug, Clone)]
pub struct AskSpec {
    pub kind: AskType,
    pub prompt: Option<Template>,
    pub options: Vec<String>,
    pub min: Option<rust_decimal::Decimal>,
    pub max: Option<rust_decimal::Decimal>,
    pub pattern: Option<Regex>,
    pub save: Option<String>,
    pub retry: Option<Template>,
    pub max_retries: u32,
    pub on_fail: Option<String>,
    pub branches: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Noop,
    Send(SendSpec),
    Ask(Box<AskSpec>),
    Condition {
        cond: Expr,
        then: String,
        otherwise: String,
    },
    Set(Vec<(String, Expr)>),
    JumpNode(String),
    JumpFlow(String),
    Wait {
        ms: i64,
    },
    /// A/B split: (variant name, weight, next node); the chosen name is saved in `save`.
    Split {
        variants: Vec<(String, u32, String)>,
        save: String,
    },
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    pub next: Option<String>,
    pub end: bool,
}

/// A validated flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub id: String,
    /// Content hash (FNV-1a 64, hex) of the source file: the flow's version.
    pub version: String,
    pub triggers: Vec<TriggerSpec>,
    pub start: String,
    pub session_timeout_ms: Option<i64>,
    pub on_update: OnUpdate,
    pub nodes: BTreeMap<String, Node>,
}

/// What a conversation in progress does when its flow is reloaded with changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUpdate {
    /// Finish on the version it started with (kept loaded while the process runs).
    #[default]
    Pin,
    /// Continue on the new version at the same node; if that node is gone, start over.
    Migrate,
    /// Start the new version from its start node.
    Restart,
}

/// Parse `500ms`, `6s`, `10m`, `24h`, `2d` into milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The JSON Schema of a flow file, generated from the types above (`parleyd flows schema`;
/// `flows/flow.schema.json` is kept equal to it by a test) for editors to complete and check.
pub fn flow_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RawFlow)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        use super::parse_duration as p;
        assert_eq!(p("500ms"), Some(500));
        assert_eq!(p("6s"), Some(6000));
        assert_eq!(p("10m"), Some(600_000));
        assert_eq!(p("24h"), Some(86_400_000));
        assert_eq!(p("2d"), Some(172_800_000));
        assert_eq!(p("2"), None);
        assert_eq!(p("h"), None);
        assert_eq!(p("3w"), None);
    }
}
