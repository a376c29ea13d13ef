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
//!   - referral: "1203948"       # Click-to-WhatsApp ad id (referral.source_id); "*" = any ad
//!   - default: true             # when no flow is active and nothing else matched
//!   - order: true               # WhatsApp's catalog `order` message (the order is made first)
//! start: welcome                # first node
//! access: registered            # optional: lowest contact level that may start it
//!                               #   (public | registered | activated), by a trigger or a
//!                               #   jump (below it a jump ends the flow, a subflow call
//!                               #   goes on at its `next`)
//! session_timeout: 24h          # optional: 500ms, 6s, 10m, 24h, 2d
//! on_expire: expired            # optional: node run when a message comes after the timeout
//! on_update: pin                # on reload, conversations in progress: pin | migrate | restart
//! nodes:
//!   welcome:
//!     send: {text: "Hi {{contact.name}}"}     # or buttons: {body, header?, footer?, buttons: [{id,title}]}
//!                                              # or message: {kind: cta_url|template|media|location|reaction, ...}
//!     next: ask_qty                            # or list: {body, button, sections: [{title?, rows: [{id,title,description?}]}]}
//!   ask_qty:
//!     ask:
//!       type: number            # text|number|decimal|email|phone|date|options|regex|media
//!       prompt: "How many?"     # optional text sent before waiting
//!       min: 1                  # number/decimal only
//!       max: 10
//!       options: [a, b]         # options only: matched against reply id or text
//!       pattern: "^[A-Z]+$"     # regex only
//!       save: qty               # variable receiving the value (number/decimal as Decimal)
//!       retry: "Send a number"  # sent on invalid input
//!       max_retries: 3          # invalid answers allowed with a retry; the next one fails
//!       on_fail: bye            # node after too many invalid answers (default: end flow)
//!       media_types: [image]    # media only: image|document|audio|video|sticker (id saved)
//!     branches: {a: node_a}     # optional: saved value -> node (case-insensitive); else `next`
//!     next: calc
//!   calc:
//!     set: {total: "price * qty", label: "'x'"}   # variable -> expression
//!     # also: contact.<field>: expr (a business field), contact.access: "'registered'",
//!     #       tag.add: [vip], tag.remove: vip
//!     next: check
//!   check:
//!     condition: {if: "total > 100 and not vip", then: big, else: small}
//!   jumpy:
//!     jump: {to: other_node}    # or {flow: other_flow}; {flow: x, return: true} runs x as
//!                               #   a subflow and comes back to this node's `next`
//!   ab:
//!     split:                    # A/B: sticky per contact by weight; the name goes to `save`
//!       variants: [{name: a, weight: 50, next: offer_a}, {name: b, weight: 50, next: offer_b}]
//!       save: variant           # default `variant`
//!   pause:
//!     wait: {for: 2h}           # durable timer, resumes at `next` when it fires; or
//!     next: bye                 #   {until: "09:00"} (UTC); on_reply: node = a reply
//!                               #   interrupts the wait (its text in `reply`)
//!   lookup:
//!     http:                     # call the business's system (https, or flows.http_allow)
//!       method: POST            # GET (default) | POST | PUT | PATCH | DELETE
//!       url: "https://api.example.com/orders/{{order_id}}"   # no variable in scheme/host;
//!                               #   each value percent-encoded (flows/README.md)
//!       headers: {X-Api: "{{vars.key}}"}
//!       body: {id: "{{order_id}}"}     # JSON; its strings are templates
//!       timeout: 5s             # default 10s, at most 30s
//!       save: {status: data.status}   # variable -> dotted path in the JSON answer
//!     next: show                # on 2xx (`http_status` is always saved)
//!     on_error: sorry           # non-2xx, timeout or refused (default: end flow)
//!   human:
//!     handoff: {message: "Connecting you…", reason: "support"}
//!     next: back                # runs when the conversation is released
//!   use_voucher:
//!     voucher: {code: "{{code}}"}   # check a code (any case) and put it on the open cart:
//!                               #   branches ok (`voucher.code`, `voucher.discount`,
//!                               #   `cart.total` after it, `cart.discount`) | invalid
//!                               #   (`voucher.reason`: unknown, not yet valid, expired, used
//!                               #   up, already used by you, inactive, only for orders of at
//!                               #   least …); a missing branch goes to `next`. The checkout
//!                               #   claims it; if it cannot any more, the checkout's result is
//!                               #   `voucher_invalid` (nothing ordered, the voucher off the cart)
//!     branches: {ok: checkout, invalid: voucher_sorry}
//!   custom:
//!     custom_order: {description: "{{wish}}", image: "{{photo}}"}  # recorded once for the
//!                               #   owner (told by WhatsApp), `custom_order.id`; results ok |
//!                               #   empty (nothing described); image: an ask media's saved id
//!     next: bye
//!   bye:
//!     send: {text: "Bye"}
//!     end: true                 # (or `end: {}`) ends the flow after the node's action
//! ```
//! Every node has at most one kind (send/ask/condition/set/jump/wait/split/http/handoff); a
//! node with none just follows `next`. A node without `next` (and not a condition/jump) ends
//! the flow (or returns to the caller of a subflow). Buttons and list rows may carry
//! `access: registered` to be shown only to contacts of that level and up; below it, an
//! `options` ask does not take that id (the retry message).
//!
//! Expressions: Decimal literals, 'single'/"double" quoted strings, true/false, `vars.x` or `x`,
//! `contact.name`, `+ - * /`, `== != < <= > >=`, `contains`, `matches '<regex literal>'`,
//! `and or not`, parentheses.
//!
//! Templates: `{{x}}`, `{{vars.x}}`, `{{contact.name}}` (also `contact.access`,
//! `contact.tags`, `contact.<field>`), filters `upper`, `lower`, `default('...')`, `number`,
//! `currency('IDR')`; single pass, unknown variable renders as "". The engine sets
//! `message_id`: the id (wamid) of the user's last message the flow took, to react to it:
//! `send: {message: {kind: reaction, message_id: "{{message_id}}", emoji: "👍"}}`.

pub use crate::definitions::parse_duration;
use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::expr::Expr;
use super::template::{Template, UrlTemplate};
pub use crate::conversation::AccessLevel;

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
    /// Lowest contact access level that may start this flow: public (default) | registered
    /// | activated.
    pub access: Option<String>,
    /// Node run when a message arrives after `session_timeout` (e.g. "your cart expired").
    pub on_expire: Option<String>,
    pub nodes: BTreeMap<String, RawNode>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    pub keyword: Option<String>,
    pub button: Option<String>,
    /// A regular expression over the message text.
    pub regex: Option<String>,
    /// Click-to-WhatsApp: the ad id (`referral.source_id`) the user came from, or `"*"` for
    /// any ad.
    pub referral: Option<String>,
    /// Fires when no flow is active and no other trigger matched.
    #[serde(default)]
    pub default: bool,
    /// WhatsApp's catalog `order` message: the order is made from its products (priced from
    /// our catalog) and the flow starts with `order.*` set. Fires even while another flow
    /// waits.
    #[serde(default)]
    pub order: bool,
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
    pub http: Option<RawHttp>,
    pub handoff: Option<RawHandoff>,
    pub chatbot: Option<RawChatbot>,
    pub catalog: Option<RawCatalog>,
    pub cart: Option<RawCart>,
    pub checkout: Option<RawCheckout>,
    pub order_status: Option<RawOrderStatus>,
    pub payment: Option<RawPayment>,
    pub voucher: Option<RawVoucher>,
    pub custom_order: Option<RawCustomOrder>,
    pub next: Option<String>,
    /// http and shop nodes: node when the call fails (non-2xx, timeout, refused, the store
    /// unreachable); default: end flow.
    pub on_error: Option<String>,
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
    /// Outside the 24 h window: `fail`, `hold` (sent when the user writes again) or
    /// `{template: {name, language, body_params: [...]}}` (sent instead). Default: the
    /// config's `conversation.outside_window`.
    #[schemars(with = "Option<serde_json::Value>")]
    pub outside_window: Option<serde_norway::Value>,
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
    /// Shown only to contacts with at least this access level.
    pub access: Option<String>,
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
    /// Shown only to contacts with at least this access level.
    pub access: Option<String>,
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
    /// A calendar date: 2026-11-22, 22/11/2026 or 22-11-2026; saved as YYYY-MM-DD.
    Date,
    /// An image, document, audio, video or sticker; its media id is saved.
    Media,
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
    /// media only: accepted kinds (image, document, audio, video, sticker); default all.
    #[serde(default)]
    pub media_types: Vec<String>,
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
    /// With `flow`: run it as a subflow and come back to this node's `next` when it ends.
    #[serde(rename = "return", default)]
    pub ret: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWait {
    /// How long: 30s, 2h, 3d.
    #[serde(rename = "for")]
    pub duration: Option<String>,
    /// Or until the next `HH:MM` (UTC).
    pub until: Option<String>,
    /// A reply while waiting cancels the wait and continues here.
    pub on_reply: Option<String>,
}

/// `http: {method, url, headers, body, timeout, save}`: call the business's system.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// GET (default), POST, PUT, PATCH, DELETE.
    pub method: Option<String>,
    /// https only (or an address in `flows.http_allow`); templated after the host, each
    /// value percent-encoded (a value stays one path segment, query key or value).
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body whose strings are templates.
    #[schemars(with = "Option<serde_json::Value>")]
    pub body: Option<serde_norway::Value>,
    /// Default 10s, at most 30s.
    pub timeout: Option<String>,
    /// Variable -> dotted path into the JSON response (`data.items.0.name`).
    #[serde(default)]
    pub save: BTreeMap<String, String>,
}

/// `chatbot: {bot, until}`: a bot (flows/bots/) talks with the user until a keyword of
/// `until`, a handoff, its timeout or its turn limit; then the flow continues at `next`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawChatbot {
    pub bot: String,
    #[serde(default)]
    pub until: Vec<String>,
}

/// `handoff: {message, reason}`: a human takes over; the flow continues at `next` when the
/// conversation is released.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHandoff {
    pub message: Option<String>,
    pub reason: Option<String>,
}

/// `catalog: {category?, save: sku, prompt}`: the active products as a WhatsApp list (a page
/// of `per_page` rows, a "More" row pages on; sold-out products marked, and refused when
/// chosen); the chosen sku is saved and `product.*` set.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    pub category: Option<String>,
    /// Variable receiving the chosen sku (default `sku`).
    pub save: Option<String>,
    /// The list's text (default "Our products").
    pub prompt: Option<String>,
    /// The list's button (default "View products", at most 20 characters).
    pub button: Option<String>,
    /// The row that shows the next page (default "More…").
    pub more: Option<String>,
    /// Sent when a sold-out product is chosen (default "Sorry, {{product.name}} is sold out.").
    pub sold_out: Option<String>,
    /// Sent when the answer is no product of the list.
    pub retry: Option<String>,
    /// Products a page (1 to 9; default 9, the tenth row being "More").
    pub per_page: Option<u32>,
}

/// `cart: {add: {sku, qty}}` / `{remove: {sku}}` / `{clear: true}` / `{show: true}`: results
/// `ok`, `out_of_stock`, `unknown` (in `cart.result`, and the `branches` keys); sets
/// `cart.total`, `cart.items`, `cart.count`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCart {
    pub add: Option<RawCartItem>,
    pub remove: Option<RawCartItem>,
    #[serde(default)]
    pub clear: bool,
    #[serde(default)]
    pub show: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCartItem {
    /// A template: `"{{sku}}"`.
    pub sku: String,
    /// A number or a template (default 1).
    #[schemars(with = "Option<serde_json::Value>")]
    pub qty: Option<serde_norway::Value>,
}

/// `checkout: {}`: the cart becomes an order with its stock reserved; results `ok`
/// (`order.number`, `order.total`, `order.items`), `out_of_stock` (`product.name`), `empty`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCheckout {
    /// The customer's name on the order (a template).
    pub name: Option<String>,
    /// The delivery address (a template).
    pub address: Option<String>,
}

/// `order_status: {}`: the customer's open orders, with their status, sent as a message.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOrderStatus {
    /// The message when there are some (default "Your orders:\n{{orders.text}}").
    pub text: Option<String>,
    /// The message when there are none (default "You have no open orders.").
    pub empty: Option<String>,
}

/// `custom_order: {description, image?}`: a custom order the customer described (and the
/// reference picture they sent, an `ask` of type media's saved id), for the owner to quote;
/// the owner is told. Results `ok` (`custom_order.id`), `empty` (nothing described).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCustomOrder {
    /// A template: `"{{wish}}"`.
    pub description: String,
    /// A template naming the picture's media id: `"{{photo}}"`.
    pub image: Option<String>,
}

/// `payment: {provider?, method, bank?, store?, expires: "1h"}`: the order (`order.number`)
/// paid at a gateway: the customer is told what to do (a VA number and bank, a QRIS, a pay
/// code, a link, the bank account), then the flow waits durably; results `paid` (else
/// `next`), `expired`, `failed`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPayment {
    /// A `[payments.providers.NAME]`; default: the account's `payments`.
    pub provider: Option<String>,
    /// va | bank_transfer | qris | retail | link | manual.
    pub method: String,
    /// For va/bank_transfer: bca, bni, bri, mandiri, permata, ...
    pub bank: Option<String>,
    /// For retail: indomaret | alfamart.
    pub store: Option<String>,
    /// How long the customer has to pay (default 1h; 5m to 7d).
    pub expires: Option<String>,
}

/// `voucher: {code}`: check a voucher code for the open cart and put it on the cart; results
/// `ok` (`voucher.code`, `voucher.discount`, `cart.total` after it, `cart.discount`) and
/// `invalid` (`voucher.reason`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVoucher {
    /// The code (a template: `"{{code}}"`); matched case-insensitively.
    pub code: String,
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
    /// Click-to-WhatsApp ad id; None = any ad.
    Referral {
        ad: Option<String>,
        start: Option<String>,
    },
    Default {
        start: Option<String>,
    },
    /// A catalog `order` message.
    Order {
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
            | Trigger::Regex { start, .. }
            | Trigger::Referral { start, .. }
            | Trigger::Default { start }
            | Trigger::Order { start } => start.as_ref(),
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
        /// Button ids shown only from an access level up.
        restricted: Vec<(String, AccessLevel)>,
    },
    List {
        header: Option<Template>,
        body: Template,
        footer: Option<Template>,
        button: String,
        sections: Vec<crate::whatsapp::send::ListSection>,
        /// Row ids shown only from an access level up.
        restricted: Vec<(String, AccessLevel)>,
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
    pub media_types: Vec<String>,
}

/// One assignment of a `set` node.
#[derive(Debug, Clone)]
pub enum SetOp {
    Var(String, Expr),
    /// `contact.<field>`: a business field on the contact.
    Contact(String, Expr),
    /// `contact.access`: public | registered | activated.
    Access(Expr),
    TagAdd(Vec<String>),
    TagRemove(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct HttpSpec {
    pub method: String,
    pub url: UrlTemplate,
    pub headers: Vec<(String, Template)>,
    pub body: Option<TemplatedJson>,
    pub timeout_ms: u64,
    pub save: Vec<(String, String)>,
    pub on_error: Option<String>,
}

/// A `catalog` node compiled.
#[derive(Debug, Clone)]
pub struct CatalogSpec {
    pub category: Option<String>,
    pub save: String,
    pub prompt: Template,
    pub button: String,
    pub more: String,
    pub sold_out: Template,
    pub retry: Template,
    pub per_page: u32,
}

/// What a `cart` node does.
#[derive(Debug, Clone)]
pub enum CartSpec {
    Add { sku: Template, qty: Template },
    Remove { sku: Template },
    Clear,
    Show,
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
    Set(Vec<SetOp>),
    JumpNode(String),
    JumpFlow {
        flow: String,
        /// Subflow: come back to `next` when it ends.
        ret: bool,
    },
    Wait {
        /// A fixed delay, or until the next time of day (minutes after midnight UTC).
        ms: Option<i64>,
        until_minute: Option<u32>,
        on_reply: Option<String>,
    },
    Http(Box<HttpSpec>),
    Handoff {
        reason: String,
        message: Option<Template>,
    },
    Chatbot {
        bot: String,
        until: Vec<String>,
    },
    /// A/B split: (variant name, weight, next node); the chosen name is saved in `save`.
    Split {
        variants: Vec<(String, u32, String)>,
        save: String,
    },
    Catalog(Box<CatalogSpec>),
    Cart(CartSpec),
    Checkout {
        name: Option<Template>,
        address: Option<Template>,
    },
    OrderStatus {
        text: Template,
        empty: Template,
    },
    Voucher {
        code: Template,
    },
    Payment(Box<PaymentSpec>),
    CustomOrder {
        description: Template,
        image: Option<Template>,
    },
}

/// A `payment` node compiled.
#[derive(Debug, Clone)]
pub struct PaymentSpec {
    pub provider: Option<String>,
    pub method: crate::domain::PaymentMethod,
    pub bank: Option<String>,
    pub store: Option<String>,
    pub expires_ms: i64,
}

impl NodeKind {
    /// A node that asks the shop (its answer comes back before the flow goes on).
    pub fn is_shop(&self) -> bool {
        matches!(
            self,
            NodeKind::Catalog(_)
                | NodeKind::Cart(_)
                | NodeKind::Checkout { .. }
                | NodeKind::OrderStatus { .. }
                | NodeKind::Payment(_)
                | NodeKind::Voucher { .. }
                | NodeKind::CustomOrder { .. }
        )
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    pub next: Option<String>,
    /// A shop node's results (`ok`, `out_of_stock`, `unknown`, `empty`) → node; a result
    /// without one goes to `next`.
    pub results: BTreeMap<String, String>,
    /// A shop node: where the flow goes when the store cannot be reached (default: end).
    pub on_error: Option<String>,
    pub end: bool,
    /// A send node's policy outside the 24 h window (None: the account's default).
    pub outside_window: Option<crate::conversation::WindowPolicy>,
}

/// A validated flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub id: String,
    /// Content hash (FNV-1a 64, hex) of the source file: the flow's version.
    pub version: String,
    /// The file as loaded (kept in the store per version, for pinning across restarts).
    pub source: std::sync::Arc<str>,
    pub triggers: Vec<TriggerSpec>,
    pub start: String,
    pub session_timeout_ms: Option<i64>,
    pub on_expire: Option<String>,
    pub access: AccessLevel,
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
