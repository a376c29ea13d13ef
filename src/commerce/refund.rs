//! A refund, decided (pure): whether a payment may be refunded, how much is left to give
//! back, the amount a request asks, whether the refunds add up to the whole payment, the key
//! that makes a retry the same refund, and what the customer reads.
//!
//! A refund gives back what was received (`paid_amount` when the gateway said it, else the
//! payment's amount: a MISMATCH may have brought more or less). Partial refunds leave the
//! payment's status as it is (PAID stays PAID: the order stands, for what was kept); the one
//! that brings the refunded total to what was received moves it to REFUNDED through the
//! payment rules' own `(Paid | PaidLate | Mismatch, Refunded) => Refunded`.

use crate::domain::{Money, PaymentStatus};
use crate::payments::GatewayStatus;

/// Whether a payment in `status` holds money that can be given back.
pub fn refundable(status: PaymentStatus) -> bool {
    matches!(
        status,
        PaymentStatus::Paid | PaymentStatus::PaidLate | PaymentStatus::Mismatch
    )
}

/// What was received: the amount the gateway said was paid, else the amount asked.
pub fn received(amount: &Money, paid: Option<&Money>) -> Money {
    paid.copied().unwrap_or(*amount)
}

/// What is left to refund of `received` after `taken` (refunds made or under way).
pub fn remaining(received: &Money, taken: &[Money]) -> Money {
    let mut left = *received;
    for t in taken {
        left = left.minus_saturating(t).unwrap_or(left);
    }
    left
}

/// Why a refund's amount is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountRefusal {
    /// Nothing, or nothing left.
    Nothing,
    /// More than is left to refund.
    TooMuch { left: Money },
    /// Another currency than the payment's.
    Currency,
}

/// The amount to refund: `asked`, or all that is `left` when none is asked.
pub fn amount_to_refund(asked: Option<Money>, left: &Money) -> Result<Money, AmountRefusal> {
    let amount = asked.unwrap_or(*left);
    if amount.currency != left.currency {
        return Err(AmountRefusal::Currency);
    }
    if amount.is_zero() {
        return Err(AmountRefusal::Nothing);
    }
    if amount.amount > left.amount {
        return Err(AmountRefusal::TooMuch { left: *left });
    }
    Ok(amount)
}

/// Where a payment in `current` goes once its refunds that count are `refunded`: REFUNDED
/// when they add up to what was `received`; None (no change) for a partial refund.
pub fn after_refunds(
    current: PaymentStatus,
    received: &Money,
    refunded: &[Money],
) -> Option<PaymentStatus> {
    if !remaining(received, refunded).is_zero() {
        return None;
    }
    crate::commerce::payment::settle(current, received, 0, GatewayStatus::Refunded, None, 0)
}

/// The refund's key, also its key at the gateway (Midtrans allows `[A-Za-z0-9_-]`, and 64
/// characters are kept to): the payment's gateway id and the owner's `given` key, or, when
/// none is given, the amount asked (`full` when none): so the same request sent again (a
/// retry after a timeout) is the same refund. Two refunds of the same amount need two keys.
/// Err: a given key that is not 1 to 40 of `[A-Za-z0-9_-]`.
pub fn refund_key(
    gateway_id: &str,
    given: Option<&str>,
    asked: Option<&Money>,
) -> Result<String, &'static str> {
    match given {
        Some(k) => {
            let ok = (1..=40).contains(&k.len())
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err("idempotency_key must be 1 to 40 of A-Z, a-z, 0-9, `-` and `_`");
            }
            Ok(format!("{gateway_id}-{k}"))
        }
        None => Ok(match asked {
            Some(m) => format!("{gateway_id}-A{}", m.plain().replace('.', "_")),
            None => format!("{gateway_id}-full"),
        }),
    }
}

/// What the customer reads of a refund of `amount` for `order`: the whole payment when
/// `whole`, else a part of it.
pub fn refund_text(order: &str, amount: &Money, whole: bool) -> String {
    if whole {
        format!(
            "Your payment of {} for order {order} was refunded.",
            amount.display()
        )
    } else {
        format!(
            "{} of your payment for order {order} was refunded.",
            amount.display()
        )
    }
}

/// What the owner reads when a refund the gateway took as pending failed there.
pub fn refund_failed_text(order: &str, amount: &Money, provider: &str, why: &str) -> String {
    format!(
        "The refund of {} for order {order} failed at {provider} ({why}): nothing was given back. Refund it again, or by hand.",
        amount.display()
    )
}

/// The request id of the owner's message on the failure of refund `id`.
pub fn refund_failed_request(id: i64) -> String {
    format!("refund:{id}:failed")
}

/// The request id of the customer's message on refund `id`: once, whatever retries it.
pub fn refund_request(id: i64) -> String {
    format!("refund:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;
    use PaymentStatus as P;

    fn idr(s: &str) -> Money {
        Money::parse(s, Currency::IDR).unwrap()
    }

    #[test]
    fn only_money_received_can_be_refunded() {
        for s in [P::Paid, P::PaidLate, P::Mismatch] {
            assert!(refundable(s), "{s}");
        }
        for s in [P::Pending, P::Expired, P::Failed, P::Cancelled, P::Refunded] {
            assert!(!refundable(s), "{s}");
        }
        assert_eq!(received(&idr("50000"), Some(&idr("45000"))), idr("45000"));
        assert_eq!(received(&idr("50000"), None), idr("50000"));
    }

    #[test]
    fn amounts_are_checked_against_what_is_left() {
        let left = remaining(&idr("50000"), &[idr("20000")]);
        assert_eq!(left, idr("30000"));
        assert_eq!(amount_to_refund(None, &left), Ok(idr("30000")));
        assert_eq!(
            amount_to_refund(Some(idr("10000")), &left),
            Ok(idr("10000"))
        );
        assert_eq!(
            amount_to_refund(Some(idr("30001")), &left),
            Err(AmountRefusal::TooMuch { left })
        );
        assert_eq!(
            amount_to_refund(Some(idr("0")), &left),
            Err(AmountRefusal::Nothing)
        );
        let usd = Money::parse("1", "USD".parse().unwrap()).unwrap();
        assert_eq!(
            amount_to_refund(Some(usd), &left),
            Err(AmountRefusal::Currency)
        );
        let none_left = remaining(&idr("50000"), &[idr("20000"), idr("30000")]);
        assert_eq!(
            amount_to_refund(None, &none_left),
            Err(AmountRefusal::Nothing)
        );
    }

    #[test]
    fn only_the_whole_amount_refunds_the_payment() {
        let got = idr("50000");
        assert_eq!(after_refunds(P::Paid, &got, &[idr("20000")]), None);
        assert_eq!(
            after_refunds(P::Paid, &got, &[idr("20000"), idr("30000")]),
            Some(P::Refunded)
        );
        assert_eq!(after_refunds(P::Mismatch, &got, &[got]), Some(P::Refunded));
        assert_eq!(after_refunds(P::Refunded, &got, &[got]), None);
    }

    #[test]
    fn keys_make_a_retry_the_same_refund() {
        assert_eq!(
            refund_key("PAY-00000001", Some("r-1"), None),
            Ok("PAY-00000001-r-1".into())
        );
        assert!(refund_key("PAY-00000001", Some("a b"), None).is_err());
        assert!(refund_key("PAY-00000001", Some(&"x".repeat(41)), None).is_err());
        assert_eq!(
            refund_key("PAY-00000001", None, Some(&idr("12.5"))),
            Ok("PAY-00000001-A12_5".into())
        );
        assert_eq!(
            refund_key("PAY-00000001", None, None),
            Ok("PAY-00000001-full".into())
        );
    }

    #[test]
    fn the_customer_reads_what_came_back() {
        assert_eq!(
            refund_text("ORD-000001", &idr("50000"), true),
            "Your payment of Rp 50.000 for order ORD-000001 was refunded."
        );
        assert_eq!(
            refund_text("ORD-000001", &idr("20000"), false),
            "Rp 20.000 of your payment for order ORD-000001 was refunded."
        );
    }
}
