//! The payment gateways' callbacks (`POST /payments/{NAME}/callback`), their settlement, and
//! the reconciliation pass.
//!
//! A callback is verified (token or signature), recorded once per gateway event, and answered
//! at once: the work comes after the commit. Settling asks the gateway's status API (a
//! callback alone never makes a payment PAID), decides the move with the pure
//! [`crate::commerce::payment::settle`], commits it with its order, and then tells the
//! conversation. Answers: bad token or signature 401 (nothing changes), a payment we do not
//! know 404 (the gateway retries: a callback may come before the create call returned), a
//! redelivery 200 with no second effect.
//!
//! The reconciliation pass (at start-up, then every `RECONCILE_EVERY`) settles what a lost
//! callback or a crash left: PENDING payments past their expiry, callbacks recorded and not
//! applied; tells each conversation a status it has not heard; and tells each account's
//! owner what is owed to them (a payment held for them, a material below its minimum, a
//! custom order: `commerce/owner.rs`). It ends with the shop's sweeps (ingress/sweeps.rs):
//! abandoned carts' reminders, subscriptions' notices.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::owner;
use super::AppState;
use crate::actors::AccountRouter;
use crate::conversation::ConversationEvent;
use crate::domain::PaymentStatus;
use crate::engine::Engine;
use crate::payments::CallbackError;
use crate::store::{payment_of_gateway_id, Payment, StoreError};

/// A callback's largest body (the gateways' are a few KB).
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024;

/// How often the reconciliation pass runs.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// `POST /payments/{name}/callback`.
pub async fn callback(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let engine = app.engine.clone();
    let Some(gateway) = engine.payments.get(&name) else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"error": "no such payment provider"}),
        );
    };
    let now = engine.clock.now_ms();
    let news = match gateway.verify_callback(&headers, &body, now / 1000) {
        Ok(c) => c,
        Err(
            e @ (CallbackError::BadSignature
            | CallbackError::BadToken
            | CallbackError::Stale { .. }),
        ) => {
            tracing::warn!(provider = %name, error = %e, "A payment callback was refused.");
            return answer(StatusCode::UNAUTHORIZED, json!({"error": e.to_string()}));
        }
        Err(CallbackError::Ignored(why)) => {
            return answer(StatusCode::OK, json!({"ignored": why}));
        }
        Err(CallbackError::NoCallbacks) => {
            return answer(
                StatusCode::NOT_FOUND,
                json!({"error": "this provider sends no callbacks"}),
            );
        }
        Err(e) => return answer(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    };
    let found = match find(
        &engine,
        &name,
        news.payment_id.as_deref(),
        news.provider_ref.as_deref(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "A payment callback could not be read against the store.");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "store unavailable"}),
            );
        }
    };
    let Some(payment) = found else {
        // Perhaps the create call has not returned yet: the gateway will retry.
        return answer(StatusCode::NOT_FOUND, json!({"error": "unknown payment"}));
    };
    if let (None, Some(r)) = (&payment.provider_ref, &news.provider_ref) {
        // The callback beat the create call's answer: its (verified) reference is what the
        // status API is asked by (Stripe's session id).
        if let Err(e) = engine.store.payment_ref_learned(payment.id, r).await {
            tracing::warn!(error = %e, "A payment callback could not be recorded.");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "store unavailable"}),
            );
        }
    }
    let raw = String::from_utf8_lossy(&body);
    let fresh = engine
        .store
        .record_payment_event(
            &name,
            &news.event_id,
            Some(payment.id),
            &format!("{:?}", news.status),
            news.amount.as_ref(),
            &raw,
            now,
        )
        .await;
    match fresh {
        Err(e) => {
            tracing::warn!(error = %e, "A payment callback could not be recorded.");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "store unavailable"}),
            )
        }
        Ok(false) => answer(StatusCode::OK, json!({"duplicate": true})),
        Ok(true) => {
            let router = app.router.clone();
            tokio::spawn(async move {
                if let Err(e) = settle(&engine, &router, payment.id).await {
                    tracing::warn!(payment = payment.id, error = %e, "Settling a payment failed; the reconciliation pass will try again.");
                }
            });
            answer(StatusCode::OK, json!({"received": true}))
        }
    }
}

/// The payment a callback names: by our id, else by the gateway's reference.
async fn find(
    engine: &Engine,
    provider: &str,
    payment_id: Option<&str>,
    provider_ref: Option<&str>,
) -> Result<Option<Payment>, StoreError> {
    if let Some(id) = payment_id.and_then(payment_of_gateway_id) {
        if let Some(p) = engine.store.payment(id).await? {
            if p.provider == provider {
                return Ok(Some(p));
            }
        }
    }
    match provider_ref {
        Some(r) => engine.store.payment_by_ref(provider, r).await,
        None => Ok(None),
    }
}

/// Why a payment could not be settled now.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gateway(#[from] crate::payments::GatewayError),
    #[error("payment {0} is gone")]
    Gone(i64),
    #[error("its provider {0:?} is no longer configured")]
    NoProvider(String),
}

/// Ask the gateway where payment `id` stands, move it there (forward only), and tell its
/// conversation.
pub async fn settle(engine: &Engine, router: &AccountRouter, id: i64) -> Result<(), SettleError> {
    let p = engine
        .store
        .payment(id)
        .await?
        .ok_or(SettleError::Gone(id))?;
    let gateway = engine
        .payments
        .get(&p.provider)
        .ok_or_else(|| SettleError::NoProvider(p.provider.clone()))?;
    let report = gateway
        .status(&p.gateway_id(), p.provider_ref.as_deref())
        .await?;
    let now = engine.clock.now_ms();
    match crate::commerce::payment::settle(
        p.status,
        &p.amount,
        p.expires_at,
        report.status,
        report.amount.as_ref(),
        now,
    ) {
        Some(to) => {
            if engine
                .store
                .settle_payment(id, p.status, to, report.amount.as_ref(), now)
                .await?
            {
                log_move(&p, to);
                if let Some(p) = engine.store.payment(id).await? {
                    notify(engine, router, &p).await;
                    after_move(engine, router, &p).await;
                }
            }
        }
        None => engine.store.payment_events_applied(id).await?,
    }
    Ok(())
}

/// The owner confirms a payment by hand (a manual transfer seen on the account; a mismatch
/// or a late payment accepted): PAID, if it may move there. Whether it moved.
pub async fn confirm(
    engine: &Engine,
    router: &AccountRouter,
    p: &Payment,
) -> Result<bool, StoreError> {
    if !crate::commerce::payment::confirmable(p.status) {
        return Ok(false);
    }
    let now = engine.clock.now_ms();
    let moved = engine
        .store
        .settle_payment(p.id, p.status, PaymentStatus::Paid, None, now)
        .await?;
    if moved {
        log_move(p, PaymentStatus::Paid);
        if let Some(p) = engine.store.payment(p.id).await? {
            notify(engine, router, &p).await;
            after_move(engine, router, &p).await;
        }
    }
    Ok(moved)
}

/// The owner hears what a move owes them: the materials a paid order took below their
/// minimum, a payment held for them. What fails here is owed in the store and told by the
/// next reconciliation pass.
async fn after_move(engine: &Engine, router: &AccountRouter, p: &Payment) {
    if p.status == PaymentStatus::Paid {
        if let Err(e) = owner::tell_low_materials(engine, router).await {
            tracing::warn!(payment = p.id, error = %e, "Low-stock alerts wait for the next pass.");
        }
    }
    if owner::held_for_owner(p.status) {
        if let Err(e) = owner::tell_held_payment(engine, router, p).await {
            tracing::warn!(payment = p.id, error = %e, "The owner is told of this payment on the next pass.");
        }
    }
}

fn log_move(p: &Payment, to: PaymentStatus) {
    match to {
        PaymentStatus::Mismatch | PaymentStatus::PaidLate => tracing::warn!(
            payment = p.id,
            order = %p.order_number,
            status = %to,
            "A payment needs the owner: it is held, the order is not completed (the owner is messaged)."
        ),
        _ => {
            tracing::info!(payment = p.id, order = %p.order_number, status = %to, "A payment moved.")
        }
    }
}

/// Tell the payment's conversation its status; recorded once the conversation committed it
/// (the reconciliation pass tells it again until then).
async fn notify(engine: &Engine, router: &AccountRouter, p: &Payment) {
    let Some(account) = router.get(&p.account) else {
        return;
    };
    let access = match p.status {
        PaymentStatus::Paid => match engine.store.plan_access(p.order_id).await {
            Ok(plans) => plans
                .iter()
                .map(crate::commerce::payment::access_line)
                .collect(),
            Err(e) => {
                tracing::warn!(payment = p.id, error = %e, "Reading a paid order's plans failed; told on the next pass.");
                return;
            }
        },
        _ => Vec::new(),
    };
    let event = ConversationEvent::PaymentUpdate {
        payment_id: p.id,
        status: p.status,
        order: p.order_number.clone(),
        amount: p.amount,
        access,
    };
    let told = super::command(&account, p.user_key.as_str(), event).await;
    match told {
        Ok(Ok(_)) => {
            if let Err(e) = engine.store.payment_notified(p.id, p.status).await {
                tracing::warn!(payment = p.id, error = %e, "Recording that a conversation heard its payment failed.");
            }
        }
        Ok(Err(reason)) => {
            tracing::warn!(payment = p.id, %reason, "A conversation did not take its payment's news.")
        }
        Err(e) => {
            tracing::warn!(payment = p.id, error = %e, "A conversation could not be told its payment's news.")
        }
    }
}

/// A create call older than this that has not answered is taken for lost.
const CREATE_LOST_AFTER_MS: i64 = 60_000;

/// One reconciliation pass: payments a lost callback or a crash left unsettled, news a
/// conversation has not heard, what the owners are owed, the shop's reminders, and payments whose create call was
/// lost (made before this process `started`, or long ago): their conversation is woken, and
/// makes it again.
pub async fn reconcile(
    engine: &Engine,
    router: &AccountRouter,
    started: i64,
) -> Result<(), StoreError> {
    // One pass at a time (the timer's and an operator's `POST /payments/reconcile`): a
    // reminder claimed by one pass is not taken for a crashed claim by the other.
    let _one = engine.reconciling.lock().await;
    let now = engine.clock.now_ms();
    let lost_before = started.max(now - CREATE_LOST_AFTER_MS);
    for p in engine.store.payments_unopened(lost_before, 100).await? {
        if let Some(account) = router.get(&p.account) {
            let _ = account.cast(crate::actors::AccountMsg::Wake(p.user_key.as_str().into()));
        }
    }
    for p in engine.store.payments_to_reconcile(now, 100).await? {
        if let Err(e) = settle(engine, router, p.id).await {
            tracing::warn!(payment = p.id, error = %e, "Reconciling a payment failed; it is tried again on the next pass.");
        }
    }
    for p in engine.store.payments_to_notify(100).await? {
        notify(engine, router, &p).await;
    }
    if let Err(e) = owner::tell_held_payments(engine, router).await {
        tracing::warn!(error = %e, "Held payments wait for the next pass to be told to their owners.");
    }
    if let Err(e) = owner::tell_custom_orders(engine, router).await {
        tracing::warn!(error = %e, "Custom orders wait for the next pass to be told to their owners.");
    }
    if let Err(e) = super::commerce::settle_pending_refunds(engine, router).await {
        tracing::warn!(error = %e, "Pending refunds wait for the next pass.");
    }
    if let Err(e) = owner::tell_low_materials(engine, router).await {
        tracing::warn!(error = %e, "Low-stock alerts wait for the next pass.");
    }
    if let Err(e) = engine
        .store
        .prune_idempotency_keys(now - super::access::IDEMPOTENCY_KEEP_MS)
        .await
    {
        tracing::warn!(error = %e, "Old Idempotency-Keys wait for the next pass to be forgotten.");
    }
    let ended = engine.store.expire_subscriptions(now).await?;
    if ended > 0 {
        tracing::info!(subscriptions = ended, "Subscriptions ended.");
    }
    // The shop's reminders (abandoned carts, renewals, ends), after the expiry above.
    super::sweeps::sweep(engine, router).await
}

/// Run the reconciliation pass now and every [`RECONCILE_EVERY`], until the engine is gone.
pub fn spawn_reconciler(engine: &Arc<Engine>, router: AccountRouter) {
    let started = engine.clock.now_ms();
    let engine = Arc::downgrade(engine);
    tokio::spawn(async move {
        loop {
            let Some(e) = engine.upgrade() else { return };
            if let Err(err) = reconcile(&e, &router, started).await {
                tracing::warn!(error = %err, "The payment reconciliation pass failed.");
            }
            drop(e);
            tokio::time::sleep(RECONCILE_EVERY).await;
        }
    });
}

/// `POST /admin/v1/payments/{id}/confirm`: the owner marks a manual (or held) payment paid.
pub async fn confirm_by_owner(State(app): State<AppState>, Path(id): Path<i64>) -> Response {
    let engine = &app.engine;
    let p = match engine.store.payment(id).await {
        Ok(Some(p)) => p,
        Ok(None) => return answer(StatusCode::NOT_FOUND, json!({"error": "no such payment"})),
        Err(_) => {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "store unavailable"}),
            )
        }
    };
    match confirm(engine, &app.router, &p).await {
        Ok(true) => answer(
            StatusCode::OK,
            json!({"id": id, "status": PaymentStatus::Paid}),
        ),
        Ok(false) => answer(
            StatusCode::CONFLICT,
            json!({"error": format!("a {} payment cannot be confirmed", p.status)}),
        ),
        Err(_) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "store unavailable"}),
        ),
    }
}

/// `GET /admin/v1/payments/{id}`: the payment and its refunds.
pub async fn show(State(app): State<AppState>, Path(id): Path<i64>) -> Response {
    let found = match app.engine.store.payment(id).await {
        Ok(Some(p)) => match app.engine.store.refunds_of(id).await {
            Ok(refunds) => Ok(Some((p, refunds))),
            Err(e) => Err(e),
        },
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    match found {
        Ok(Some((p, refunds))) => answer(
            StatusCode::OK,
            json!({
                "id": p.id,
                "order": p.order_number,
                "provider": p.provider,
                "kind": p.kind,
                "method": p.method,
                "provider_ref": p.provider_ref,
                "amount": p.amount.plain(),
                "paid_amount": p.paid_amount.map(|m| m.plain()),
                "currency": p.amount.currency,
                "status": p.status,
                "expires_at": p.expires_at,
                "paid_at": p.paid_at,
                "notified": p.notified,
                "refunds": refunds.iter().map(|r| json!({
                    "id": r.id,
                    "amount": r.amount.plain(),
                    "reason": r.reason,
                    "status": r.status,
                    "provider_ref": r.provider_ref,
                    "error": r.error,
                    "created_at": r.created_at,
                })).collect::<Vec<_>>(),
            }),
        ),
        Ok(None) => answer(StatusCode::NOT_FOUND, json!({"error": "no such payment"})),
        Err(_) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "store unavailable"}),
        ),
    }
}

/// `POST /admin/v1/payments/reconcile`: run the reconciliation pass now (it also runs every
/// 30 s on its own).
pub async fn reconcile_now(State(app): State<AppState>) -> Response {
    match reconcile(&app.engine, &app.router, 0).await {
        Ok(()) => answer(StatusCode::OK, json!({"reconciled": true})),
        Err(_) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "store unavailable"}),
        ),
    }
}
