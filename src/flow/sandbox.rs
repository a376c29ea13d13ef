//! A flow conversation with a virtual clock and no I/O: what the simulator and the transcript
//! tests drive. It runs the same pure [`step`] as the daemon and keeps what the daemon keeps
//! around it (timers, the contact, the pending HTTP call, the handoff). Its shop calls are
//! answered by a [`Shop`] (a scratch store behind a runtime), which also plays a gateway's
//! news on the payment a flow waits for.

use super::exec::{start, step, FlowAction, FlowContext, FlowError, FlowInput, FlowState};
use super::validate::FlowSet;
use crate::conversation::ContactInfo;
use crate::outcall::HttpOutcome;

/// What answers a sandbox's shop calls, synchronously: the real logic against a scratch store
/// ([`crate::commerce::scratch::ScratchShop`]) driven by a runtime of the caller's.
pub trait Shop {
    /// The answer to `call` made at `now`.
    fn answer(&mut self, call: &crate::commerce::Call, now: i64) -> crate::commerce::Answer;
    /// The gateway reports payment `id` as `report` (having received `paid`): where the
    /// payment moved (None: no such payment).
    fn settle(
        &mut self,
        id: i64,
        report: crate::payments::GatewayStatus,
        paid: Option<&crate::domain::Money>,
        now: i64,
    ) -> Result<Option<crate::domain::PaymentStatus>, String>;
    /// What paid payment `id`'s plans give, a line each
    /// ([`crate::commerce::payment::access_line`]).
    fn access(&mut self, _id: i64) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

pub struct Sandbox<'f> {
    pub flows: &'f FlowSet,
    pub state: FlowState,
    pub now: i64,
    pub contact: ContactInfo,
    pub contact_key: String,
    pub max_steps: usize,
    /// (due, name), unordered.
    pub timers: Vec<(i64, String)>,
    /// The ad id the next message comes from (taken by that message).
    pub referral: Option<String>,
    /// A flow handed the conversation to a human and it was not released yet.
    pub handed_off: bool,
    /// A flow's chatbot node has the conversation (no model here: `bot_done` ends it).
    pub bot: Option<String>,
    /// User messages so far: the n-th has the id `wamid.n`.
    pub messages: u64,
}

impl<'f> Sandbox<'f> {
    pub fn new(flows: &'f FlowSet, contact_key: &str, now: i64) -> Sandbox<'f> {
        Sandbox {
            flows,
            state: FlowState::default(),
            now,
            contact: ContactInfo {
                wa_id: Some(contact_key.into()),
                ..ContactInfo::default()
            },
            contact_key: contact_key.to_string(),
            max_steps: super::MAX_STEPS,
            timers: Vec::new(),
            referral: None,
            handed_off: false,
            bot: None,
            messages: 0,
        }
    }

    fn settle(
        &mut self,
        outcome: Result<(FlowState, Vec<FlowAction>), FlowError>,
    ) -> Result<Vec<FlowAction>, FlowError> {
        match outcome {
            Ok((state, actions)) => {
                self.state = state;
                for a in &actions {
                    match a {
                        FlowAction::StartTimer { name, after_ms } => {
                            self.timers.push((self.now + after_ms, name.clone()))
                        }
                        FlowAction::Contact(c) => self.contact = c.clone(),
                        FlowAction::Handoff { .. } => self.handed_off = true,
                        FlowAction::StartBot { bot, .. } => self.bot = Some(bot.clone()),
                        FlowAction::Send(_)
                        | FlowAction::Http(_)
                        | FlowAction::Commerce(_)
                        | FlowAction::Ended { .. }
                        | FlowAction::OutsideWindow(_) => {}
                    }
                }
                Ok(actions)
            }
            Err(e) => {
                // As in the daemon: a broken flow ends, the conversation goes on.
                self.state = FlowState::default();
                Err(e)
            }
        }
    }

    /// Start `flow_id` at its start node.
    pub fn start(&mut self, flow_id: &str) -> Result<Vec<FlowAction>, FlowError> {
        self.timers.clear();
        let contact = self.contact.clone();
        let ctx = FlowContext {
            now_ms: self.now,
            contact: Some(&contact),
            contact_key: Some(&self.contact_key),
            referral: None,
            message_id: None,
            max_steps: self.max_steps,
        };
        let outcome = start(self.flows, flow_id, &ctx);
        self.settle(outcome)
    }

    /// Feed one input. While handed off, user messages reach nobody (the human has them).
    pub fn input(&mut self, input: FlowInput<'_>) -> Result<Vec<FlowAction>, FlowError> {
        if (self.handed_off || self.bot.is_some())
            && matches!(
                input,
                FlowInput::Message { .. } | FlowInput::Media { .. } | FlowInput::Order { .. }
            )
        {
            return Ok(Vec::new());
        }
        let (referral, message_id) = match input {
            FlowInput::Message { .. } | FlowInput::Media { .. } | FlowInput::Order { .. } => {
                self.messages += 1;
                (
                    self.referral.take(),
                    Some(format!("wamid.{}", self.messages)),
                )
            }
            _ => (None, None),
        };
        let contact = self.contact.clone();
        let ctx = FlowContext {
            now_ms: self.now,
            contact: Some(&contact),
            contact_key: Some(&self.contact_key),
            referral: referral.as_deref(),
            message_id: message_id.as_deref(),
            max_steps: self.max_steps,
        };
        let outcome = step(self.flows, self.state.clone(), input, &ctx);
        self.settle(outcome)
    }

    /// Move the clock; timers that come due fire in due order.
    pub fn advance(&mut self, ms: i64) -> Vec<Result<Vec<FlowAction>, FlowError>> {
        self.now += ms;
        let mut out = Vec::new();
        loop {
            self.timers.sort();
            if self.timers.first().is_none_or(|(due, _)| *due > self.now) {
                return out;
            }
            let (_, name) = self.timers.remove(0);
            out.push(self.input(FlowInput::Timer { name: &name }));
        }
    }

    /// Answer the HTTP call the flow waits for (None if it waits for none).
    pub fn answer_http(
        &mut self,
        status: u16,
        body: &str,
    ) -> Option<Result<Vec<FlowAction>, FlowError>> {
        let id = self.state.http.as_ref()?.id.clone();
        let outcome = HttpOutcome {
            id,
            status,
            body: body.to_string(),
            error: (status == 0).then(|| "no response".to_string()),
        };
        Some(self.input(FlowInput::Http(&outcome)))
    }

    /// Answer the shop call the flow waits for (None if it waits for none).
    pub fn answer_shop(
        &mut self,
        answer: crate::commerce::Answer,
    ) -> Option<Result<Vec<FlowAction>, FlowError>> {
        let id = self.state.commerce.as_ref()?.id.clone();
        let result = crate::commerce::CommerceResult { id, answer };
        Some(self.input(FlowInput::Commerce(&result)))
    }

    /// Answer the shop calls the flow makes with `shop`, one after the other (a flow makes one
    /// at a time; each answer may lead to the next call); what each answer led to.
    pub fn run_shop(&mut self, shop: &mut dyn Shop) -> Vec<Result<Vec<FlowAction>, FlowError>> {
        let mut out = Vec::new();
        // The bound keeps a broken shop from looping.
        for _ in 0..100 {
            let Some(call) = self.state.commerce.clone() else {
                break;
            };
            let answer = shop.answer(&call, self.now);
            match self.answer_shop(answer) {
                Some(result) => out.push(result),
                None => break,
            }
        }
        out
    }

    /// The gateway reports the payment the flow waits on as `report` (having received
    /// `paid`): `shop` moves it, and the flow hears where it went. None if the flow waits on
    /// no payment.
    pub fn report_payment(
        &mut self,
        shop: &mut dyn Shop,
        report: crate::payments::GatewayStatus,
        paid: Option<&crate::domain::Money>,
    ) -> Option<Result<Result<Vec<FlowAction>, FlowError>, String>> {
        let id = self.state.payment?;
        let status = match shop.settle(id, report, paid, self.now) {
            Ok(Some(status)) => status,
            Ok(None) => return Some(Err(format!("the shop has no payment {id}"))),
            Err(e) => return Some(Err(e)),
        };
        let lines = match shop.access(id) {
            Ok(lines) => lines,
            Err(e) => return Some(Err(e)),
        };
        // As the daemon tells a waiting flow's customer: the access first, then the flow.
        let access = crate::commerce::payment::access_text(status, &lines).map(|body| {
            FlowAction::Send(crate::whatsapp::send::OutboundMessage::Text {
                body,
                preview_url: false,
            })
        });
        let moved = self.settle_payment(status)?;
        Some(Ok(
            moved.map(|actions| access.into_iter().chain(actions).collect())
        ))
    }

    /// The payment the flow waits on moves to `status` (None if it waits on none).
    pub fn settle_payment(
        &mut self,
        status: crate::domain::PaymentStatus,
    ) -> Option<Result<Vec<FlowAction>, FlowError>> {
        let id = self.state.payment?;
        Some(self.input(FlowInput::Payment {
            id,
            status,
            news: None,
            access: None,
        }))
    }

    /// The chatbot session of a chatbot node ends.
    pub fn bot_done(&mut self) -> Result<Vec<FlowAction>, FlowError> {
        self.bot = None;
        self.input(FlowInput::BotDone)
    }

    /// A human gives the conversation back.
    pub fn release(&mut self) -> Result<Vec<FlowAction>, FlowError> {
        self.handed_off = false;
        self.bot = None;
        self.input(FlowInput::Released)
    }
}
