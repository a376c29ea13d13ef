//! `POST /admin/v1/payments/{id}/refund` `{"amount"?, "reason", "idempotency_key"?}`: give a
//! paid payment back, whole or in part, where its kind and method allow it.
//!
//! Checked before any request: the payment holds money (PAID, PAID_LATE, MISMATCH; else 409),
//! its gateway can refund the method it was paid by (else 409 with why: Finpay's refund
//! request is not documented publicly, a VA or retail payment has no way back), the amount
//! (a decimal string in the payment's currency; left out: all that is left) is no more than
//! what is left to refund (else 422). The refund is written under its key before the
//! gateway is asked; the same request again (a retry after a timeout) is the same refund:
//! answered from the row once it is done, asked again with the same gateway idempotency key
//! while it is not, never made twice. Without an `idempotency_key` the key is the amount
//! asked, so two refunds of the same amount need two keys. A gateway's refusal is 502 with
//! its (scrubbed) words; no answer is 502 too, and the same request may be sent again.
//!
//! Two refunds asked at once are checked in turn under the payment's lock. Once the gateway
//! took it, the refund and (when the refunds that succeeded add up to what was received) the
//! payment's move to REFUNDED are committed together; a refund the gateway took as pending
//! holds its amount until the reconciliation pass asks where it stands ([`settle_pending`]); a full refund marks the order
//! refunded and cancelled. The stock is not given back (the goods may be with the customer:
//! the owner adjusts it, `POST /products/{sku}/stock`); a plan's subscription runs on. The
//! customer is told, once per refund, held until they write when their window is closed.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::*;
use crate::commerce::refund as rules;
use crate::domain::RefundStatus;
use crate::payments::{GatewayError, RefundRequest, RefundSettled, RefundState};
use crate::store::{Payment, Refund, RefundOpened};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ingress) struct RefundBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    #[schema(value_type = Option<String>)]
    amount: Option<Price>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    idempotency_key: Option<String>,
}

fn refund_view(p: &Payment, r: &Refund, refunded: &Money, replayed: bool) -> Value {
    json!({
        "id": r.id,
        "payment": p.id,
        "order": p.order_number,
        "amount": r.amount.plain(),
        "currency": r.amount.currency,
        "reason": r.reason,
        "status": r.status,
        "provider_ref": r.provider_ref,
        "idempotency_key": r.idem_key,
        "payment_status": p.status,
        "refunded": refunded.plain(),
        "replayed": replayed,
    })
}

/// What the payment's refunds that count add up to, and those amounts (all but `except`'s,
/// for a refund being made again).
fn taken(refunds: &[Refund], except: Option<i64>, requested_too: bool) -> Vec<Money> {
    refunds
        .iter()
        .filter(|r| Some(r.id) != except)
        .filter(|r| r.status.counts() || (requested_too && r.status == RefundStatus::Requested))
        .map(|r| r.amount)
        .collect()
}

fn sum(currency: Currency, amounts: &[Money]) -> Money {
    amounts
        .iter()
        .fold(Money::zero(currency), |a, m| a.plus(m).unwrap_or(a))
}

pub(super) async fn refund_payment(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body: RefundBody = json_body(body)?;
    let engine = &app.engine;
    let p = engine
        .store
        .payment(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such payment"))?;
    let currency = p.amount.currency;
    let reason = body.reason.as_deref().map(str::trim).unwrap_or_default();
    if reason.is_empty() || reason.chars().count() > 255 {
        return Err(ApiError::invalid(
            "reason is required, at most 255 characters",
        ));
    }
    let asked = body
        .amount
        .as_ref()
        .map(|a| {
            a.money(currency)
                .map_err(|e| e.replacen("price", "amount", 1))
        })
        .transpose()
        .map_err(ApiError::invalid)?;
    let key = rules::refund_key(
        &p.gateway_id(),
        body.idempotency_key.as_deref(),
        asked.as_ref(),
    )
    .map_err(ApiError::invalid)?;
    let refunds = engine.store.refunds_of(p.id).await?;
    let existing = refunds.iter().find(|r| r.idem_key == key).cloned();
    if let Some(r) = &existing {
        if asked.is_some_and(|a| a != r.amount) {
            return Err(ApiError::invalid(format!(
                "idempotency_key {:?} was used for a refund of {}",
                body.idempotency_key.unwrap_or_default(),
                r.amount.display()
            )));
        }
        if r.status.counts() {
            // Done before: the same answer, and the customer's message once more (sent once).
            let refunded = sum(currency, &taken(&refunds, None, false));
            let p = engine.store.payment(id).await?.unwrap_or(p);
            tell_refund(&app, &p, r).await;
            return Ok((StatusCode::OK, Json(refund_view(&p, r, &refunded, true))).into_response());
        }
    }
    if !rules::refundable(p.status) {
        return Err(ApiError::conflict(format!(
            "a {} payment cannot be refunded (only PAID, PAID_LATE or MISMATCH)",
            p.status
        )));
    }
    if let Err(why) = crate::payments::refund_support(p.kind, p.method) {
        return Err(ApiError::conflict(format!(
            "{} ({} by {}): {why}",
            p.provider, p.kind, p.method
        )));
    }
    let Some(gateway) = engine.payments.get(&p.provider) else {
        return Err(ApiError::conflict(format!(
            "its provider {:?} is no longer configured",
            p.provider
        )));
    };
    let received = rules::received(&p.amount, p.paid_amount.as_ref());
    let left = rules::remaining(
        &received,
        &taken(&refunds, existing.as_ref().map(|r| r.id), true),
    );
    // A refund made again keeps its amount (a `full` one: what was left when it was asked).
    let given = existing.as_ref().map(|r| r.amount).or(asked);
    let amount = rules::amount_to_refund(given, &left).map_err(|e| match e {
        rules::AmountRefusal::Nothing if left.is_zero() => {
            ApiError::conflict("nothing is left to refund")
        }
        rules::AmountRefusal::Nothing => ApiError::invalid("amount must be more than zero"),
        rules::AmountRefusal::TooMuch { left } if left.is_zero() => {
            ApiError::conflict("nothing is left to refund")
        }
        rules::AmountRefusal::TooMuch { left } => ApiError::invalid(format!(
            "amount {} is more than the {} left to refund",
            given.map(|g| g.display()).unwrap_or_default(),
            left.display()
        )),
        rules::AmountRefusal::Currency => {
            ApiError::invalid(format!("amount must be in {currency}"))
        }
    })?;
    let now = engine.clock.now_ms();
    // Checked again under the payment's lock: another refund asked at the same moment may
    // have taken what was left.
    let opened = engine
        .store
        .open_refund(p.id, &amount, reason, &key, now, |held| {
            let left = rules::remaining(&received, held);
            if amount.amount <= left.amount {
                Ok(())
            } else {
                Err(left)
            }
        })
        .await?;
    let row = match opened {
        RefundOpened::Opened(row) => row,
        RefundOpened::TooMuch { left } if left.is_zero() => {
            return Err(ApiError::conflict("nothing is left to refund"))
        }
        RefundOpened::TooMuch { left } => {
            return Err(ApiError::invalid(format!(
                "amount {} is more than the {} left to refund",
                amount.display(),
                left.display()
            )))
        }
    };
    let req = RefundRequest {
        payment_id: p.gateway_id(),
        provider_ref: p.provider_ref.clone(),
        method: p.method,
        amount: row.amount,
        reason: row.reason.clone(),
        idempotency_key: key.clone(),
    };
    let report = match gateway.refund(&req).await {
        Ok(r) => r,
        Err(e) => return Err(refused(&app, &row, e).await),
    };
    let status = match report.state {
        RefundState::Succeeded => RefundStatus::Succeeded,
        RefundState::Pending => RefundStatus::Pending,
    };
    let moved = engine
        .store
        .refund_done(
            row.id,
            p.id,
            status,
            report.provider_ref.as_deref(),
            engine.clock.now_ms(),
            |current, refunded| rules::after_refunds(current, &received, refunded),
        )
        .await?;
    tracing::info!(
        payment = p.id, order = %p.order_number, refund = row.id, amount = %row.amount,
        refunded_in_full = moved, "A payment was refunded."
    );
    let p = engine.store.payment(id).await?.unwrap_or(p);
    let refunds = engine.store.refunds_of(p.id).await?;
    let row = refunds
        .iter()
        .find(|r| r.id == row.id)
        .cloned()
        .unwrap_or(row);
    tell_refund(&app, &p, &row).await;
    let refunded = sum(currency, &taken(&refunds, None, false));
    Ok((
        StatusCode::OK,
        Json(refund_view(&p, &row, &refunded, false)),
    )
        .into_response())
}

/// The gateway did not make the refund: what the owner reads, and the row's state (a
/// refusal frees its amount; no answer keeps it, for the same request to ask again).
async fn refused(app: &AppState, row: &Refund, e: GatewayError) -> ApiError {
    let now = app.engine.clock.now_ms();
    let fail = |why: String| async move {
        if let Err(err) = app.engine.store.refund_failed(row.id, &why, now).await {
            tracing::warn!(refund = row.id, error = %err, "Recording a refused refund failed.");
        }
    };
    tracing::warn!(refund = row.id, payment = row.payment_id, error = %e, "A refund was not made.");
    match e {
        GatewayError::NotRefundable { reason, .. } => {
            fail(reason.clone()).await;
            ApiError::conflict(reason)
        }
        GatewayError::Invalid { reason, .. } => {
            fail(reason.clone()).await;
            ApiError::invalid(reason)
        }
        GatewayError::Refused {
            gateway,
            status,
            code,
            message,
        } => {
            fail(format!("{status} {code}: {message}")).await;
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("{gateway} refused the refund ({status} {code}): {message}"),
            )
        }
        GatewayError::Unavailable { gateway, reason } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "{gateway} did not answer ({reason}): send the same request again, it will not refund twice"
            ),
        ),
        other => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the refund could not be made: {other}"),
        ),
    }
}

/// The customer hears of refund `r` once its money went back (once per refund, whatever
/// retries it; a pending one is told when the reconciliation pass finds it succeeded).
async fn tell_refund(app: &AppState, p: &Payment, r: &Refund) {
    tell_refund_through(&app.router, p, r).await
}

async fn tell_refund_through(router: &crate::actors::AccountRouter, p: &Payment, r: &Refund) {
    if r.status != RefundStatus::Succeeded {
        return;
    }
    let whole = p.status == crate::domain::PaymentStatus::Refunded
        && r.amount == rules::received(&p.amount, p.paid_amount.as_ref());
    let account = AccountId::from(p.account.clone());
    tell_through(
        router,
        &account,
        p.user_key.as_str(),
        rules::refund_request(r.id),
        rules::refund_text(&p.order_number, &r.amount, whole),
        crate::domain::WindowPolicy::Hold,
    )
    .await;
}

/// Ask the gateways where the refunds they took as pending stand (a pass of the
/// reconciliation timer): one that succeeded is recorded (and, when the refunds now add up
/// to what was received, the payment moves to REFUNDED) and the customer told; one that
/// failed frees its amount and its owner is told, once, to refund again or by hand; one
/// still pending is asked again on the next pass.
pub async fn settle_pending(
    engine: &crate::actors::Engine,
    router: &crate::actors::AccountRouter,
) -> Result<(), StoreError> {
    for r in engine.store.refunds_pending(100).await? {
        let Some(p) = engine.store.payment(r.payment_id).await? else {
            continue;
        };
        let Some(gateway) = engine.payments.get(&p.provider) else {
            continue;
        };
        let Some(reference) = r.provider_ref.as_deref() else {
            continue;
        };
        let settled = match gateway.refund_status(reference).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(refund = r.id, payment = p.id, error = %e, "Asking where a pending refund stands failed; asked again on the next pass.");
                continue;
            }
        };
        let now = engine.clock.now_ms();
        match settled {
            RefundSettled::Pending => {}
            RefundSettled::Succeeded => {
                let received = rules::received(&p.amount, p.paid_amount.as_ref());
                let moved = engine
                    .store
                    .refund_done(
                        r.id,
                        p.id,
                        RefundStatus::Succeeded,
                        None,
                        now,
                        |current, refunded| rules::after_refunds(current, &received, refunded),
                    )
                    .await?;
                tracing::info!(payment = p.id, order = %p.order_number, refund = r.id, refunded_in_full = moved, "A pending refund succeeded.");
                let p = engine.store.payment(p.id).await?.unwrap_or(p);
                let r = engine.store.refund_by_key(&r.idem_key).await?.unwrap_or(r);
                tell_refund_through(router, &p, &r).await;
            }
            RefundSettled::Failed(why) => {
                engine.store.refund_failed(r.id, &why, now).await?;
                tracing::warn!(payment = p.id, order = %p.order_number, refund = r.id, reason = %why, "A pending refund failed at the gateway: nothing was given back.");
                let text = rules::refund_failed_text(&p.order_number, &r.amount, &p.provider, &why);
                let account = AccountId::from(p.account.clone());
                if let Err(e) = super::owner::tell_owner(
                    engine,
                    router,
                    &account,
                    "refund",
                    &rules::refund_failed_request(r.id),
                    text,
                )
                .await
                {
                    tracing::warn!(refund = r.id, error = %e, "The owner could not be told of a failed refund.");
                }
            }
        }
    }
    Ok(())
}
