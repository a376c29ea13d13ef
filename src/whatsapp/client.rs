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
    /// For the read-receipt connections ([`ReceiptConn`]), which bypass the pool.
    connector: Https,
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
            .build(https.clone());
        Ok(GraphClient {
            http,
            connector: https,
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
        self.post(url, token, body.into()).await
    }

    async fn post(&self, url: &Uri, token: &SecretString, body: Bytes) -> SendOutcome {
        let request = match request(url, token, body) {
            Ok(r) => r,
            Err(refused) => return refused,
        };
        within(self.timeout, exchange(&self.http, request)).await
    }
}

impl GraphClient {
    /// A connection of its own to post read receipts to `url` (see [`ReceiptConn`]).
    pub fn receipt_conn(&self, url: &Uri) -> ReceiptConn {
        // On a connection of its own the request line carries the path; the host is a
        // header. Both are the same for every receipt.
        let path = url
            .path_and_query()
            .and_then(|pq| Uri::try_from(pq.as_str()).ok())
            .unwrap_or_else(|| url.clone());
        let host = url
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        ReceiptConn {
            connector: self.connector.clone(),
            url: url.clone(),
            path,
            host,
            live: None,
            timeout: self.timeout,
        }
    }
}

type Stream = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;
type Conn = hyper::client::conn::http1::Connection<Stream, Full<Bytes>>;

/// One keep-alive HTTP/1 connection for read receipts, driven by the task that sends on it:
/// a receipt is a request written and an answer read in that one task, with no pool
/// checkout and no hand-over to a connection task. (One goes out per inbound message.) It
/// reconnects after an error or a timeout.
pub struct ReceiptConn {
    connector: Https,
    /// Where to connect.
    url: Uri,
    /// The request target and `Host` header on that connection.
    path: Uri,
    host: Option<HeaderValue>,
    live: Option<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, Conn)>,
    timeout: Duration,
}

impl ReceiptConn {
    /// Mark `wamid` (and the messages before it) read.
    pub async fn send(&mut self, token: &SecretString, wamid: &str) -> SendOutcome {
        let timeout = self.timeout;
        let outcome = within(timeout, self.exchange(token, wamid)).await;
        if !matches!(outcome, SendOutcome::Accepted { .. }) {
            // Whatever the connection was in the middle of, start clean.
            self.live = None;
        }
        outcome
    }

    async fn exchange(&mut self, token: &SecretString, wamid: &str) -> SendOutcome {
        use tower_service::Service;
        // An idle connection's I/O is not driven: a close by the server while it idled is
        // seen here, so that the receipt goes on a fresh connection instead of failing.
        if let Some((_, conn)) = self.live.as_mut() {
            if futures::FutureExt::now_or_never(&mut *conn).is_some() {
                self.live = None;
            }
        }
        if self
            .live
            .as_ref()
            .is_none_or(|(sender, _)| sender.is_closed())
        {
            let io = match self.connector.call(self.url.clone()).await {
                Ok(io) => io,
                Err(e) => return retry(format!("connect failed: {}", error_chain(&*e)), false),
            };
            match hyper::client::conn::http1::handshake(io).await {
                Ok(live) => self.live = Some(live),
                Err(e) => return retry(format!("handshake failed: {}", error_chain(&e)), false),
            }
        }
        let mut request = match request(&self.path, token, receipt_body(wamid)) {
            Ok(r) => r,
            Err(refused) => return refused,
        };
        if let Some(host) = &self.host {
            request
                .headers_mut()
                .insert(hyper::header::HOST, host.clone());
        }
        let (mut sender, conn) = self.live.take().expect("connected above");
        let (answer, conn) = drive(conn, async {
            sender.ready().await?;
            let resp = sender.send_request(request).await?;
            let status = resp.status().as_u16();
            let retry_after = retry_after(resp.headers());
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, retry_after, body))
        })
        .await;
        if let Some(conn) = conn {
            self.live = Some((sender, conn));
        }
        match answer {
            Ok((status, _, _)) if (200..300).contains(&status) => {
                SendOutcome::Accepted { wamid: None }
            }
            Ok((status, retry_after, body)) => classify(status, retry_after.as_deref(), &body),
            Err(e) => retry(format!("request failed: {e}"), true),
        }
    }
}

/// Run `fut` (a request on `conn`'s sender) while driving the connection's I/O in the same
/// task; the connection comes back unless it ended. A server may close it right after its
/// answer, which then still counts: the connection is dropped (so that nothing waits on it)
/// and the request takes what was read.
async fn drive<T>(
    mut conn: Conn,
    fut: impl std::future::Future<Output = Result<T, Box<dyn std::error::Error + Send + Sync>>>,
) -> (
    Result<T, Box<dyn std::error::Error + Send + Sync>>,
    Option<Conn>,
) {
    tokio::pin!(fut);
    let ended = tokio::select! {
        biased;
        out = &mut fut => return (out, Some(conn)),
        ended = &mut conn => ended,
    };
    drop(conn);
    let out = fut.await.map_err(|e| match ended {
        Err(ended) => format!("{e} ({})", error_chain(&ended)).into(),
        Ok(()) => e,
    });
    (out, None)
}

fn receipt_body(wamid: &str) -> Bytes {
    let id = serde_json::to_string(wamid).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"messaging_product":"whatsapp","status":"read","message_id":{id}}}"#).into()
}

/// A POST of `body` to `url` with the token; a request that cannot be built is refused for
/// good (it would be the same on every attempt).
fn request(
    url: &Uri,
    token: &SecretString,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, SendOutcome> {
    let refused = |details: String| SendOutcome::Permanent {
        code: None,
        http_status: 0,
        details,
        action: PermanentAction::DeadLetter,
    };
    let mut bearer = HeaderValue::try_from(format!("Bearer {}", token.expose_secret()))
        .map_err(|_| refused("the access token is not a valid header value".to_string()))?;
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
        .map_err(|e| refused(format!("building the request failed: {e}")))
}

/// `exchange`'s outcome, or a retry in doubt if it takes longer than `limit`: sent or not,
/// it cannot be told, and the request may have been taken.
async fn within(
    limit: Duration,
    exchange: impl std::future::Future<Output = SendOutcome>,
) -> SendOutcome {
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| retry("timed out".to_string(), true))
}

fn retry(reason: String, in_doubt: bool) -> SendOutcome {
    SendOutcome::Retry {
        code: None,
        http_status: 0,
        retry_after: None,
        reason,
        in_doubt,
    }
}

/// What a Graph API answer to a message means for the sender.
async fn exchange(http: &Client<Https, Full<Bytes>>, request: Request<Full<Bytes>>) -> SendOutcome {
    let resp = match http.request(request).await {
        Ok(resp) => resp,
        Err(e) => {
            // A refused connection sent nothing; anything later may have been taken.
            return retry(
                format!("request failed: {}", error_chain(&e)),
                !e.is_connect(),
            );
        }
    };
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
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

fn retry_after(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server speaking raw HTTP/1.1: each connection gets `answers` in turn (one per
    /// request), then is closed; `None` holds the request unanswered. Counts connections.
    async fn server(answers: Vec<Option<&'static str>>) -> (Uri, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!(
            "http://{}/v21.0/123/messages",
            listener.local_addr().unwrap()
        )
        .parse()
        .unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            let answers = Arc::new(std::sync::Mutex::new(answers.into_iter()));
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut seen = Vec::new();
                    loop {
                        let n = match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        seen.extend_from_slice(&buf[..n]);
                        // One request: headers, then a body of Content-Length bytes.
                        let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                        assert!(
                            head.starts_with("post /v21.0/123/messages http/1.1"),
                            "{head}"
                        );
                        assert!(head.contains("authorization: bearer t0ken"), "{head}");
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if seen.len() < end + 4 + len {
                            continue;
                        }
                        let body =
                            String::from_utf8_lossy(&seen[end + 4..end + 4 + len]).to_string();
                        assert!(body.contains(r#""status":"read""#), "{body}");
                        seen.drain(..end + 4 + len);
                        let next = answers.lock().unwrap().next();
                        match next {
                            Some(Some(answer)) => {
                                if stream.write_all(answer.as_bytes()).await.is_err() {
                                    return;
                                }
                                if answer.contains("Connection: close") {
                                    return;
                                }
                                // Close without saying so, once the client has gone idle.
                                if answer.contains("X-Test-Hangup") {
                                    tokio::time::sleep(Duration::from_millis(30)).await;
                                    return;
                                }
                            }
                            // Hold the request (the client times out) until the test ends.
                            Some(None) => {
                                tokio::time::sleep(Duration::from_secs(60)).await;
                                return;
                            }
                            None => return,
                        }
                    }
                });
            }
        });
        (url, connections)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"success\":true}";
    const OK_CLOSE: &str =
        "HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{\"success\":true}";
    const BUSY: &str =
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 2\r\n\r\n{}";
    const BAD: &str = "HTTP/1.1 400 Bad Request\r\nContent-Length: 76\r\n\r\n{\"error\":{\"message\":\"Invalid parameter\",\"type\":\"OAuthException\",\"code\":100}}";

    fn conn(url: &Uri, timeout: Duration) -> ReceiptConn {
        GraphClient::new("http://unused", "v21.0", timeout)
            .unwrap()
            .receipt_conn(url)
    }

    #[tokio::test]
    async fn receipts_share_one_connection_and_reconnect_when_it_closes() {
        let (url, connections) = server(vec![Some(OK), Some(OK), Some(OK_CLOSE), Some(OK)]).await;
        let mut c = conn(&url, Duration::from_secs(5));
        let token = SecretString::from("t0ken");
        for n in 0..4 {
            let out = c.send(&token, &format!("wamid.{n}")).await;
            assert!(
                matches!(out, SendOutcome::Accepted { wamid: None }),
                "{n}: {out:?}"
            );
        }
        // Three on the first connection, the fourth on a new one after the server closed it.
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced_before_sending() {
        const OK_HANGUP: &str =
            "HTTP/1.1 200 OK\r\nX-Test-Hangup: 1\r\nContent-Length: 16\r\n\r\n{\"success\":true}";
        let (url, connections) = server(vec![Some(OK_HANGUP), Some(OK)]).await;
        let mut c = conn(&url, Duration::from_secs(5));
        let token = SecretString::from("t0ken");
        let out = c.send(&token, "wamid.1").await;
        assert!(matches!(out, SendOutcome::Accepted { .. }), "{out:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let out = c.send(&token, "wamid.2").await;
        assert!(matches!(out, SendOutcome::Accepted { .. }), "{out:?}");
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_receipt_refused_or_unanswered_is_classified_and_the_next_starts_clean() {
        let (url, connections) = server(vec![Some(BUSY), Some(BAD), None, Some(OK)]).await;
        let mut c = conn(&url, Duration::from_millis(300));
        let token = SecretString::from("t0ken");
        let out = c.send(&token, "wamid.a").await;
        assert!(
            matches!(
                out,
                SendOutcome::Retry {
                    http_status: 503,
                    retry_after: Some(_),
                    ..
                }
            ),
            "{out:?}"
        );
        let out = c.send(&token, "wamid.b").await;
        assert!(
            matches!(
                out,
                SendOutcome::Permanent {
                    code: Some(100),
                    http_status: 400,
                    ..
                }
            ),
            "{out:?}"
        );
        let out = c.send(&token, "wamid.c").await;
        assert!(
            matches!(out, SendOutcome::Retry { in_doubt: true, ref reason, .. } if reason == "timed out"),
            "{out:?}"
        );
        let out = c.send(&token, "wamid.d").await;
        assert!(matches!(out, SendOutcome::Accepted { .. }), "{out:?}");
        // Each failure dropped its connection.
        assert_eq!(connections.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_in_doubt() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: Uri = format!(
            "http://{}/v21.0/123/messages",
            listener.local_addr().unwrap()
        )
        .parse()
        .unwrap();
        drop(listener);
        let out = conn(&url, Duration::from_secs(2))
            .send(&SecretString::from("t0ken"), "wamid.x")
            .await;
        assert!(
            matches!(
                out,
                SendOutcome::Retry {
                    in_doubt: false,
                    ..
                }
            ),
            "{out:?}"
        );
    }
}
