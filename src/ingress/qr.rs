//! `GET /payments/qr/{id}-{token}.png`: a pending payment's QRIS drawn from the QR string its
//! gateway gave, for Meta to fetch when it delivers the image message (see
//! `payments::qr_link`). A wrong token, another payment, one no longer pending or without a
//! QR string: 404, the same answer for each, so nothing can be learnt by probing.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

use super::AppState;
use crate::domain::PaymentStatus;
use crate::payments::Instructions;

pub async fn image(State(app): State<AppState>, Path(file): Path<String>) -> Response {
    let secret = app.engine.settings().whatsapp.app_secret.clone();
    let Some(id) = crate::payments::qr_file_payment(secret.expose_secret().as_bytes(), &file)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let payment = match app.engine.store.payment(id).await {
        Ok(Some(p)) => p,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::warn!(payment = id, error = %e, "A QRIS image could not be read from the store.");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let qr = payment
        .details
        .as_deref()
        .and_then(|d| serde_json::from_str::<Instructions>(d).ok())
        .and_then(|i| match i {
            Instructions::Qris { qr_string, .. } => qr_string,
            _ => None,
        });
    let (PaymentStatus::Pending, Some(qr)) = (payment.status, qr) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match crate::payments::qr_png(&qr) {
        Ok(png) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "private, max-age=300"),
            ],
            png,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(payment = id, error = %e, "A gateway's QR string could not be drawn.");
            StatusCode::NOT_FOUND.into_response()
        }
    }
}
