//! The shop nodes: `catalog`, `cart`, `voucher`, `checkout`, `order_status`, `payment`,
//! `custom_order`. Each asks the shop through a
//! [`Call`] (made by the actor after the step's commit) and goes on when its answer comes back
//! ([`FlowInput::Commerce`]); a catalog also waits for the customer's choice.

use super::super::template::Template;
use super::*;
use crate::commerce::{payment, text, voucher, Answer, Call, Op, PaymentAnswer};
use crate::domain::{PaymentStatus, UserKey, VoucherRefusal};
use crate::store::{CartChanged, Checkout, Product, VoucherApplied};
use crate::whatsapp::send::{ListRow, ListSection, MediaSource, MediaType, OutboundMessage};

/// The id of a catalog list's "More" row.
pub const MORE_ROW: &str = "catalog:more";
/// The variable holding the catalog page shown.
const PAGE_VAR: &str = "catalog.page";

/// A list row's title and description limits (WhatsApp's).
const ROW_TITLE: usize = 24;
const ROW_DESCRIPTION: usize = 72;

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn num(n: i64) -> Value {
    Value::Num(Decimal::from(n))
}

impl Run<'_, '_> {
    /// Ask the shop `op` for the node the flow is at, and wait for the answer.
    pub(super) fn shop_call(&mut self, mut st: FlowState, op: Op) -> FlowState {
        st.calls += 1;
        let key = format!(
            "{}\0{}\0{}\0{}\0{}\0{}",
            self.ctx.contact_key.unwrap_or(""),
            st.flow.as_deref().unwrap_or(""),
            st.node.as_deref().unwrap_or(""),
            st.started_at_ms,
            self.ctx.now_ms,
            st.calls
        );
        let call = Call {
            id: format!("shop-{}", content_hash(&key)),
            op,
        };
        self.actions.push(FlowAction::Commerce(call.clone()));
        st.commerce = Some(call);
        st
    }

    /// A shop node reached: its call.
    pub(super) fn shop_node(&mut self, st: FlowState, kind: &NodeKind) -> FlowState {
        let env = Env {
            vars: &st.vars,
            contact: &self.contact,
        };
        let op = match kind {
            NodeKind::Catalog(c) => Op::Catalog {
                category: c.category.clone(),
                page: 0,
                per_page: c.per_page,
            },
            NodeKind::Cart(CartSpec::Add { sku, qty }) => {
                let quantity = qty
                    .render(&env)
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|q| (1..=1000).contains(q));
                match quantity {
                    Some(quantity) => Op::CartAdd {
                        sku: sku.render(&env).trim().to_string(),
                        quantity,
                    },
                    // Not a quantity one can order: nothing is added.
                    None => Op::CartAdd {
                        sku: String::new(),
                        quantity: 1,
                    },
                }
            }
            NodeKind::Cart(CartSpec::Remove { sku }) => Op::CartRemove {
                sku: sku.render(&env).trim().to_string(),
            },
            NodeKind::Cart(CartSpec::Clear) => Op::CartClear,
            NodeKind::Cart(CartSpec::Show) => Op::CartShow,
            NodeKind::Checkout { name, address } => Op::Checkout {
                name: name
                    .as_ref()
                    .map(|t| t.render(&env))
                    .filter(|s| !s.is_empty()),
                address: address
                    .as_ref()
                    .map(|t| t.render(&env))
                    .filter(|s| !s.is_empty()),
            },
            NodeKind::Payment(p) => Op::Payment {
                order: match st.vars.get("order.number") {
                    Some(v) => expr::display(v),
                    None => String::new(),
                },
                provider: p.provider.clone(),
                method: p.method,
                bank: p.bank.clone(),
                store: p.store.clone(),
                expires_ms: p.expires_ms,
            },
            NodeKind::Voucher { code } => Op::Voucher {
                code: code.render(&env).trim().to_string(),
            },
            NodeKind::CustomOrder { description, image } => Op::CustomOrder {
                description: description.render(&env).trim().to_string(),
                media_id: image
                    .as_ref()
                    .map(|t| t.render(&env).trim().to_string())
                    .filter(|m| !m.is_empty()),
            },
            _ => Op::Orders,
        };
        self.shop_call(st, op)
    }

    /// A catalog `order` message: the flow with an `order` trigger begins, its order made
    /// first (the flow runs from its start when the answer comes). None when no flow has one.
    pub(super) fn catalog_order(
        &mut self,
        items: &[crate::whatsapp::event::OrderItem],
    ) -> Option<FlowState> {
        let access = self.contact.access;
        let (flow, start) = self.flows.flows().iter().find_map(|f| {
            (f.access <= access)
                .then(|| {
                    f.triggers.iter().find_map(|t| match &t.on {
                        Trigger::Order { start } => {
                            Some((f, start.clone().unwrap_or_else(|| f.start.clone())))
                        }
                        _ => None,
                    })
                })
                .flatten()
        })?;
        let mut st = FlowState {
            flow: Some(flow.id.clone()),
            version: Some(flow.version.clone()),
            node: Some(start),
            started_at_ms: self.ctx.now_ms,
            last_activity_ms: self.ctx.now_ms,
            ..FlowState::default()
        };
        self.stamp(&mut st);
        let op = Op::CatalogOrder {
            wamid: self.message_id.clone().unwrap_or_default(),
            items: items
                .iter()
                .map(|i| crate::commerce::CatalogItem {
                    sku: i.product_retailer_id.clone(),
                    quantity: i.quantity,
                    price: i.item_price.to_string(),
                    currency: i.currency.clone(),
                })
                .collect(),
        };
        Some(self.shop_call(st, op))
    }

    /// The customer answered a catalog: the next page, or the product chosen (looked up).
    pub(super) fn catalog_reply(
        &mut self,
        st: FlowState,
        spec: &CatalogSpec,
        text: Option<&str>,
        reply_id: Option<&str>,
    ) -> FlowState {
        let typed = text.map(str::trim).filter(|t| !t.is_empty());
        let more = reply_id == Some(MORE_ROW) || typed.is_some_and(|t| t == spec.more);
        if more {
            let page = match st.vars.get(PAGE_VAR) {
                Some(Value::Num(n)) => n.to_string().parse::<u32>().unwrap_or(0) + 1,
                _ => 1,
            };
            return self.shop_call(
                st,
                Op::Catalog {
                    category: spec.category.clone(),
                    page,
                    per_page: spec.per_page,
                },
            );
        }
        match reply_id.or(typed) {
            Some(sku) => self.shop_call(
                st,
                Op::Product {
                    sku: sku.to_string(),
                },
            ),
            None => {
                self.say(&st, &spec.retry);
                st
            }
        }
    }

    /// Send a template rendered with the flow's variables.
    fn say(&mut self, st: &FlowState, t: &Template) {
        let env = Env {
            vars: &st.vars,
            contact: &self.contact,
        };
        self.actions.push(FlowAction::Send(OutboundMessage::Text {
            body: t.render(&env),
            preview_url: false,
        }));
    }

    fn say_text(&mut self, body: &str) {
        self.actions.push(FlowAction::Send(OutboundMessage::Text {
            body: body.to_string(),
            preview_url: false,
        }));
    }

    /// Where a shop node goes with `result`: its branch, else `next`.
    fn shop_result(&mut self, st: FlowState, result: &str) -> Result<FlowState, FlowError> {
        let flow = self.flow(&st).expect("valid");
        let node = &flow.nodes[st.node.as_deref().unwrap_or_default()];
        match node.results.get(result) {
            Some(to) => {
                let to = to.clone();
                self.run(st, Some(to))
            }
            None => self.continue_after_node(st),
        }
    }

    /// The shop's answer to the node the flow waits at.
    pub(super) fn shop_answer(
        &mut self,
        mut st: FlowState,
        op: &Op,
        answer: &Answer,
    ) -> Result<FlowState, FlowError> {
        let flow = self.flow(&st).expect("valid");
        let node = &flow.nodes[st.node.as_deref().unwrap_or_default()];
        if let (Op::CatalogOrder { .. }, Answer::Checkout(outcome)) = (op, answer) {
            // The flow an `order` trigger started begins now, with the order made.
            set_order(&mut st, outcome);
            let start = st.node.clone();
            return self.run(st, start);
        }
        if let Answer::Failed { .. } = answer {
            st.awaiting_input = false;
            return match node.on_error.clone() {
                Some(to) => self.run(st, Some(to)),
                None => {
                    self.say_text(
                        "Sorry, the shop is not available right now. Please try again later.",
                    );
                    self.end(st)
                }
            };
        }
        match (&node.kind, answer) {
            (
                NodeKind::Catalog(spec),
                Answer::Page {
                    products,
                    page,
                    more,
                },
            ) => {
                if products.is_empty() && *page == 0 {
                    self.say_text("Sorry, there is nothing to order right now.");
                    return self.end(st);
                }
                st.vars.insert(PAGE_VAR.into(), num(*page as i64));
                let env = Env {
                    vars: &st.vars,
                    contact: &self.contact,
                };
                let mut rows: Vec<ListRow> = products
                    .iter()
                    .map(|p| ListRow {
                        id: clip(&p.sku, 200),
                        title: clip(&p.name, ROW_TITLE),
                        description: Some(clip(&text::row_description(p), ROW_DESCRIPTION)),
                    })
                    .collect();
                if *more {
                    rows.push(ListRow {
                        id: MORE_ROW.into(),
                        title: clip(&spec.more, ROW_TITLE),
                        description: None,
                    });
                }
                let body = spec.prompt.render(&env);
                self.actions.push(FlowAction::Send(OutboundMessage::List {
                    header: None,
                    body: if body.trim().is_empty() {
                        "Our products".into()
                    } else {
                        body
                    },
                    footer: None,
                    button: spec.button.clone(),
                    sections: vec![ListSection { title: None, rows }],
                }));
                st.awaiting_input = true;
                Ok(st)
            }
            (NodeKind::Catalog(spec), Answer::Product(found)) => match found {
                Some(p) if p.can_sell(1) => {
                    set_product(&mut st, p);
                    st.vars.insert(spec.save.clone(), Value::Str(p.sku.clone()));
                    st.vars.remove(PAGE_VAR);
                    st.awaiting_input = false;
                    st.retries = 0;
                    self.continue_after_node(st)
                }
                Some(p) => {
                    set_product(&mut st, p);
                    self.say(&st, &spec.sold_out);
                    Ok(st)
                }
                None => {
                    self.say(&st, &spec.retry);
                    Ok(st)
                }
            },
            (NodeKind::Cart(_), Answer::Cart { changed, cart }) => {
                let result = match changed {
                    CartChanged::Ok => "ok",
                    CartChanged::OutOfStock => "out_of_stock",
                    CartChanged::Unknown => "unknown",
                };
                st.vars
                    .insert("cart.result".into(), Value::Str(result.into()));
                let user = UserKey::from(self.ctx.contact_key.unwrap_or(""));
                let (total, discount, count, items) = match cart {
                    Some(c) => {
                        let (_, off, total) = voucher::cart_totals(c, &user, self.ctx.now_ms);
                        (total, off, text::cart_count(c), text::cart_lines(c))
                    }
                    None => {
                        let zero = crate::domain::Money::zero(Default::default());
                        (zero, zero, 0, String::new())
                    }
                };
                st.vars
                    .insert("cart.total".into(), Value::Num(total.amount));
                st.vars
                    .insert("cart.discount".into(), Value::Num(discount.amount));
                st.vars.insert("cart.count".into(), num(count));
                st.vars.insert("cart.items".into(), Value::Str(items));
                st.vars.insert(
                    "commerce.currency".into(),
                    Value::Str(total.currency.to_string()),
                );
                self.shop_result(st, result)
            }
            (NodeKind::Checkout { .. }, Answer::Checkout(outcome)) => {
                let result = set_order(&mut st, outcome);
                if result == "ok" || node.results.contains_key(result) {
                    return self.shop_result(st, result);
                }
                match outcome {
                    Checkout::Empty => self.say_text("Your cart is empty."),
                    Checkout::VoucherRefused { code, reason } => self.say_text(&format!(
                        "Sorry, the voucher {code} is {}. Nothing was ordered; your cart is kept without it.",
                        voucher::reason_text(reason)
                    )),
                    _ => {
                        let name = match st.vars.get("product.name") {
                            Some(Value::Str(n)) => n.clone(),
                            _ => String::new(),
                        };
                        self.say_text(&format!(
                            "Sorry, {name} cannot be had in that quantity. Nothing was ordered."
                        ))
                    }
                }
                self.end(st)
            }
            (NodeKind::Payment(spec), Answer::Payment(p)) => match p {
                PaymentAnswer::Opened {
                    payment_id,
                    instructions,
                    amount,
                    order,
                } => {
                    let text = payment::instructions_text(
                        instructions,
                        amount,
                        order,
                        &payment::duration_text(spec.expires_ms),
                    );
                    st.vars.insert("payment.id".into(), num(*payment_id));
                    st.vars.insert(
                        "payment.status".into(),
                        Value::Str(PaymentStatus::Pending.as_str().into()),
                    );
                    st.vars
                        .insert("payment.text".into(), Value::Str(text.clone()));
                    st.payment = Some(*payment_id);
                    let qris = match instructions {
                        crate::payments::Instructions::Qris {
                            image_url: Some(url),
                            ..
                        } => Some(url.clone()),
                        _ => None,
                    };
                    match st.early_payment.take() {
                        // Its callback came first: settled now (no instructions to pay what
                        // is paid).
                        Some(early) if early.id == *payment_id => {
                            if payment::flow_result(early.status).is_none() {
                                self.say_instructions(text, qris);
                            }
                            if let Some(t) = early.access {
                                self.say_text(&t);
                            }
                            self.payment_settled(st, early.status)
                        }
                        early => {
                            self.say_instructions(text, qris);
                            self.other_news(early);
                            Ok(st)
                        }
                    }
                }
                PaymentAnswer::Settled { payment_id, status } => {
                    st.vars.insert("payment.id".into(), num(*payment_id));
                    let early = st.early_payment.take();
                    self.other_news(early.filter(|e| e.id != *payment_id));
                    self.payment_settled(st, *status)
                }
                PaymentAnswer::Refused { reason } => {
                    let early = st.early_payment.take();
                    self.other_news(early);
                    tracing::warn!(%reason, "A payment could not be opened.");
                    st.vars
                        .insert("payment.error".into(), Value::Str(reason.clone()));
                    st.vars.insert(
                        "payment.status".into(),
                        Value::Str(PaymentStatus::Failed.as_str().into()),
                    );
                    self.payment_result(st, "failed")
                }
            },
            (NodeKind::Voucher { .. }, Answer::Voucher(applied)) => {
                let result = set_voucher(&mut st, applied);
                self.shop_result(st, result)
            }
            (NodeKind::CustomOrder { .. }, Answer::CustomOrder(id)) => {
                let result = match id {
                    Some(id) => {
                        st.vars.insert("custom_order.id".into(), num(*id));
                        "ok"
                    }
                    None => "empty",
                };
                st.vars
                    .insert("custom_order.result".into(), Value::Str(result.into()));
                self.shop_result(st, result)
            }
            (NodeKind::OrderStatus { text: some, empty }, Answer::Orders(orders)) => {
                st.vars
                    .insert("orders.count".into(), num(orders.len() as i64));
                st.vars.insert(
                    "orders.text".into(),
                    Value::Str(text::order_summaries(orders)),
                );
                let t = if orders.is_empty() { empty } else { some };
                let t = t.clone();
                self.say(&st, &t);
                self.continue_after_node(st)
            }
            // An answer that does not fit the node (the flow changed under it): go on.
            _ => self.continue_after_node(st),
        }
    }
}

impl Run<'_, '_> {
    /// What to do to pay: a QRIS as its image with the text as caption, else the text.
    fn say_instructions(&mut self, text: String, qris_image: Option<String>) {
        match qris_image {
            Some(url) => self.actions.push(FlowAction::Send(OutboundMessage::Media {
                media_type: MediaType::Image,
                source: MediaSource::Link(url),
                caption: Some(text),
                filename: None,
            })),
            None => self.say_text(&text),
        }
    }

    /// Another payment's news kept while this one was being opened (an earlier order's):
    /// told as a customer with no flow waiting on it hears it.
    fn other_news(&mut self, early: Option<super::EarlyPayment>) {
        for t in early.iter().flat_map(|e| e.access.iter().chain(&e.news)) {
            self.say_text(t);
        }
    }

    /// The payment the flow waits on moved to `status`: its result, if it is one.
    pub(super) fn payment_settled(
        &mut self,
        mut st: FlowState,
        status: PaymentStatus,
    ) -> Result<FlowState, FlowError> {
        st.vars
            .insert("payment.status".into(), Value::Str(status.as_str().into()));
        match payment::flow_result(status) {
            Some(result) => {
                st.payment = None;
                self.payment_result(st, result)
            }
            // Still open, or held for the owner (a mismatch, money after expiry): waits.
            None => Ok(st),
        }
    }

    /// A payment node's result: its branch; `paid` without one goes to `next`, the others
    /// say so and end.
    fn payment_result(&mut self, st: FlowState, result: &str) -> Result<FlowState, FlowError> {
        let flow = self.flow(&st).expect("valid");
        let node = &flow.nodes[st.node.as_deref().unwrap_or_default()];
        if result == "paid" || node.results.contains_key(result) {
            return self.shop_result(st, result);
        }
        self.say_text(if result == "expired" {
            "The time to pay has passed; the order is cancelled."
        } else {
            "Sorry, the payment could not be made; the order is cancelled."
        });
        self.end(st)
    }
}

/// `order.*` from a checkout's outcome; its result (`ok`, `out_of_stock`, `unknown`,
/// `empty`).
fn set_order(st: &mut FlowState, outcome: &Checkout) -> &'static str {
    let result = match outcome {
        Checkout::Ordered { order } => {
            st.vars.insert(
                "order.number".into(),
                Value::Str(order.order_number.clone()),
            );
            st.vars
                .insert("order.total".into(), Value::Num(order.total.amount));
            st.vars
                .insert("order.items".into(), Value::Str(text::order_lines(order)));
            st.vars
                .insert("order.status".into(), Value::Str(order.status.to_string()));
            st.vars.insert(
                "commerce.currency".into(),
                Value::Str(order.total.currency.to_string()),
            );
            "ok"
        }
        Checkout::OutOfStock { sku, name } => {
            st.vars
                .insert("product.sku".into(), Value::Str(sku.clone()));
            st.vars
                .insert("product.name".into(), Value::Str(name.clone()));
            "out_of_stock"
        }
        Checkout::Unknown { sku } => {
            st.vars
                .insert("product.sku".into(), Value::Str(sku.clone()));
            st.vars
                .insert("product.name".into(), Value::Str(sku.clone()));
            "unknown"
        }
        Checkout::Empty => "empty",
        Checkout::VoucherRefused { code, reason } => {
            set_voucher_refused(st, code, reason);
            "voucher_invalid"
        }
    };
    st.vars
        .insert("order.result".into(), Value::Str(result.into()));
    result
}

/// `voucher.*` and the cart's totals from a `voucher` node's answer; its result (`ok`,
/// `invalid`).
fn set_voucher(st: &mut FlowState, applied: &VoucherApplied) -> &'static str {
    match applied {
        VoucherApplied::Applied {
            code,
            discount,
            total,
            ..
        } => {
            st.vars
                .insert("voucher.code".into(), Value::Str(code.clone()));
            st.vars
                .insert("voucher.discount".into(), Value::Num(discount.amount));
            st.vars
                .insert("voucher.reason".into(), Value::Str(String::new()));
            st.vars
                .insert("voucher.result".into(), Value::Str("ok".into()));
            st.vars
                .insert("cart.total".into(), Value::Num(total.amount));
            st.vars
                .insert("cart.discount".into(), Value::Num(discount.amount));
            st.vars.insert(
                "commerce.currency".into(),
                Value::Str(total.currency.to_string()),
            );
            "ok"
        }
        VoucherApplied::Refused { code, reason } => {
            set_voucher_refused(st, code, reason);
            "invalid"
        }
    }
}

/// `voucher.*` for a voucher that takes nothing off.
fn set_voucher_refused(st: &mut FlowState, code: &str, reason: &VoucherRefusal) {
    st.vars
        .insert("voucher.code".into(), Value::Str(code.into()));
    st.vars.insert("voucher.discount".into(), num(0));
    st.vars.insert(
        "voucher.reason".into(),
        Value::Str(voucher::reason_text(reason)),
    );
    st.vars
        .insert("voucher.result".into(), Value::Str(reason.key().into()));
}

/// `product.*` from a product.
fn set_product(st: &mut FlowState, p: &Product) {
    st.vars
        .insert("product.sku".into(), Value::Str(p.sku.clone()));
    st.vars
        .insert("product.name".into(), Value::Str(p.name.clone()));
    st.vars
        .insert("product.price".into(), Value::Num(p.price.amount));
    st.vars.insert(
        "product.description".into(),
        Value::Str(p.description.clone().unwrap_or_default()),
    );
    st.vars.insert(
        "product.stock".into(),
        p.stock.map(num).unwrap_or(Value::Str(String::new())),
    );
    st.vars.insert(
        "commerce.currency".into(),
        Value::Str(p.price.currency.to_string()),
    );
}
