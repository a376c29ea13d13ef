//! Money: an exact decimal amount in one currency. Never a float; every gateway's amount format
//! (integer rupiah, "100000.00" strings, ×100 minor units, WhatsApp's `{value, offset}`) is a
//! conversion of this one type, each refusing what it cannot carry exactly.

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why an amount or a currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("not an amount: {0:?}")]
    NotAnAmount(String),
    #[error("a negative amount: {0}")]
    Negative(Decimal),
    #[error("{amount} has more than {places} decimal places")]
    TooPrecise { amount: Decimal, places: u32 },
    #[error("{0} is too large")]
    TooLarge(Decimal),
    #[error("not an ISO 4217 currency code: {0:?}")]
    NotACurrency(String),
    #[error("{0} and {1} are different currencies")]
    CurrencyMismatch(Currency, Currency),
}

/// An ISO 4217 code, three upper-case letters (`IDR`, `USD`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const IDR: Currency = Currency(*b"IDR");

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Decimal places of the currency's minor unit as ISO 4217 counts them (IDR has 2,
    /// although rupiah amounts are whole in practice; JPY and KRW have none).
    pub fn minor_places(&self) -> u32 {
        match &self.0 {
            b"JPY" | b"KRW" | b"VND" | b"CLP" | b"PYG" | b"UGX" | b"XAF" | b"XOF" => 0,
            b"BHD" | b"KWD" | b"OMR" | b"JOD" | b"TND" => 3,
            _ => 2,
        }
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Currency, MoneyError> {
        let t = s.trim().to_ascii_uppercase();
        match t.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => {
                Ok(Currency([*a, *b, *c]))
            }
            _ => Err(MoneyError::NotACurrency(s.to_string())),
        }
    }
}

impl Default for Currency {
    fn default() -> Currency {
        Currency::IDR
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Currency, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An amount in a currency. Amounts are never negative (a discount is subtracted, saturating
/// at zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    /// An amount as given; refused when negative or finer than the currency's minor unit.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative(amount));
        }
        let places = currency.minor_places();
        if amount.normalize().scale() > places {
            return Err(MoneyError::TooPrecise { amount, places });
        }
        Ok(Money {
            amount: amount.normalize(),
            currency,
        })
    }

    pub fn zero(currency: Currency) -> Money {
        Money {
            amount: Decimal::ZERO,
            currency,
        }
    }

    /// A decimal text ("50000", "12.50"); a float's text is refused if it is not exact.
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let amount = Decimal::from_str_exact(text.trim())
            .map_err(|_| MoneyError::NotAnAmount(text.to_string()))?;
        Money::new(amount, currency)
    }

    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// `self + other`, in the same currency.
    pub fn plus(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same(other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::TooLarge(self.amount))?;
        Ok(Money { amount, ..*self })
    }

    /// `self - other`, not below zero.
    pub fn minus_saturating(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same(other)?;
        let amount = (self.amount - other.amount).max(Decimal::ZERO);
        Ok(Money { amount, ..*self })
    }

    /// `self × quantity`.
    pub fn times(&self, quantity: u32) -> Result<Money, MoneyError> {
        let amount = self
            .amount
            .checked_mul(Decimal::from(quantity))
            .ok_or(MoneyError::TooLarge(self.amount))?;
        Ok(Money { amount, ..*self })
    }

    /// `percent` % of this amount, rounded half-up to the currency's minor unit (whole units
    /// for IDR, where gateways refuse decimals).
    pub fn percent(&self, percent: Decimal) -> Money {
        let places = if self.currency == Currency::IDR {
            0
        } else {
            self.currency.minor_places()
        };
        let amount = (self.amount * percent / Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(places, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        Money { amount, ..*self }
    }

    fn same(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.currency, other.currency))
        }
    }

    /// Whole units (Midtrans' `gross_amount`, Finpay's and Xendit's IDR amounts); refused if
    /// the amount has a fraction.
    pub fn whole_units(&self) -> Result<i64, MoneyError> {
        if self.amount.fract() != Decimal::ZERO {
            return Err(MoneyError::TooPrecise {
                amount: self.amount,
                places: 0,
            });
        }
        self.amount
            .to_i64()
            .ok_or(MoneyError::TooLarge(self.amount))
    }

    /// Minor units (Stripe's `unit_amount`: IDR ×100, USD ×100, JPY ×1).
    pub fn minor_units(&self) -> Result<i64, MoneyError> {
        let scale = Decimal::from(10i64.pow(self.currency.minor_places()));
        let minor = self.amount * scale;
        if minor.fract() != Decimal::ZERO {
            return Err(MoneyError::TooPrecise {
                amount: self.amount,
                places: self.currency.minor_places(),
            });
        }
        minor.to_i64().ok_or(MoneyError::TooLarge(self.amount))
    }

    pub fn from_minor_units(minor: i64, currency: Currency) -> Result<Money, MoneyError> {
        let amount = Decimal::from(minor) / Decimal::from(10i64.pow(currency.minor_places()));
        Money::new(amount, currency)
    }

    /// With exactly two decimals ("100000.00"), as Midtrans echoes `gross_amount`.
    pub fn two_places(&self) -> String {
        format!("{:.2}", self.amount)
    }

    /// The plain decimal text ("50000", "12.5"), as stored.
    pub fn plain(&self) -> String {
        self.amount.normalize().to_string()
    }

    /// For a customer: `Rp 50.000` for rupiah (dots between thousands, a comma before
    /// cents), `USD 1,234.50` otherwise.
    pub fn display(&self) -> String {
        let places = if self.amount.fract().is_zero() {
            0
        } else {
            self.currency.minor_places()
        };
        let fixed = format!("{:.*}", places as usize, self.amount);
        let (int, frac) = fixed.split_once('.').unwrap_or((&fixed, ""));
        let (group, point, prefix) = if self.currency == Currency::IDR {
            ('.', ',', "Rp ".to_string())
        } else {
            (',', '.', format!("{} ", self.currency))
        };
        let grouped = group_thousands(int, group);
        if frac.is_empty() {
            format!("{prefix}{grouped}")
        } else {
            format!("{prefix}{grouped}{point}{frac}")
        }
    }
}

/// Digits with `separator` between each group of three from the right (`1234567` →
/// `1.234.567`).
pub fn group_thousands(digits: &str, separator: char) -> String {
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(separator);
        }
        grouped.push(c);
    }
    grouped
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.plain(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idr(s: &str) -> Money {
        Money::parse(s, Currency::IDR).unwrap()
    }

    #[test]
    fn currencies_are_three_letters() {
        assert_eq!("idr".parse::<Currency>().unwrap(), Currency::IDR);
        assert!("ID".parse::<Currency>().is_err());
        assert!("I1R".parse::<Currency>().is_err());
        assert!("RUPIAH".parse::<Currency>().is_err());
    }

    #[test]
    fn amounts_are_exact_and_never_negative() {
        assert_eq!(idr("50000").amount, Decimal::from(50_000));
        assert!(matches!(
            Money::parse("-1", Currency::IDR),
            Err(MoneyError::Negative(_))
        ));
        assert!(matches!(
            Money::parse("1.005", Currency::IDR),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(Money::parse("1e3", Currency::IDR).is_err());
        assert!(Money::parse("abc", Currency::IDR).is_err());
        assert_eq!(idr("12.50").plain(), "12.5");
    }

    #[test]
    fn each_gateway_format_is_a_conversion() {
        let m = idr("150000");
        assert_eq!(m.whole_units().unwrap(), 150_000);
        assert_eq!(m.minor_units().unwrap(), 15_000_000);
        assert_eq!(m.two_places(), "150000.00");
        assert!(idr("10.5").whole_units().is_err());
        let usd = Money::parse("12.34", "USD".parse().unwrap()).unwrap();
        assert_eq!(usd.minor_units().unwrap(), 1234);
        assert_eq!(
            Money::from_minor_units(1234, "USD".parse().unwrap()).unwrap(),
            usd
        );
        let jpy = Money::parse("500", "JPY".parse().unwrap()).unwrap();
        assert_eq!(jpy.minor_units().unwrap(), 500);
    }

    #[test]
    fn sums_and_discounts() {
        let a = idr("25000").times(3).unwrap();
        assert_eq!(a, idr("75000"));
        assert_eq!(a.plus(&idr("5000")).unwrap(), idr("80000"));
        assert_eq!(idr("5000").minus_saturating(&a).unwrap(), idr("0"));
        assert_eq!(idr("99999").percent(Decimal::from(10)), idr("10000"));
        let usd = Money::zero("USD".parse().unwrap());
        assert!(matches!(
            a.plus(&usd),
            Err(MoneyError::CurrencyMismatch(..))
        ));
    }

    #[test]
    fn displayed_for_a_customer() {
        assert_eq!(idr("50000").display(), "Rp 50.000");
        assert_eq!(idr("1234567.5").display(), "Rp 1.234.567,50");
        assert_eq!(idr("999").display(), "Rp 999");
        let usd = Money::parse("1234.5", "USD".parse().unwrap()).unwrap();
        assert_eq!(usd.display(), "USD 1,234.50");
    }

    #[test]
    fn serialised_as_strings() {
        let m = idr("12.5");
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, r#"{"amount":"12.5","currency":"IDR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&j).unwrap(), m);
    }
}
