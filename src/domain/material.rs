//! Materials, decided (pure): a quantity as given, what a paid order consumes, a stock
//! adjustment, a crossing below `min_stock` (what the owner reads of it: `commerce::materials`).
//!
//! Quantities are exact decimals (`rust_decimal`), never floats: "0.25" kg of flour per
//! cake, 3 cakes, 0.75 kg. A material's stock may go below zero when a paid order consumes
//! more than was recorded on hand: the sale happened, so the stock says so truthfully (and
//! the crossing alerts the owner); only an operator's adjustment is refused when it would
//! take stock below zero.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::LowAlert;

/// The finest quantity kept: a millionth of the unit.
pub const MAX_PLACES: u32 = 6;

/// The largest quantity kept (either sign), far above any shop's stock.
const MAX_ABS: i64 = 1_000_000_000_000;

/// Why a quantity is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{0:?} is not a decimal number")]
    NotDecimal(String),
    #[error("{0} is negative")]
    Negative(Decimal),
    #[error("{0} has more than {MAX_PLACES} decimal places")]
    TooPrecise(Decimal),
    #[error("{0} is too large")]
    TooLarge(String),
    #[error("{0} must be a decimal string (\"1.25\") or a whole number, never a JSON float")]
    Float(String),
}

/// A quantity's text (`"0.25"`, `"12"`): exact, at most [`MAX_PLACES`] places, and not
/// negative unless `signed`.
pub fn parse_quantity(text: &str, signed: bool) -> Result<Decimal, QuantityError> {
    let t = text.trim();
    let plain = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+'));
    let d = plain
        .then(|| Decimal::from_str_exact(t).ok())
        .flatten()
        .ok_or_else(|| QuantityError::NotDecimal(text.to_string()))?;
    checked(d, signed)
}

/// A quantity as a JSON request gives it: a decimal string or a whole number.
pub fn quantity_of(value: &serde_json::Value, signed: bool) -> Result<Decimal, QuantityError> {
    match value {
        serde_json::Value::String(s) => parse_quantity(s, signed),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => checked(Decimal::from(i), signed),
            None => Err(QuantityError::Float(n.to_string())),
        },
        other => Err(QuantityError::NotDecimal(other.to_string())),
    }
}

fn checked(d: Decimal, signed: bool) -> Result<Decimal, QuantityError> {
    let d = d.normalize();
    if !signed && d.is_sign_negative() && !d.is_zero() {
        return Err(QuantityError::Negative(d));
    }
    if d.scale() > MAX_PLACES {
        return Err(QuantityError::TooPrecise(d));
    }
    if d.abs() >= Decimal::from(MAX_ABS) {
        return Err(QuantityError::TooLarge(d.to_string()));
    }
    Ok(d)
}

/// The text a quantity is stored and shown as ("0.75", "-2", "10").
pub fn quantity_text(d: Decimal) -> String {
    let d = d.normalize();
    if d.is_zero() {
        "0".into()
    } else {
        d.to_string()
    }
}

/// One line of a paid order against one material its product uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterialUse {
    pub material: String,
    /// The material one unit of the product takes.
    pub per_unit: Decimal,
    /// The units of the product the line sold.
    pub units: i64,
}

/// What a paid order takes of each material: Σ per_unit × units, by material name (the
/// order in which their rows are locked).
pub fn consumption(uses: &[MaterialUse]) -> Result<BTreeMap<String, Decimal>, QuantityError> {
    let mut out: BTreeMap<String, Decimal> = BTreeMap::new();
    for u in uses {
        let line = u
            .per_unit
            .checked_mul(Decimal::from(u.units))
            .ok_or_else(|| QuantityError::TooLarge(format!("{} × {}", u.per_unit, u.units)))?;
        let sum = out.entry(u.material.clone()).or_default();
        *sum = sum
            .checked_add(line)
            .ok_or_else(|| QuantityError::TooLarge(format!("{sum} + {line}")))?;
    }
    out.retain(|_, q| !q.is_zero());
    Ok(out)
}

/// An operator's change to a stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange<T> {
    /// Add this (negative: take away).
    Delta(T),
    /// Count it as this.
    Set(T),
}

/// An adjustment refused: it would take the stock below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stock would go below zero: {stock} on hand, {wanted} asked")]
pub struct BelowZero<T: std::fmt::Display> {
    pub stock: T,
    pub wanted: T,
}

/// A material's stock after an operator's change. It may not be lowered below zero; a stock
/// already below zero (consumed by orders) may be raised by less than it lacks.
pub fn adjust_material(
    stock: Decimal,
    change: StockChange<Decimal>,
) -> Result<Decimal, BelowZero<Decimal>> {
    let wanted = match change {
        StockChange::Delta(d) => stock + d,
        StockChange::Set(s) => s,
    }
    .normalize();
    if wanted.is_sign_negative() && !wanted.is_zero() && wanted < stock {
        return Err(BelowZero { stock, wanted });
    }
    Ok(wanted)
}

/// A tracked product's available stock (`stock`: units on hand no unpaid order holds) after
/// an operator's change; never below zero, so the units reserved by unpaid orders are never
/// taken.
pub fn adjust_product(stock: i64, change: StockChange<i64>) -> Result<i64, BelowZero<i64>> {
    let wanted = match change {
        StockChange::Delta(d) => stock.saturating_add(d),
        StockChange::Set(s) => s,
    };
    if wanted < 0 {
        return Err(BelowZero { stock, wanted });
    }
    Ok(wanted)
}

/// Where a material's low-stock alert stands once its stock is `stock`: falling below
/// `min_stock` owes one alert (`pending`) and keeps it owed or given until the stock is back
/// at `min_stock` or above, which clears it (the next fall is a new crossing).
pub fn low_alert_after(current: LowAlert, stock: Decimal, min_stock: Decimal) -> LowAlert {
    if stock < min_stock {
        match current {
            LowAlert::None => LowAlert::Pending,
            owed_or_given => owed_or_given,
        }
    } else {
        LowAlert::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn quantities_are_exact_decimals_never_floats() {
        assert_eq!(parse_quantity("0.25", false), Ok(d("0.25")));
        assert_eq!(parse_quantity(" 12.500 ", false), Ok(d("12.5")));
        assert_eq!(parse_quantity("-3", true), Ok(d("-3")));
        assert!(matches!(
            parse_quantity("-3", false),
            Err(QuantityError::Negative(_))
        ));
        assert!(matches!(
            parse_quantity("0.0000001", false),
            Err(QuantityError::TooPrecise(_))
        ));
        for bad in ["", "abc", "1e3", "1,5", "NaN", "0x10"] {
            assert!(
                matches!(parse_quantity(bad, true), Err(QuantityError::NotDecimal(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_quantity("1000000000000", false),
            Err(QuantityError::TooLarge(_))
        ));
        assert_eq!(quantity_of(&serde_json::json!(4), false), Ok(d("4")));
        assert_eq!(quantity_of(&serde_json::json!("1.5"), false), Ok(d("1.5")));
        assert!(matches!(
            quantity_of(&serde_json::json!(1.5), false),
            Err(QuantityError::Float(_))
        ));
        assert!(matches!(
            quantity_of(&serde_json::json!(null), false),
            Err(QuantityError::NotDecimal(_))
        ));
        assert_eq!(quantity_text(d("0.750")), "0.75");
        assert_eq!(quantity_text(d("-0.00")), "0");
    }

    #[test]
    fn a_paid_order_consumes_the_sum_over_its_lines_exactly() {
        let uses = [
            MaterialUse {
                material: "flour".into(),
                per_unit: d("0.25"),
                units: 3,
            },
            MaterialUse {
                material: "sugar".into(),
                per_unit: d("0.1"),
                units: 3,
            },
            MaterialUse {
                material: "flour".into(),
                per_unit: d("0.125"),
                units: 2,
            },
            MaterialUse {
                material: "box".into(),
                per_unit: d("0"),
                units: 9,
            },
        ];
        let used = consumption(&uses).unwrap();
        assert_eq!(
            used.into_iter().collect::<Vec<_>>(),
            vec![("flour".into(), d("1")), ("sugar".into(), d("0.3"))],
            "by name, exact, nothing for a zero"
        );
        assert!(consumption(&[MaterialUse {
            material: "x".into(),
            per_unit: Decimal::MAX,
            units: 2
        }])
        .is_err());
    }

    #[test]
    fn adjustments_never_lower_a_stock_below_zero() {
        assert_eq!(
            adjust_material(d("2"), StockChange::Delta(d("-0.5"))),
            Ok(d("1.5"))
        );
        assert_eq!(
            adjust_material(d("2"), StockChange::Set(d("7.25"))),
            Ok(d("7.25"))
        );
        assert!(adjust_material(d("2"), StockChange::Delta(d("-2.01"))).is_err());
        // Consumed below zero by orders: a restock that still leaves it short is taken.
        assert_eq!(
            adjust_material(d("-3"), StockChange::Delta(d("1"))),
            Ok(d("-2"))
        );
        assert!(adjust_material(d("-3"), StockChange::Delta(d("-1"))).is_err());
        assert_eq!(adjust_product(5, StockChange::Delta(-5)), Ok(0));
        assert_eq!(adjust_product(5, StockChange::Set(9)), Ok(9));
        assert_eq!(
            adjust_product(5, StockChange::Delta(-6)),
            Err(BelowZero {
                stock: 5,
                wanted: -1
            })
        );
        assert!(adjust_product(5, StockChange::Set(-1)).is_err());
    }

    #[test]
    fn a_crossing_owes_one_alert_until_a_restock_clears_it() {
        use LowAlert::*;
        let min = d("2");
        assert_eq!(low_alert_after(None, d("2"), min), None, "at the minimum");
        assert_eq!(low_alert_after(None, d("1.9"), min), Pending, "crossed");
        assert_eq!(low_alert_after(Pending, d("1"), min), Pending, "still owed");
        assert_eq!(low_alert_after(Sent, d("0.5"), min), Sent, "given once");
        assert_eq!(low_alert_after(Sent, d("-1"), min), Sent, "even below zero");
        assert_eq!(low_alert_after(Sent, d("2"), min), None, "restocked");
        assert_eq!(
            low_alert_after(Pending, d("3"), min),
            None,
            "restocked first"
        );
        assert_eq!(
            low_alert_after(None, d("-0.5"), d("0")),
            Pending,
            "below zero with no minimum"
        );
    }
}
