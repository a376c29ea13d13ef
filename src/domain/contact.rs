//! A contact's admin-side data, checked before it is kept: custom fields against their typed
//! definitions, tags, a WhatsApp number. Pure.

use chrono::{Datelike, NaiveDate};
use serde_json::Value;

use super::CustomFieldKind;

/// A custom field's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    pub name: String,
    pub kind: CustomFieldKind,
    /// A list's allowed values.
    pub options: Vec<String>,
}

/// Why a value, a tag, a number or a definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ContactError(pub String);

const MAX_TEXT: usize = 1_000;
pub const MAX_TAGS: usize = 50;

/// A field or definition name: 1–64 of a-z, 0-9 and `_`, starting with a letter.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl FieldDef {
    /// A definition as given, or why not.
    pub fn new(
        name: &str,
        kind: CustomFieldKind,
        options: Vec<String>,
    ) -> Result<Self, ContactError> {
        if !valid_name(name) {
            return Err(ContactError(format!(
                "field name `{name}`: 1 to 64 of a-z, 0-9 and _, starting with a letter"
            )));
        }
        if super::profile::ProfileField::of(name).is_some() {
            return Err(ContactError(format!("`{name}` is a profile field")));
        }
        match kind {
            CustomFieldKind::List
                if options.is_empty() || options.iter().any(|o| o.trim().is_empty()) =>
            {
                Err(ContactError(format!(
                    "list field `{name}` needs non-empty options"
                )))
            }
            CustomFieldKind::List => Ok(FieldDef {
                name: name.into(),
                kind,
                options,
            }),
            _ if !options.is_empty() => Err(ContactError(format!(
                "only a list field has options (`{name}` is {kind})"
            ))),
            _ => Ok(FieldDef {
                name: name.into(),
                kind,
                options,
            }),
        }
    }

    /// `value` as it is kept (`null` clears it), or why it does not fit.
    pub fn check(&self, value: &Value) -> Result<Value, ContactError> {
        let bad = |what: &str| {
            ContactError(format!(
                "custom field `{}` is {} : {value} is not {what}",
                self.name, self.kind
            ))
        };
        if value.is_null() {
            return Ok(Value::Null);
        }
        match self.kind {
            CustomFieldKind::Text => match value.as_str() {
                Some(s)
                    if s.chars().count() <= MAX_TEXT
                        && !s.chars().any(|c| c.is_control() && c != '\n') =>
                {
                    Ok(Value::String(s.to_string()))
                }
                Some(_) => Err(bad(
                    "a text of at most 1000 characters without control characters",
                )),
                None => Err(bad("a text")),
            },
            CustomFieldKind::Number => {
                let n = match value {
                    Value::Number(n) => Some(n.clone()),
                    Value::String(s) => s.trim().parse::<serde_json::Number>().ok(),
                    _ => None,
                };
                n.filter(|n| n.as_f64().is_some_and(f64::is_finite))
                    .map(Value::Number)
                    .ok_or_else(|| bad("a number"))
            }
            CustomFieldKind::Date => value
                .as_str()
                .and_then(|s| NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok())
                .map(|d| Value::String(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())))
                .ok_or_else(|| bad("a date (YYYY-MM-DD)")),
            CustomFieldKind::List => value
                .as_str()
                .filter(|s| self.options.iter().any(|o| o == s))
                .map(|s| Value::String(s.to_string()))
                .ok_or_else(|| bad(&format!("one of {}", self.options.join(", ")))),
            CustomFieldKind::Boolean => match value {
                Value::Bool(b) => Ok(Value::Bool(*b)),
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => Ok(Value::Bool(true)),
                    "false" | "no" | "0" => Ok(Value::Bool(false)),
                    _ => Err(bad("true or false")),
                },
                _ => Err(bad("true or false")),
            },
        }
    }
}

/// Tags as kept: trimmed, 1–64 characters, no commas or control characters, at most 50.
pub fn normalize_tags<'a>(
    tags: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, ContactError> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim();
        if t.is_empty()
            || t.chars().count() > 64
            || t.contains(',')
            || t.chars().any(char::is_control)
        {
            return Err(ContactError(format!(
                "tag `{t}`: 1 to 64 characters, no commas or control characters"
            )));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(ContactError(format!("at most {MAX_TAGS} tags")));
    }
    out.sort();
    Ok(out)
}

/// A WhatsApp number as Meta writes a wa_id: digits only, 8 to 15 of them (a leading `+`,
/// spaces and dashes are taken and dropped).
pub fn normalize_wa_id(given: &str) -> Result<String, ContactError> {
    let digits: String = given
        .trim()
        .trim_start_matches('+')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(ContactError(format!(
            "`{given}` is not a WhatsApp number (8 to 15 digits)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_checked_against_their_definition() {
        let n = FieldDef::new("orders", CustomFieldKind::Number, vec![]).unwrap();
        assert_eq!(n.check(&json!(3)), Ok(json!(3)));
        assert_eq!(n.check(&json!("4.5")), Ok(json!(4.5)));
        assert!(n.check(&json!("many")).is_err());
        let d = FieldDef::new("since", CustomFieldKind::Date, vec![]).unwrap();
        assert_eq!(d.check(&json!("2026-02-28")), Ok(json!("2026-02-28")));
        assert!(d.check(&json!("2026-02-30")).is_err());
        let l = FieldDef::new(
            "tier",
            CustomFieldKind::List,
            vec!["gold".into(), "silver".into()],
        )
        .unwrap();
        assert!(l.check(&json!("gold")).is_ok());
        let e = l.check(&json!("bronze")).unwrap_err().to_string();
        assert!(e.contains("one of gold, silver"), "{e}");
        let b = FieldDef::new("vip", CustomFieldKind::Boolean, vec![]).unwrap();
        assert_eq!(b.check(&json!("yes")), Ok(json!(true)));
        assert!(b.check(&json!(2)).is_err());
        assert_eq!(b.check(&json!(null)), Ok(json!(null)));
        assert!(
            FieldDef::new("email", CustomFieldKind::Text, vec![]).is_err(),
            "profile field"
        );
        assert!(FieldDef::new("Bad Name", CustomFieldKind::Text, vec![]).is_err());
        assert!(FieldDef::new("tier", CustomFieldKind::List, vec![]).is_err());
    }

    #[test]
    fn tags_and_numbers_are_written_one_way() {
        assert_eq!(
            normalize_tags([" vip", "a", "vip"]).unwrap(),
            vec!["a", "vip"]
        );
        assert!(normalize_tags(["a,b"]).is_err());
        assert_eq!(
            normalize_wa_id("+62 812-0000-0001").unwrap(),
            "6281200000001"
        );
        assert!(normalize_wa_id("12ab").is_err());
    }
}
