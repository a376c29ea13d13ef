//! Parley's test kit, a dev-dependency of the daemon's crate and of `parley-bench`; the daemon
//! itself links none of it.
//!
//! - [`graph`] (re-exported at the root): [`FakeGraph`], a local stand-in for Meta's Graph API
//!   (there is no internet here), and the webhook builders the tests and the load driver post.
//! - [`gateways`]: [`gateways::FakeGateway`], local stand-ins for the payment gateways
//!   (Finpay, Xendit, Midtrans, Stripe) speaking their real shapes and signing callbacks.
//! - [`fuzz`]: the fuzz targets' harnesses, run by `fuzz/` under cargo-fuzz and replayed over
//!   the stored corpus by `tests/fuzz_corpus.rs` on stable.
//!
//! Fault injection inside the store (a commit that lands but is reported failed) cannot live
//! here: it must sit where the writer commits. It is `parley::store::writer::faults`, which
//! exists only with parley's `faults` feature; this crate turns it on, so every build that
//! links the kit (the tests, `parley-bench`) has it, and a build of the daemon alone does not.

pub mod fuzz;
pub mod gateways;
pub mod graph;

pub use graph::*;
