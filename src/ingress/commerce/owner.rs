//! Telling an account's owner (`owner_wa_id`): a WhatsApp text from the account's number to
//! the owner's, through the owner's conversation like any message the business sends. Outside
//! the owner's 24 h window it is held until the owner writes to the account (no template is
//! sent for it). Without `owner_wa_id`, nothing is sent (a debug line says so).
//!
//! Each message has a request id naming what it is about (a material's crossing, a payment's
//! status): one handed to the owner's conversation is recorded (`owner_notices`), and the
//! conversation itself answers a request it queued before as a duplicate, so a retry never
//! sends it twice.
//!
//! What is owed is durable before it is told: a material's crossing is `low_alert = pending`
//! from the transaction that made it, a held payment is PAID_LATE or MISMATCH with
//! `owner_told` behind. [`tell_low_materials`] and [`tell_held_payments`] run right after the
//! change and again in every reconciliation pass (`ingress::payments::reconcile`), until the
//! message is handed over.

use crate::actors::AccountRouter;
use crate::commerce::materials::{low_stock_request, low_stock_text};
use crate::conversation::ConversationEvent;
use crate::domain::material::quantity_text;
use crate::domain::{AccountId, PaymentStatus};
use crate::engine::Engine;
use crate::metrics::metrics;
use crate::store::{Payment, StoreError};
use crate::telemetry::mask;
use crate::whatsapp::send::OutboundMessage;

/// How a message to the owner ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerTold {
    /// Queued for sending.
    Sent,
    /// Held until the owner writes to the account (their 24 h window is closed).
    Held,
    /// This request was handed over before: nothing sent again.
    AlreadyTold,
    /// The account has no `owner_wa_id` (or is no longer configured).
    NoOwner,
}

impl OwnerTold {
    fn as_str(self) -> &'static str {
        match self {
            OwnerTold::Sent => "sent",
            OwnerTold::Held => "held",
            OwnerTold::AlreadyTold => "already_told",
            OwnerTold::NoOwner => "no_owner",
        }
    }
}

/// Why the owner could not be told now (the caller tries again later).
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the account is not running")]
    NoAccount,
    #[error("the owner's conversation did not take the message: {0}")]
    Refused(String),
    #[error("the owner's conversation could not be reached: {0}")]
    Unreachable(String),
}

/// One owner message at a time in this process: the record looked up, the message handed
/// over and recorded, without a second caller's retry in between.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Send `text` to the owner of `account`, once per `request_id`. `topic` labels the metric
/// (`low_stock`, `payment`, …).
pub async fn tell_owner(
    engine: &Engine,
    router: &AccountRouter,
    account: &AccountId,
    topic: &'static str,
    request_id: &str,
    text: String,
) -> Result<OwnerTold, OwnerError> {
    let settings = engine.settings_arc();
    let owner = settings
        .account(account.as_str())
        .and_then(|a| a.owner_wa_id.clone());
    let Some(owner) = owner else {
        tracing::debug!(account = %account, request = request_id, "No owner_wa_id for the account: the owner is not messaged.");
        count(topic, OwnerTold::NoOwner.as_str());
        return Ok(OwnerTold::NoOwner);
    };
    let _one = ONE_AT_A_TIME.lock().await;
    if engine.store.owner_notice_given(account, request_id).await? {
        return Ok(OwnerTold::AlreadyTold);
    }
    let actor = router.get(account.as_str()).ok_or(OwnerError::NoAccount)?;
    let policy = crate::commerce::sweep::owner_policy(topic, &text, &settings.commerce);
    let event = ConversationEvent::Outgoing {
        request_id: request_id.to_string(),
        message: OutboundMessage::Text {
            body: text,
            preview_url: false,
        },
        reply_to: None,
        policy: Some(policy),
    };
    let outcome = match crate::ingress::command(&actor, owner.as_str(), event).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(reason)) => {
            count(topic, "failed");
            return Err(OwnerError::Refused(reason));
        }
        Err(e) => {
            count(topic, "failed");
            return Err(OwnerError::Unreachable(e.to_string()));
        }
    };
    engine
        .store
        .owner_notice_record(account, request_id, engine.clock.now_ms())
        .await?;
    let told = if outcome.duplicate {
        OwnerTold::AlreadyTold
    } else if outcome.held {
        OwnerTold::Held
    } else {
        OwnerTold::Sent
    };
    count(topic, told.as_str());
    tracing::info!(
        account = %account,
        owner = %mask(&owner),
        request = request_id,
        result = told.as_str(),
        "The account's owner was messaged."
    );
    Ok(told)
}

fn count(topic: &str, result: &str) {
    metrics()
        .owner_messages
        .inc(&format!("topic=\"{topic}\",result=\"{result}\""));
}

/// Tell the owners of the materials that fell below their minimum and have not been told
/// (each crossing once: logged, counted and messaged, then marked `sent`).
pub async fn tell_low_materials(engine: &Engine, router: &AccountRouter) -> Result<(), StoreError> {
    for low in engine.store.low_materials_to_tell(100).await? {
        let m = &low.material;
        let request = low_stock_request(&m.name, m.low_crossings);
        let text = low_stock_text(&m.name, &m.unit, m.stock, m.min_stock);
        match tell_owner(engine, router, &low.account, "low_stock", &request, text).await {
            Ok(told) => {
                if engine
                    .store
                    .low_material_told(&low.account, &m.name, m.low_crossings)
                    .await?
                {
                    metrics()
                        .low_stock_alerts
                        .inc(&format!("account=\"{}\"", low.account));
                    tracing::warn!(
                        account = %low.account,
                        material = %m.name,
                        stock = %quantity_text(m.stock),
                        min_stock = %quantity_text(m.min_stock),
                        unit = %m.unit,
                        crossing = m.low_crossings,
                        owner = told.as_str(),
                        "A material fell below its minimum stock."
                    );
                }
            }
            Err(e) => tracing::warn!(
                account = %low.account,
                material = %m.name,
                error = %e,
                "The owner could not be told of a material below its minimum; told on the next pass."
            ),
        }
    }
    Ok(())
}

/// Tell the owner of one payment held for them (PAID_LATE, MISMATCH), once per payment and
/// status; recorded once handed over.
pub async fn tell_held_payment(
    engine: &Engine,
    router: &AccountRouter,
    p: &Payment,
) -> Result<(), OwnerError> {
    let Some(text) = crate::commerce::payment::owner_news(
        p.status,
        p.id,
        &p.order_number,
        &p.amount,
        p.paid_amount.as_ref(),
    ) else {
        return Ok(());
    };
    let request = crate::commerce::payment::owner_request(p.id, p.status);
    let account = AccountId::from(p.account.as_str());
    tell_owner(engine, router, &account, "payment", &request, text).await?;
    engine.store.payment_owner_told(p.id, p.status).await?;
    Ok(())
}

/// Tell the owners of the held payments they have not heard of.
pub async fn tell_held_payments(engine: &Engine, router: &AccountRouter) -> Result<(), StoreError> {
    for p in engine.store.payments_for_owner(100).await? {
        if let Err(e) = tell_held_payment(engine, router, &p).await {
            tracing::warn!(payment = p.id, status = %p.status, error = %e, "The owner could not be told of a held payment; told on the next pass.");
        }
    }
    Ok(())
}

/// Tell the owners of the custom orders they have not heard of (a `custom_order` node's,
/// committed with its step, is told by the next reconciliation pass), once each.
pub async fn tell_custom_orders(engine: &Engine, router: &AccountRouter) -> Result<(), StoreError> {
    for o in engine.store.custom_orders_untold(100).await? {
        let text = crate::commerce::text::custom_order_for_owner(&o);
        let request = format!("custom:{}:owner", o.id);
        match tell_owner(engine, router, &o.account, "custom_order", &request, text).await {
            Ok(_) => {
                engine
                    .store
                    .custom_order_told(o.id, engine.clock.now_ms())
                    .await?
            }
            Err(e) => {
                tracing::warn!(custom_order = o.id, error = %e, "The owner could not be told of a custom order; told on the next pass.")
            }
        }
    }
    Ok(())
}

/// Whether a payment in `status` is held for the owner.
pub fn held_for_owner(status: PaymentStatus) -> bool {
    matches!(status, PaymentStatus::PaidLate | PaymentStatus::Mismatch)
}
