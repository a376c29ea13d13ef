//! What the customer reads of a cart, an order and a product (pure).

use crate::store::{Cart, Order, Product};

/// "2 × Kopi Arabica — Rp 50.000", a line each.
pub fn cart_lines(cart: &Cart) -> String {
    cart.lines
        .iter()
        .map(|l| {
            let subtotal = l
                .unit_price
                .times(l.quantity as u32)
                .unwrap_or(l.unit_price);
            let mut line = format!("{} × {} — {}", l.quantity, l.name, subtotal.display());
            if !l.available {
                line.push_str(" (not available)");
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Units in the cart.
pub fn cart_count(cart: &Cart) -> i64 {
    cart.lines.iter().map(|l| l.quantity).sum()
}

/// An order's items, a line each.
pub fn order_lines(order: &Order) -> String {
    order
        .items
        .iter()
        .map(|i| format!("{} × {} — {}", i.quantity, i.name, i.subtotal.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// "ORD-000042 — pending, unpaid — Rp 75.000", a line each.
pub fn order_summaries(orders: &[Order]) -> String {
    orders
        .iter()
        .map(|o| {
            format!(
                "{} — {}, {} — {}",
                o.order_number,
                o.status,
                o.payment_status,
                o.total.display()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A catalog row's description: the price, or that it is sold out.
pub fn row_description(p: &Product) -> String {
    if p.can_sell(1) {
        p.price.display()
    } else {
        format!("{} · sold out", p.price.display())
    }
}

/// A custom order's new status, for its customer.
pub fn custom_order_news(o: &crate::store::CustomOrder) -> String {
    use crate::domain::CustomOrderStatus as S;
    let n = o.id;
    let notes = o
        .notes
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .map(|t| format!("\n{t}"))
        .unwrap_or_default();
    match o.status {
        S::New => format!("Your custom order #{n} is received.{notes}"),
        S::Quoted => format!("Your custom order #{n} has a quote:{notes}"),
        S::Accepted => format!("Your custom order #{n} is accepted.{notes}"),
        S::Rejected => format!("Sorry, your custom order #{n} cannot be made.{notes}"),
        S::Done => format!("Your custom order #{n} is ready. Thank you!{notes}"),
    }
}

/// A new custom order, for the account's owner.
pub fn custom_order_for_owner(o: &crate::store::CustomOrder) -> String {
    let picture = if o.media_id.is_some() {
        " (with a picture)"
    } else {
        ""
    };
    format!(
        "New custom order #{} from +{}{picture}:\n{}",
        o.id,
        o.user_key.as_str(),
        o.description
    )
}

/// An order's new status, for its customer.
pub fn order_status_news(order: &Order) -> String {
    use crate::domain::OrderStatus as S;
    let n = &order.order_number;
    match order.status {
        S::Pending => format!("Order {n} is waiting for payment."),
        S::Processing => format!("Order {n} is being prepared."),
        S::Completed => format!("Order {n} is completed. Thank you!"),
        S::Cancelled => format!("Order {n} is cancelled."),
    }
}
