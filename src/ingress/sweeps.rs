//! The shop's sweeps, run at the end of each reconciliation pass (ingress/payments.rs), off
//! the webhook's path: an abandoned cart's one reminder, reminded carts that were not
//! recovered in time, subscriptions' renewal and end notices. Decided by the pure
//! [`crate::commerce::sweep`], read and marked through store/sweeps.rs, at most
//! [`BATCH`] rows of each kind per account and pass.
//!
//! Each message goes to its conversation as an `Outgoing` whose request id names the cart or
//! the period, and is recorded as told only once the conversation took it (sent, or held
//! until the customer writes again). A crash in between sends it again on the next pass
//! under the same request id, which the conversation answers as a duplicate of the first
//! (found by the outbox rows it queued: a held message has none, so a crash between holding
//! it and recording it holds it a second time).

use std::sync::Arc;

use crate::actors::{AccountMsg, AccountRouter};
use crate::commerce::sweep::{self, BATCH};
use crate::config::{AccountSettings, CommerceSettings};
use crate::conversation::ConversationEvent;
use crate::domain::{AccountId, UserKey, WindowPolicy, Zone};
use crate::engine::Engine;
use crate::store::StoreError;
use crate::telemetry::mask;
use crate::whatsapp::send::OutboundMessage;

type Account = ractor::ActorRef<AccountMsg>;

/// One pass of every sweep over every running account.
pub async fn sweep(engine: &Engine, router: &AccountRouter) -> Result<(), StoreError> {
    let settings: Arc<crate::config::Settings> = engine.settings_arc();
    let now = engine.clock.now_ms();
    let expired = engine
        .store
        .expire_cart_recoveries(sweep::recovery_expired_before(now), BATCH)
        .await?;
    if expired > 0 {
        tracing::info!(
            carts = expired,
            "Reminded carts were not ordered in time; their recovery expired."
        );
    }
    for account in &settings.accounts {
        let Some(actor) = router.get(account.phone_number_id.as_str()) else {
            continue;
        };
        remind_carts(engine, &actor, account, &settings.commerce, now).await?;
        tell_subscriptions(engine, &actor, account, &settings.commerce, now).await?;
    }
    Ok(())
}

/// Hand a message to `user`'s conversation; whether it took it (sent, queued or held).
async fn tell(
    actor: &Account,
    user: &UserKey,
    request_id: String,
    (message, policy): (OutboundMessage, WindowPolicy),
) -> bool {
    let event = ConversationEvent::Outgoing {
        request_id: request_id.clone(),
        message,
        reply_to: None,
        policy: Some(policy),
    };
    match crate::ingress::command(actor, user.clone(), event).await {
        Ok(Ok(_)) => true,
        Ok(Err(reason)) => {
            tracing::warn!(user = %mask(user.as_str()), request = %request_id, %reason, "A conversation refused a shop reminder; the next pass tries again.");
            false
        }
        Err(e) => {
            tracing::warn!(user = %mask(user.as_str()), request = %request_id, error = %e, "A shop reminder could not be handed to its conversation; the next pass tries again.");
            false
        }
    }
}

/// Abandoned carts: claimed (`pending`), reminded, recorded `sent`.
async fn remind_carts(
    engine: &Engine,
    actor: &Account,
    account: &AccountSettings,
    s: &CommerceSettings,
    now: i64,
) -> Result<(), StoreError> {
    let id: &AccountId = &account.phone_number_id;
    let idle_before = sweep::abandoned_before(now, s);
    for due in engine.store.abandoned_carts(id, idle_before, BATCH).await? {
        if !sweep::reminder_due(&due, now, s) {
            continue;
        }
        if due.recovery == crate::domain::CartRecovery::None
            && !engine
                .store
                .claim_cart_reminder(due.id, idle_before, now)
                .await?
        {
            continue; // touched, ordered or claimed since it was read
        }
        let Some(cart) = engine
            .store
            .open_cart(id, &due.user_key)
            .await?
            .filter(|c| c.id == due.id && !c.lines.is_empty())
        else {
            continue;
        };
        let reminder = sweep::cart_reminder(&cart, s);
        if tell(
            actor,
            &due.user_key,
            sweep::reminder_request(cart.id),
            reminder,
        )
        .await
            && engine.store.cart_reminded(cart.id, now).await?
        {
            tracing::info!(cart = cart.id, user = %mask(due.user_key.as_str()), "An abandoned cart's customer was reminded.");
        }
    }
    Ok(())
}

/// Subscriptions: the renewal notice of each period, then the end of each period that ended.
async fn tell_subscriptions(
    engine: &Engine,
    actor: &Account,
    account: &AccountSettings,
    s: &CommerceSettings,
    now: i64,
) -> Result<(), StoreError> {
    let id: &AccountId = &account.phone_number_id;
    // Checked at start; the default should a running zone somehow not parse.
    let zone = Zone::parse(&account.timezone).unwrap_or(Zone::Fixed(
        chrono::FixedOffset::east_opt(0).expect("zero offset"),
    ));
    let until = sweep::renewal_due_until(now, s);
    for n in engine
        .store
        .subscriptions_to_remind(id, now, until, BATCH)
        .await?
        .into_iter()
        .filter(|n| sweep::renewal_due(n.period_end, n.told_until, now, s))
    {
        let notice = sweep::renewal_notice(&n.plan, n.period_end, &zone, s);
        if tell(
            actor,
            &n.user_key,
            sweep::renewal_request(n.id, n.period_end),
            notice,
        )
        .await
        {
            engine
                .store
                .subscription_renewal_told(n.id, n.period_end)
                .await?;
        }
    }
    for n in engine
        .store
        .subscriptions_ended_untold(id, BATCH)
        .await?
        .into_iter()
        .filter(|n| sweep::end_untold(n.period_end, n.told_until))
    {
        let notice = sweep::ended_notice(&n.plan, n.period_end, &zone);
        if tell(
            actor,
            &n.user_key,
            sweep::ended_request(n.id, n.period_end),
            notice,
        )
        .await
        {
            engine
                .store
                .subscription_end_told(n.id, n.period_end)
                .await?;
        }
    }
    Ok(())
}
