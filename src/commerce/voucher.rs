//! Vouchers in the conversation: the decision (pure, [`decide`]: in `domain::voucher`, so
//! that the store's checkout applies the same rule inside its transaction), what the customer
//! reads of a refusal, and what a cart with a voucher comes to.

use crate::domain::{Money, UserKey, VoucherRefusal};
use crate::store::Cart;

pub use crate::domain::voucher::{decide, discount, voucher_code};

/// `{{voucher.reason}}`: why the voucher takes nothing off, to follow "That voucher is …".
pub fn reason_text(reason: &VoucherRefusal) -> String {
    match reason {
        VoucherRefusal::Unknown => "unknown".into(),
        VoucherRefusal::NotYetValid => "not yet valid".into(),
        VoucherRefusal::Expired => "expired".into(),
        VoucherRefusal::UsedUp => "used up".into(),
        VoucherRefusal::AlreadyUsed => "already used by you".into(),
        VoucherRefusal::Inactive => "inactive".into(),
        VoucherRefusal::BelowMinimum { min_total } => {
            format!("only for orders of at least {}", min_total.display())
        }
    }
}

/// What the cart's voucher takes off its subtotal now (zero without one, or when it could
/// not be used now: the checkout then says why).
pub fn cart_discount(cart: &Cart, user: &UserKey, now: i64) -> Money {
    let subtotal = cart.subtotal();
    cart.voucher_terms
        .as_ref()
        .and_then(|v| decide(Some(v), user, now, subtotal, false).ok())
        .unwrap_or(Money::zero(cart.currency))
}

/// The cart's subtotal, its voucher's discount and the total after it.
pub fn cart_totals(cart: &Cart, user: &UserKey, now: i64) -> (Money, Money, Money) {
    let subtotal = cart.subtotal();
    let off = cart_discount(cart, user, now);
    let total = subtotal.minus_saturating(&off).unwrap_or(subtotal);
    (subtotal, off, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, Voucher, VoucherKind};
    use crate::store::CartLine;
    use rust_decimal::Decimal;

    #[test]
    fn a_refusal_reads_as_the_customer_is_told_it() {
        assert_eq!(
            reason_text(&VoucherRefusal::AlreadyUsed),
            "already used by you"
        );
        assert_eq!(reason_text(&VoucherRefusal::NotYetValid), "not yet valid");
        let min = Money::new(Decimal::from(100_000), Currency::IDR).unwrap();
        assert_eq!(
            reason_text(&VoucherRefusal::BelowMinimum { min_total: min }),
            "only for orders of at least Rp 100.000"
        );
    }

    #[test]
    fn a_cart_with_a_voucher_shows_its_discounted_total() {
        let price = Money::new(Decimal::from(25_000), Currency::IDR).unwrap();
        let mut cart = Cart {
            id: 1,
            currency: Currency::IDR,
            voucher: Some("HEMAT".into()),
            voucher_terms: Some(Voucher {
                code: "HEMAT".into(),
                kind: VoucherKind::Percent,
                value: Decimal::from(10),
                min_total: None,
                valid_from: None,
                valid_to: Some(100),
                usage_limit: None,
                used: 0,
                user_key: None,
                active: true,
                created_at: 0,
                updated_at: 0,
            }),
            lines: vec![CartLine {
                sku: "KOPI".into(),
                name: "Kopi".into(),
                quantity: 2,
                unit_price: price,
                available: true,
            }],
            updated_at: 0,
        };
        let me = UserKey::new("6281");
        let (sub, off, total) = cart_totals(&cart, &me, 50);
        assert_eq!(
            (sub.plain(), off.plain(), total.plain()),
            ("50000".into(), "5000".into(), "45000".into())
        );
        // Expired since: the cart shows the full price.
        assert_eq!(cart_totals(&cart, &me, 101).2.plain(), "50000");
        cart.voucher_terms = None;
        assert_eq!(cart_totals(&cart, &me, 50).2.plain(), "50000");
    }
}
