//! HTTP calls that flows make to the business's own systems, behind an SSRF guard.
//!
//! The flow engine only *describes* a call ([`HttpCall`], an effect committed with the step
//! that asked for it); [`OutCaller`] makes it after the commit and the outcome goes back to
//! the conversation as an event. Calls run off the actor, so a slow endpoint never blocks
//! other conversations. A call whose outcome was not applied before a crash is made again
//! on restart with the same `Idempotency-Key` header (the call id), so the business's system
//! can recognise the repeat.
//!
//! The guard: only `https`, and no address in a private, loopback, link-local, CGNAT,
//! multicast or otherwise reserved range, unless the address is in `flows.http_allow` (which
//! then also permits plain `http`). Names are resolved by our own resolver and every address
//! it hands the connector is checked, so a name that re-resolves to a private address between
//! the check and the connection (DNS rebinding) still cannot reach it. Redirects are not
//! followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest response body kept (bytes); the rest is dropped.
pub const MAX_BODY: usize = 256 * 1024;
/// Longest a call may take, whatever the flow says.
pub const MAX_TIMEOUT_MS: u64 = 30_000;

/// A call a flow wants made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCall {
    /// Unique per call; sent as `Idempotency-Key`; the outcome names it.
    pub id: String,
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub timeout_ms: u64,
}

/// What came back: `status` 0 when there was no response (refused, timeout, network).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpOutcome {
    pub id: String,
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HttpOutcome {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn failed(id: &str, error: impl Into<String>) -> HttpOutcome {
        HttpOutcome {
            id: id.to_string(),
            status: 0,
            body: String::new(),
            error: Some(error.into()),
        }
    }
}

/// An address range: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: prefix must be 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped and NAT64 IPv6 addresses are the IPv4 address they carry (for the allow-list).
fn canonical(ip: IpAddr) -> IpAddr {
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return IpAddr::V4(v4);
        }
        let s = v6.segments();
        if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
            let o = v6.octets();
            return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
        }
    }
    ip
}

/// The IPv4 addresses an IPv6 address carries in a transition form; a packet to it reaches
/// (or is relayed towards) them, so the address is judged by them.
fn embedded_ipv4(a: Ipv6Addr) -> Vec<Ipv4Addr> {
    let s = a.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let mut out = Vec::new();
    match s {
        // IPv4-compatible ::a.b.c.d (deprecated), IPv4-mapped ::ffff:a.b.c.d, and
        // IPv4-translated ::ffff:0:a.b.c.d (RFC 2765).
        [0, 0, 0, 0, 0, 0 | 0xffff, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo] => {
            out.push(v4(hi, lo))
        }
        // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => out.push(v4(hi, lo)),
        // 6to4 2002:a.b.c.d::/48 (RFC 3056).
        [0x2002, hi, lo, ..] => out.push(v4(hi, lo)),
        // Teredo 2001:0::/32 (RFC 4380): the server, and the client's address inverted.
        [0x2001, 0, shi, slo, _, _, chi, clo] => {
            out.push(v4(shi, slo));
            out.push(v4(!chi, !clo));
        }
        _ => {}
    }
    // ISATAP interface id (RFC 5214) under any /64: ::0:5efe:a.b.c.d or ::200:5efe:a.b.c.d.
    if (s[4] == 0 || s[4] == 0x0200) && s[5] == 0x5efe {
        out.push(v4(s[6], s[7]));
    }
    out
}

fn is_internal_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT 100.64/10
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || o[0] >= 240 // reserved
}

/// True for addresses a flow must not reach unless allow-listed.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_internal_v4(a),
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20 (RFC 9637)
                || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking 2001:2::/48
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
                || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local-use NAT64 64:ff9b:1::/48 (RFC 8215)
                || s[0] == 0x5f00 // SRv6 SIDs 5f00::/16 (RFC 9602)
                || embedded_ipv4(a).into_iter().any(is_internal_v4)
        }
    }
}

/// The guard's rules: what may be reached.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<Cidr>,
}

impl Guard {
    pub fn new(allow: Vec<Cidr>) -> Guard {
        Guard { allow }
    }

    fn allow_listed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }

    /// May a connection go to `ip`?
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_listed(ip) || !is_internal(ip)
    }

    /// Check the URL and the addresses its host has now; Err says why it is refused.
    pub fn check(&self, url: &reqwest::Url, addrs: &[IpAddr]) -> Result<(), String> {
        if addrs.is_empty() {
            return Err("the host has no address".into());
        }
        if let Some(bad) = addrs.iter().find(|a| !self.permits(**a)) {
            return Err(format!(
                "refused: {bad} is a private or reserved address (allow it in flows.http_allow)"
            ));
        }
        match url.scheme() {
            "https" => Ok(()),
            "http" if addrs.iter().all(|a| self.allow_listed(*a)) => Ok(()),
            "http" => Err("refused: only https may be called (or an allow-listed address)".into()),
            other => Err(format!("refused: scheme `{other}` is not allowed")),
        }
    }
}

/// `.` or `..`, also spelled with `%2e`: URL parsers (WHATWG, so reqwest) resolve all of them.
pub(crate) fn is_dot_segment(seg: &str) -> bool {
    let seg = seg.to_ascii_lowercase().replace("%2e", ".");
    seg == "." || seg == ".."
}

/// Does the URL, as written, have a `.` or `..` path segment? Parsing it would resolve the
/// segment away and send the call to another path; such a URL is refused, never sent.
/// Reads it as a WHATWG parser would: tabs and newlines dropped, `\` as `/`.
pub fn has_dot_segment(url: &str) -> bool {
    let url: String = url
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let Some(i) = rest.find(['/', '\\', '?', '#']) else {
        return false;
    };
    let path = &rest[i..];
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    path.split(['/', '\\']).any(is_dot_segment)
}

/// Why a URL is not called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The SSRF guard refused it (scheme, address, dot segment).
    Guard(String),
    /// It is not a URL that can be called (unparsable, no host, unresolvable).
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Guard(s) | Refusal::Invalid(s) => f.write_str(s),
        }
    }
}

/// A resolver that never hands the connector an address the guard refuses.
struct GuardedResolver(Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| guard.permits(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` has no address a flow may call").into());
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// A call the guard stops: logged (without the URL, which may carry customer text or keys).
fn refused(id: &str, why: impl Into<String>) -> HttpOutcome {
    let why = why.into();
    tracing::warn!(call = %id, reason = %why, "A flow's HTTP call was refused.");
    HttpOutcome::failed(id, why)
}

/// Makes flows' HTTP calls.
#[derive(Clone)]
pub struct OutCaller {
    client: reqwest::Client,
    guard: Arc<Guard>,
}

impl OutCaller {
    pub fn new(allow: Vec<Cidr>) -> Result<OutCaller, reqwest::Error> {
        let guard = Arc::new(Guard::new(allow));
        // No proxy from the environment: it would make the connections, so the guarded
        // resolver would never see the addresses, and it would see the flows' headers.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .user_agent(concat!("parley/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(OutCaller { client, guard })
    }

    /// Check `url` against the guard (a dot segment, the scheme, the addresses its host has
    /// now) and parse it; the connection made with [`OutCaller::request`] is checked again
    /// by the guarded resolver.
    pub async fn check_url(&self, url: &str) -> Result<reqwest::Url, Refusal> {
        if has_dot_segment(url) {
            return Err(Refusal::Guard(
                "refused: the URL's path has a `.` or `..` segment (a template value may not be \
                 `.` or `..`): parsing it would call another path"
                    .into(),
            ));
        }
        let url =
            reqwest::Url::parse(url).map_err(|e| Refusal::Invalid(format!("bad URL: {e}")))?;
        let addrs: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(a)) => vec![IpAddr::V4(a)],
            Some(url::Host::Ipv6(a)) => vec![IpAddr::V6(a)],
            Some(url::Host::Domain(d)) => {
                match tokio::net::lookup_host((d, url.port_or_known_default().unwrap_or(443))).await
                {
                    Ok(it) => it.map(|a| a.ip()).collect(),
                    Err(e) => return Err(Refusal::Invalid(format!("resolve: {e}"))),
                }
            }
            None => return Err(Refusal::Invalid("URL has no host".into())),
        };
        self.guard.check(&url, &addrs).map_err(Refusal::Guard)?;
        Ok(url)
    }

    /// A request on the guarded client (no proxy, no redirects, no retries) to a URL
    /// [`OutCaller::check_url`] passed.
    pub fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Make the call; never fails: a refused or failed call is an outcome with status 0.
    pub async fn call(&self, call: &HttpCall) -> HttpOutcome {
        let url = match self.check_url(&call.url).await {
            Ok(u) => u,
            Err(Refusal::Guard(why)) => return refused(&call.id, why),
            Err(Refusal::Invalid(why)) => return HttpOutcome::failed(&call.id, why),
        };
        let method = match reqwest::Method::from_bytes(call.method.to_ascii_uppercase().as_bytes())
        {
            Ok(m) => m,
            Err(_) => return HttpOutcome::failed(&call.id, "bad method"),
        };
        let timeout = Duration::from_millis(call.timeout_ms.clamp(1, MAX_TIMEOUT_MS));
        let mut req = self
            .client
            .request(method, url)
            .timeout(timeout)
            .header("Idempotency-Key", &call.id);
        for (k, v) in &call.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(body) = &call.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return HttpOutcome::failed(&call.id, "timeout"),
            Err(e) => return HttpOutcome::failed(&call.id, format!("request failed: {e}")),
        };
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    let room = MAX_BODY.saturating_sub(body.len());
                    body.extend_from_slice(&c[..c.len().min(room)]);
                    if room <= c.len() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return HttpOutcome {
                        id: call.id.clone(),
                        status: 0,
                        body: String::new(),
                        error: Some(format!("reading the response: {e}")),
                    }
                }
            }
        }
        HttpOutcome {
            id: call.id.clone(),
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_recognised() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_internal(ip(a)), "{a}");
        }
        for a in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip(a)), "{a}");
        }
    }

    #[test]
    fn ipv6_forms_that_carry_an_internal_ipv4_address_are_internal() {
        for a in [
            "::127.0.0.1",                  // IPv4-compatible
            "::169.254.169.254",            // IPv4-compatible, the metadata service
            "::10.0.0.1",                   // IPv4-compatible, private
            "::ffff:127.0.0.1",             // IPv4-mapped
            "::ffff:10.1.2.3",              // IPv4-mapped, private
            "::ffff:0:7f00:1",              // IPv4-translated (RFC 2765)
            "::ffff:0:a9fe:a9fe",           // IPv4-translated, the metadata service
            "64:ff9b::7f00:1",              // NAT64 well-known prefix
            "64:ff9b::a9fe:a9fe",           // NAT64, the metadata service
            "2002:7f00:1::",                // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::1",            // 6to4 of 169.254.169.254
            "2002:c0a8:101:1::1",           // 6to4 of 192.168.1.1
            "2001:0:7f00:1::808:808",       // Teredo, server 127.0.0.1
            "2001:0:808:808:0:0:80ff:fffe", // Teredo, client 127.0.0.1 (inverted)
            "2001:0:808:808::f5ff:fffe",    // Teredo, client 10.0.0.1 (inverted)
            "2001:db9::5efe:7f00:1",        // ISATAP, interface id 0:5efe
            "2606:4700::200:5efe:a00:1",    // ISATAP, interface id 200:5efe, 10.0.0.1
        ] {
            assert!(is_internal(ip(a)), "{a} carries an internal IPv4 address");
            assert!(!Guard::default().permits(ip(a)), "{a}");
        }
    }

    #[test]
    fn ipv6_prefixes_that_are_not_globally_routable_are_internal() {
        for a in [
            "64:ff9b:1::8.8.8.8", // local-use NAT64 (RFC 8215), whatever it carries
            "64:ff9b:1:ffff::1",
            "100::1",      // discard-only
            "2001:2::1",   // benchmarking
            "3fff::1",     // documentation (RFC 9637)
            "2001:db8::1", // documentation
            "5f00::1",     // SRv6 SIDs
        ] {
            assert!(is_internal(ip(a)), "{a}");
        }
    }

    #[test]
    fn ipv6_forms_that_carry_a_public_ipv4_address_are_judged_by_it() {
        for a in [
            "::ffff:8.8.8.8",
            "::ffff:0:808:808",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:0:808:808::f7f7:f7f7", // Teredo: server and client 8.8.8.8
            "2001:4860::5efe:808:808",   // ISATAP of 8.8.8.8
        ] {
            assert!(!is_internal(ip(a)), "{a}");
        }
    }

    #[test]
    fn a_url_with_a_dot_segment_in_its_path_is_recognised_in_every_spelling() {
        for u in [
            "https://x.example/orders/..",
            "https://x.example/orders/../admin",
            "https://x.example/orders/./a",
            "https://x.example/orders/%2e%2E/admin",
            "https://x.example/orders/.%2e?q=1",
            "https://x.example/orders/%2e",
            "https://x.example/orders\\..\\admin",
            "https://x.example/orders/.\t./admin",
            "https://x.example/..#f",
        ] {
            assert!(has_dot_segment(u), "{u}");
        }
        for u in [
            "https://x.example/orders/..%2F..%2Fadmin",
            "https://x.example/orders/...",
            "https://x.example/orders/.a/a.",
            "https://x.example/orders/%252e%252e",
            "https://x.example/orders?q=..",
            "https://x.example/orders#..",
            "https://x.example",
        ] {
            assert!(!has_dot_segment(u), "{u}");
        }
    }

    #[tokio::test]
    async fn a_call_whose_path_has_a_dot_segment_is_refused_before_any_connection() {
        // Allow-listed, so only the dot segment can refuse it; port 1 has no listener.
        let caller = OutCaller::new(vec!["127.0.0.1/32".parse().unwrap()]).unwrap();
        let out = caller
            .call(&HttpCall {
                id: "c2".into(),
                method: "GET".into(),
                url: "http://127.0.0.1:1/orders/..".into(),
                headers: vec![],
                body: None,
                timeout_ms: 1000,
            })
            .await;
        assert_eq!(out.status, 0);
        let error = out.error.unwrap();
        assert!(error.contains("`..` segment"), "{error}");
    }

    #[test]
    fn the_guard_wants_https_and_public_addresses_unless_allow_listed() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let none = Guard::default();
        assert!(none
            .check(&url("https://x.example/"), &[ip("93.184.216.34")])
            .is_ok());
        assert!(none
            .check(&url("http://x.example/"), &[ip("93.184.216.34")])
            .is_err());
        assert!(none
            .check(
                &url("https://x.example/"),
                &[ip("93.184.216.34"), ip("10.0.0.1")]
            )
            .is_err());
        assert!(none
            .check(&url("https://127.0.0.1/"), &[ip("127.0.0.1")])
            .is_err());
        let lo = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(lo
            .check(&url("http://127.0.0.1:9/"), &[ip("127.0.0.1")])
            .is_ok());
        assert!(lo
            .check(&url("http://10.0.0.1/"), &[ip("10.0.0.1")])
            .is_err());
        assert!(lo
            .check(&url("ftp://127.0.0.1/"), &[ip("127.0.0.1")])
            .is_err());
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains(ip("::1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[tokio::test]
    async fn a_refused_call_is_an_outcome_not_an_error() {
        let caller = OutCaller::new(vec![]).unwrap();
        let out = caller
            .call(&HttpCall {
                id: "c1".into(),
                method: "GET".into(),
                url: "http://127.0.0.1:1/".into(),
                headers: vec![],
                body: None,
                timeout_ms: 1000,
            })
            .await;
        assert_eq!(out.status, 0);
        assert!(out.error.unwrap().contains("refused"));
    }
}
