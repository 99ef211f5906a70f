//! `inspect` for sequencefile files. (Being built.)

use std::path::Path;

pub fn inspect(path: &Path, _args: &super::InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "{}: inspecting sequencefile files is not implemented yet",
        path.display()
    )
}
