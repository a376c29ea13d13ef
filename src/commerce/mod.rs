//! Selling in the conversation: the catalog a flow shows, the cart, the checkout that turns it
//! into an order with its stock reserved, the customer's orders.
//!
//! Shaped like the HTTP call of a flow: the flow (pure) asks for a [`Call`], committed with its
//! step; the conversation's actor makes it after the commit ([`run`]: one store transaction,
//! recorded under the call's id so that a call made again after a crash answers as the first
//! did, with no second effect); the [`Answer`] comes back as an event and the flow branches on
//! it. `calls.rs` the calls and answers as data; `text.rs` what the customer reads of a cart
//! or an order (pure); `sweep.rs` the abandoned-cart and subscription reminders, decided (pure);
//! `voucher.rs` vouchers (pure); `materials.rs` materials and their low-stock alerts (pure);
//! `refund.rs` refunds (pure); `run.rs` a call carried out against the store; `scratch.rs` a
//! throwaway store those calls run against (the simulator's, the transcript tests').

mod calls;
pub mod materials;
pub mod payment;
pub mod refund;
mod run;
pub mod scratch;
pub mod sweep;
pub mod text;
pub mod voucher;

pub use calls::{Answer, Call, CatalogItem, CommerceResult, Op, PaymentAnswer};
pub use run::{run, Caller, Shop};
