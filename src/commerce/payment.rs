//! A payment's life, decided (pure): where a gateway's news moves it, and what the customer
//! reads to pay.
//!
//! Transitions only move forward. A `PAID` is never taken from a callback alone: the caller
//! asks the gateway's status API and decides on that answer. An amount that differs from the
//! payment's is `MISMATCH` (held for the owner, never `PAID`); money that arrives after the
//! payment was expired here is `PAID_LATE` (the owner is told; the order is not completed
//! silently).

use crate::domain::{Money, PaymentStatus};
use crate::payments::{GatewayStatus, Instructions};

/// Where a payment in `current` goes on the gateway's `report` (and the amount it says was
/// paid), at `now`; None: no change.
pub fn settle(
    current: PaymentStatus,
    expected: &Money,
    expires_at: i64,
    report: GatewayStatus,
    paid: Option<&Money>,
    now: i64,
) -> Option<PaymentStatus> {
    use PaymentStatus as P;
    let amount_ok = paid.is_none_or(|p| p == expected);
    let next = match (current, report) {
        (P::Pending, GatewayStatus::Paid) if amount_ok => P::Paid,
        (P::Pending, GatewayStatus::Paid) => P::Mismatch,
        (P::Pending, GatewayStatus::Pending) if now >= expires_at => P::Expired,
        (P::Pending, GatewayStatus::Pending) => return None,
        (P::Pending, GatewayStatus::Expired) => P::Expired,
        (P::Pending, GatewayStatus::Failed) => P::Failed,
        (P::Pending, GatewayStatus::Cancelled) => P::Cancelled,
        // Money came after we gave up on it: kept for the owner to decide.
        (P::Expired | P::Failed | P::Cancelled, GatewayStatus::Paid) => P::PaidLate,
        (P::Paid | P::PaidLate | P::Mismatch, GatewayStatus::Refunded) => P::Refunded,
        _ => return None,
    };
    Some(next)
}

/// Whether the owner confirming a payment by hand (a manual transfer seen on the account, a
/// mismatch or late payment accepted) may move it to PAID.
pub fn confirmable(current: PaymentStatus) -> bool {
    matches!(
        current,
        PaymentStatus::Pending | PaymentStatus::Mismatch | PaymentStatus::PaidLate
    )
}

/// The result a flow's `payment` node takes on a status: `paid`, `expired`, `failed`; None
/// while the payment is still open or held for the owner.
pub fn flow_result(status: PaymentStatus) -> Option<&'static str> {
    match status {
        PaymentStatus::Paid => Some("paid"),
        PaymentStatus::Expired | PaymentStatus::Cancelled => Some("expired"),
        PaymentStatus::Failed => Some("failed"),
        PaymentStatus::Pending
        | PaymentStatus::Refunded
        | PaymentStatus::PaidLate
        | PaymentStatus::Mismatch => None,
    }
}

/// What the customer is told of a payment no flow waits on: a receipt, or that the time to
/// pay has passed; None for what the owner settles (a mismatch, money after expiry).
pub fn news_text(status: PaymentStatus, order: &str, amount: &Money) -> Option<String> {
    match status {
        PaymentStatus::Paid => Some(format!(
            "Payment of {} received for order {order}. Thank you!",
            amount.display()
        )),
        PaymentStatus::Expired | PaymentStatus::Cancelled => Some(format!(
            "The time to pay for order {order} has passed; the order is cancelled."
        )),
        PaymentStatus::Failed => Some(format!(
            "The payment for order {order} failed; the order is cancelled."
        )),
        PaymentStatus::Refunded => Some(format!(
            "The payment for order {order} was refunded ({}).",
            amount.display()
        )),
        PaymentStatus::Pending | PaymentStatus::PaidLate | PaymentStatus::Mismatch => None,
    }
}

/// What the account's owner reads of a payment held for them (money after expiry, an amount
/// that differs); None for the statuses that settle themselves.
pub fn owner_news(
    status: PaymentStatus,
    payment_id: i64,
    order: &str,
    amount: &Money,
    paid: Option<&Money>,
) -> Option<String> {
    let paid = paid.map_or_else(|| "an unknown amount".to_string(), Money::display);
    match status {
        PaymentStatus::PaidLate => Some(format!(
            "Payment {payment_id} for order {order} arrived after it had expired ({paid}). \
             The order is not completed: confirm it (POST /admin/v1/payments/{payment_id}/confirm) or refund it."
        )),
        PaymentStatus::Mismatch => Some(format!(
            "Payment {payment_id} for order {order}: {paid} was paid, {} was due. \
             The order is held: confirm it (POST /admin/v1/payments/{payment_id}/confirm) or settle the difference.",
            amount.display()
        )),
        _ => None,
    }
}

/// The request id of the owner's message on payment `id` reaching `status`: once per payment
/// and status, whatever retries it.
pub fn owner_request(id: i64, status: PaymentStatus) -> String {
    format!("owner-payment:{id}:{status}")
}

/// A paid plan as the customer reads it: `Premium: https://… (until 2027-01-06)`.
/// What the customer reads when a payment for plans is paid: each plan's line
/// ([`access_line`]); None for another status or an order without plans.
pub fn access_text(status: PaymentStatus, lines: &[String]) -> Option<String> {
    (status == PaymentStatus::Paid && !lines.is_empty())
        .then(|| format!("Your access:\n{}", lines.join("\n")))
}

pub fn access_line(p: &crate::store::PlanAccess) -> String {
    let until = chrono::DateTime::from_timestamp_millis(p.until)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default();
    match &p.link {
        Some(link) => format!("{}: {link} (until {until})", p.name),
        None => format!("{} (until {until})", p.name),
    }
}

/// What the customer reads to pay `amount` for `order`.
pub fn instructions_text(i: &Instructions, amount: &Money, order: &str, within: &str) -> String {
    let amount = amount.display();
    match i {
        Instructions::VirtualAccount { bank, number } => format!(
            "Please transfer {amount} to {} virtual account {number} within {within} (order {order}).",
            bank.to_uppercase()
        ),
        Instructions::BillPayment {
            bank,
            biller_code,
            bill_key,
        } => format!(
            "Please pay {amount} at {} bill payment: company code {biller_code}, bill key {bill_key}, within {within} (order {order}).",
            bank.to_uppercase()
        ),
        Instructions::Qris { qr_string, image_url } => match (image_url, qr_string) {
            // Sent as the image's caption.
            (Some(_), _) => {
                format!("Please scan this QRIS to pay {amount} within {within} (order {order}).")
            }
            (None, Some(qr)) => format!(
                "Please pay {amount} by QRIS within {within} (order {order}). QRIS code: {qr}"
            ),
            (None, None) => format!("Please pay {amount} by QRIS within {within} (order {order})."),
        },
        Instructions::PayCode { store, code } => format!(
            "Please pay {amount} at any {} with payment code {code} within {within} (order {order}).",
            capitalised(store)
        ),
        Instructions::Link { url } => {
            format!("Please pay {amount} here within {within} (order {order}): {url}")
        }
        Instructions::Manual { text } => {
            format!("{text}\nAmount: {amount}. Please mention order {order}.")
        }
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "1 hour", "30 minutes", "2 days": a wait as the customer reads it.
pub fn duration_text(ms: i64) -> String {
    let minutes = (ms / 60_000).max(1);
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if minutes % (24 * 60) == 0 {
        plural(minutes / (24 * 60), "day")
    } else if minutes % 60 == 0 {
        plural(minutes / 60, "hour")
    } else {
        plural(minutes, "minute")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;
    use GatewayStatus as G;
    use PaymentStatus as P;

    fn idr(s: &str) -> Money {
        Money::parse(s, Currency::IDR).unwrap()
    }

    #[test]
    fn a_pending_payment_moves_on_the_gateways_word() {
        let due = idr("65000");
        assert_eq!(
            settle(P::Pending, &due, 100, G::Paid, Some(&due), 50),
            Some(P::Paid)
        );
        assert_eq!(
            settle(P::Pending, &due, 100, G::Paid, None, 50),
            Some(P::Paid)
        );
        assert_eq!(
            settle(P::Pending, &due, 100, G::Paid, Some(&idr("60000")), 50),
            Some(P::Mismatch)
        );
        assert_eq!(settle(P::Pending, &due, 100, G::Pending, None, 50), None);
        assert_eq!(
            settle(P::Pending, &due, 100, G::Pending, None, 100),
            Some(P::Expired)
        );
        assert_eq!(
            settle(P::Pending, &due, 100, G::Expired, None, 50),
            Some(P::Expired)
        );
        assert_eq!(
            settle(P::Pending, &due, 100, G::Failed, None, 50),
            Some(P::Failed)
        );
        assert_eq!(
            settle(P::Pending, &due, 100, G::Cancelled, None, 50),
            Some(P::Cancelled)
        );
    }

    #[test]
    fn transitions_only_move_forward() {
        let due = idr("65000");
        // A duplicate PAID changes nothing; a PENDING after PAID neither.
        assert_eq!(settle(P::Paid, &due, 100, G::Paid, Some(&due), 50), None);
        assert_eq!(settle(P::Paid, &due, 100, G::Pending, None, 50), None);
        assert_eq!(settle(P::Paid, &due, 100, G::Expired, None, 500), None);
        assert_eq!(settle(P::Expired, &due, 100, G::Pending, None, 500), None);
        // Paid after we expired it: held for the owner.
        assert_eq!(
            settle(P::Expired, &due, 100, G::Paid, Some(&due), 500),
            Some(P::PaidLate)
        );
        assert_eq!(
            settle(P::Paid, &due, 100, G::Refunded, None, 500),
            Some(P::Refunded)
        );
        assert_eq!(settle(P::Refunded, &due, 100, G::Paid, None, 500), None);
        assert_eq!(
            settle(P::Mismatch, &due, 100, G::Paid, Some(&due), 50),
            None
        );
    }

    #[test]
    fn the_customer_reads_how_to_pay() {
        let t = instructions_text(
            &Instructions::VirtualAccount {
                bank: "bca".into(),
                number: "8808123456".into(),
            },
            &idr("65000"),
            "ORD-000001",
            &duration_text(3_600_000),
        );
        assert_eq!(
            t,
            "Please transfer Rp 65.000 to BCA virtual account 8808123456 within 1 hour (order ORD-000001)."
        );
        assert_eq!(duration_text(30 * 60_000), "30 minutes");
        assert_eq!(duration_text(2 * 86_400_000), "2 days");
        let t = instructions_text(
            &Instructions::PayCode {
                store: "indomaret".into(),
                code: "123".into(),
            },
            &idr("1000"),
            "ORD-2",
            "1 hour",
        );
        assert!(t.contains("any Indomaret with payment code 123"), "{t}");
    }

    #[test]
    fn flow_results() {
        assert_eq!(flow_result(P::Paid), Some("paid"));
        assert_eq!(flow_result(P::Expired), Some("expired"));
        assert_eq!(flow_result(P::Failed), Some("failed"));
        assert_eq!(flow_result(P::Mismatch), None);
        assert!(confirmable(P::Pending) && !confirmable(P::Paid));
    }

    #[test]
    fn the_owner_hears_of_held_payments_only() {
        let due = idr("50000");
        let late = owner_news(P::PaidLate, 7, "ORD-000007", &due, Some(&due)).unwrap();
        assert!(late.contains("after it had expired (Rp 50.000)"), "{late}");
        let off = owner_news(P::Mismatch, 7, "ORD-000007", &due, Some(&idr("40000"))).unwrap();
        assert!(
            off.contains("Rp 40.000 was paid, Rp 50.000 was due"),
            "{off}"
        );
        for s in [P::Paid, P::Expired, P::Pending, P::Refunded] {
            assert_eq!(owner_news(s, 7, "ORD-000007", &due, None), None, "{s}");
        }
        assert_ne!(owner_request(7, P::PaidLate), owner_request(7, P::Mismatch));
    }
}
