//! `{{ ... }}` text templates, parsed at load time and rendered in a single pass.

use super::expr::{as_decimal, display, Env};
use crate::outcall::is_dot_segment;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Upper,
    Lower,
    Default(String),
    Number,
    /// `currency('IDR')`: grouped thousands, the currency's minor digits, code first.
    Currency(String),
    /// `money`: an amount of the shop's currency (the variable `commerce.currency` a shop
    /// node sets; IDR before any) as a customer reads it: `Rp 50.000`, `USD 1,234.50`.
    Money,
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
        "money" => return Ok(Filter::Money),
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
                if !super::expr::is_var_name(n) {
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
        self.render_with(env, |text, out| out.push_str(text))
    }

    /// Render with `put` writing each substituted value into the output.
    fn render_with(&self, env: &Env<'_>, put: impl Fn(&str, &mut String)) -> String {
        let mut out = String::new();
        for s in &self.segs {
            match s {
                Seg::Lit(l) => out.push_str(l),
                Seg::Var {
                    contact,
                    name,
                    filters,
                } => put(&value_text(*contact, name, filters, env), &mut out),
            }
        }
        out
    }
}

fn value_text(contact: bool, name: &str, filters: &[Filter], env: &Env<'_>) -> String {
    let v = if contact {
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
            Filter::Number => match as_decimal(&super::model::Value::Str(text.clone())) {
                Some(d) => d.normalize().to_string(),
                None => text,
            },
            Filter::Currency(code) => match as_decimal(&super::model::Value::Str(text.clone())) {
                Some(d) => format_currency(d, code),
                None => text,
            },
            Filter::Money => {
                let currency = match env.lookup("commerce.currency") {
                    super::model::Value::Str(c) => c.parse().unwrap_or_default(),
                    _ => crate::domain::Currency::default(),
                };
                match crate::domain::Money::parse(&text, currency) {
                    Ok(m) => m.display(),
                    Err(_) => match as_decimal(&super::model::Value::Str(text.clone())) {
                        Some(d) => format_currency(d, currency.as_str()),
                        None => text,
                    },
                }
            }
        };
    }
    text
}

/// The part of a URL's authority a template variable would be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityPart {
    Scheme,
    UserInfo,
    Host,
    Port,
}

impl std::fmt::Display for AuthorityPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthorityPart::Scheme => "scheme",
            AuthorityPart::UserInfo => "user info",
            AuthorityPart::Host => "host",
            AuthorityPart::Port => "port",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlTemplateError {
    #[error("{0}")]
    Template(String),
    #[error("url must start with https:// (or http:// for an allow-listed address)")]
    Scheme,
    /// `var` is the variable as written (`{{host}}`), to point at it.
    #[error(
        "template variable `{var}` is in the url's {part}: the scheme, host, port and user \
         info must be written out (a value may fill only path segments, the query or the \
         fragment)"
    )]
    VariableInAuthority { var: String, part: AuthorityPart },
    #[error("the url has no host")]
    NoHost,
    #[error("the url's path has a `{0}` segment: write the path it stands for")]
    DotSegment(String),
}

/// An `http` node's URL: the scheme and authority are literal, and every substituted value
/// is percent-encoded (all but RFC 3986 unreserved `A-Z a-z 0-9 - . _ ~`), so a value stays
/// one path segment, one query key or value, or the fragment: it can never add a `/`, `?`,
/// `#`, `&` or `=`. Encoding cannot stop a value that is a whole segment of `.` or `..`
/// (URL parsers resolve `%2e%2e` too): the call is refused
/// ([`crate::outcall::has_dot_segment`]).
#[derive(Debug, Clone, PartialEq)]
pub struct UrlTemplate(Template);

impl UrlTemplate {
    pub fn parse(src: &str) -> Result<UrlTemplate, UrlTemplateError> {
        let template = Template::parse(src).map_err(UrlTemplateError::Template)?;
        // The source with each variable replaced by one placeholder char: the URL's
        // structure comes from the literal text alone.
        const HOLE: char = '\u{0}';
        let mut skeleton = String::new();
        let mut holes: Vec<(usize, &str)> = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find("{{") {
            let end = rest[i + 2..]
                .find("}}")
                .map_or(rest.len(), |j| i + 2 + j + 2);
            skeleton.push_str(&rest[..i]);
            holes.push((skeleton.len(), &rest[i..end]));
            skeleton.push(HOLE);
            rest = &rest[end..];
        }
        skeleton.push_str(rest);
        let scheme_len = ["https://", "http://"]
            .iter()
            .find(|p| skeleton.starts_with(**p))
            .map(|p| p.len());
        let Some(start) = scheme_len else {
            let scheme_end = skeleton.find(':').unwrap_or(skeleton.len());
            return match holes.first() {
                Some((at, var)) if *at <= scheme_end => {
                    Err(UrlTemplateError::VariableInAuthority {
                        var: var.to_string(),
                        part: AuthorityPart::Scheme,
                    })
                }
                _ => Err(UrlTemplateError::Scheme),
            };
        };
        let end = skeleton[start..]
            .find(['/', '?', '#'])
            .map_or(skeleton.len(), |i| start + i);
        let authority = &skeleton[start..end];
        let host_start = authority.rfind('@').map_or(0, |i| i + 1);
        let host_port = &authority[host_start..];
        let port_colon = match host_port.find(']') {
            Some(close) => host_port[close..].find(':').map(|i| close + i),
            None => host_port.find(':'),
        };
        if let Some((at, var)) = holes.iter().find(|(at, _)| *at < end) {
            let at = at - start;
            let part = if at < host_start {
                AuthorityPart::UserInfo
            } else if port_colon.is_some_and(|c| at > host_start + c) {
                AuthorityPart::Port
            } else {
                AuthorityPart::Host
            };
            return Err(UrlTemplateError::VariableInAuthority {
                var: var.to_string(),
                part,
            });
        }
        // An empty host would let `https:///{{x}}` make a value the host (WHATWG parsers
        // skip the extra slash).
        if host_port[..port_colon.unwrap_or(host_port.len())].is_empty() {
            return Err(UrlTemplateError::NoHost);
        }
        let path = &skeleton[end..];
        let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
        if let Some(seg) = path.split(['/', '\\']).find(|s| is_dot_segment(s)) {
            return Err(UrlTemplateError::DotSegment(seg.to_string()));
        }
        Ok(UrlTemplate(template))
    }

    /// Stands in for a URL that failed to parse, so validation goes on collecting errors.
    pub fn placeholder() -> UrlTemplate {
        UrlTemplate(Template::literal(""))
    }

    /// The variables it reads without a `default(...)`.
    pub fn required_vars(&self) -> impl Iterator<Item = &str> {
        self.0.required_vars()
    }

    /// Render once, each value percent-encoded.
    pub fn render(&self, env: &Env<'_>) -> String {
        self.0.render_with(env, encode_component)
    }
}

/// Percent-encode all but RFC 3986 unreserved characters (UTF-8 bytes, upper-case hex).
fn encode_component(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

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
    let grouped = crate::domain::group_thousands(int, ',');
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
    use proptest::prelude::*;
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

    fn render_url(src: &str, reply: &str) -> String {
        let mut vars = BTreeMap::new();
        vars.insert("reply".into(), Value::Str(reply.into()));
        let contact = crate::conversation::ContactInfo::default();
        let env = Env {
            vars: &vars,
            contact: &contact,
        };
        UrlTemplate::parse(src).unwrap().render(&env)
    }

    #[test]
    fn url_values_are_percent_encoded_so_they_stay_one_segment_key_or_value() {
        let url = "https://api.example/orders/{{reply}}?{{reply}}={{reply}}&x=1#{{reply}}";
        let traversal = "../../admin/delete-all?confirm=yes&x=";
        let enc = "..%2F..%2Fadmin%2Fdelete-all%3Fconfirm%3Dyes%26x%3D";
        assert_eq!(
            render_url(url, traversal),
            format!("https://api.example/orders/{enc}?{enc}={enc}&x=1#{enc}")
        );
        assert_eq!(
            render_url("https://a.example/q?v={{reply}}", "&x=1# +%é/\\"),
            "https://a.example/q?v=%26x%3D1%23%20%2B%25%C3%A9%2F%5C"
        );
        assert_eq!(
            render_url("https://a.example/{{reply}}", "Az09-._~"),
            "https://a.example/Az09-._~"
        );
    }

    /// `%XX` decoded (as UTF-8); everything else kept, `+` included.
    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match (b[i], s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16))) {
                (b'%', Some(Ok(byte))) => {
                    out.push(byte);
                    i += 3;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    }

    proptest! {
        /// Whatever the value, the URL keeps its host, its number of path segments and its
        /// query pairs, and each decodes back to what was written; or it has a dot segment
        /// and is never sent.
        #[test]
        fn no_value_changes_a_urls_host_segments_or_query_pairs(
            segs in proptest::collection::vec(
                prop_oneof!["[a-z]{1,4}", Just("{{reply}}".to_string()), Just("x{{reply}}".to_string())],
                1..4,
            ),
            pairs in 0usize..3,
            value in "\\PC{0,12}|[./?#&=+%\\\\ @:;]{0,6}",
        ) {
            let query: Vec<String> = (0..pairs).map(|i| format!("k{i}={{{{reply}}}}")).collect();
            let mut src = format!("https://api.example/{}", segs.join("/"));
            if !query.is_empty() {
                src = format!("{src}?{}", query.join("&"));
            }
            let rendered = render_url(&src, &value);
            if crate::outcall::has_dot_segment(&rendered) {
                prop_assert!(segs.iter().any(|s| s == "{{reply}}") && (value == "." || value == ".."));
                return Ok(());
            }
            let url = url::Url::parse(&rendered).unwrap();
            prop_assert_eq!(url.host_str(), Some("api.example"));
            prop_assert_eq!(url.port(), None);
            let got: Vec<String> = url
                .path_segments()
                .unwrap()
                .map(percent_decode)
                .collect();
            let want: Vec<String> = segs.iter().map(|s| s.replace("{{reply}}", &value)).collect();
            prop_assert_eq!(got, want);
            let got: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            let want: Vec<(String, String)> = (0..pairs).map(|i| (format!("k{i}"), value.clone())).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(url.fragment(), None);
        }
    }

    #[test]
    fn a_url_template_refuses_variables_before_its_path() {
        let refused = |src: &str| match UrlTemplate::parse(src) {
            Err(UrlTemplateError::VariableInAuthority { var, part }) => (var, part),
            other => panic!("{src}: {other:?}"),
        };
        use AuthorityPart::*;
        for (src, var, part) in [
            ("{{scheme}}://api.example/x", "{{scheme}}", Scheme),
            ("http{{s}}://api.example/x", "{{s}}", Scheme),
            ("{{base}}/orders", "{{base}}", Scheme),
            ("https://{{host}}/x", "{{host}}", Host),
            ("https://api.{{ tenant }}.example/x", "{{ tenant }}", Host),
            ("https://api.example{{path}}", "{{path}}", Host),
            ("https://api.example:{{port}}/x", "{{port}}", Port),
            ("https://{{user}}:pw@api.example/x", "{{user}}", UserInfo),
            ("https://u:{{pw}}@api.example/x", "{{pw}}", UserInfo),
            ("https://[::1]:{{port}}/x", "{{port}}", Port),
            ("https://api.example\\{{x}}", "{{x}}", Host),
        ] {
            assert_eq!(refused(src), (var.to_string(), part), "{src}");
        }
        assert_eq!(
            UrlTemplate::parse("ftp://api.example/{{x}}"),
            Err(UrlTemplateError::Scheme)
        );
        assert_eq!(
            UrlTemplate::parse("https:///{{x}}"),
            Err(UrlTemplateError::NoHost)
        );
        assert_eq!(
            UrlTemplate::parse("https://api.example/a/../{{x}}"),
            Err(UrlTemplateError::DotSegment("..".into()))
        );
        assert!(matches!(
            UrlTemplate::parse("https://api.example/{{x"),
            Err(UrlTemplateError::Template(_))
        ));
        for ok in [
            "https://api.example/{{x}}",
            "https://api.example?{{k}}={{v}}",
            "https://api.example#{{f}}",
            "http://127.0.0.1:8080/a/{{x}}.json/{{y}}?q={{z | upper}}",
            "https://u:p@[::1]:8443/{{x}}",
        ] {
            assert!(UrlTemplate::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn money_reads_the_shops_currency() {
        let mut vars = BTreeMap::new();
        vars.insert("t".into(), Value::Num("75000".parse().unwrap()));
        let contact = crate::conversation::ContactInfo::default();
        let t = Template::parse("Total: {{t | money}}").unwrap();
        let env = Env {
            vars: &vars,
            contact: &contact,
        };
        assert_eq!(t.render(&env), "Total: Rp 75.000");
        vars.insert("commerce.currency".into(), Value::Str("USD".into()));
        vars.insert("t".into(), Value::Num("12.5".parse().unwrap()));
        let env = Env {
            vars: &vars,
            contact: &contact,
        };
        assert_eq!(t.render(&env), "Total: USD 12.50");
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
