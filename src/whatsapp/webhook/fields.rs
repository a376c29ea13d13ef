//! Scalar fields read leniently: ids, timestamps and codes as a string or a number,
//! coordinates as a number or a numeric string, money exactly from its source text, an
//! empty string as none.

use super::*;

/// A JSON string or number, kept as its textual form (ids, timestamps, codes).
/// Numbers are taken as serde_json reads them (integers exactly).
pub(super) struct StrOrNum(pub(super) String);

impl StrOrNum {
    pub(super) fn into_string(self) -> String {
        self.0
    }
    pub(super) fn as_i64(&self) -> Option<i64> {
        let s = self.0.trim();
        s.parse::<i64>().ok().or_else(|| {
            // "1700000000.0" or 1.7e9: accept a finite float, truncated.
            s.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                .map(|f| f as i64)
        })
    }
}

impl<'de> Deserialize<'de> for StrOrNum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrNum;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrNum, E> {
                Ok(StrOrNum(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<StrOrNum, E> {
                Ok(StrOrNum(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrNum, E> {
                Ok(StrOrNum(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrNum, E> {
                Ok(StrOrNum(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrOrNum, E> {
                Ok(StrOrNum(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A coordinate: JSON number, or a numeric string.
pub(super) struct F64OrStr(pub(super) Option<f64>);

impl<'de> Deserialize<'de> for F64OrStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = F64OrStr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a numeric string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<F64OrStr, E> {
                Ok(F64OrStr(v.trim().parse().ok()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<F64OrStr, E> {
                Ok(F64OrStr(Some(v as f64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<F64OrStr, E> {
                Ok(F64OrStr(Some(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<F64OrStr, E> {
                Ok(F64OrStr(Some(v)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse a money amount from the JSON source text of a number or string, exactly.
pub(super) fn parse_decimal_raw(raw: &RawValue) -> Option<Decimal> {
    let text = raw.get().trim();
    let owned;
    let s = if text.starts_with('"') {
        owned = serde_json::from_str::<String>(text).ok()?;
        owned.trim()
    } else {
        text
    };
    if s.is_empty() {
        return None;
    }
    Decimal::from_str(s)
        .ok()
        .or_else(|| Decimal::from_scientific(s).ok())
}

pub(super) fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}
