//! Pure flow engine: YAML conversation flows, validated at load time, executed step by step.
//! No I/O, no clock, no async. See [`model`] for the file format.

pub mod exec;
pub mod expr;
pub mod graph;
mod loader;
pub mod model;
pub mod sandbox;
pub mod simulate;
pub mod template;
pub mod transcript;
pub mod validate;

pub use exec::{step, FlowAction, FlowContext, FlowError, FlowInput, FlowState};
pub use loader::{load_dir, read_flow_files};
pub use model::{flow_schema, parse_duration, Flow, Value};
pub use transcript::{run_transcript, run_transcript_with_shop, TranscriptShop};
pub use validate::{FlowSet, PaymentRef};

/// Nodes one input may run through before the runaway guard stops the flow.
pub const MAX_STEPS: usize = 100;
