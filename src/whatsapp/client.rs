//! The Graph API client: one method per endpoint, bearer token, timeout from config.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};

use super::graph_error::{classify, PermanentAction, SendOutcome};

/// The most of a Graph API answer that is read (an error body is a few hundred bytes).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Clone)]
pub struct GraphClient {
    http: Client<Https, Full<Bytes>>,
    base_url: String,
    api_version: String,
    timeout: Duration,
}

impl GraphClient {
    pub fn new(base_url: &str, api_version: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        // https to Meta; plain http only where the configured base URL says so (a local
        // fake in tests and benchmarks).
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        // No redirects are followed (the Graph API does not redirect sends, and following
        // one would carry the token on) and nothing is retried here: retries are the
        // outbox's, with backoff and Retry-After.
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(GraphClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_version: api_version.to_string(),
            timeout,
        })
    }

    /// `{base}/{version}/{phone_number_id}/messages`, parsed once per account.
    pub fn messages_url(&self, phone_number_id: &str) -> anyhow::Result<Uri> {
        let url = format!(
            "{}/{}/{}/messages",
            self.base_url, self.api_version, phone_number_id
        );
        Ok(url.parse()?)
    }

    /// POST `body` to a [`GraphClient::messages_url`]; the outcome says whether it was
    /// accepted, should be retried, or failed for good.
    pub async fn send_message(
        &self,
        url: &Uri,
        token: &SecretString,
        body: &serde_json::Value,
    ) -> SendOutcome {
        let body = serde_json::to_vec(body).unwrap_or_default();
        self.post(url, token, body.into(), true).await
    }

    /// A read receipt: the body is built as text and a 2xx answer is taken without reading
    /// it (there is no wamid to read). One goes out per inbound message, so this is hot.
    pub async fn send_read_receipt(
        &self,
        url: &Uri,
        token: &SecretString,
        wamid: &str,
    ) -> SendOutcome {
        let id = serde_json::to_string(wamid).unwrap_or_else(|_| "\"\"".into());
        let body =
            format!(r#"{{"messaging_product":"whatsapp","status":"read","message_id":{id}}}"#);
        self.post(url, token, body.into(), false).await
    }

    async fn post(
        &self,
        url: &Uri,
        token: &SecretString,
        body: Bytes,
        read_success: bool,
    ) -> SendOutcome {
        let request = match request(url, token, body) {
            Ok(r) => r,
            Err(details) => {
                return SendOutcome::Permanent {
                    code: None,
                    http_status: 0,
                    details,
                    action: PermanentAction::DeadLetter,
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange(&self.http, request, read_success)).await
        {
            Ok(outcome) => outcome,
            // Sent or not, it cannot be told: the request may have been taken.
            Err(_) => SendOutcome::Retry {
                code: None,
                http_status: 0,
                retry_after: None,
                reason: "timed out".to_string(),
                in_doubt: true,
            },
        }
    }
}

fn request(url: &Uri, token: &SecretString, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
    let mut bearer = HeaderValue::try_from(format!("Bearer {}", token.expose_secret()))
        .map_err(|_| "the access token is not a valid header value".to_string())?;
    bearer.set_sensitive(true);
    Request::builder()
        .method(Method::POST)
        .uri(url.clone())
        .header(AUTHORIZATION, bearer)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(
            USER_AGENT,
            HeaderValue::from_static(concat!("parley/", env!("CARGO_PKG_VERSION"))),
        )
        .body(Full::new(body))
        .map_err(|e| format!("building the request failed: {e}"))
}

/// What a Graph API answer means for the sender. A 2xx is read only when `read_success`
/// (a message's wamid); a read receipt's `{"success":true}` needs no reading.
async fn exchange(
    http: &Client<Https, Full<Bytes>>,
    request: Request<Full<Bytes>>,
    read_success: bool,
) -> SendOutcome {
    let resp = match http.request(request).await {
        Ok(resp) => resp,
        Err(e) => {
            return SendOutcome::Retry {
                code: None,
                http_status: 0,
                retry_after: None,
                reason: format!("request failed: {}", error_chain(&e)),
                // A refused connection sent nothing; anything later may have been taken.
                in_doubt: !e.is_connect(),
            };
        }
    };
    let status = resp.status().as_u16();
    if !read_success && resp.status().is_success() {
        // Read to the end all the same, so that the connection goes back to the pool.
        let _ = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        return SendOutcome::Accepted { wamid: None };
    }
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
    {
        Ok(body) => classify(status, retry_after.as_deref(), &body.to_bytes()),
        Err(e) => SendOutcome::Retry {
            code: None,
            http_status: status,
            retry_after: None,
            reason: format!("reading the response failed: {e}"),
            in_doubt: (200..300).contains(&status),
        },
    }
}

/// The error and its causes on one line ("connection refused" sits in the source chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
