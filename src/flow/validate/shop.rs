//! The shop nodes compiled (catalog, cart, payment) and the variables the shop nodes set.

use super::*;

/// What a shop node sets, besides a catalog's `save`.
pub(super) const PRODUCT_VARS: [&str; 6] = [
    "product.sku",
    "product.name",
    "product.price",
    "product.description",
    "product.stock",
    "commerce.currency",
];
pub(super) const CART_VARS: [&str; 6] = [
    "cart.result",
    "cart.total",
    "cart.count",
    "cart.items",
    "cart.sku",
    "commerce.currency",
];
pub(super) const ORDER_VARS: [&str; 8] = [
    "order.number",
    "order.total",
    "order.items",
    "order.status",
    "commerce.currency",
    "product.sku",
    "product.name",
    "order.result",
];
pub(super) const VOUCHER_VARS: [&str; 7] = [
    "voucher.code",
    "voucher.discount",
    "voucher.reason",
    "voucher.result",
    "cart.total",
    "cart.discount",
    "commerce.currency",
];
pub(super) const CUSTOM_ORDER_VARS: [&str; 2] = ["custom_order.id", "custom_order.result"];
pub(super) const ORDERS_VARS: [&str; 2] = ["orders.count", "orders.text"];
pub(super) const PAYMENT_VARS: [&str; 4] = [
    "payment.id",
    "payment.status",
    "payment.error",
    "payment.text",
];

pub(super) fn compile_catalog(cx: &mut Ctx, name: &str, c: &RawCatalog) -> NodeKind {
    let per_page = c.per_page.unwrap_or(9);
    if !(1..=9).contains(&per_page) {
        cx.at(
            name,
            "per_page",
            "`per_page` must be 1 to 9 (a WhatsApp list has 10 rows, one of them \"More\")",
        );
    }
    let button = c.button.clone().unwrap_or_else(|| "View products".into());
    if button.chars().count() > 20 {
        cx.at(
            name,
            "button",
            "`button` is at most 20 characters (WhatsApp's limit)",
        );
    }
    let more = c.more.clone().unwrap_or_else(|| "More…".into());
    if more.chars().count() > 24 {
        cx.at(
            name,
            "more",
            "`more` is at most 24 characters (a list row's title)",
        );
    }
    let save = c.save.clone().unwrap_or_else(|| "sku".into());
    if save.is_empty() || save.starts_with("product.") {
        cx.at(
            name,
            "save",
            "`save` must name a variable of its own (not product.*)",
        );
    }
    NodeKind::Catalog(Box::new(CatalogSpec {
        category: c.category.clone(),
        save,
        prompt: cx.tpl(name, c.prompt.as_deref().unwrap_or("Our products")),
        button,
        more,
        sold_out: cx.tpl(
            name,
            c.sold_out
                .as_deref()
                .unwrap_or("Sorry, {{product.name}} is sold out."),
        ),
        retry: cx.tpl(
            name,
            c.retry
                .as_deref()
                .unwrap_or("Please choose a product from the list."),
        ),
        per_page: per_page.clamp(1, 9),
    }))
}

pub(super) fn compile_cart(cx: &mut Ctx, name: &str, c: &RawCart) -> NodeKind {
    let chosen = [c.add.is_some(), c.remove.is_some(), c.clear, c.show]
        .iter()
        .filter(|b| **b)
        .count();
    if chosen != 1 {
        cx.at(
            name,
            "cart",
            "cart needs exactly one of `add`, `remove`, `clear: true`, `show: true`",
        );
    }
    if let Some(a) = &c.add {
        let qty = match &a.qty {
            None => "1".to_string(),
            Some(serde_norway::Value::Number(n)) => match n.as_u64() {
                Some(q) if (1..=1000).contains(&q) => q.to_string(),
                _ => {
                    cx.at(name, "qty", "`qty` must be a whole number from 1 to 1000");
                    "1".to_string()
                }
            },
            Some(serde_norway::Value::String(t)) => t.clone(),
            Some(_) => {
                cx.at(name, "qty", "`qty` must be a number or a template");
                "1".to_string()
            }
        };
        return NodeKind::Cart(CartSpec::Add {
            sku: cx.tpl(name, &a.sku),
            qty: cx.tpl(name, &qty),
        });
    }
    if let Some(r) = &c.remove {
        if r.qty.is_some() {
            cx.at(name, "qty", "`remove` takes only `sku`");
        }
        return NodeKind::Cart(CartSpec::Remove {
            sku: cx.tpl(name, &r.sku),
        });
    }
    if c.clear {
        NodeKind::Cart(CartSpec::Clear)
    } else {
        NodeKind::Cart(CartSpec::Show)
    }
}

pub(super) fn compile_payment(cx: &mut Ctx, name: &str, p: &RawPayment) -> NodeKind {
    let method = match p.method.parse::<crate::domain::PaymentMethod>() {
        Ok(m) => m,
        Err(_) => {
            cx.at(
                name,
                "method",
                format!(
                    "payment method `{}` must be one of va, bank_transfer, qris, retail, link, manual",
                    p.method
                ),
            );
            crate::domain::PaymentMethod::Manual
        }
    };
    use crate::domain::PaymentMethod as M;
    if p.bank.is_some() && !matches!(method, M::Va | M::BankTransfer) {
        cx.at(
            name,
            "bank",
            "`bank` is only for method va or bank_transfer",
        );
    }
    if matches!(method, M::Va) && p.bank.is_none() {
        cx.at(
            name,
            "method",
            "method va needs `bank` (bca, bni, bri, mandiri, permata, ...)",
        );
    }
    match (&p.store, method) {
        (Some(s), M::Retail) if !["indomaret", "alfamart"].contains(&s.as_str()) => {
            cx.at(
                name,
                "store",
                format!("store `{s}` must be indomaret or alfamart"),
            );
        }
        (None, M::Retail) => cx.at(
            name,
            "method",
            "method retail needs `store` (indomaret or alfamart)",
        ),
        (Some(_), m) if m != M::Retail => cx.at(name, "store", "`store` is only for method retail"),
        _ => {}
    }
    let expires_ms = match &p.expires {
        None => 3_600_000,
        Some(e) => match parse_duration(e) {
            Some(ms) if (300_000..=7 * 86_400_000).contains(&ms) => ms,
            _ => {
                cx.at(
                    name,
                    "expires",
                    format!("expires `{e}` must be a duration from 5m to 7d"),
                );
                3_600_000
            }
        },
    };
    NodeKind::Payment(Box::new(PaymentSpec {
        provider: p.provider.clone(),
        method,
        bank: p.bank.as_ref().map(|b| b.to_lowercase()),
        store: p.store.clone(),
        expires_ms,
    }))
}
