//! Local stand-ins for the payment gateways (Finpay, Xendit, Midtrans, Stripe), one axum
//! server per kind, speaking the shapes of commerce.md: they check the auth header, record
//! every request, answer creates with VA numbers, QR strings, pay codes and URLs, keep each
//! payment's state so the status API tells the truth, and sign callbacks as the real ones do.
//! They take refunds too (Stripe `POST /v1/refunds`, Midtrans `POST /v2/{id}/refund`, Xendit
//! `POST /refunds`): paid payments only, no more than is left, a VA or retail payment refused,
//! once per idempotency key. A test can mark a payment paid / expired / failed (with another amount), build or post its
//! callback, delay a create (so the callback can come first), or inject a 4xx, 5xx or hang.
//! Under load ([`FakeGateway::auto_pay`]) every payment pays itself: each create is answered
//! after a set latency and its callback posted a set time later, as a customer paying at once.
//!
//! `mod.rs` the fake, its requests log and faults; `wire.rs` each gateway's create and
//! status answers; `callbacks.rs` each gateway's signed callback.

mod callbacks;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use parley::config::PaymentProviderSettings;
use parley::domain::GatewayKind;
use secrecy::SecretString;
use serde_json::{json, Value};

use callbacks::callback_for;
use wire::*;

pub const FINPAY_MERCHANT_ID: &str = "FAKE-MERCHANT";
pub const FINPAY_MERCHANT_KEY: &str = "fake-finpay-key-0123456789";
pub const XENDIT_SECRET_KEY: &str = "xnd_development_fake0123456789";
pub const XENDIT_CALLBACK_TOKEN: &str = "fake-xendit-callback-token-0123";
pub const MIDTRANS_SERVER_KEY: &str = "SB-Mid-server-fake0123456789";
pub const STRIPE_SECRET_KEY: &str = "sk_test_fake0123456789";
pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_fake0123456789";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// A form body's field (Stripe).
    pub fn form(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// What to do with the next create or status request.
#[derive(Debug, Clone)]
pub enum GatewayFault {
    /// Answer this HTTP status with this body.
    Status(u16, Value),
    /// Take the request (a create is recorded and its payment exists) but answer only after
    /// this long (a status: with the state of that moment): a callback can be sent meanwhile,
    /// a process killed.
    Delay(Duration),
    /// Hold the request this long, then answer 500 (past a client's timeout).
    Hang(Duration),
}

/// Every payment pays itself ([`FakeGateway::auto_pay`]): each create is answered after
/// `answer_after`; `callback_after` after that answer the payment is PAID (the status API says
/// so from then on) and its callback is posted to `callback_url`, again every `callback_after`
/// while the daemon does not answer 2xx, at most `attempts` times (the gateways retry).
#[derive(Debug, Clone)]
pub struct AutoPay {
    pub answer_after: Duration,
    pub callback_after: Duration,
    /// The daemon's `…/payments/{NAME}/callback` (a gateway's dashboard setting).
    pub callback_url: String,
    pub attempts: u32,
}

/// A callback [`AutoPay`] posted.
#[derive(Debug, Clone)]
pub struct Posted {
    pub payment_id: String,
    /// When it was sent, and when the daemon answered it.
    pub sent: Instant,
    pub answered: Instant,
    /// The daemon's answer (0: none, a connection error).
    pub status: u16,
    /// 1 for the first delivery.
    pub attempt: u32,
}

/// Where a test moves a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeOutcome {
    Paid,
    Expired,
    Failed,
}

/// A callback as the gateway would send it.
#[derive(Debug, Clone)]
pub struct SignedCallback {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it was signed (Stripe's `t`).
    pub timestamp: i64,
}

impl SignedCallback {
    pub fn header_map(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in &self.headers {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Payment {
    pub(crate) payment_id: String,
    pub(crate) provider_ref: String,
    /// Xendit: an invoice or a payment request (`pr-`).
    pub(crate) qris: bool,
    pub(crate) method: String,
    /// Whole units (minor units for Stripe), as the create sent it.
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) outcome: Option<FakeOutcome>,
    /// The amount paid when it differs.
    pub(crate) paid: Option<i64>,
    pub(crate) expires_at: i64,
    /// How much was refunded (the create's units).
    pub(crate) refunded: i64,
}

pub(crate) struct St {
    pub(crate) kind: GatewayKind,
    pub(crate) auth: String,
    pub(crate) base: Mutex<String>,
    pub(crate) requests: Mutex<Vec<Recorded>>,
    pub(crate) faults: Mutex<VecDeque<GatewayFault>>,
    pub(crate) payments: Mutex<Vec<Payment>>,
    /// Idempotency key → the answer given (Xendit, Stripe).
    pub(crate) answered: Mutex<HashMap<String, Value>>,
    pub(crate) next: AtomicU64,
    /// Refunds made.
    pub(crate) refunds: AtomicU64,
    /// New refunds answer pending (Stripe `pending`, Xendit `PENDING`) instead of done.
    pub(crate) refunds_pending: std::sync::atomic::AtomicBool,
    /// The refunds made, by their id, as `GET /v1/refunds/{id}` (Stripe) or `GET
    /// /refunds/{id}` (Xendit) answers them.
    pub(crate) refund_objects: Mutex<HashMap<String, Value>>,
    /// Seconds added to the real time a callback is signed at.
    pub(crate) skew: std::sync::atomic::AtomicI64,
    pub(crate) auto: Mutex<Option<AutoPay>>,
    pub(crate) posted: Mutex<Vec<Posted>>,
    /// [`AutoPay`]'s client (its connections kept alive between callbacks).
    pub(crate) client: std::sync::OnceLock<reqwest::Client>,
}

pub struct FakeGateway {
    pub base_url: String,
    pub kind: GatewayKind,
    state: Arc<St>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl FakeGateway {
    pub async fn start(kind: GatewayKind) -> FakeGateway {
        let auth = match kind {
            GatewayKind::Finpay => basic(FINPAY_MERCHANT_ID, FINPAY_MERCHANT_KEY),
            GatewayKind::Xendit => basic(XENDIT_SECRET_KEY, ""),
            GatewayKind::Midtrans => basic(MIDTRANS_SERVER_KEY, ""),
            GatewayKind::Stripe => format!("Bearer {STRIPE_SECRET_KEY}"),
            GatewayKind::Manual => panic!("a manual provider has no API to fake"),
        };
        let state = Arc::new(St {
            kind,
            auth,
            base: Mutex::new(String::new()),
            requests: Mutex::default(),
            faults: Mutex::default(),
            payments: Mutex::default(),
            answered: Mutex::default(),
            next: AtomicU64::new(1),
            refunds: AtomicU64::new(0),
            refunds_pending: std::sync::atomic::AtomicBool::new(false),
            refund_objects: Mutex::default(),
            skew: std::sync::atomic::AtomicI64::new(0),
            auto: Mutex::default(),
            posted: Mutex::default(),
            client: std::sync::OnceLock::new(),
        });
        // One router per kind: their path sets overlap (`/v2/invoices/{id}`, `/v2/{id}/status`).
        let app = match kind {
            GatewayKind::Finpay => Router::new()
                .route("/pg/payment/card/initiate", post(create))
                .route("/pg/payment/card/check/{id}", get(status)),
            GatewayKind::Xendit => Router::new()
                .route("/refunds", post(refund))
                .route("/refunds/{id}", get(refund_object))
                .route("/v2/invoices", post(create).get(xendit_list))
                .route("/v2/invoices/{id}", get(status))
                .route("/payment_requests", post(create))
                .route("/payment_requests/{id}", get(status)),
            GatewayKind::Midtrans => Router::new()
                .route("/v2/charge", post(create))
                .route("/v2/{id}/status", get(status))
                .route("/v2/{id}/refund", post(refund)),
            _ => Router::new()
                .route("/v1/checkout/sessions", post(create))
                .route("/v1/checkout/sessions/{id}", get(status))
                .route("/v1/refunds", post(refund))
                .route("/v1/refunds/{id}", get(refund_object)),
        };
        let app = app.with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake gateway");
        let addr = listener.local_addr().expect("fake gateway addr");
        let base_url = format!("http://{addr}");
        *state.base.lock().unwrap() = base_url.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGateway {
            base_url,
            kind,
            state,
            task,
        }
    }

    /// `[payments.providers.NAME]` pointing at this fake, with its credentials.
    pub fn provider(&self) -> PaymentProviderSettings {
        let s = |v: &str| Some(SecretString::from(v));
        let mut p = PaymentProviderSettings {
            kind: self.kind,
            base_url: Some(self.base_url.clone()),
            sandbox: true,
            timeout: Duration::from_secs(2),
            merchant_id: None,
            merchant_key: None,
            secret_key: None,
            callback_token: None,
            server_key: None,
            webhook_secret: None,
            instructions: None,
        };
        match self.kind {
            GatewayKind::Finpay => {
                p.merchant_id = s(FINPAY_MERCHANT_ID);
                p.merchant_key = s(FINPAY_MERCHANT_KEY);
            }
            GatewayKind::Xendit => {
                p.secret_key = s(XENDIT_SECRET_KEY);
                p.callback_token = s(XENDIT_CALLBACK_TOKEN);
            }
            GatewayKind::Midtrans => p.server_key = s(MIDTRANS_SERVER_KEY),
            GatewayKind::Stripe => {
                p.secret_key = s(STRIPE_SECRET_KEY);
                p.webhook_secret = s(STRIPE_WEBHOOK_SECRET);
            }
            GatewayKind::Manual => {}
        }
        p
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn push_fault(&self, fault: GatewayFault) {
        self.state.faults.lock().unwrap().push_back(fault);
    }

    /// From now on every payment created pays itself (see [`AutoPay`]).
    pub fn auto_pay(&self, auto: AutoPay) {
        *self.state.auto.lock().unwrap() = Some(auto);
    }

    /// The callbacks [`AutoPay`] has posted so far, in the order they were answered.
    pub fn posted(&self) -> Vec<Posted> {
        self.state.posted.lock().unwrap().clone()
    }

    /// The gateway's reference for a payment it created.
    pub fn provider_ref(&self, payment_id: &str) -> Option<String> {
        self.find(payment_id).map(|p| p.provider_ref)
    }

    /// How many payments the gateway holds for `payment_id` (a create answered again for
    /// its idempotency key makes none).
    pub fn created(&self, payment_id: &str) -> usize {
        let ps = self.state.payments.lock().unwrap();
        ps.iter().filter(|p| p.payment_id == payment_id).count()
    }

    fn find(&self, payment_id: &str) -> Option<Payment> {
        let ps = self.state.payments.lock().unwrap();
        ps.iter()
            .rev()
            .find(|p| p.payment_id == payment_id)
            .cloned()
    }

    /// The refunds the gateway made (a refund answered again for its idempotency key or
    /// Midtrans `refund_key` makes none).
    pub fn refunds(&self) -> usize {
        self.state.refunds.load(Ordering::Relaxed) as usize
    }

    /// How much of a payment the gateway refunded (its create's units: minor for Stripe).
    pub fn refunded(&self, payment_id: &str) -> i64 {
        self.find(payment_id).map_or(0, |p| p.refunded)
    }

    /// New refunds answer pending (Stripe `pending`, Xendit `PENDING`) until
    /// [`FakeGateway::settle_refund`] moves them.
    pub fn answer_refunds_pending(&self) {
        self.state.refunds_pending.store(true, Ordering::Relaxed);
    }

    /// New refunds are done at once again (as by default).
    pub fn answer_refunds_done(&self) {
        self.state.refunds_pending.store(false, Ordering::Relaxed);
    }

    /// Move refund `id` on: done, or failed (its amount given back to the payment, as the
    /// gateway would: the money never left). Stripe `succeeded` / `failed` with
    /// `failure_reason`, Xendit `SUCCEEDED` / `FAILED` with `failure_code`.
    pub fn settle_refund(&self, id: &str, succeeded: bool) {
        let mut objects = self.state.refund_objects.lock().unwrap();
        let r = objects.get_mut(id).expect("no such refund at the fake");
        let stripe = self.kind == GatewayKind::Stripe;
        r["status"] = json!(match (stripe, succeeded) {
            (true, true) => "succeeded",
            (true, false) => "failed",
            (false, true) => "SUCCEEDED",
            (false, false) => "FAILED",
        });
        if !succeeded {
            if stripe {
                r["failure_reason"] = json!("expired_or_canceled_card");
            } else {
                r["failure_code"] = json!("INSUFFICIENT_BALANCE");
            }
            let amount = r["amount"].as_i64().unwrap_or(0);
            let target = r["payment_intent"]
                .as_str()
                .or(r["invoice_id"].as_str())
                .or(r["payment_request_id"].as_str())
                .unwrap_or("")
                .to_string();
            let mut ps = self.state.payments.lock().unwrap();
            if let Some(p) = ps
                .iter_mut()
                .find(|p| p.provider_ref == target || wire::stripe_intent(p) == target)
            {
                p.refunded -= amount;
            }
        }
    }

    /// The ids of the refunds it made, oldest first.
    pub fn refund_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .state
            .refund_objects
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// The refund requests it received.
    pub fn refund_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.target.contains("refund"))
            .collect()
    }

    /// Move a payment; `paid` (whole units, e.g. "90000") when the customer paid another
    /// amount than asked.
    pub fn set_outcome(&self, payment_id: &str, outcome: FakeOutcome, paid: Option<&str>) {
        let minor = self.state.kind == GatewayKind::Stripe;
        let mut ps = self.state.payments.lock().unwrap();
        let p = ps
            .iter_mut()
            .rev()
            .find(|p| p.payment_id == payment_id)
            .expect("a payment the fake created");
        p.outcome = Some(outcome);
        p.paid = paid.map(|a| {
            let whole: i64 = a.parse().expect("whole units");
            if minor {
                whole * 100
            } else {
                whole
            }
        });
    }

    /// The callback for the payment's current state, signed as the gateway signs it.
    pub fn callback(&self, payment_id: &str) -> SignedCallback {
        let p = self.find(payment_id).expect("a payment the fake created");
        let t = now() + self.state.skew.load(Ordering::Relaxed);
        callback_for(&self.state.kind, &p, t)
    }

    /// Sign callbacks `secs` later than the real time (a test whose daemon's clock jumped).
    pub fn skew_clock(&self, secs: i64) {
        self.state.skew.fetch_add(secs, Ordering::Relaxed);
    }

    /// POST the payment's callback to `url`; the HTTP status it got.
    pub async fn post_callback(&self, url: &str, payment_id: &str) -> u16 {
        send_callback(&reqwest::Client::new(), url, &self.callback(payment_id)).await
    }
}

async fn send_callback(client: &reqwest::Client, url: &str, cb: &SignedCallback) -> u16 {
    let mut req = client.post(url).body(cb.body.clone());
    for (k, v) in &cb.headers {
        req = req.header(k, v);
    }
    req.send().await.map_or(0, |r| r.status().as_u16())
}

/// [`AutoPay`]'s part after a create was answered: wait, mark the payment PAID, post its
/// callback until the daemon takes it.
async fn pay_by_itself(st: Arc<St>, auto: AutoPay, payment_id: String) {
    let client = st.client.get_or_init(reqwest::Client::new).clone();
    for attempt in 1..=auto.attempts.max(1) {
        tokio::time::sleep(auto.callback_after).await;
        let cb = {
            let mut ps = st.payments.lock().unwrap();
            let Some(p) = ps.iter_mut().rev().find(|p| p.payment_id == payment_id) else {
                return;
            };
            p.outcome = Some(FakeOutcome::Paid);
            callback_for(&st.kind, p, now() + st.skew.load(Ordering::Relaxed))
        };
        let sent = Instant::now();
        let status = send_callback(&client, &auto.callback_url, &cb).await;
        st.posted.lock().unwrap().push(Posted {
            payment_id: payment_id.clone(),
            sent,
            answered: Instant::now(),
            status,
            attempt,
        });
        if (200..300).contains(&status) {
            return;
        }
    }
}

/// Record the request, check its auth, apply a fault: Err is the answer to give now.
async fn intake(
    st: &St,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Duration>, Response> {
    let hs = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    st.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        target: uri
            .path_and_query()
            .map_or(uri.path().to_string(), |p| p.to_string()),
        headers: hs,
        body: String::from_utf8_lossy(body).into_owned(),
    });
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(st.auth.as_str()) {
        let body = match st.kind {
            GatewayKind::Stripe => {
                json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}})
            }
            GatewayKind::Xendit => {
                json!({"error_code": "INVALID_API_KEY", "message": "API key is not authorized for this API service"})
            }
            GatewayKind::Midtrans => {
                json!({"status_code": "401", "status_message": "Unknown Merchant server_key/id"})
            }
            _ => json!({"responseCode": "4010000", "responseMessage": "Unauthorized"}),
        };
        return Err((StatusCode::UNAUTHORIZED, Json(body)).into_response());
    }
    let fault = st.faults.lock().unwrap().pop_front();
    match fault {
        Some(GatewayFault::Status(code, body)) => {
            Err((StatusCode::from_u16(code).unwrap(), Json(body)).into_response())
        }
        Some(GatewayFault::Hang(d)) => {
            tokio::time::sleep(d).await;
            Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Some(GatewayFault::Delay(d)) => Ok(Some(d)),
        None => Ok(None),
    }
}

async fn create(
    State(st): State<Arc<St>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = match intake(&st, &method, &uri, &headers, &body).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let idem = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(k) = &idem {
        if let Some(v) = st.answered.lock().unwrap().get(k) {
            return Json(v.clone()).into_response();
        }
    }
    let n = st.next.fetch_add(1, Ordering::Relaxed);
    let (status, answer, payment) = match st.kind {
        GatewayKind::Finpay => finpay_create(&st, n, &body),
        GatewayKind::Xendit if uri.path() == "/payment_requests" => xendit_qris(n, &body),
        GatewayKind::Xendit => xendit_invoice(&st, n, &body),
        GatewayKind::Midtrans => midtrans_charge(&st, n, &body),
        _ => stripe_session(n, &body),
    };
    let auto = st.auto.lock().unwrap().clone();
    let paying = match (&payment, auto) {
        (Some(p), Some(a)) => Some((a, p.payment_id.clone())),
        _ => None,
    };
    if let Some(p) = payment {
        st.payments.lock().unwrap().push(p);
    }
    if let (Some(k), true) = (idem, status == StatusCode::OK) {
        st.answered.lock().unwrap().insert(k, answer.clone());
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if let Some((auto, payment_id)) = paying {
        tokio::time::sleep(auto.answer_after).await;
        tokio::spawn(pay_by_itself(st.clone(), auto, payment_id));
    }
    (status, Json(answer)).into_response()
}

/// A refund: Stripe `POST /v1/refunds`, Midtrans `POST /v2/{id}/refund`, Xendit `POST
/// /refunds`. The auth is checked and the request recorded as for every call; a repeat of an
/// idempotency key (Stripe, Xendit) or a `refund_key` (Midtrans) answers the first refund
/// again and makes none.
async fn refund(
    State(st): State<Arc<St>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = match intake(&st, &method, &uri, &headers, &body).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let idem = match st.kind {
        GatewayKind::Midtrans => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|b| b["refund_key"].as_str().map(|k| format!("refund:{k}"))),
        _ => headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(|k| format!("refund:{k}")),
    };
    if let Some(k) = &idem {
        if let Some(v) = st.answered.lock().unwrap().get(k) {
            return Json(v.clone()).into_response();
        }
    }
    let (status, answer) = {
        let mut ps = st.payments.lock().unwrap();
        let (status, answer, made) = match st.kind {
            GatewayKind::Midtrans => {
                let id = uri
                    .path()
                    .trim_start_matches("/v2/")
                    .trim_end_matches("/refund")
                    .to_string();
                midtrans_refund(&ps, &id, &body)
            }
            GatewayKind::Xendit => xendit_refund(&ps, &body),
            _ => stripe_refund(&ps, &body),
        };
        let mut answer = answer;
        if let Some((i, amount)) = made {
            ps[i].refunded += amount;
            let n = st.refunds.fetch_add(1, Ordering::Relaxed) + 1;
            let pending = st.refunds_pending.load(Ordering::Relaxed);
            match st.kind {
                GatewayKind::Xendit => {
                    answer["id"] = json!(format!("rfd-{n:08}"));
                    if pending {
                        answer["status"] = json!("PENDING");
                    }
                }
                GatewayKind::Stripe => {
                    answer["id"] = json!(format!("re_test_{n:06}"));
                    if pending {
                        answer["status"] = json!("pending");
                    }
                }
                _ => {}
            }
            if let Some(id) = answer["id"].as_str() {
                st.refund_objects
                    .lock()
                    .unwrap()
                    .insert(id.to_string(), answer.clone());
            }
            if let Some(k) = idem {
                st.answered.lock().unwrap().insert(k, answer.clone());
            }
        }
        (status, answer)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    (status, Json(answer)).into_response()
}

/// A refund as the gateway holds it: Stripe `GET /v1/refunds/{id}`, Xendit `GET
/// /refunds/{id}`.
async fn refund_object(
    State(st): State<Arc<St>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if let Err(r) = intake(&st, &method, &uri, &headers, b"").await {
        return r;
    }
    match st.refund_objects.lock().unwrap().get(&id) {
        Some(v) => Json(v.clone()).into_response(),
        None if st.kind == GatewayKind::Stripe => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such refund"}})),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error_code": "DATA_NOT_FOUND", "message": "Refund not found"})),
        )
            .into_response(),
    }
}

async fn xendit_list(
    State(st): State<Arc<St>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match intake(&st, &method, &uri, &headers, b"").await {
        Err(r) => return r,
        Ok(Some(d)) => tokio::time::sleep(d).await,
        Ok(None) => {}
    }
    let ext = q.get("external_id").cloned().unwrap_or_default();
    let ps = st.payments.lock().unwrap().clone();
    let list: Vec<Value> = ps
        .iter()
        .filter(|p| p.payment_id == ext && !p.qris)
        .map(|p| status_body(GatewayKind::Xendit, p))
        .collect();
    Json(list).into_response()
}

async fn status(
    State(st): State<Arc<St>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match intake(&st, &method, &uri, &headers, b"").await {
        Err(r) => return r,
        // Held, then answered with the state of that moment.
        Ok(Some(d)) => tokio::time::sleep(d).await,
        Ok(None) => {}
    }
    // Not a copy of the whole list: under load it holds thousands of payments.
    let found = st
        .payments
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|p| p.payment_id == id || p.provider_ref == id)
        .cloned();
    match (found.as_ref(), st.kind) {
        (Some(p), kind) => Json(status_body(kind, p)).into_response(),
        (None, GatewayKind::Midtrans) => Json(json!({"status_code": "404", "status_message": "Transaction doesn't exist."})).into_response(),
        (None, GatewayKind::Finpay) => (StatusCode::NOT_FOUND, Json(json!({"responseCode": "4040001", "responseMessage": "Order not found"}))).into_response(),
        (None, GatewayKind::Stripe) => (StatusCode::NOT_FOUND, Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such checkout.session"}}))).into_response(),
        (None, _) => (StatusCode::NOT_FOUND, Json(json!({"error_code": "INVOICE_NOT_FOUND_ERROR", "message": "Invoice not found"}))).into_response(),
    }
}
