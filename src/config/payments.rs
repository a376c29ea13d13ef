//! `[payments]`: the payment gateways' providers, `[payments.providers.NAME]`, in the shape of
//! `[ai.providers.NAME]`: one flat table per provider, its `kind` saying which of its keys are
//! required. Credentials are secrets (listed in `SECRET_KEYS`, never shown by Debug or an
//! error); `instructions` (the manual kind's bank account text) is shown to every customer,
//! so it is a plain string.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use super::check::de_duration;
use crate::domain::GatewayKind;

/// `[payments]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PaymentSettings {
    /// The public URL prefix under which this daemon receives gateways' callbacks, at
    /// `{callback_base_url}/payments/{NAME}/callback`. Unset: no callback URL is sent with a
    /// payment (the gateway's dashboard setting is used) and payments are confirmed by
    /// polling `status`.
    #[serde(default)]
    pub callback_base_url: Option<String>,
    #[serde(default)]
    pub providers: BTreeMap<String, PaymentProviderSettings>,
}

/// `[payments.providers.NAME]`.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentProviderSettings {
    #[serde(deserialize_with = "de_gateway_kind")]
    pub kind: GatewayKind,
    /// The gateway's API origin (Finpay sandbox `https://devo.finnet.co.id`, Xendit
    /// `https://api.xendit.co`, Midtrans `https://api.sandbox.midtrans.com`, Stripe
    /// `https://api.stripe.com`). Required except for `manual`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// A sandbox account: logged with each call so test payments are told apart.
    #[serde(default)]
    pub sandbox: bool,
    /// Each request to the gateway must be answered within this long.
    #[serde(default = "default_payment_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// finpay
    #[serde(default)]
    pub merchant_id: Option<SecretString>,
    /// finpay
    #[serde(default)]
    pub merchant_key: Option<SecretString>,
    /// xendit, stripe
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    /// xendit: the dashboard's callback verification token.
    #[serde(default)]
    pub callback_token: Option<SecretString>,
    /// midtrans
    #[serde(default)]
    pub server_key: Option<SecretString>,
    /// stripe: the webhook endpoint's signing secret (`whsec_…`).
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
    /// manual: the bank account and how to pay, as the customer is shown it.
    #[serde(default)]
    pub instructions: Option<String>,
}

pub(super) fn default_payment_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The kinds a provider may have, for errors.
const KINDS: &[&str] = &["finpay", "xendit", "midtrans", "stripe", "manual"];

fn de_gateway_kind<'de, D: Deserializer<'de>>(d: D) -> Result<GatewayKind, D::Error> {
    let s = String::deserialize(d)?;
    s.trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|_| serde::de::Error::unknown_variant(&s, KINDS))
}

impl PaymentProviderSettings {
    /// The credential keys the kind needs, each with its value.
    pub fn required_secrets(&self) -> Vec<(&'static str, Option<&SecretString>)> {
        match self.kind {
            GatewayKind::Finpay => vec![
                ("merchant_id", self.merchant_id.as_ref()),
                ("merchant_key", self.merchant_key.as_ref()),
            ],
            GatewayKind::Xendit => vec![
                ("secret_key", self.secret_key.as_ref()),
                ("callback_token", self.callback_token.as_ref()),
            ],
            GatewayKind::Midtrans => vec![("server_key", self.server_key.as_ref())],
            GatewayKind::Stripe => vec![
                ("secret_key", self.secret_key.as_ref()),
                ("webhook_secret", self.webhook_secret.as_ref()),
            ],
            GatewayKind::Manual => vec![],
        }
    }
}

/// A provider name: it is a path segment of the callback URL and a config key.
pub fn is_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn is_http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://")) && reqwest::Url::parse(url).is_ok()
}

impl PaymentSettings {
    /// Every problem, each naming its key; never a secret's value. An account's `payments`
    /// must name a provider here.
    pub(super) fn check(&self, accounts: &[super::AccountSettings], errors: &mut Vec<String>) {
        for (i, a) in accounts.iter().enumerate() {
            if let Some(name) = &a.payments {
                if !self.providers.contains_key(name) {
                    errors.push(format!(
                        "accounts[{i}].payments: `{name}` is not under [payments.providers]"
                    ));
                }
            }
        }
        if let Some(url) = &self.callback_base_url {
            if !is_http_url(url) {
                errors.push(format!(
                    "payments.callback_base_url: `{url}` is not an http(s) URL"
                ));
            }
        }
        for (name, p) in &self.providers {
            let key = |k: &str| format!("payments.providers.{name}.{k}");
            if !is_provider_name(name) {
                errors.push(format!(
                    "payments.providers.{name}: the name may only have a-z, 0-9, `_` and `-` \
                     (it is part of the callback URL)"
                ));
            }
            match (&p.base_url, p.kind) {
                (None, GatewayKind::Manual) => {}
                (None, kind) => {
                    errors.push(format!("{}: required for kind {kind}", key("base_url")))
                }
                (Some(url), _) if !is_http_url(url) => errors.push(format!(
                    "{}: `{url}` is not an http(s) URL",
                    key("base_url")
                )),
                (Some(_), _) => {}
            }
            for (k, v) in p.required_secrets() {
                if v.is_none_or(|s| s.expose_secret().trim().is_empty()) {
                    errors.push(format!("{}: required for kind {}", key(k), p.kind));
                }
            }
            if p.kind == GatewayKind::Manual
                && p.instructions
                    .as_deref()
                    .is_none_or(|t| t.trim().is_empty())
            {
                errors.push(format!(
                    "{}: required for kind manual (the bank account the customer pays to)",
                    key("instructions")
                ));
            }
            if p.timeout < Duration::from_millis(100) {
                errors.push(format!("{}: must be at least 100ms", key("timeout")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Result<PaymentSettings, String> {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<PaymentSettings>())
            .map_err(|e| e.to_string())
    }

    fn problems(text: &str) -> String {
        let mut errors = Vec::new();
        settings(text).unwrap().check(&[], &mut errors);
        errors.join("\n")
    }

    #[test]
    fn a_complete_provider_of_each_kind_passes() {
        let text = r#"
            callback_base_url = "https://shop.example.com"
            [providers.fin]
            kind = "finpay"
            base_url = "https://devo.finnet.co.id"
            sandbox = true
            merchant_id = "m"
            merchant_key = "k"
            [providers.xen]
            kind = "xendit"
            base_url = "https://api.xendit.co"
            secret_key = "xnd_development_x"
            callback_token = "t"
            timeout = "5s"
            [providers.mid]
            kind = "midtrans"
            base_url = "https://api.sandbox.midtrans.com"
            server_key = "SB-Mid-server-x"
            [providers.str-1]
            kind = "stripe"
            base_url = "https://api.stripe.com"
            secret_key = "sk_test_x"
            webhook_secret = "whsec_x"
            [providers.bank]
            kind = "manual"
            instructions = "BCA 123 a.n. Toko"
        "#;
        assert_eq!(problems(text), "");
        let s = settings(text).unwrap();
        assert_eq!(s.providers["xen"].timeout, Duration::from_secs(5));
        assert_eq!(s.providers["mid"].timeout, Duration::from_secs(10));
        assert!(s.providers["fin"].sandbox);
    }

    #[test]
    fn missing_credentials_bad_urls_and_names_are_named_without_secrets() {
        let text = r#"
            callback_base_url = "ftp://x"
            [providers.Xen]
            kind = "xendit"
            base_url = "api.xendit.co"
            secret_key = "xnd_SECRET_value"
            [providers.mid]
            kind = "midtrans"
            [providers.bank]
            kind = "manual"
        "#;
        let p = problems(text);
        for want in [
            "payments.callback_base_url",
            "payments.providers.Xen: the name",
            "payments.providers.Xen.base_url: `api.xendit.co`",
            "payments.providers.Xen.callback_token: required for kind xendit",
            "payments.providers.mid.base_url: required",
            "payments.providers.mid.server_key: required for kind midtrans",
            "payments.providers.bank.instructions: required",
        ] {
            assert!(p.contains(want), "{want}: {p}");
        }
        assert!(!p.contains("SECRET"), "{p}");
        let s = settings(text).unwrap();
        assert!(!format!("{s:?}").contains("SECRET"));
    }

    #[test]
    fn an_unknown_kind_is_refused_listing_the_kinds() {
        let err = settings("[providers.x]\nkind = \"paypal\"\n").unwrap_err();
        assert!(err.contains("paypal") && err.contains("midtrans"), "{err}");
    }
}
