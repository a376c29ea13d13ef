//! Manual: a bank transfer the owner confirms by hand. No API and no callbacks: the customer
//! is shown the configured instructions, and the payment stays Pending until the owner
//! marks it paid through the admin API.

use super::{
    CreatePayment, Created, GatewayStatus, Instructions, RefundReport, RefundState, StatusReport,
};

pub(super) fn create(instructions: &str, req: &CreatePayment) -> Created {
    Created {
        provider_ref: req.payment_id.clone(),
        instructions: Instructions::Manual {
            text: instructions.to_string(),
        },
        expires_at_unix: Some(req.expires_at_unix),
        raw: serde_json::Value::Null,
    }
}

pub(super) fn status() -> StatusReport {
    StatusReport {
        status: GatewayStatus::Pending,
        amount: None,
        provider_ref: None,
        raw: serde_json::Value::Null,
    }
}

/// A refund the owner made by hand (a transfer back): nothing to send, recorded as done.
pub(super) fn refund() -> RefundReport {
    RefundReport {
        provider_ref: None,
        state: RefundState::Succeeded,
        raw: serde_json::Value::Null,
    }
}
