//! Parley's test kit, a dev-dependency of the daemon's crate and of `parley-bench`; the daemon
//! itself links none of it.
//!
//! - [`graph`] (re-exported at the root): [`FakeGraph`], a local stand-in for Meta's Graph API
//!   (there is no internet here), and the webhook builders the tests and the load driver post.
//! - [`fuzz`]: the fuzz targets' harnesses, run by `fuzz/` under cargo-fuzz and replayed over
//!   the stored corpus by `tests/fuzz_corpus.rs` on stable.
//!
//! Fault injection inside the store (a commit that fails, a process that dies between two
//! steps) cannot live here: it must sit where the writer commits. It is `parley::store`'s
//! `faults` module, unarmed (one relaxed load per commit) unless a test arms it.

pub mod fuzz;
pub mod graph;

pub use graph::*;
