//! `inspect` for sparkey files. (Being built.)

use std::path::Path;

pub fn inspect(path: &Path, _args: &super::InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "{}: inspecting sparkey files is not implemented yet",
        path.display()
    )
}
