//! The HTTP call every kind makes, and small helpers the kinds share.
//!
//! A call sets the kind's auth header (marked sensitive, so no debug output shows it), the
//! provider's timeout, and the idempotency header where the kind has one. 5xx, 429, timeouts
//! and connection failures are [`GatewayError::Unavailable`] here; any other answer goes back
//! to the kind, which reads its error shape (or its 4xx-in-a-200, Midtrans and Finpay).

use base64::Engine;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Digest;

use super::LineItem;
use super::{Credentials, Gateway, GatewayError};
use crate::domain::{Currency, Money};

/// A request body.
pub(super) enum Body {
    None,
    Json(Value),
    /// `application/x-www-form-urlencoded` (Stripe).
    Form(Vec<(String, String)>),
}

/// A gateway's answer that is not a 5xx: its HTTP status and JSON body.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: u16,
    pub body: Value,
}

/// The longest gateway message kept in an error.
const MAX_MESSAGE: usize = 300;

impl Gateway {
    fn authorization(&self) -> Result<HeaderValue, GatewayError> {
        let basic = |user: &SecretString, pass: &str| {
            let raw = format!("{}:{pass}", user.expose_secret());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        };
        let text = match &self.creds {
            Credentials::Finpay {
                merchant_id,
                merchant_key,
            } => basic(merchant_id, merchant_key.expose_secret()),
            Credentials::Xendit { secret_key, .. } => basic(secret_key, ""),
            Credentials::Midtrans { server_key } => basic(server_key, ""),
            Credentials::Stripe { secret_key, .. } => {
                format!("Bearer {}", secret_key.expose_secret())
            }
            Credentials::Manual { .. } => return Err(self.invalid("a manual provider has no API")),
        };
        let mut v = HeaderValue::from_str(&text)
            .map_err(|_| self.invalid("a credential has characters a header cannot carry"))?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// `method {base_url}{path}` with the kind's auth and `headers` (an idempotency key, a
    /// notification URL).
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body,
        headers: &[(&'static str, &str)],
    ) -> Result<Answer, GatewayError> {
        let url = format!("{}{path}", self.base_url);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .timeout(self.timeout)
            .header(AUTHORIZATION, self.authorization()?)
            .header(reqwest::header::ACCEPT, "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Form(pairs) => req.form(&pairs),
        };
        let started = std::time::Instant::now();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(self.unavailable_from(&e)),
        };
        let status = resp.status().as_u16();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(self.unavailable_from(&e)),
        };
        tracing::debug!(
            gateway = %self.name, %method, path, status,
            ms = started.elapsed().as_millis() as u64,
            "Payment gateway answered."
        );
        if status >= 500 || status == 429 {
            return Err(GatewayError::Unavailable {
                gateway: self.name.clone(),
                reason: format!("HTTP {status}"),
            });
        }
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| self.malformed(format!("HTTP {status} with a body that is not JSON")))?;
        Ok(Answer { status, body })
    }

    fn unavailable_from(&self, e: &reqwest::Error) -> GatewayError {
        let reason = if e.is_timeout() {
            format!("no answer within {:?}", self.timeout)
        } else if e.is_connect() {
            "could not connect".to_string()
        } else if e.is_body() || e.is_decode() {
            "the answer broke off".to_string()
        } else {
            "the request failed".to_string()
        };
        GatewayError::Unavailable {
            gateway: self.name.clone(),
            reason,
        }
    }

    /// The gateway's words, without any of this provider's secrets, cut short.
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        let secrets: Vec<&SecretString> = match &self.creds {
            Credentials::Finpay {
                merchant_id,
                merchant_key,
            } => vec![merchant_id, merchant_key],
            Credentials::Xendit {
                secret_key,
                callback_token,
            } => vec![secret_key, callback_token],
            Credentials::Midtrans { server_key } => vec![server_key],
            Credentials::Stripe {
                secret_key,
                webhook_secret,
            } => vec![secret_key, webhook_secret],
            Credentials::Manual { .. } => vec![],
        };
        for s in secrets {
            let s = s.expose_secret();
            if !s.is_empty() {
                out = out.replace(s, "***");
            }
        }
        if out.chars().count() > MAX_MESSAGE {
            out = out.chars().take(MAX_MESSAGE).collect::<String>() + "…";
        }
        out
    }

    pub(super) fn refused(&self, status: u16, code: &str, message: &str) -> GatewayError {
        GatewayError::Refused {
            gateway: self.name.clone(),
            status,
            code: self.scrub(code),
            message: self.scrub(message),
        }
    }

    pub(super) fn duplicate(&self, message: &str) -> GatewayError {
        GatewayError::Duplicate {
            gateway: self.name.clone(),
            message: self.scrub(message),
        }
    }
}

/// A stable id for a callback that carries none: the kind and what it says, hashed.
pub(super) fn event_id(kind: &str, parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    format!("{kind}:{}", &hex::encode(h.finalize())[..32])
}

/// A JSON amount (a number, or a decimal string such as Midtrans' "100000.00") as money.
pub(super) fn money_of(v: Option<&Value>, currency: Currency) -> Option<Money> {
    let text = match v? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    Money::parse(&text, currency).ok()
}

/// A JSON currency code, or `default`.
pub(super) fn currency_of(v: Option<&Value>, default: Currency) -> Currency {
    v.and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The items' total, when they have one in `total`'s currency.
pub(super) fn items_total(items: &[LineItem], total: &Money) -> Option<Money> {
    let mut sum = Money::zero(total.currency);
    for i in items {
        sum = sum.plus(&i.unit_price.times(i.quantity).ok()?).ok()?;
    }
    Some(sum)
}

/// Given and family names for gateways that want both: the first word, and the rest (the
/// first again for a one-word name, which is common in Indonesia).
pub(super) fn split_name(name: &str) -> (String, String) {
    let name = name.trim();
    let name = if name.is_empty() { "Customer" } else { name };
    match name.split_once(char::is_whitespace) {
        Some((first, rest)) if !rest.trim().is_empty() => {
            (first.to_string(), rest.trim().to_string())
        }
        _ => (name.to_string(), name.to_string()),
    }
}

/// `+` and digits (Finpay, Xendit want E.164 with the plus).
pub(super) fn e164(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    format!("+{digits}")
}

/// `2023-04-05 09:56:35` (at `offset_secs` east of UTC) or RFC 3339
/// (`2020-01-01T00:00:00.000Z`, `…+07:00`) as Unix seconds.
pub(super) fn parse_time(text: &str, offset_secs: i64) -> Option<i64> {
    let t = text.trim();
    let num = |s: &str| s.parse::<i64>().ok();
    if t.len() < 19 {
        return None;
    }
    let (y, mo, d) = (num(&t[0..4])?, num(&t[5..7])?, num(&t[8..10])?);
    let (h, mi, s) = (num(&t[11..13])?, num(&t[14..16])?, num(&t[17..19])?);
    if &t[4..5] != "-" || &t[7..8] != "-" || !matches!(&t[10..11], " " | "T") {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" => offset_secs,
        "Z" | "z" => 0,
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (num(&z[1..3])? * 3600 + num(&z[4..6])? * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Western Indonesia Time, UTC+7: Finpay's and Midtrans' times without a zone.
pub(super) const WIB: i64 = 7 * 3600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_in_their_zone() {
        assert_eq!(parse_time("1970-01-01 07:00:00", WIB), Some(0));
        assert_eq!(
            parse_time("2023-04-05T02:56:35.000Z", 0),
            Some(1_680_663_395)
        );
        assert_eq!(parse_time("2023-04-05 09:56:35", WIB), Some(1_680_663_395));
        assert_eq!(
            parse_time("2023-04-05T09:56:35+07:00", 0),
            Some(1_680_663_395)
        );
        assert_eq!(parse_time("soon", 0), None);
    }

    #[test]
    fn names_split_and_event_ids_are_stable() {
        assert_eq!(split_name("Budi"), ("Budi".into(), "Budi".into()));
        assert_eq!(split_name("Siti Nur Aisyah").1, "Nur Aisyah");
        assert_eq!(event_id("x", &["a", "b"]), event_id("x", &["a", "b"]));
        assert_ne!(event_id("x", &["ab", ""]), event_id("x", &["a", "b"]));
        assert_eq!(e164("0812-345"), "+0812345");
    }

    #[test]
    fn amounts_read_from_numbers_and_strings() {
        let idr = Currency::IDR;
        let want = Money::parse("100000", idr).ok();
        assert_eq!(money_of(Some(&serde_json::json!(100000)), idr), want);
        assert_eq!(money_of(Some(&serde_json::json!("100000.00")), idr), want);
        assert_eq!(money_of(Some(&serde_json::json!(100000.0)), idr), want);
        assert_eq!(money_of(None, idr), None);
    }
}
