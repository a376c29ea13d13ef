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
