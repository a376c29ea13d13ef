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
//!     messages as `[kind]`, but a reaction as `[reaction] emoji message-id` and media as
//!     `[image] link-or-id | caption` (`[document]`, … likewise)
//!   - `[shop] op args` for a shop node's call (see [`render_op`]): `catalog page 0`,
//!     `product KOPI`, `cart_add KOPI 2`, `cart_remove KOPI`, `cart_clear`, `cart_show`,
//!     `checkout "Budi"`, `orders`, `voucher HEMAT10`, `custom_order "a cake" media-id`,
//!     `catalog_order KOPI x2, TEH x1`, `payment va bca 1 hour`
//! - the n-th user message (`>`) has the id `wamid.n` (the flow's `{{message_id}}`)
//! - `> [image] media-id`  user sends media (image, document, audio, video, sticker)
//! - `> [order] KOPI x2, TEH x1`  user sends an order from the WhatsApp catalog
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
//! Before each `>` / `~` / `$` and at the end, every produced message must have been matched.
//!
//! With a shop ([`run_transcript_with_shop`]: a scratch store, the daemon's commerce logic),
//! each `[shop]` call is answered as soon as it is made, and what the answer leads to follows
//! it; without one the call stays unanswered. The shop sells in IDR to the script's one
//! customer; a payment is opened without a gateway, with made-up instructions (a VA
//! `8808` + the payment id in 8 digits, a retail code `PAY` + 6 digits, a link
//! `https://pay.example/ID`, a QRIS image `https://pay.example/qr/ID.png` with the
//! instructions as its caption, a manual text for the other methods); a paid order's plans
//! send their access (`Your access:` …) before the flow goes on, as the daemon does.
//! - `+ product SKU "Name" PRICE [stock N] [category C] [plan 30d [LINK]] [inactive]`
//!   a product in the catalog, listed in the order first given (no `stock`: not tracked);
//!   a sku seeded again is replaced (its stock set anew)
//! - `+ voucher CODE percent|fixed VALUE [min AMOUNT] [limit N] [inactive] [expired]
//!   [upcoming]`  a voucher (`limit 0`: used up; `expired` ended a second ago; `upcoming`
//!   starts in a day); seeded again, it is replaced
//! - `$ paid [AMOUNT]` | `$ expired` | `$ failed` | `$ cancelled`  the gateway reports the
//!   payment the flow waits on (paid: the amount due; another AMOUNT is a mismatch, held
//!   for the owner, and the flow goes on waiting)
//! - `? stock SKU = N` | `? stock SKU = N reserved M`  the product's stock (and the units
//!   held by unpaid orders) in the shop

use std::collections::VecDeque;

use super::exec::{FlowAction, FlowError, FlowInput};
use super::expr::display;
use super::model::parse_duration;
use super::sandbox::{Sandbox, Shop};
use super::validate::FlowSet;
use crate::commerce::scratch::ScratchShop;
use crate::commerce::{Answer, Call, Op};
use crate::domain::{AccountId, Currency, Money, PaymentStatus, ProductKind, Voucher, VoucherKind};
use crate::payments::GatewayStatus;
use crate::store::Product;
use crate::whatsapp::event::OrderItem;
use crate::whatsapp::send::{MediaSource, OutboundMessage};

/// The customer of every transcript (the sandbox's contact key).
const CUSTOMER: &str = "transcript";

/// A scratch shop on a runtime of its own (one thread): for a transcript run outside any
/// runtime (a plain `#[test]`). Each script wants a fresh one.
pub struct TranscriptShop {
    rt: tokio::runtime::Runtime,
    shop: Option<ScratchShop>,
    /// Each sku seeded, by its catalog position (the order of first seeding).
    positions: std::collections::BTreeMap<String, i64>,
}

impl TranscriptShop {
    pub fn open() -> Result<TranscriptShop, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let shop = rt
            .block_on(ScratchShop::open(
                AccountId::from(CUSTOMER),
                Currency::IDR,
                CUSTOMER,
            ))
            .map_err(|e| e.to_string())?;
        Ok(TranscriptShop {
            rt,
            shop: Some(shop),
            positions: Default::default(),
        })
    }

    fn shop(&self) -> &ScratchShop {
        self.shop.as_ref().expect("open until dropped")
    }

    fn money(&self, text: &str) -> Result<Money, String> {
        Money::parse(text, self.shop().currency()).map_err(|e| format!("{text:?}: {e}"))
    }

    /// `+ product …` / `+ voucher …`
    fn seed(&mut self, arg: &str, now: i64) -> Result<(), String> {
        let words = words(arg)?;
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["product", sku, name, price, rest @ ..] => {
                let mut p = Product {
                    sku: sku.to_string(),
                    name: name.to_string(),
                    description: None,
                    price: self.money(price)?,
                    stock: None,
                    reserved: 0,
                    image_url: None,
                    category: None,
                    active: true,
                    kind: ProductKind::Product,
                    period_days: None,
                    access_link: None,
                    position: match self.positions.get(*sku) {
                        Some(at) => *at,
                        None => self.positions.len() as i64,
                    },
                    created_at: now,
                    updated_at: now,
                };
                let mut rest = rest.iter();
                while let Some(key) = rest.next() {
                    let mut value = || rest.next().ok_or(format!("`{key}` wants a value"));
                    match *key {
                        "stock" => p.stock = Some(value()?.parse().map_err(|_| "bad stock")?),
                        "category" => p.category = Some(value()?.to_string()),
                        "plan" => {
                            let days = parse_duration(value()?)
                                .filter(|ms| ms % 86_400_000 == 0)
                                .ok_or("a plan's length is in days, like 30d")?;
                            p.kind = ProductKind::Plan;
                            p.period_days = Some(days / 86_400_000);
                        }
                        "inactive" => p.active = false,
                        link if link.starts_with("https://") && p.kind == ProductKind::Plan => {
                            p.access_link = Some(link.to_string())
                        }
                        other => return Err(format!("unknown product setting `{other}`")),
                    }
                }
                self.positions.insert(p.sku.clone(), p.position);
                let shop = self.shop.as_ref().expect("open");
                self.rt
                    .block_on(shop.add_product(&p))
                    .map_err(|e| e.to_string())
            }
            ["voucher", code, kind, value, rest @ ..] => {
                let kind = match *kind {
                    "percent" => VoucherKind::Percent,
                    "fixed" => VoucherKind::Fixed,
                    other => return Err(format!("a voucher is percent or fixed, not {other}")),
                };
                let decimal = |t: &str| {
                    rust_decimal::Decimal::from_str_exact(t)
                        .map_err(|_| format!("bad number {t:?}"))
                };
                let mut v = Voucher {
                    code: code.to_uppercase(),
                    kind,
                    value: decimal(value)?,
                    min_total: None,
                    valid_from: None,
                    valid_to: None,
                    usage_limit: None,
                    used: 0,
                    user_key: None,
                    active: true,
                    created_at: now,
                    updated_at: now,
                };
                let mut rest = rest.iter();
                while let Some(key) = rest.next() {
                    let mut value = || rest.next().ok_or(format!("`{key}` wants a value"));
                    match *key {
                        "min" => v.min_total = Some(decimal(value()?)?),
                        "limit" => v.usage_limit = Some(value()?.parse().map_err(|_| "bad limit")?),
                        "inactive" => v.active = false,
                        "expired" => v.valid_to = Some(now - 1000),
                        "upcoming" => v.valid_from = Some(now + 86_400_000),
                        other => return Err(format!("unknown voucher setting `{other}`")),
                    }
                }
                self.rt
                    .block_on(self.shop().add_voucher(&v, now))
                    .map_err(|e| e.to_string())
            }
            _ => Err(
                "`+ product SKU \"Name\" PRICE …` or `+ voucher CODE percent|fixed VALUE …`".into(),
            ),
        }
    }

    /// `? stock SKU = N [reserved M]`
    fn stock(&self, sku: &str) -> Result<String, String> {
        let shop = self.shop();
        let p = self
            .rt
            .block_on(shop.store().product(shop.account(), sku))
            .map_err(|e| e.to_string())?
            .ok_or(format!("no product {sku}"))?;
        let stock = p.stock.map_or("untracked".to_string(), |n| n.to_string());
        Ok(format!("{stock} reserved {}", p.reserved))
    }
}

impl Shop for TranscriptShop {
    fn answer(&mut self, call: &Call, now: i64) -> Answer {
        self.rt.block_on(self.shop().answer(call, now))
    }

    fn settle(
        &mut self,
        id: i64,
        report: GatewayStatus,
        paid: Option<&Money>,
        now: i64,
    ) -> Result<Option<PaymentStatus>, String> {
        self.rt
            .block_on(self.shop().settle(id, report, paid, now))
            .map_err(|e| e.to_string())
    }

    fn access(&mut self, id: i64) -> Result<Vec<String>, String> {
        self.rt
            .block_on(self.shop().access(id))
            .map_err(|e| e.to_string())
    }
}

impl Drop for TranscriptShop {
    fn drop(&mut self) {
        if let Some(shop) = self.shop.take() {
            self.rt.block_on(shop.close());
        }
    }
}

/// Words separated by spaces; a word in double quotes may hold spaces.
fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or(format!("unclosed quote in {s:?}"))?;
            out.push(quoted[..end].to_string());
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    Ok(out)
}

/// `KOPI x2, TEH x1` (`x1` may be left out): a catalog order's items, prices not claimed.
fn order_items(s: &str) -> Result<Vec<OrderItem>, String> {
    s.split(',')
        .map(|item| {
            let item = item.trim();
            let (sku, qty) = match item.rsplit_once(" x") {
                Some((sku, n)) => (
                    sku.trim(),
                    n.parse().map_err(|_| format!("bad quantity in {item:?}"))?,
                ),
                None => (item, 1),
            };
            Ok(OrderItem {
                product_retailer_id: sku.to_string(),
                quantity: qty,
                item_price: rust_decimal::Decimal::ZERO,
                currency: String::new(),
            })
        })
        .collect()
}

/// A shop call as transcripts spell it (after `[shop] `).
pub fn render_op(op: &Op) -> String {
    match op {
        Op::Catalog { category, page, .. } => match category {
            Some(c) => format!("catalog {c} page {page}"),
            None => format!("catalog page {page}"),
        },
        Op::Product { sku } => format!("product {sku}"),
        Op::CartAdd { sku, quantity } => format!("cart_add {sku} {quantity}"),
        Op::CartRemove { sku } => format!("cart_remove {sku}"),
        Op::CartClear => "cart_clear".into(),
        Op::CartShow => "cart_show".into(),
        Op::Checkout { name, address } => {
            let mut s = "checkout".to_string();
            for v in [name, address].into_iter().flatten() {
                s.push_str(&format!(" {v:?}"));
            }
            s
        }
        Op::Orders => "orders".into(),
        Op::Voucher { code } => format!("voucher {code}"),
        Op::CustomOrder {
            description,
            media_id,
        } => {
            let mut s = format!("custom_order {description:?}");
            if let Some(m) = media_id {
                s.push_str(&format!(" {m}"));
            }
            s
        }
        Op::CatalogOrder { items, .. } => {
            let items: Vec<String> = items
                .iter()
                .map(|i| format!("{} x{}", i.sku, i.quantity))
                .collect();
            format!("catalog_order {}", items.join(", "))
        }
        Op::Payment {
            provider,
            method,
            bank,
            store,
            expires_ms,
            ..
        } => {
            let mut s = format!("payment {method}");
            for v in [bank, store].into_iter().flatten() {
                s.push_str(&format!(" {v}"));
            }
            if let Some(p) = provider {
                s.push_str(&format!(" at {p}"));
            }
            s.push_str(&format!(
                " {}",
                crate::commerce::payment::duration_text(*expires_ms)
            ));
            s
        }
    }
}

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
        OutboundMessage::Media {
            source, caption, ..
        } => {
            let (MediaSource::Link(source) | MediaSource::Id(source)) = source;
            let mut s = format!("[{}] {source}", m.kind_name());
            if let Some(c) = caption {
                s.push_str(&format!(" | {}", esc(c)));
            }
            s
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
                    FlowAction::Commerce(c) => {
                        pending.push_back(format!("[shop] {}", render_op(&c.op)))
                    }
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

/// Run a script with no shop; `Err` describes the first mismatch with its script line number.
pub fn run_transcript(flows: &FlowSet, script: &str) -> Result<(), String> {
    run_transcript_with_shop(flows, script, None)
}

/// Run a script whose shop calls `shop` answers (None: they stay unanswered, and the `+` and
/// `$` directives are refused); `Err` describes the first mismatch with its script line
/// number.
pub fn run_transcript_with_shop(
    flows: &FlowSet,
    script: &str,
    mut shop: Option<&mut TranscriptShop>,
) -> Result<(), String> {
    let mut sb = Sandbox::new(flows, CUSTOMER, 1_700_000_000_000);
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
        let no_shop = || format!("line {ln}: {line:?} needs a shop (run_transcript_with_shop)");
        match cmd {
            ">" if arg.starts_with("[order] ") => {
                unmatched(&pending)?;
                let items =
                    order_items(&arg["[order] ".len()..]).map_err(|e| format!("line {ln}: {e}"))?;
                let input = FlowInput::Order {
                    items: &items,
                    text: None,
                };
                collect(sb.input(input), &mut pending);
            }
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
            "+" => {
                let shop = shop.as_deref_mut().ok_or_else(no_shop)?;
                shop.seed(arg, sb.now)
                    .map_err(|e| format!("line {ln}: {e}"))?;
            }
            "$" => {
                unmatched(&pending)?;
                let shop = shop.as_deref_mut().ok_or_else(no_shop)?;
                let (what, amount) = arg.split_once(' ').unwrap_or((arg, ""));
                let report = match what {
                    "paid" => GatewayStatus::Paid,
                    "expired" => GatewayStatus::Expired,
                    "failed" => GatewayStatus::Failed,
                    "cancelled" => GatewayStatus::Cancelled,
                    _ => {
                        return Err(format!(
                        "line {ln}: `$ paid [AMOUNT]`, `$ expired`, `$ failed` or `$ cancelled`"
                    ))
                    }
                };
                let paid = match amount.trim() {
                    "" => None,
                    a => Some(shop.money(a).map_err(|e| format!("line {ln}: {e}"))?),
                };
                match sb.report_payment(shop, report, paid.as_ref()) {
                    Some(Ok(out)) => collect(out, &mut pending),
                    Some(Err(e)) => return Err(format!("line {ln}: {e}")),
                    None => return Err(format!("line {ln}: no payment is waited on")),
                }
            }
            "%" => sb.referral = Some(arg.to_string()),
            "@" => sb.contact.profile_name = Some(arg.to_string()),
            "!" => {
                let n = arg
                    .strip_prefix("max_steps ")
                    .and_then(|n| n.trim().parse().ok());
                sb.max_steps = n.ok_or(format!("line {ln}: bad directive {arg:?}"))?;
            }
            "?" if arg.starts_with("stock ") => {
                let shop = shop.as_deref_mut().ok_or_else(no_shop)?;
                let (sku, want) = arg["stock ".len()..]
                    .split_once(" = ")
                    .ok_or(format!("line {ln}: `? stock SKU = N [reserved M]`"))?;
                let got = shop
                    .stock(sku.trim())
                    .map_err(|e| format!("line {ln}: {e}"))?;
                let want = if want.contains("reserved") {
                    want.to_string()
                } else {
                    format!("{want} reserved {}", got.rsplit(' ').next().unwrap_or(""))
                };
                if got != want {
                    return Err(format!(
                        "line {ln}: stock of {sku}: expected {want:?}, got {got:?}"
                    ));
                }
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
        // The calls the flow made are answered at once; what they lead to follows them.
        if let Some(shop) = shop.as_deref_mut() {
            for out in sb.run_shop(shop) {
                collect(out, &mut pending);
            }
        }
    }
    if !pending.is_empty() {
        return Err(format!("end of script: unexpected output {pending:?}"));
    }
    Ok(())
}
