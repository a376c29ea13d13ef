//! The shop's sweeps, decided (pure): which carts are abandoned and get their one reminder,
//! when a reminded cart stops counting as recoverable, which subscriptions get their renewal
//! notice, and what the customer reads. The reconciliation pass carries them out
//! (ingress/sweeps.rs) against the store (store/sweeps.rs).
//!
//! Outside the 24 h window each message goes as its template (`commerce.abandoned_template`,
//! `commerce.renewal_template`) when one is configured, else it is held until the customer
//! writes again (`conversation.hold_for`). The end of a plan has no template: it is held.

use std::time::Duration;

use crate::config::{CommerceSettings, ReminderTemplate};
use crate::domain::{CartRecovery, WindowPolicy, Zone};
use crate::store::{AbandonedCart, Cart};
use crate::whatsapp::send::OutboundMessage;

/// A reminded cart with no order this long after its reminder is recorded `expired`: the
/// reminder did not bring it back (the cart itself is kept, open).
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// The rows each sweep takes per account and pass (the next pass takes the rest).
pub const BATCH: i64 = 100;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Carts untouched since this time (unix ms) are abandoned.
pub fn abandoned_before(now: i64, s: &CommerceSettings) -> i64 {
    now.saturating_sub(ms(s.abandoned_after))
}

/// Carts reminded before this time and still without an order have expired.
pub fn recovery_expired_before(now: i64) -> i64 {
    now.saturating_sub(ms(RECOVERY_WINDOW))
}

/// Subscriptions ending by this time (and after now) are due their renewal notice.
pub fn renewal_due_until(now: i64, s: &CommerceSettings) -> i64 {
    now.saturating_add(ms(s.renewal_notice))
}

/// Whether `cart` (open, with items, no order) gets its reminder now: never reminded and
/// untouched for `commerce.abandoned_after`, or claimed by a pass that did not record it sent
/// (sent again under the same request id: the conversation takes it once).
pub fn reminder_due(cart: &AbandonedCart, now: i64, s: &CommerceSettings) -> bool {
    match cart.recovery {
        CartRecovery::None => cart.updated_at <= abandoned_before(now, s),
        CartRecovery::Pending => true,
        CartRecovery::Sent | CartRecovery::Recovered | CartRecovery::Expired => false,
    }
}

/// Whether a subscription of `period_end`, told the renewal notice of the period ending at
/// `told_until` (if any), is told now.
pub fn renewal_due(
    period_end: i64,
    told_until: Option<i64>,
    now: i64,
    s: &CommerceSettings,
) -> bool {
    period_end > now && period_end <= renewal_due_until(now, s) && told_until != Some(period_end)
}

/// Whether an ended period (its end at `period_end`) is still to be told, its end notice
/// last given for the period ending at `told_until` (if any).
pub fn end_untold(period_end: i64, told_until: Option<i64>) -> bool {
    told_until != Some(period_end)
}

/// The request id of a cart's reminder: one per cart, whatever pass sends it.
pub fn reminder_request(cart_id: i64) -> String {
    format!("cart:{cart_id}:reminder")
}

/// The request id of a subscription period's renewal notice.
pub fn renewal_request(subscription_id: i64, period_end: i64) -> String {
    format!("subscription:{subscription_id}:renewal:{period_end}")
}

/// The request id of a subscription period's end notice.
pub fn ended_request(subscription_id: i64, period_end: i64) -> String {
    format!("subscription:{subscription_id}:ended:{period_end}")
}

/// The cart's total at today's prices (lines no longer sold count nothing).
fn cart_total(cart: &Cart) -> crate::domain::Money {
    cart.lines
        .iter()
        .filter(|l| l.available)
        .filter_map(|l| l.unit_price.times(l.quantity as u32).ok())
        .fold(crate::domain::Money::zero(cart.currency), |sum, m| {
            sum.plus(&m).unwrap_or(sum)
        })
}

/// "2 × Kopi Arabica, 1 × Teh": the items on one line (a template parameter holds no
/// newline).
fn items_inline(cart: &Cart) -> String {
    cart.lines
        .iter()
        .map(|l| format!("{} × {}", l.quantity, l.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the customer reads of their abandoned cart: its items, its total, and that it is
/// kept for them.
pub fn cart_reminder_text(cart: &Cart) -> String {
    format!(
        "You left these in your cart:\n{}\nTotal: {}\nYour cart is kept for you: reply here when you are ready to order.",
        super::text::cart_lines(cart),
        cart_total(cart).display()
    )
}

fn template(t: &ReminderTemplate, values: &[(&str, &str)]) -> OutboundMessage {
    let body = t.body(values);
    let mut components = Vec::new();
    if !body.is_empty() {
        components.push(serde_json::json!({
            "type": "body",
            "parameters": body
                .iter()
                .map(|p| serde_json::json!({"type": "text", "text": p}))
                .collect::<Vec<_>>(),
        }));
    }
    OutboundMessage::Template {
        name: t.name.clone(),
        language: t.language.clone(),
        components,
    }
}

/// Outside the window: the template filled with `values`, else held.
fn policy(t: Option<&ReminderTemplate>, values: &[(&str, &str)]) -> WindowPolicy {
    t.map_or(WindowPolicy::Hold, |t| {
        WindowPolicy::Template(template(t, values))
    })
}

fn text(body: String) -> OutboundMessage {
    OutboundMessage::Text {
        body,
        preview_url: false,
    }
}

/// What goes instead of an order's status news outside the window: the
/// `order_status_template` filled, else held.
pub fn order_status_policy(order: &crate::store::Order, s: &CommerceSettings) -> WindowPolicy {
    let total = order.total.display();
    let values = [
        ("order", order.order_number.as_str()),
        ("status", order.status.as_str()),
        ("total", &*total),
    ];
    policy(s.order_status_template.as_ref(), &values)
}

/// What goes instead of a message to the account's owner outside their window: the
/// `owner_template` filled, else held.
pub fn owner_policy(topic: &str, text: &str, s: &CommerceSettings) -> WindowPolicy {
    policy(
        s.owner_template.as_ref(),
        &[("topic", topic), ("text", text)],
    )
}

/// An abandoned cart's reminder, and what goes instead outside the window.
pub fn cart_reminder(cart: &Cart, s: &CommerceSettings) -> (OutboundMessage, WindowPolicy) {
    let (total, count, items) = (
        cart_total(cart).display(),
        super::text::cart_count(cart).to_string(),
        items_inline(cart),
    );
    let values = [("total", &*total), ("count", &*count), ("items", &*items)];
    (
        text(cart_reminder_text(cart)),
        policy(s.abandoned_template.as_ref(), &values),
    )
}

/// A day as the account reads it: `2027-01-06`.
pub fn end_date(period_end: i64, zone: &Zone) -> String {
    zone.day(period_end).to_string()
}

/// What the customer reads before their plan's period ends.
pub fn renewal_text(plan: &str, end_date: &str) -> String {
    format!(
        "Your {plan} plan ends on {end_date}. To keep it, renew before then: order {plan} again here."
    )
}

/// What the customer reads once their plan's period has ended.
pub fn ended_text(plan: &str, end_date: &str) -> String {
    format!("Your {plan} plan ended on {end_date}. To renew it, order {plan} again here.")
}

/// A subscription's renewal notice, and what goes instead outside the window.
pub fn renewal_notice(
    plan: &str,
    period_end: i64,
    zone: &Zone,
    s: &CommerceSettings,
) -> (OutboundMessage, WindowPolicy) {
    let date = end_date(period_end, zone);
    let values = [("plan", plan), ("end_date", &*date)];
    (
        text(renewal_text(plan, &date)),
        policy(s.renewal_template.as_ref(), &values),
    )
}

/// A subscription's end notice (held outside the window: there is no template for it).
pub fn ended_notice(plan: &str, period_end: i64, zone: &Zone) -> (OutboundMessage, WindowPolicy) {
    (
        text(ended_text(plan, &end_date(period_end, zone))),
        WindowPolicy::Hold,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, Money, UserKey};
    use crate::store::CartLine;

    const H: i64 = 3_600_000;
    const D: i64 = 24 * H;

    fn settings() -> CommerceSettings {
        CommerceSettings::default()
    }

    fn abandoned(recovery: CartRecovery, updated_at: i64) -> AbandonedCart {
        AbandonedCart {
            id: 7,
            user_key: UserKey::new("6281200000001"),
            recovery,
            updated_at,
        }
    }

    fn cart() -> Cart {
        let line = |sku: &str, name: &str, quantity, price: &str, available| CartLine {
            sku: sku.into(),
            name: name.into(),
            quantity,
            unit_price: Money::parse(price, Currency::IDR).unwrap(),
            available,
        };
        Cart {
            id: 7,
            currency: Currency::IDR,
            voucher: None,
            voucher_terms: None,
            lines: vec![
                line("KOPI", "Kopi Arabica", 2, "25000", true),
                line("TEH", "Teh", 1, "12500", true),
            ],
            updated_at: 0,
        }
    }

    #[test]
    fn a_cart_is_reminded_once_after_abandoned_after() {
        let s = settings();
        let now = 100 * D;
        assert!(!reminder_due(
            &abandoned(CartRecovery::None, now - 2 * H + 1),
            now,
            &s
        ));
        assert!(reminder_due(
            &abandoned(CartRecovery::None, now - 2 * H),
            now,
            &s
        ));
        // Claimed by a pass that did not record it sent: sent again (the id dedups it).
        assert!(reminder_due(
            &abandoned(CartRecovery::Pending, now),
            now,
            &s
        ));
        for done in [
            CartRecovery::Sent,
            CartRecovery::Recovered,
            CartRecovery::Expired,
        ] {
            assert!(!reminder_due(&abandoned(done, 0), now, &s), "{done}");
        }
        assert_eq!(recovery_expired_before(now), now - 7 * D);
        assert_eq!(reminder_request(7), "cart:7:reminder");
    }

    #[test]
    fn renewal_notice_once_per_period() {
        let s = settings();
        let now = 100 * D;
        let end = now + 3 * D;
        assert!(renewal_due(end, None, now, &s));
        assert!(!renewal_due(end + 1, None, now, &s), "too early");
        assert!(!renewal_due(end, Some(end), now, &s), "told this period");
        // Renewed: the period moved, so its new end is told again in time.
        assert!(renewal_due(end, Some(end - 30 * D), now, &s));
        assert!(!renewal_due(now, None, now, &s), "ended: the end notice's");
        assert!(end_untold(now, None) && end_untold(now, Some(now - 30 * D)));
        assert!(!end_untold(now, Some(now)), "told once");
        assert_ne!(renewal_request(1, end), renewal_request(1, end + 30 * D));
    }

    #[test]
    fn the_reminder_shows_items_and_total_and_fills_the_template() {
        let c = cart();
        let text = cart_reminder_text(&c);
        assert!(text.contains("2 × Kopi Arabica — Rp 50.000"), "{text}");
        assert!(text.contains("Total: Rp 62.500"), "{text}");
        assert!(text.contains("kept"), "{text}");
        let (_, held) = cart_reminder(&c, &settings());
        assert_eq!(held, WindowPolicy::Hold, "no template: held");
        let mut s = settings();
        s.abandoned_template = Some(ReminderTemplate {
            name: "cart_reminder".into(),
            language: "id".into(),
            body_params: vec!["{{items}}".into(), "{{ total }} ({{count}})".into()],
        });
        let (_, policy) = cart_reminder(&c, &s);
        let WindowPolicy::Template(OutboundMessage::Template {
            name, components, ..
        }) = policy
        else {
            panic!("a template: {policy:?}")
        };
        assert_eq!(name, "cart_reminder");
        assert_eq!(
            components[0]["parameters"][0]["text"],
            "2 × Kopi Arabica, 1 × Teh"
        );
        assert_eq!(components[0]["parameters"][1]["text"], "Rp 62.500 (3)");
    }

    #[test]
    fn unavailable_lines_count_nothing() {
        let mut c = cart();
        c.lines[1].available = false;
        assert!(cart_reminder_text(&c).contains("Total: Rp 50.000"));
    }

    #[test]
    fn renewal_and_end_texts_name_the_plan_and_the_local_day() {
        // 2027-01-05 20:00 UTC is already the 6th in Jakarta.
        let end = chrono::DateTime::parse_from_rfc3339("2027-01-05T20:00:00Z")
            .unwrap()
            .timestamp_millis();
        let jakarta = Zone::parse("Asia/Jakarta").unwrap();
        let utc = Zone::parse("UTC").unwrap();
        assert_eq!(end_date(end, &jakarta), "2027-01-06");
        assert_eq!(end_date(end, &utc), "2027-01-05");
        let mut s = settings();
        s.renewal_template = Some(ReminderTemplate {
            name: "plan_renewal".into(),
            language: "en_US".into(),
            body_params: vec!["{{plan}}".into(), "{{end_date}}".into()],
        });
        let (msg, policy) = renewal_notice("Premium", end, &jakarta, &s);
        assert_eq!(
            msg,
            text("Your Premium plan ends on 2027-01-06. To keep it, renew before then: order Premium again here.".into())
        );
        let WindowPolicy::Template(OutboundMessage::Template { components, .. }) = policy else {
            panic!("a template")
        };
        assert_eq!(components[0]["parameters"][1]["text"], "2027-01-06");
        let (msg, policy) = ended_notice("Premium", end, &utc);
        assert_eq!(
            msg,
            text(
                "Your Premium plan ended on 2027-01-05. To renew it, order Premium again here."
                    .into()
            )
        );
        assert_eq!(policy, WindowPolicy::Hold);
    }
}
