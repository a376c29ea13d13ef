//! Reading flow files from `flows.dir`.

use std::path::Path;

use super::FlowSet;
pub use crate::definitions::read_flow_files;

/// Read and validate the whole folder.
pub fn load_dir(dir: &Path) -> Result<FlowSet, Vec<String>> {
    FlowSet::load(&read_flow_files(dir)?)
}
