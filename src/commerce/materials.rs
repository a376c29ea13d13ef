//! What the owner reads of a material that fell below its minimum (pure); the decisions on
//! quantities, consumption and crossings are `domain::material`'s (the store applies them).

use rust_decimal::Decimal;

use crate::domain::material::quantity_text;

/// What the owner reads when a material falls below its minimum.
pub fn low_stock_text(name: &str, unit: &str, stock: Decimal, min_stock: Decimal) -> String {
    format!(
        "Low stock: {name} is at {} {unit}, below its minimum of {} {unit}.",
        quantity_text(stock),
        quantity_text(min_stock)
    )
}

/// The request id of a material's alert for its `crossing`-th fall below the minimum: the
/// same for every retry of that alert, new for the next crossing.
pub fn low_stock_request(name: &str, crossing: i64) -> String {
    format!("owner-low-stock:{name}:{crossing}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_reads_the_stock_and_the_minimum() {
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        assert_eq!(
            low_stock_text("flour", "kg", d("1.50"), d("2")),
            "Low stock: flour is at 1.5 kg, below its minimum of 2 kg."
        );
        assert_ne!(low_stock_request("flour", 1), low_stock_request("flour", 2));
    }
}
