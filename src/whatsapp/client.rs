//! The Graph API client: one method per endpoint, bearer token, timeout from config.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::graph_error::{classify, SendOutcome};

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base_url: String,
    api_version: String,
}

impl GraphClient {
    pub fn new(base_url: &str, api_version: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("parley/", env!("CARGO_PKG_VERSION")))
            // The Graph API does not redirect sends; following one would send the token on.
            .redirect(reqwest::redirect::Policy::none())
            // Retries are the outbox's (with backoff and Retry-After); reqwest's own would
            // also copy every body for a replay that never comes.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .build()?;
        Ok(GraphClient {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_version: api_version.to_string(),
        })
    }

    /// `{base}/{version}/{phone_number_id}/messages`, parsed once per account.
    pub fn messages_url(&self, phone_number_id: &str) -> anyhow::Result<reqwest::Url> {
        let url = format!(
            "{}/{}/{}/messages",
            self.base_url, self.api_version, phone_number_id
        );
        Ok(reqwest::Url::parse(&url)?)
    }

    /// POST `body` to a [`GraphClient::messages_url`]; the outcome says whether it was
    /// accepted, should be retried, or failed for good.
    pub async fn send_message(
        &self,
        url: &reqwest::Url,
        token: &SecretString,
        body: &serde_json::Value,
    ) -> SendOutcome {
        let response = self
            .http
            .post(url.clone())
            .bearer_auth(token.expose_secret())
            .json(body)
            .send()
            .await;
        outcome(response, true).await
    }
}

impl GraphClient {
    /// A read receipt: the body is built as text and a 2xx answer is taken without parsing
    /// it (there is no wamid to read). One goes out per inbound message, so this is hot.
    pub async fn send_read_receipt(
        &self,
        url: &reqwest::Url,
        token: &SecretString,
        wamid: &str,
    ) -> SendOutcome {
        let id = serde_json::to_string(wamid).unwrap_or_else(|_| "\"\"".into());
        let body =
            format!(r#"{{"messaging_product":"whatsapp","status":"read","message_id":{id}}}"#);
        let response = self
            .http
            .post(url.clone())
            .bearer_auth(token.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        outcome(response, false).await
    }
}

/// What a Graph API answer means for the sender. A 2xx is parsed only when `read_success`
/// (a message's wamid); a read receipt's `{"success":true}` needs no reading.
async fn outcome(
    response: Result<reqwest::Response, reqwest::Error>,
    read_success: bool,
) -> SendOutcome {
    let resp = match response {
        Ok(resp) if !read_success && resp.status().is_success() => {
            return SendOutcome::Accepted { wamid: None }
        }
        Ok(resp) => resp,
        Err(e) => {
            return SendOutcome::Retry {
                code: None,
                http_status: 0,
                retry_after: None,
                reason: if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    format!("request failed: {}", without_url(&e))
                },
                // A refused connection sent nothing; anything later may have been taken.
                in_doubt: !e.is_connect(),
            };
        }
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match resp.bytes().await {
        Ok(bytes) => classify(status, retry_after.as_deref(), &bytes),
        Err(e) => SendOutcome::Retry {
            code: None,
            http_status: status,
            retry_after: None,
            reason: format!("reading the response failed: {}", without_url(&e)),
            in_doubt: (200..300).contains(&status),
        },
    }
}

/// reqwest errors print the URL; ours carry no secret, but keep logs short.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<graph>");
    }
    s
}
