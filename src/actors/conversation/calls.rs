//! The work a conversation starts after a step committed, off the actor: model calls, HTTP
//! calls, shop calls, media fetches; each outcome comes back to the actor as a message.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{ConversationActorState, ConversationMsg};
use crate::actors::Engine;
use crate::conversation::Effect;
use crate::metrics::metrics;
use crate::telemetry::mask;

impl ConversationActorState {
    /// Make the model calls among `effects` off the actor; each answer comes back as a
    /// message.
    pub(super) fn call_models(&self, effects: &[Effect], arrived: Option<Instant>) {
        for effect in effects {
            if let Effect::BotCall(call) = effect {
                let before = arrived.map(|at| at.elapsed());
                if let Some(before) = before {
                    metrics()
                        .bot_before_call_us
                        .observe(before.as_micros() as u64);
                }
                let (providers, call, me) = (
                    self.args.engine.bots.clone(),
                    call.clone(),
                    self.myself.clone(),
                );
                self.args.calls.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let answer = providers.call(&call).await;
                    crate::metrics::metrics().bot_answer(
                        &call.bot,
                        answer.error.is_some(),
                        answer.latency_ms,
                    );
                    if let Some(me) = me {
                        let _ = me.cast(ConversationMsg::BotDone(answer, Instant::now(), before));
                    }
                });
            }
        }
    }

    /// Make the HTTP calls and media fetches among `effects` off the actor (after the step
    /// that asked for them committed); each outcome comes back as a message.
    pub(super) fn run_calls(&self, effects: &[Effect]) {
        for effect in effects {
            if let Effect::BotRecord(r) = effect {
                if r.started {
                    crate::metrics::metrics().bot_session(&r.bot, "started");
                }
                if r.status != crate::chatbot::session::BotStatus::Active {
                    crate::metrics::metrics().bot_session(&r.bot, r.status.as_str());
                }
            }
            if let Effect::FetchMedia(fetch) = effect {
                let (engine, account, user, fetch, me) = (
                    self.args.engine.clone(),
                    self.args.account.clone(),
                    self.args.user_key.clone(),
                    fetch.clone(),
                    self.myself.clone(),
                );
                self.args.calls.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let settings = engine.settings_arc();
                    let token = crate::outbox::token_for(&settings, &account.phone_number_id);
                    let result = match fetch.id() {
                        Ok(id) => {
                            engine
                                .media
                                .fetch(&account.phone_number_id, token, &id, &fetch)
                                .await
                        }
                        // Never put into a Graph URL: kept for a human, and the
                        // conversation hears the fetch failed.
                        Err(e) => {
                            let (result, letter) =
                                fetch.refused(&account.phone_number_id, &user, &e);
                            if let Err(e) = engine.writer.dead_letter(letter, None).await {
                                tracing::warn!(error = %e, "Recording an invalid media id failed.");
                            }
                            result
                        }
                    };
                    if let Some(e) = &result.error {
                        tracing::warn!(user = %mask(&user), media = %fetch.media_id, error = %e, "Media not stored.");
                    }
                    if let Err(e) = engine
                        .store
                        .record_media(&result.row(&account.phone_number_id, &user))
                        .await
                    {
                        tracing::warn!(error = %e, "Recording a media file failed.");
                    }
                    if let Some(me) = me {
                        let _ = me.cast(ConversationMsg::MediaDone(result));
                    }
                });
            }
            if let Effect::Commerce(call) = effect {
                let (engine, call, me) =
                    (self.args.engine.clone(), call.clone(), self.myself.clone());
                let (account, user) = (self.key.account.clone(), self.args.user_key.clone());
                let wa_id = self.conv.contact.wa_id.clone();
                let currency = self.args.account.currency;
                let provider = self.args.account.payments.clone();
                self.args.calls.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let who = crate::commerce::Caller {
                        account: &account,
                        user: &user,
                        wa_id: wa_id.as_deref(),
                        currency,
                        provider: provider.as_deref(),
                    };
                    let shop = crate::commerce::Shop {
                        store: &engine.store,
                        gateways: &engine.payments,
                    };
                    let now = engine.clock.now_ms();
                    let mut answer = crate::commerce::run(shop, who, &call, now).await;
                    qris_image_link(&engine, &mut answer);
                    if let Some(me) = me {
                        let _ = me.cast(ConversationMsg::CommerceDone(
                            crate::commerce::CommerceResult {
                                id: call.id,
                                answer,
                            },
                        ));
                    }
                });
            }
            if let Effect::Http(call) = effect {
                let (caller, call, me) = (
                    self.args.engine.outcall.load_full(),
                    call.clone(),
                    self.myself.clone(),
                );
                self.args.calls.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let outcome = caller.call(&call).await;
                    crate::metrics::metrics().flow_http_calls(outcome.status);
                    if let Some(me) = me {
                        let _ = me.cast(ConversationMsg::HttpDone(outcome));
                    }
                });
            }
        }
    }
}

/// A QRIS the gateway gave as a string only is sent as an image Meta fetches from us
/// (`GET /payments/qr/{id}-{token}.png`, drawn from the stored string), when
/// `payments.callback_base_url` says where Parley is reachable; else the string is sent as
/// text.
fn qris_image_link(engine: &Engine, answer: &mut crate::commerce::Answer) {
    use crate::commerce::{Answer, PaymentAnswer};
    use crate::payments::Instructions;
    use secrecy::ExposeSecret;
    if let Answer::Payment(PaymentAnswer::Opened {
        payment_id,
        instructions:
            Instructions::Qris {
                qr_string: Some(_),
                image_url: image_url @ None,
            },
        ..
    }) = answer
    {
        let settings = engine.settings();
        if let Some(base) = &settings.payments.callback_base_url {
            let secret = settings.whatsapp.app_secret.expose_secret().as_bytes();
            *image_url = Some(crate::payments::qr_link(base, secret, *payment_id));
        }
    }
}
