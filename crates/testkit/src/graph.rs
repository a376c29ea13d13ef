//! A local stand-in for Meta's Graph API, and webhook builders: used by the integration tests
//! and the load driver (there is no internet here, and tests never call it).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The reference shop conversation (flows/shop.yaml) as a user plays it: (input, whether it
/// is a tap on the `catalog` button, the bot's answer). Used by the load driver and the crash
/// test.
pub const SHOP_SCRIPT: [(&str, bool, &str); 6] = [
    ("menu", false, "Welcome! What would you like?"),
    (
        "catalog",
        true,
        "1. Kopi 25000\n2. Teh 15000\n3. Roti 10000\nWhich product number?",
    ),
    ("2", false, "How many?"),
    ("abc", false, "Please send a number"),
    ("3", false, "Total: 45000. Reply yes to confirm"),
    ("yes", false, "Order confirmed"),
];

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: Instant,
    pub phone_number_id: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted; the wamid we returned (None for a read receipt).
    Accepted(Option<String>),
    /// Answered with this HTTP status.
    Refused(u16),
    /// Held past the client's timeout; the client never saw an answer.
    Held,
}

impl Attempt {
    pub fn is_mark_read(&self) -> bool {
        self.body.get("status").and_then(Value::as_str) == Some("read")
    }
    pub fn to(&self) -> Option<&str> {
        self.body.get("to").and_then(Value::as_str)
    }
    pub fn text(&self) -> Option<&str> {
        self.body.pointer("/text/body").and_then(Value::as_str)
    }
    pub fn callback(&self) -> Option<&str> {
        self.body
            .get("biz_opaque_callback_data")
            .and_then(Value::as_str)
    }
    pub fn accepted(&self) -> bool {
        matches!(self.outcome, Outcome::Accepted(_))
    }
    /// A message taken, not a read receipt.
    pub fn is_delivery(&self) -> bool {
        self.accepted() && !self.is_mark_read()
    }
}

/// What to do with the next message send (read receipts are never faulted).
#[derive(Debug, Clone)]
pub enum Fault {
    Status {
        status: u16,
        retry_after_secs: Option<u64>,
        body: Value,
    },
    /// Hold the request this long, then answer 500 (nothing was taken).
    Delay(Duration),
    /// Take the message (it counts as delivered) but answer only after this long: past the
    /// client's timeout, the sender cannot know it went.
    SlowAccept(Duration),
}

impl Fault {
    pub fn http(status: u16, code: i64) -> Fault {
        Fault::Status {
            status,
            retry_after_secs: None,
            body: json!({"error": {"message": "fault", "type": "OAuthException", "code": code, "error_data": {"messaging_product": "whatsapp", "details": "injected"}, "fbtrace_id": "x"}}),
        }
    }
}

type AcceptHook = Arc<dyn Fn(&Value) + Send + Sync>;

#[derive(Default)]
struct FakeState {
    log: Mutex<Vec<Attempt>>,
    faults: Mutex<VecDeque<Fault>>,
    next_id: AtomicU64,
    record: bool,
    on_accept: Option<AcceptHook>,
    notify: tokio::sync::Notify,
    /// media id -> (bytes, mime type), served by the media endpoints.
    media: Mutex<HashMap<String, (Vec<u8>, String)>>,
    /// Every request of the recording fake, as `METHOD /path?query`.
    requests: Mutex<Vec<String>>,
    base: Mutex<String>,
}

pub struct FakeGraph {
    pub base_url: String,
    state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGraph {
    /// A fake that records every request.
    pub async fn start() -> FakeGraph {
        Self::start_inner(true, None).await
    }

    /// A fake for load: records nothing, calls `on_accept` with each accepted body.
    ///
    /// It is served straight on hyper (no router, no log, no faults, no media): the load
    /// driver shares the machine with the daemon, so the fake's own cost per request is kept
    /// small.
    pub async fn start_for_load(on_accept: AcceptHook) -> FakeGraph {
        let state = Arc::new(FakeState {
            on_accept: Some(on_accept),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake graph");
        let addr = listener.local_addr().expect("fake graph addr");
        *state.base.lock().unwrap() = format!("http://{addr}");
        let serving = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = serving.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| load_answer(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeGraph {
            base_url: format!("http://{addr}"),
            state,
            task,
        }
    }

    async fn start_inner(record: bool, on_accept: Option<AcceptHook>) -> FakeGraph {
        let state = Arc::new(FakeState {
            record,
            on_accept,
            ..Default::default()
        });
        let app = Router::new()
            .route("/{version}/{phone_number_id}/messages", post(handle))
            .route("/{version}/{media_id}", get(media_info))
            .route("/files/{media_id}", get(media_file))
            .layer(axum::middleware::from_fn_with_state(state.clone(), seen))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake graph");
        let addr = listener.local_addr().expect("fake graph addr");
        *state.base.lock().unwrap() = format!("http://{addr}");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGraph {
            base_url: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// Serve `bytes` as media `id` (GET /{version}/{id} → its URL → the bytes).
    pub fn add_media(&self, id: &str, bytes: &[u8], mime: &str) {
        self.state
            .media
            .lock()
            .unwrap()
            .insert(id.to_string(), (bytes.to_vec(), mime.to_string()));
    }

    pub fn push_fault(&self, fault: Fault) {
        self.state.faults.lock().unwrap().push_back(fault);
    }

    /// Every request it was sent (message sends, media lookups and downloads, and paths it
    /// has no route for), as `METHOD /path?query`, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.state.log.lock().unwrap().clone()
    }

    /// The requests logged after the first `from` (a poller's next page, without copying the
    /// whole log each time).
    pub fn attempts_from(&self, from: usize) -> Vec<Attempt> {
        let log = self.state.log.lock().unwrap();
        log.get(from..).map(<[Attempt]>::to_vec).unwrap_or_default()
    }

    /// Accepted message sends (not read receipts), in the order they were accepted.
    pub fn delivered(&self) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.is_delivery())
            .collect()
    }

    /// The text of each message it took (read receipts aside), in order.
    pub fn delivered_texts(&self) -> Vec<String> {
        self.delivered()
            .iter()
            .filter_map(|a| a.text().map(str::to_string))
            .collect()
    }

    /// Wait until it has taken at least `n` messages (read receipts aside), or `timeout`
    /// passes; returns whether it has.
    pub async fn wait_delivered(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |a| {
            a.iter().filter(|a| a.is_delivery()).count() >= n
        })
        .await
    }

    /// Wait until `pred` holds on the log (or `timeout` passes); returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Attempt]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            if pred(&self.state.log.lock().unwrap()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }
}

async fn seen(
    State(state): State<Arc<FakeState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |pq| pq.to_string());
    state
        .requests
        .lock()
        .unwrap()
        .push(format!("{} {target}", req.method()));
    next.run(req).await
}

async fn handle(
    State(state): State<Arc<FakeState>>,
    Path((_version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    let is_read = body.get("status").and_then(Value::as_str) == Some("read");
    let fault = if is_read {
        None
    } else {
        state.faults.lock().unwrap().pop_front()
    };
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (outcome, response) = match fault {
        Some(Fault::Status {
            status,
            retry_after_secs,
            body: err,
        }) => {
            let mut resp = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                Json(err),
            )
                .into_response();
            if let Some(s) = retry_after_secs {
                resp.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            (Outcome::Refused(status), Some(resp))
        }
        Some(Fault::SlowAccept(d)) => {
            let n = state.next_id.fetch_add(1, Ordering::Relaxed);
            let wamid = format!("wamid.FAKE{n:012}");
            if let Some(hook) = &state.on_accept {
                hook(&body);
            }
            let to = body.get("to").cloned().unwrap_or(Value::Null);
            record(
                &state,
                &phone_number_id,
                authorization.clone(),
                body,
                Outcome::Accepted(Some(wamid.clone())),
            );
            tokio::time::sleep(d).await;
            return Json(json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}]
            }))
            .into_response();
        }
        Some(Fault::Delay(d)) => {
            record(
                &state,
                &phone_number_id,
                authorization.clone(),
                body.clone(),
                Outcome::Held,
            );
            tokio::time::sleep(d).await;
            return (StatusCode::INTERNAL_SERVER_ERROR, "held").into_response();
        }
        None => {
            if is_read {
                (Outcome::Accepted(None), None)
            } else {
                let n = state.next_id.fetch_add(1, Ordering::Relaxed);
                (Outcome::Accepted(Some(format!("wamid.FAKE{n:012}"))), None)
            }
        }
    };
    if let Outcome::Accepted(_) = &outcome {
        if let Some(hook) = &state.on_accept {
            hook(&body);
        }
    }
    let wamid = match &outcome {
        Outcome::Accepted(w) => w.clone(),
        _ => None,
    };
    let to = body.get("to").cloned().unwrap_or(Value::Null);
    record(&state, &phone_number_id, authorization, body, outcome);
    if let Some(resp) = response {
        return resp;
    }
    match wamid {
        Some(id) => Json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": id}]
        }))
        .into_response(),
        None => Json(json!({"success": true})).into_response(),
    }
}

/// The load fake's answer: every message accepted with a fresh wamid, every read receipt
/// with `{"success":true}`, the hook told of each.
async fn load_answer(
    state: Arc<FakeState>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let answer = |status: StatusCode, body: String| {
        let mut resp = hyper::Response::new(http_body_util::Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return answer(StatusCode::BAD_REQUEST, "{}".into()),
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return answer(StatusCode::BAD_REQUEST, "{}".into());
    };
    if let Some(hook) = &state.on_accept {
        hook(&body);
    }
    if body.get("status").and_then(Value::as_str) == Some("read") {
        return answer(StatusCode::OK, r#"{"success":true}"#.into());
    }
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let to = body.get("to").cloned().unwrap_or(Value::Null);
    answer(
        StatusCode::OK,
        json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": format!("wamid.FAKE{n:012}")}]
        })
        .to_string(),
    )
}

fn record(
    state: &FakeState,
    pnid: &str,
    authorization: Option<String>,
    body: Value,
    outcome: Outcome,
) {
    if state.record {
        state.log.lock().unwrap().push(Attempt {
            at: Instant::now(),
            phone_number_id: pnid.to_string(),
            authorization,
            body,
            outcome,
        });
    }
    state.notify.notify_waiters();
}

/// A `messages` webhook from `from` carrying one message object, shaped as Meta sends it.
fn message_webhook(phone_number_id: &str, from: &str, message: Value) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
                    "contacts": [{"profile": {"name": "Test User"}, "wa_id": from}],
                    "messages": [message]
                }
            }]
        }]
    })
    .to_string()
}

async fn media_info(
    State(state): State<Arc<FakeState>>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if headers.get("authorization").is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let media = state.media.lock().unwrap();
    let Some((bytes, mime)) = media.get(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    use sha2::Digest;
    let base = state.base.lock().unwrap().clone();
    Json(json!({
        "messaging_product": "whatsapp",
        "url": format!("{base}/files/{id}"),
        "mime_type": mime,
        "sha256": hex::encode(sha2::Sha256::digest(bytes)),
        "file_size": bytes.len(),
        "id": id,
    }))
    .into_response()
}

async fn media_file(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if headers.get("authorization").is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match state.media.lock().unwrap().get(&id) {
        Some((bytes, mime)) => (
            [(axum::http::header::CONTENT_TYPE, mime.clone())],
            bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A webhook body carrying one media message (`kind`: image, audio, …); `voice` marks an
/// audio message as a voice note.
#[allow(clippy::too_many_arguments)]
pub fn media_webhook(
    phone_number_id: &str,
    from: &str,
    wamid: &str,
    kind: &str,
    media_id: &str,
    mime: &str,
    sha256: &str,
    voice: bool,
) -> String {
    let mut media = json!({"id": media_id, "mime_type": mime, "sha256": sha256});
    if voice {
        media["voice"] = json!(true);
    }
    message_webhook(
        phone_number_id,
        from,
        json!({"from": from, "id": wamid, "timestamp": (parley::store::now_ms() / 1000).to_string(), "type": kind, kind: media}),
    )
}

/// A webhook body carrying one text message.
pub fn text_webhook(
    phone_number_id: &str,
    from: &str,
    wamid: &str,
    text: &str,
    timestamp: i64,
) -> String {
    message_webhook(
        phone_number_id,
        from,
        json!({"from": from, "id": wamid, "timestamp": timestamp.to_string(), "type": "text", "text": {"body": text}}),
    )
}

/// A webhook body carrying one status of one of our messages.
pub fn status_webhook(
    phone_number_id: &str,
    wamid: &str,
    status: &str,
    recipient: &str,
    callback: Option<&str>,
    timestamp: i64,
) -> String {
    let mut s = json!({"id": wamid, "status": status, "timestamp": timestamp.to_string(), "recipient_id": recipient});
    if let Some(cb) = callback {
        s["biz_opaque_callback_data"] = json!(cb);
    }
    if status == "failed" {
        s["errors"] = json!([{"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message", "error_data": {"details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}}]);
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
                    "statuses": [s]
                }
            }]
        }]
    })
    .to_string()
}

/// A webhook body carrying one reply-button tap.
pub fn button_reply_webhook(
    phone_number_id: &str,
    from: &str,
    wamid: &str,
    id: &str,
    title: &str,
    timestamp: i64,
) -> String {
    interactive_reply(
        phone_number_id,
        from,
        wamid,
        "button_reply",
        id,
        title,
        timestamp,
    )
}

/// A webhook body carrying one choice from a list message.
pub fn list_reply_webhook(
    phone_number_id: &str,
    from: &str,
    wamid: &str,
    id: &str,
    title: &str,
    timestamp: i64,
) -> String {
    interactive_reply(
        phone_number_id,
        from,
        wamid,
        "list_reply",
        id,
        title,
        timestamp,
    )
}

/// An interactive reply (`button_reply` or `list_reply`) to our previous message.
fn interactive_reply(
    phone_number_id: &str,
    from: &str,
    wamid: &str,
    kind: &str,
    id: &str,
    title: &str,
    timestamp: i64,
) -> String {
    message_webhook(
        phone_number_id,
        from,
        json!({
            "from": from, "id": wamid, "timestamp": timestamp.to_string(), "type": "interactive",
            "context": {"from": "15550783881", "id": "wamid.PREVIOUS"},
            "interactive": {"type": kind, kind: {"id": id, "title": title}}
        }),
    )
}

/// A webhook body carrying WhatsApp's catalog `order` message: (sku, quantity, item price).
pub fn order_webhook(
    phone_number_id: &str,
    from: &str,
    wamid: &str,
    items: &[(&str, i64, i64)],
    timestamp: i64,
) -> String {
    let product_items: Vec<Value> = items
        .iter()
        .map(|(sku, quantity, price)| {
            json!({"product_retailer_id": sku, "quantity": quantity, "item_price": price, "currency": "IDR"})
        })
        .collect();
    message_webhook(
        phone_number_id,
        from,
        json!({
            "from": from, "id": wamid, "timestamp": timestamp.to_string(), "type": "order",
            "order": {"catalog_id": "CATALOG1", "text": "", "product_items": product_items}
        }),
    )
}
