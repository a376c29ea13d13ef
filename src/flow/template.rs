//! `{{ ... }}` text templates, parsed at load time and rendered in a single pass.

use super::expr::{as_decimal, display, Env};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Upper,
    Lower,
    Default(String),
    Number,
    /// `currency('IDR')`: grouped thousands, the currency's minor digits, code first.
    Currency(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Var {
        /// Reads `contact.<name>` instead of a variable.
        contact: bool,
        name: String,
        filters: Vec<Filter>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    segs: Vec<Seg>,
}

fn parse_filter(f: &str) -> Result<Filter, String> {
    let f = f.trim();
    match f {
        "upper" => return Ok(Filter::Upper),
        "lower" => return Ok(Filter::Lower),
        "number" => return Ok(Filter::Number),
        _ => {}
    }
    let quoted = |arg: &str| {
        let arg = arg.trim();
        ['\'', '"']
            .iter()
            .find_map(|q| arg.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
            .map(str::to_string)
    };
    if let Some(arg) = f.strip_prefix("default(").and_then(|r| r.strip_suffix(')')) {
        return quoted(arg)
            .map(Filter::Default)
            .ok_or_else(|| format!("default() needs a quoted string, got `{arg}`"));
    }
    if let Some(arg) = f
        .strip_prefix("currency(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return match quoted(arg) {
            Some(c) if c.len() == 3 && c.chars().all(|c| c.is_ascii_alphabetic()) => {
                Ok(Filter::Currency(c.to_ascii_uppercase()))
            }
            _ => Err(format!(
                "currency() needs a quoted ISO 4217 code like 'IDR', got `{arg}`"
            )),
        };
    }
    Err(format!("unknown template filter `{f}`"))
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut segs = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find("{{") {
            if i > 0 {
                segs.push(Seg::Lit(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let j = after
                .find("}}")
                .ok_or_else(|| "unclosed `{{` in template".to_string())?;
            let inner = &after[..j];
            let mut parts = inner.split('|');
            let var = parts.next().unwrap_or("").trim();
            let (contact, name) = if let Some(field) = var.strip_prefix("contact.") {
                if field.is_empty() || !field.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return Err(format!("bad template variable `{var}`"));
                }
                (true, field.to_string())
            } else {
                let n = var.strip_prefix("vars.").unwrap_or(var);
                if n.is_empty() || !n.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return Err(format!("bad template variable `{var}`"));
                }
                (false, n.to_string())
            };
            let filters = parts.map(parse_filter).collect::<Result<Vec<_>, _>>()?;
            segs.push(Seg::Var {
                contact,
                name,
                filters,
            });
            rest = &after[j + 2..];
        }
        if !rest.is_empty() {
            segs.push(Seg::Lit(rest.to_string()));
        }
        Ok(Template { segs })
    }

    /// Source-free literal template (for text that must not be templated).
    pub fn literal(s: &str) -> Template {
        Template {
            segs: vec![Seg::Lit(s.to_string())],
        }
    }

    /// The variables it reads without a `default(...)` (those with one expect absence).
    pub fn required_vars(&self) -> impl Iterator<Item = &str> {
        self.segs.iter().filter_map(|s| match s {
            Seg::Var {
                contact: false,
                name,
                filters,
            } if !filters.iter().any(|f| matches!(f, Filter::Default(_))) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Render once; substituted values are never re-interpreted.
    pub fn render(&self, env: &Env<'_>) -> String {
        let mut out = String::new();
        for s in &self.segs {
            match s {
                Seg::Lit(l) => out.push_str(l),
                Seg::Var {
                    contact,
                    name,
                    filters,
                } => {
                    let v = if *contact {
                        super::model::Value::Str(env.contact.get(name))
                    } else {
                        env.lookup(name)
                    };
                    let mut text = display(&v);
                    for f in filters {
                        text = match f {
                            Filter::Upper => text.to_uppercase(),
                            Filter::Lower => text.to_lowercase(),
                            Filter::Default(d) if text.is_empty() => d.clone(),
                            Filter::Default(_) => text,
                            Filter::Number => {
                                match as_decimal(&super::model::Value::Str(text.clone())) {
                                    Some(d) => d.normalize().to_string(),
                                    None => text,
                                }
                            }
                            Filter::Currency(code) => {
                                match as_decimal(&super::model::Value::Str(text.clone())) {
                                    Some(d) => format_currency(d, code),
                                    None => text,
                                }
                            }
                        };
                    }
                    out.push_str(&text);
                }
            }
        }
        out
    }
}

/// Digits after the decimal point a currency is written with (ISO 4217 minor units).
fn minor_digits(code: &str) -> u32 {
    match code {
        "IDR" | "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "UGX" | "PYG" | "XAF" | "XOF" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "IQD" | "LYD" => 3,
        _ => 2,
    }
}

/// `IDR 45,000`, `USD 1,234.50`: code, grouped integer part, the currency's minor digits
/// (rounded half away from zero). Exact: Decimal, never float.
pub fn format_currency(amount: rust_decimal::Decimal, code: &str) -> String {
    let digits = minor_digits(code);
    let rounded =
        amount.round_dp_with_strategy(digits, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    let text = format!("{:.*}", digits as usize, rounded.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if rounded.is_sign_negative() && !rounded.is_zero() {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{code} {sign}{grouped}")
    } else {
        format!("{code} {sign}{grouped}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::model::Value;
    use std::collections::BTreeMap;

    #[test]
    fn renders_filters_and_never_rerenders() {
        let mut vars = BTreeMap::new();
        vars.insert("x".into(), Value::Str("{{secret}}".into()));
        vars.insert("secret".into(), Value::Str("hunter2".into()));
        vars.insert("n".into(), Value::Str("45000.00".into()));
        let contact = crate::conversation::ContactInfo {
            profile_name: Some("Ana".into()),
            ..Default::default()
        };
        let env = Env {
            vars: &vars,
            contact: &contact,
        };
        let t = Template::parse(
            "{{x}}|{{vars.x | upper}}|{{contact.name | lower}}|{{nope}}|{{nope | default('d')}}|{{n | number}}",
        )
        .unwrap();
        assert_eq!(t.render(&env), "{{secret}}|{{SECRET}}|ana||d|45000");
        assert!(Template::parse("{{x").is_err());
        assert!(Template::parse("{{x | shout}}").is_err());
        assert!(Template::parse("{{a b}}").is_err());
        assert!(Template::parse("{{x | default(d)}}").is_err());
        assert!(Template::parse("{{x | currency(IDR)}}").is_err());
    }

    #[test]
    fn currency_uses_the_currency_minor_digits_and_groups_thousands() {
        let d = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
        assert_eq!(format_currency(d("45000"), "IDR"), "IDR 45,000");
        assert_eq!(format_currency(d("1234.5"), "USD"), "USD 1,234.50");
        assert_eq!(format_currency(d("0.125"), "EUR"), "EUR 0.13");
        assert_eq!(format_currency(d("-1000000.4"), "JPY"), "JPY -1,000,000");
        assert_eq!(format_currency(d("999"), "USD"), "USD 999.00");
        let mut vars = BTreeMap::new();
        vars.insert("t".into(), Value::Num(d("45000")));
        let contact = crate::conversation::ContactInfo::default();
        let env = Env {
            vars: &vars,
            contact: &contact,
        };
        let t = Template::parse("Total: {{t | currency('idr')}}").unwrap();
        assert_eq!(t.render(&env), "Total: IDR 45,000");
    }
}
