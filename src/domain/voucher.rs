//! A voucher and the decision whether it takes something off a cart (pure: the time and the
//! customer's earlier claim come in as arguments). The store keeps the row and claims it
//! atomically at checkout (`store/vouchers.rs`, whose `WHERE` spells the same validity);
//! `commerce::voucher` says the refusal to the customer. It lives on this floor because the
//! store's checkout applies it inside its transaction.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Money, UserKey, VoucherKind};

/// A voucher of an account, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Voucher {
    /// Upper-case; matched case-insensitively (see [`voucher_code`]).
    pub code: String,
    pub kind: VoucherKind,
    /// Percent (0 < v ≤ 100) or an amount of the account's currency.
    pub value: Decimal,
    /// The subtotal an order needs for the voucher, if any.
    pub min_total: Option<Decimal>,
    /// Valid from this time on (ms since the epoch), if set.
    pub valid_from: Option<i64>,
    /// Valid up to and including this time (ms), if set.
    pub valid_to: Option<i64>,
    /// Claims allowed in all; None: unlimited.
    pub usage_limit: Option<i64>,
    /// Claims so far.
    pub used: i64,
    /// Bound to one customer; None: anyone.
    pub user_key: Option<String>,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Why a voucher takes nothing off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "refusal")]
pub enum VoucherRefusal {
    /// No such code (or one bound to another customer: not told apart).
    Unknown,
    NotYetValid,
    Expired,
    UsedUp,
    AlreadyUsed,
    Inactive,
    /// The subtotal is below the voucher's `min_total` (this amount).
    BelowMinimum {
        min_total: Money,
    },
}

impl VoucherRefusal {
    /// The key a flow sees in `voucher.result` (`unknown`, `used_up`, …).
    pub fn key(&self) -> &'static str {
        match self {
            VoucherRefusal::Unknown => "unknown",
            VoucherRefusal::NotYetValid => "not_yet_valid",
            VoucherRefusal::Expired => "expired",
            VoucherRefusal::UsedUp => "used_up",
            VoucherRefusal::AlreadyUsed => "already_used",
            VoucherRefusal::Inactive => "inactive",
            VoucherRefusal::BelowMinimum { .. } => "below_minimum",
        }
    }
}

/// A code as the customer typed it, as it is stored and looked up: trimmed, upper-case.
pub fn voucher_code(typed: &str) -> String {
    typed.trim().to_uppercase()
}

/// Whether `voucher` may be claimed by `user` at `now`, `claimed` telling whether this
/// customer claimed it before; the amount off `subtotal` when it may.
pub fn decide(
    voucher: Option<&Voucher>,
    user: &UserKey,
    now: i64,
    subtotal: Money,
    claimed: bool,
) -> Result<Money, VoucherRefusal> {
    let v = voucher.ok_or(VoucherRefusal::Unknown)?;
    if v.user_key.as_deref().is_some_and(|u| u != user.as_str()) {
        return Err(VoucherRefusal::Unknown);
    }
    if !v.active {
        return Err(VoucherRefusal::Inactive);
    }
    if v.valid_from.is_some_and(|from| now < from) {
        return Err(VoucherRefusal::NotYetValid);
    }
    if v.valid_to.is_some_and(|to| now > to) {
        return Err(VoucherRefusal::Expired);
    }
    if claimed {
        return Err(VoucherRefusal::AlreadyUsed);
    }
    if v.usage_limit.is_some_and(|limit| v.used >= limit) {
        return Err(VoucherRefusal::UsedUp);
    }
    discount(v, subtotal)
}

/// The amount `voucher` takes off `subtotal` (its minimum checked; its validity not): a
/// percent rounded as [`Money::percent`], a fixed amount never more than the subtotal.
pub fn discount(voucher: &Voucher, subtotal: Money) -> Result<Money, VoucherRefusal> {
    let currency = subtotal.currency;
    if let Some(min) = voucher.min_total {
        if subtotal.amount < min {
            return Err(VoucherRefusal::BelowMinimum {
                min_total: Money::new(min, currency).unwrap_or(Money::zero(currency)),
            });
        }
    }
    let off = match voucher.kind {
        VoucherKind::Percent => {
            subtotal.percent(voucher.value.clamp(Decimal::ZERO, Decimal::ONE_HUNDRED))
        }
        VoucherKind::Fixed => {
            Money::new(voucher.value.max(Decimal::ZERO), currency).unwrap_or(Money::zero(currency))
        }
    };
    Ok(if off.amount > subtotal.amount {
        subtotal
    } else {
        off
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    fn idr(n: i64) -> Money {
        Money::new(Decimal::from(n), Currency::IDR).unwrap()
    }

    fn voucher(kind: VoucherKind, value: i64) -> Voucher {
        Voucher {
            code: "HEMAT".into(),
            kind,
            value: Decimal::from(value),
            min_total: None,
            valid_from: None,
            valid_to: None,
            usage_limit: None,
            used: 0,
            user_key: None,
            active: true,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn me() -> UserKey {
        UserKey::new("6281")
    }

    #[test]
    fn a_percent_rounds_as_money_does_and_a_fixed_amount_never_exceeds_the_subtotal() {
        let v = voucher(VoucherKind::Percent, 15);
        // 15 % of 33.333 = 4999.95 → 5000 (whole rupiah, half away from zero).
        assert_eq!(
            decide(Some(&v), &me(), 0, idr(33_333), false),
            Ok(idr(5_000))
        );
        let v = voucher(VoucherKind::Percent, 100);
        assert_eq!(
            decide(Some(&v), &me(), 0, idr(20_000), false),
            Ok(idr(20_000))
        );
        let v = voucher(VoucherKind::Fixed, 10_000);
        assert_eq!(
            decide(Some(&v), &me(), 0, idr(25_000), false),
            Ok(idr(10_000))
        );
        assert_eq!(
            decide(Some(&v), &me(), 0, idr(4_000), false),
            Ok(idr(4_000))
        );
        let usd = Money::parse("10.05", "USD".parse().unwrap()).unwrap();
        let v = voucher(VoucherKind::Percent, 10);
        assert_eq!(
            decide(Some(&v), &me(), 0, usd, false).map(|m| m.plain()),
            Ok("1.01".into())
        );
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let ok = voucher(VoucherKind::Fixed, 1_000);
        let sub = idr(50_000);
        assert_eq!(
            decide(None, &me(), 5, sub, false),
            Err(VoucherRefusal::Unknown)
        );
        let other = Voucher {
            user_key: Some("6299".into()),
            ..ok.clone()
        };
        assert_eq!(
            decide(Some(&other), &me(), 5, sub, false),
            Err(VoucherRefusal::Unknown)
        );
        let mine = Voucher {
            user_key: Some("6281".into()),
            ..ok.clone()
        };
        assert_eq!(decide(Some(&mine), &me(), 5, sub, false), Ok(idr(1_000)));
        let off = Voucher {
            active: false,
            ..ok.clone()
        };
        assert_eq!(
            decide(Some(&off), &me(), 5, sub, false),
            Err(VoucherRefusal::Inactive)
        );
        let later = Voucher {
            valid_from: Some(10),
            ..ok.clone()
        };
        assert_eq!(
            decide(Some(&later), &me(), 5, sub, false),
            Err(VoucherRefusal::NotYetValid)
        );
        assert_eq!(decide(Some(&later), &me(), 10, sub, false), Ok(idr(1_000)));
        let past = Voucher {
            valid_to: Some(4),
            ..ok.clone()
        };
        assert_eq!(
            decide(Some(&past), &me(), 5, sub, false),
            Err(VoucherRefusal::Expired)
        );
        assert_eq!(decide(Some(&past), &me(), 4, sub, false), Ok(idr(1_000)));
        let full = Voucher {
            usage_limit: Some(3),
            used: 3,
            ..ok.clone()
        };
        assert_eq!(
            decide(Some(&full), &me(), 5, sub, false),
            Err(VoucherRefusal::UsedUp)
        );
        // One's own last use is "already used by you", not "used up".
        assert_eq!(
            decide(Some(&full), &me(), 5, sub, true),
            Err(VoucherRefusal::AlreadyUsed)
        );
        let min = Voucher {
            min_total: Some(Decimal::from(100_000)),
            ..ok.clone()
        };
        assert_eq!(
            decide(Some(&min), &me(), 5, sub, false),
            Err(VoucherRefusal::BelowMinimum {
                min_total: idr(100_000)
            })
        );
        assert_eq!(
            decide(Some(&min), &me(), 5, idr(100_000), false),
            Ok(idr(1_000))
        );
    }

    #[test]
    fn codes_are_matched_upper_case() {
        assert_eq!(voucher_code("  hemat10 "), "HEMAT10");
        assert_eq!(VoucherRefusal::UsedUp.key(), "used_up");
    }
}
