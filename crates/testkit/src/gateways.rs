//! Local stand-ins for the payment gateways (Finpay, Xendit, Midtrans, Stripe), one axum
//! server per kind, speaking the shapes of commerce.md: they check the auth header, record
//! every request, answer creates with VA numbers, QR strings, pay codes and URLs, keep each
//! payment's state so the status API tells the truth, and sign callbacks as the real ones do.
//! A test can mark a payment paid / expired / failed (with another amount), build or post its
//! callback, delay a create (so the callback can come first), or inject a 4xx, 5xx or hang.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use hmac::{Hmac, Mac};
use parley::config::PaymentProviderSettings;
use parley::domain::GatewayKind;
use secrecy::SecretString;
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha512};

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
    /// this long: a callback can be sent meanwhile.
    Delay(Duration),
    /// Hold the request this long, then answer 500 (past a client's timeout).
    Hang(Duration),
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
struct Payment {
    payment_id: String,
    provider_ref: String,
    /// Xendit: an invoice or a payment request (`pr-`).
    qris: bool,
    method: String,
    /// Whole units (minor units for Stripe), as the create sent it.
    amount: i64,
    currency: String,
    outcome: Option<FakeOutcome>,
    /// The amount paid when it differs.
    paid: Option<i64>,
    expires_at: i64,
}

struct St {
    kind: GatewayKind,
    auth: String,
    base: Mutex<String>,
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<VecDeque<GatewayFault>>,
    payments: Mutex<Vec<Payment>>,
    /// Idempotency key → the answer given (Xendit, Stripe).
    answered: Mutex<HashMap<String, Value>>,
    next: AtomicU64,
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

fn now() -> i64 {
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
        });
        // One router per kind: their path sets overlap (`/v2/invoices/{id}`, `/v2/{id}/status`).
        let app = match kind {
            GatewayKind::Finpay => Router::new()
                .route("/pg/payment/card/initiate", post(create))
                .route("/pg/payment/card/check/{id}", get(status)),
            GatewayKind::Xendit => Router::new()
                .route("/v2/invoices", post(create).get(xendit_list))
                .route("/v2/invoices/{id}", get(status))
                .route("/payment_requests", post(create))
                .route("/payment_requests/{id}", get(status)),
            GatewayKind::Midtrans => Router::new()
                .route("/v2/charge", post(create))
                .route("/v2/{id}/status", get(status)),
            _ => Router::new()
                .route("/v1/checkout/sessions", post(create))
                .route("/v1/checkout/sessions/{id}", get(status)),
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

    /// The gateway's reference for a payment it created.
    pub fn provider_ref(&self, payment_id: &str) -> Option<String> {
        self.find(payment_id).map(|p| p.provider_ref)
    }

    fn find(&self, payment_id: &str) -> Option<Payment> {
        let ps = self.state.payments.lock().unwrap();
        ps.iter()
            .rev()
            .find(|p| p.payment_id == payment_id)
            .cloned()
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
        callback_for(&self.state.kind, &p)
    }

    /// POST the payment's callback to `url`; the HTTP status it got.
    pub async fn post_callback(&self, url: &str, payment_id: &str) -> u16 {
        let cb = self.callback(payment_id);
        let mut req = reqwest::Client::new().post(url).body(cb.body.clone());
        for (k, v) in &cb.headers {
            req = req.header(k, v);
        }
        req.send().await.map_or(0, |r| r.status().as_u16())
    }
}

fn callback_for(kind: &GatewayKind, p: &Payment) -> SignedCallback {
    let paid = p.paid.unwrap_or(p.amount);
    let t = now();
    match kind {
        GatewayKind::Finpay => {
            let status = match p.outcome {
                Some(FakeOutcome::Paid) => "CAPTURED",
                Some(FakeOutcome::Expired) => "EXPIRED",
                Some(FakeOutcome::Failed) => "FAILURE",
                None => "PENDING",
            };
            let mut body = json!({
                "customer": {"id": "CUST-1"},
                "order": {"id": p.payment_id, "reference": p.provider_ref, "amount": paid, "currency": p.currency},
                "meta": {"data": null},
                "result": {"payment": {"amount": paid, "status": status, "statusDesc": null}},
            });
            let mut mac = Hmac::<Sha512>::new_from_slice(FINPAY_MERCHANT_KEY.as_bytes()).unwrap();
            mac.update(body.to_string().as_bytes());
            body["signature"] = json!(hex::encode(mac.finalize().into_bytes()));
            SignedCallback {
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.to_string().into_bytes(),
                timestamp: t,
            }
        }
        GatewayKind::Xendit => {
            let body = if p.qris {
                let (event, status) = match p.outcome {
                    Some(FakeOutcome::Paid) => ("payment.succeeded", "SUCCEEDED"),
                    Some(FakeOutcome::Expired) => ("payment.failed", "EXPIRED"),
                    Some(FakeOutcome::Failed) => ("payment.failed", "FAILED"),
                    None => ("payment.pending", "PENDING"),
                };
                json!({"event": event, "business_id": "biz-1", "created": "2026-12-01T00:00:00Z",
                    "data": {"id": format!("py-{}", p.provider_ref), "payment_request_id": p.provider_ref,
                        "reference_id": p.payment_id, "status": status, "amount": paid, "currency": p.currency,
                        "payment_method": {"type": "QR_CODE"}}})
            } else {
                let status = match p.outcome {
                    Some(FakeOutcome::Paid) => "PAID",
                    Some(FakeOutcome::Expired) | Some(FakeOutcome::Failed) => "EXPIRED",
                    None => "PENDING",
                };
                json!({"id": p.provider_ref, "external_id": p.payment_id, "user_id": "user-1",
                    "status": status, "amount": p.amount, "paid_amount": paid,
                    "paid_at": "2026-12-01T00:00:00.000Z", "payment_method": "BANK_TRANSFER",
                    "payment_channel": p.method.to_ascii_uppercase(), "payment_destination": "8808999912345678",
                    "payment_id": format!("pay-{}", p.provider_ref), "currency": p.currency})
            };
            SignedCallback {
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-callback-token".into(), XENDIT_CALLBACK_TOKEN.into()),
                ],
                body: body.to_string().into_bytes(),
                timestamp: t,
            }
        }
        GatewayKind::Midtrans => {
            let (status, code) = match p.outcome {
                Some(FakeOutcome::Paid) => ("settlement", "200"),
                Some(FakeOutcome::Expired) => ("expire", "407"),
                Some(FakeOutcome::Failed) => ("deny", "202"),
                None => ("pending", "201"),
            };
            let gross = format!("{paid}.00");
            let mut h = Sha512::new();
            h.update(format!(
                "{}{code}{gross}{MIDTRANS_SERVER_KEY}",
                p.payment_id
            ));
            let body = json!({
                "transaction_time": "2026-12-01 10:00:00", "transaction_status": status,
                "transaction_id": p.provider_ref, "status_message": "midtrans payment notification",
                "status_code": code, "signature_key": hex::encode(h.finalize()),
                "payment_type": p.method, "order_id": p.payment_id, "merchant_id": "G000000000",
                "gross_amount": gross, "fraud_status": "accept", "currency": p.currency,
            });
            SignedCallback {
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.to_string().into_bytes(),
                timestamp: t,
            }
        }
        GatewayKind::Stripe => {
            let (event, status, payment_status) = match p.outcome {
                Some(FakeOutcome::Paid) => ("checkout.session.completed", "complete", "paid"),
                Some(FakeOutcome::Expired) => ("checkout.session.expired", "expired", "unpaid"),
                Some(FakeOutcome::Failed) => (
                    "checkout.session.async_payment_failed",
                    "complete",
                    "unpaid",
                ),
                None => ("checkout.session.completed", "complete", "unpaid"),
            };
            // The same news is the same event: its id is derived from it.
            let id = hex::encode(&Sha256::digest(format!("{}{event}", p.provider_ref))[..12]);
            let body = json!({
                "id": format!("evt_{id}"), "object": "event", "type": event, "created": t,
                "data": {"object": {
                    "id": p.provider_ref, "object": "checkout.session", "amount_total": paid,
                    "currency": p.currency.to_ascii_lowercase(), "client_reference_id": p.payment_id,
                    "metadata": {"payment_id": p.payment_id}, "payment_status": payment_status,
                    "status": status, "mode": "payment",
                }},
            })
            .to_string();
            let mut mac = Hmac::<Sha256>::new_from_slice(STRIPE_WEBHOOK_SECRET.as_bytes()).unwrap();
            mac.update(format!("{t}.{body}").as_bytes());
            let sig = hex::encode(mac.finalize().into_bytes());
            SignedCallback {
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("stripe-signature".into(), format!("t={t},v1={sig}")),
                ],
                body: body.into_bytes(),
                timestamp: t,
            }
        }
        GatewayKind::Manual => unreachable!(),
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
    if let Some(p) = payment {
        st.payments.lock().unwrap().push(p);
    }
    if let (Some(k), true) = (idem, status == StatusCode::OK) {
        st.answered.lock().unwrap().insert(k, answer.clone());
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    (status, Json(answer)).into_response()
}

type Made = (StatusCode, Value, Option<Payment>);

fn exists(st: &St, id: &str) -> bool {
    st.payments
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.payment_id == id)
}

fn payment(
    payment_id: &str,
    provider_ref: String,
    method: &str,
    amount: i64,
    currency: &str,
) -> Payment {
    Payment {
        payment_id: payment_id.to_string(),
        provider_ref,
        qris: false,
        method: method.to_string(),
        amount,
        currency: currency.to_string(),
        outcome: None,
        paid: None,
        expires_at: now() + 86400,
    }
}

fn finpay_create(st: &St, n: u64, body: &[u8]) -> Made {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let id = b
        .pointer("/order/id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if exists(st, &id) {
        return (
            StatusCode::CONFLICT,
            json!({"responseCode": "4090001", "responseMessage": "Duplicate order id"}),
            None,
        );
    }
    let Some(amount) = b
        .pointer("/order/amount")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<i64>().ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            json!({"responseCode": "4000001", "responseMessage": "Invalid amount"}),
            None,
        );
    };
    let sof = b
        .pointer("/sourceOfFunds/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let base = st.base.lock().unwrap().clone();
    let mut answer = json!({
        "responseCode": "2000000", "responseMessage": "Success",
        "redirecturl": format!("{base}/pay/{id}"), "expiryLink": "2026-12-02 09:56:35",
    });
    match sof {
        "qris" => {
            answer["stringQr"] = json!(format!(
                "00020101021226670016ID.CO.FINNET{n:010}5204599953033605802ID6304ABCD"
            ));
            answer["imageurl"] = json!(format!("{base}/qr/{id}.png"));
        }
        "" => {}
        _ => answer["paymentCode"] = json!(format!("88027{n:011}")),
    }
    (
        StatusCode::OK,
        answer,
        Some(payment(&id, format!("FP{n:08}"), sof, amount, "IDR")),
    )
}

fn xendit_invoice(st: &St, n: u64, body: &[u8]) -> Made {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(amount) = b["amount"].as_i64() else {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error_code": "API_VALIDATION_ERROR", "message": "amount must be an integer"}),
            None,
        );
    };
    let ext = b["external_id"].as_str().unwrap_or("").to_string();
    let id = format!("inv{n:021}");
    let base = st.base.lock().unwrap().clone();
    let methods: Vec<String> = b["payment_methods"].as_array().map_or(vec![], |m| {
        m.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    });
    let banks: Vec<Value> = ["BCA", "BNI", "BRI", "MANDIRI", "PERMATA"]
        .iter()
        .filter(|b| methods.is_empty() || methods.iter().any(|m| m == *b))
        .map(|b| json!({"bank_code": b, "collection_type": "POOL", "bank_account_number": format!("8808{n:012}"), "transfer_amount": amount, "bank_branch": "Virtual Account", "account_holder_name": "TOKO PARLEY"}))
        .collect();
    let outlets: Vec<Value> = ["ALFAMART", "INDOMARET"]
        .iter()
        .filter(|o| methods.is_empty() || methods.iter().any(|m| m == *o))
        .map(|o| json!({"retail_outlet_name": o, "payment_code": format!("TEST{n:08}"), "transfer_amount": amount}))
        .collect();
    let answer = json!({
        "id": id, "external_id": ext, "user_id": "user-1", "status": "PENDING",
        "merchant_name": "Toko Parley", "amount": amount, "currency": b["currency"],
        "description": b["description"], "expiry_date": "2026-12-02T10:00:00.000Z",
        "invoice_url": format!("{base}/web/invoices/{id}"),
        "available_banks": banks, "available_retail_outlets": outlets,
        "available_ewallets": [], "available_qr_codes": [{"qr_code_type": "QRIS"}],
    });
    let method = methods.first().cloned().unwrap_or_default();
    (
        StatusCode::OK,
        answer,
        Some(payment(&ext, id, &method, amount, "IDR")),
    )
}

fn xendit_qris(n: u64, body: &[u8]) -> Made {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(amount) = b["amount"].as_i64() else {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error_code": "API_VALIDATION_ERROR", "message": "amount must be an integer"}),
            None,
        );
    };
    let reference = b["reference_id"].as_str().unwrap_or("").to_string();
    let id = format!("pr-{n:08x}-0000-4000-8000-000000000000");
    let expires = b
        .pointer("/payment_method/qr_code/channel_properties/expires_at")
        .cloned()
        .unwrap_or(json!("2026-12-02T10:00:00Z"));
    let answer = json!({
        "id": id, "reference_id": reference, "business_id": "biz-1", "currency": "IDR",
        "amount": amount, "country": "ID", "status": "PENDING", "description": b["description"],
        "payment_method": {"id": format!("pm-{n}"), "type": "QR_CODE", "reusability": "ONE_TIME_USE", "status": "ACTIVE",
            "qr_code": {"channel_code": "QRIS", "amount": amount, "channel_properties": {
                "qr_string": format!("00020101021226660014ID.CO.XENDIT{n:010}5204549953033605406{amount}5802ID6304ABCD"),
                "expires_at": expires}}},
        "actions": [], "created": "2026-12-01T10:00:00Z", "updated": "2026-12-01T10:00:00Z",
    });
    let mut p = payment(&reference, id, "qris", amount, "IDR");
    p.qris = true;
    (StatusCode::OK, answer, Some(p))
}

fn midtrans_charge(st: &St, n: u64, body: &[u8]) -> Made {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let order = b
        .pointer("/transaction_details/order_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // Midtrans answers its errors in a 200 body.
    if exists(st, &order) {
        return (
            StatusCode::OK,
            json!({"status_code": "406", "status_message": "The request could not be completed due to a conflict with the current state of the target resource, please try again", "id": "x"}),
            None,
        );
    }
    let Some(gross) = b
        .pointer("/transaction_details/gross_amount")
        .and_then(Value::as_i64)
    else {
        return (
            StatusCode::OK,
            json!({"status_code": "400", "status_message": "One or more parameters in the payload is invalid.", "validation_messages": ["transaction_details.gross_amount is not an integer"]}),
            None,
        );
    };
    if let Some(items) = b["item_details"].as_array() {
        let sum: i64 = items
            .iter()
            .map(|i| i["price"].as_i64().unwrap_or(0) * i["quantity"].as_i64().unwrap_or(0))
            .sum();
        if sum != gross {
            return (
                StatusCode::OK,
                json!({"status_code": "400", "status_message": "One or more parameters in the payload is invalid.", "validation_messages": ["transaction_details.gross_amount is not equal to the sum of item_details"]}),
                None,
            );
        }
    }
    let pt = b["payment_type"].as_str().unwrap_or("").to_string();
    let tid = format!("{n:08x}-8aa4-4fd8-b5ae-000000000000");
    let mut answer = json!({
        "status_code": "201", "status_message": "Success, transaction is found",
        "transaction_id": tid, "order_id": order, "merchant_id": "G000000000",
        "gross_amount": format!("{gross}.00"), "currency": "IDR", "payment_type": pt,
        "transaction_time": "2026-12-01 10:00:00", "transaction_status": "pending",
        "fraud_status": "accept", "expiry_time": "2026-12-02 10:00:00",
    });
    let base = st.base.lock().unwrap().clone();
    match pt.as_str() {
        "bank_transfer" => {
            let bank = b
                .pointer("/bank_transfer/bank")
                .and_then(Value::as_str)
                .unwrap_or("bca");
            if bank == "permata" {
                answer["permata_va_number"] = json!(format!("8562{n:012}"));
            } else {
                answer["va_numbers"] = json!([{"bank": bank, "va_number": format!("1234{n:012}")}]);
            }
        }
        "echannel" => {
            answer["biller_code"] = json!("70012");
            answer["bill_key"] = json!(format!("99{n:010}"));
        }
        "cstore" => {
            answer["payment_code"] = json!(format!("2509{n:012}"));
            answer["store"] = b
                .pointer("/cstore/store")
                .cloned()
                .unwrap_or(json!("indomaret"));
        }
        "qris" => {
            answer["qr_string"] = json!(format!(
                "00020101021226620014COM.GO-JEK.WWW{n:010}5204599953033605802ID6304ABCD"
            ));
            answer["acquirer"] = json!("gopay");
            answer["actions"] = json!([{"name": "generate-qr-code", "method": "GET", "url": format!("{base}/v2/qris/{tid}/qr-code")}]);
        }
        _ => {}
    }
    (
        StatusCode::OK,
        answer,
        Some(payment(&order, tid, &pt, gross, "IDR")),
    )
}

fn stripe_session(n: u64, body: &[u8]) -> Made {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let mut total = 0i64;
    let mut i = 0;
    while let Some(unit) = form.get(&format!("line_items[{i}][price_data][unit_amount]")) {
        let qty: i64 = form
            .get(&format!("line_items[{i}][quantity]"))
            .and_then(|q| q.parse().ok())
            .unwrap_or(1);
        match unit.parse::<i64>() {
            Ok(u) => total += u * qty,
            Err(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"type": "invalid_request_error", "code": "parameter_invalid_integer", "message": "Invalid integer"}}),
                    None,
                )
            }
        }
        i += 1;
    }
    if form.get("mode").map(String::as_str) != Some("payment") || i == 0 {
        return (
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "parameter_missing", "message": "Missing required param: line_items."}}),
            None,
        );
    }
    let id = format!("cs_test_{n:024}");
    let reference = form.get("client_reference_id").cloned().unwrap_or_default();
    let currency = form
        .get("line_items[0][price_data][currency]")
        .cloned()
        .unwrap_or_default();
    let expires: i64 = form
        .get("expires_at")
        .and_then(|e| e.parse().ok())
        .unwrap_or(now() + 86400);
    let answer = json!({
        "id": id, "object": "checkout.session", "amount_total": total, "currency": currency,
        "client_reference_id": reference, "expires_at": expires, "mode": "payment",
        "payment_status": "unpaid", "status": "open",
        "url": format!("https://checkout.stripe.com/c/pay/{id}"),
        "metadata": {"payment_id": form.get("metadata[payment_id]")},
    });
    let mut p = payment(
        &reference,
        id,
        "link",
        total,
        &currency.to_ascii_uppercase(),
    );
    p.expires_at = expires;
    (StatusCode::OK, answer, Some(p))
}

async fn xendit_list(
    State(st): State<Arc<St>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = intake(&st, &method, &uri, &headers, b"").await {
        return r;
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
    if let Err(r) = intake(&st, &method, &uri, &headers, b"").await {
        return r;
    }
    let ps = st.payments.lock().unwrap().clone();
    let found = ps
        .iter()
        .rev()
        .find(|p| p.payment_id == id || p.provider_ref == id);
    match (found, st.kind) {
        (Some(p), kind) => Json(status_body(kind, p)).into_response(),
        (None, GatewayKind::Midtrans) => Json(json!({"status_code": "404", "status_message": "Transaction doesn't exist."})).into_response(),
        (None, GatewayKind::Finpay) => (StatusCode::NOT_FOUND, Json(json!({"responseCode": "4040001", "responseMessage": "Order not found"}))).into_response(),
        (None, GatewayKind::Stripe) => (StatusCode::NOT_FOUND, Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such checkout.session"}}))).into_response(),
        (None, _) => (StatusCode::NOT_FOUND, Json(json!({"error_code": "INVOICE_NOT_FOUND_ERROR", "message": "Invoice not found"}))).into_response(),
    }
}

fn status_body(kind: GatewayKind, p: &Payment) -> Value {
    let paid = p.paid.unwrap_or(p.amount);
    match kind {
        GatewayKind::Finpay => {
            let s = match p.outcome {
                Some(FakeOutcome::Paid) => "PAID",
                Some(FakeOutcome::Expired) => "EXPIRED",
                Some(FakeOutcome::Failed) => "FAILURE",
                None => "PENDING",
            };
            json!({"responseCode": "2000000", "responseMessage": "Success", "data": {
                "order": {"id": p.payment_id, "reference": p.provider_ref, "amount": p.amount.to_string(), "currency": p.currency},
                "result": {"payment": {"status": s, "amount": paid, "datetime": "2026-12-01 10:00:00"}}}})
        }
        GatewayKind::Xendit if p.qris => {
            let s = match p.outcome {
                Some(FakeOutcome::Paid) => "SUCCEEDED",
                Some(FakeOutcome::Expired) => "EXPIRED",
                Some(FakeOutcome::Failed) => "FAILED",
                None => "PENDING",
            };
            json!({"id": p.provider_ref, "reference_id": p.payment_id, "status": s, "amount": paid, "currency": p.currency})
        }
        GatewayKind::Xendit => {
            let s = match p.outcome {
                Some(FakeOutcome::Paid) => "PAID",
                Some(_) => "EXPIRED",
                None => "PENDING",
            };
            let mut v = json!({"id": p.provider_ref, "external_id": p.payment_id, "status": s, "amount": p.amount, "currency": p.currency});
            if p.outcome == Some(FakeOutcome::Paid) {
                v["paid_amount"] = json!(paid);
            }
            v
        }
        GatewayKind::Midtrans => {
            let (s, code) = match p.outcome {
                Some(FakeOutcome::Paid) => ("settlement", "200"),
                Some(FakeOutcome::Expired) => ("expire", "407"),
                Some(FakeOutcome::Failed) => ("deny", "202"),
                None => ("pending", "201"),
            };
            json!({"status_code": code, "status_message": "Success, transaction is found", "transaction_id": p.provider_ref,
                "order_id": p.payment_id, "gross_amount": format!("{paid}.00"), "currency": p.currency,
                "payment_type": p.method, "transaction_status": s, "fraud_status": "accept"})
        }
        _ => {
            let (s, ps) = match p.outcome {
                Some(FakeOutcome::Paid) => ("complete", "paid"),
                Some(FakeOutcome::Expired) => ("expired", "unpaid"),
                Some(FakeOutcome::Failed) => ("complete", "unpaid"),
                None => ("open", "unpaid"),
            };
            json!({"id": p.provider_ref, "object": "checkout.session", "status": s, "payment_status": ps,
                "amount_total": paid, "currency": p.currency.to_ascii_lowercase(), "client_reference_id": p.payment_id,
                "expires_at": p.expires_at})
        }
    }
}
