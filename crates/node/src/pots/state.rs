//! The installed pots and their desired state, persisted in the node's state directory so
//! that a restarted node brings them back as they were.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::PotDefinition;

/// One installed pot, as written to `pots.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct InstalledPot {
    pub pot_id: String,
    pub pot_type: String,
    pub version: String,
    /// `potstore` or the git URL it came from.
    pub source: String,
    /// The definition as it was at install time: later potstore edits do not change a pot.
    pub definition: PotDefinition,
    /// Every placeholder value (config and the node's own).
    pub values: BTreeMap<String, String>,
    /// The text of each template source (by `source`) as installed: templates are rendered
    /// again from here, never from the pot's directory (where the pot could put a link to
    /// a root-only file). Empty for pots installed by earlier versions.
    #[serde(default)]
    pub template_sources: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    pub instance_dir: PathBuf,
    /// Whether the operator wants it running (survives node restarts).
    pub desired_running: bool,
    pub installed_at: String,
}

pub(crate) fn load(path: &Path) -> Result<Vec<InstalledPot>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|error| format!("reading installed pots from {}: {error}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(format!("reading {}: {error}", path.display())),
    }
}

/// Writes through a temporary file and a rename: a crash never leaves half a file. Mode
/// 0600: the file holds every pot's config values and sources.
pub(crate) fn save(path: &Path, pots: &[InstalledPot]) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(pots).map_err(std::io::Error::other)?;
    crate::data_dir::write_private_file(path, &text)
}
