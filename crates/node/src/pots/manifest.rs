//! The potstore manifest: which pot types exist and how to install, start and check them.
//! Format and placeholders: docs/potstore.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The manifest's file name, at the root of a potstore directory or git repository.
pub(crate) const MANIFEST_FILE: &str = "manifest.toml";

/// Placeholders the node always provides, whatever the pot's config.
pub(crate) const BUILTIN_PLACEHOLDERS: [&str; 7] = [
    "instance",
    "files",
    "kit",
    "python",
    "pot_id",
    "pot_type",
    "event_port",
];

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("parsing potstore manifest {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown pot type {id:?}; the potstore has: {available}")]
    UnknownType { id: String, available: String },
    #[error("pot type {pot:?} in the manifest is invalid: {reason}")]
    Invalid { pot: String, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    pub pots: Vec<PotDefinition>,
}

/// One pot type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PotDefinition {
    pub id: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Executables that must exist before installing (placeholders allowed).
    #[serde(default)]
    pub requirements: Vec<String>,
    /// Directory next to the manifest copied into the instance as `{files}`.
    #[serde(default)]
    pub files: Option<String>,
    /// Comma-separated ports the pot listens on: checked for clashes before a start and
    /// for accepting connections after it.
    #[serde(default)]
    pub ports: String,
    /// Directories created inside the instance directory.
    #[serde(default)]
    pub directories: Vec<String>,
    /// Commands (argv lists) run in order in the instance directory to install the pot.
    #[serde(default)]
    pub install: Vec<Vec<String>>,
    /// The command that runs the pot in the foreground.
    pub start: Vec<String>,
    /// Working directory of `start`, relative to the instance directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Seconds the ports have to accept connections after a start.
    #[serde(default = "default_health_timeout")]
    pub health_timeout: f64,
    /// Default config values (`{name}` placeholders), overridden by `InstallPot.config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Environment of the pot's commands, on top of the `HONEYBEE_*` variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Files of `files` rendered with placeholders into the instance directory.
    #[serde(default)]
    pub templates: Vec<Template>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Template {
    /// Relative to the pot's `files` directory.
    pub source: String,
    /// Relative to the instance directory.
    pub target: String,
}

fn default_health_timeout() -> f64 {
    30.0
}

impl Manifest {
    /// Reads `manifest.toml` from a potstore directory (tests; the node reads it through
    /// a directory handle, see `install.rs`).
    #[cfg(test)]
    pub fn load(directory: &Path) -> Result<Self, ManifestError> {
        let path = directory.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).expect("test manifest is readable");
        Self::parse(&text, &path)
    }

    /// Parses and validates manifest text read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|error| ManifestError::Parse {
            path: path.to_path_buf(),
            message: error.to_string().trim().to_owned(),
        })?;
        for pot in &manifest.pots {
            pot.validate()?;
        }
        Ok(manifest)
    }

    pub fn find(&self, id: &str) -> Result<&PotDefinition, ManifestError> {
        self.pots
            .iter()
            .find(|pot| pot.id == id)
            .ok_or_else(|| ManifestError::UnknownType {
                id: id.to_owned(),
                available: self
                    .pots
                    .iter()
                    .map(|pot| pot.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl PotDefinition {
    fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |reason: String| ManifestError::Invalid {
            pot: self.id.clone(),
            reason,
        };
        if !valid_id(&self.id) {
            return Err(invalid(
                "id must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
                    .into(),
            ));
        }
        if self
            .start
            .first()
            .is_none_or(|program| program.trim().is_empty())
        {
            return Err(invalid("start must name a command".into()));
        }
        for (number, step) in self.install.iter().enumerate() {
            if step.first().is_none_or(|program| program.trim().is_empty()) {
                return Err(invalid(format!(
                    "install step {} must name a command (found {step:?})",
                    number + 1
                )));
            }
        }
        if let Some(requirement) = self.requirements.iter().find(|r| r.trim().is_empty()) {
            return Err(invalid(format!(
                "requirements must name executables (found {requirement:?})"
            )));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return Err(invalid(format!(
                    "env {key:?} must be a name without '=' or NUL, with a value without NUL"
                )));
            }
        }
        for key in self.config.keys() {
            if !is_placeholder_name(key) {
                return Err(invalid(format!(
                    "config key {key:?} must be letters, digits and '_' (it is used as a {{placeholder}})"
                )));
            }
        }
        if !(self.health_timeout.is_finite()
            && self.health_timeout > 0.0
            && self.health_timeout <= 3600.0)
        {
            return Err(invalid(format!(
                "health_timeout {} must be between 0 and 3600 seconds",
                self.health_timeout
            )));
        }
        let known: BTreeSet<&str> = BUILTIN_PLACEHOLDERS
            .iter()
            .copied()
            .chain(self.config.keys().map(String::as_str))
            .collect();
        let mut texts: Vec<&String> = self
            .start
            .iter()
            .chain(self.install.iter().flatten())
            .collect();
        texts.extend(self.env.values());
        texts.extend(self.requirements.iter());
        texts.push(&self.ports);
        for text in texts {
            for name in placeholders(text) {
                if !known.contains(name) {
                    return Err(invalid(format!(
                        "placeholder {{{name}}} in {text:?} is neither a config key nor one of {}",
                        BUILTIN_PLACEHOLDERS.join(", ")
                    )));
                }
            }
        }
        for relative in self
            .directories
            .iter()
            .chain(self.templates.iter().map(|t| &t.target))
            .chain(self.templates.iter().map(|t| &t.source))
            .chain(self.working_dir.iter())
            .chain(self.files.iter())
        {
            if !safe_relative(relative) {
                return Err(invalid(format!(
                    "path {relative:?} must stay inside the instance directory"
                )));
            }
        }
        Ok(())
    }
}

/// Pot ids and type ids: safe as directory names and in logs (never hidden or `..`).
pub(crate) fn valid_id(id: &str) -> bool {
    id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A relative path without `..` or a root.
pub(crate) fn safe_relative(path: &str) -> bool {
    let path = Path::new(path);
    path.components()
        .all(|component| matches!(component, std::path::Component::Normal(_)))
}

/// The `{name}` placeholders of a text (names are letters, digits and `_`).
fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.split('{').skip(1).filter_map(|rest| {
        let name = rest.split('}').next()?;
        (rest.contains('}') && is_placeholder_name(name)).then_some(name)
    })
}

fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replaces every `{name}` by its value; an unknown name is an error naming it. Braces that
/// do not enclose a placeholder name are kept as they are.
pub(crate) fn render(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        output.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_placeholder_name(&after[..close]) => {
                let name = &after[..close];
                let value = values
                    .get(name)
                    .ok_or_else(|| format!("unknown placeholder {{{name}}}"))?;
                output.push_str(value);
                rest = &after[close + 1..];
            }
            _ => {
                output.push('{');
                rest = after;
            }
        }
    }
    output.push_str(rest);
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn placeholders_are_rendered_and_unknown_ones_named() {
        let values = values(&[("port", "2222"), ("pot_id", "p1")]);
        assert_eq!(
            render("tcp:{port}:{pot_id}", &values).unwrap(),
            "tcp:2222:p1"
        );
        assert_eq!(
            render("dict = {'a': 1} {}", &values).unwrap(),
            "dict = {'a': 1} {}"
        );
        assert_eq!(
            render("{missing}", &values).unwrap_err(),
            "unknown placeholder {missing}"
        );
    }

    #[test]
    fn the_shipped_potstore_is_valid() {
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../potstore");
        let manifest = Manifest::load(&directory).unwrap();
        for id in ["tcp-banner", "cowrie"] {
            let pot = manifest.find(id).unwrap();
            assert!(directory.join(pot.files.as_ref().unwrap()).is_dir(), "{id}");
        }
        let error = manifest.find("nope").unwrap_err().to_string();
        assert!(
            error.contains("tcp-banner") && error.contains("nope"),
            "{error}"
        );
    }

    #[test]
    fn bad_definitions_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(dir.path().join(MANIFEST_FILE), text).unwrap();
        write("[[pots]]\nid = \"x\"\nversion = \"1\"\nstart = [\"run\", \"{nope}\"]\n");
        let error = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("{nope}"), "{error}");
        write("[[pots]]\nid = \"x\"\nversion = \"1\"\nstart = [\"run\"]\ndirectories = [\"../escape\"]\n");
        let error = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("../escape"), "{error}");
        write("[[pots]]\nid = \"x\"\nstart = [\"run\"]\n");
        let error = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("version"), "{error}");
        assert!(!valid_id("../x") && !valid_id(".sources") && valid_id("cowrie-01"));
        write("[[pots]]\nid = \"x\"\nversion = \"1\"\nstart = [\"run\"]\n[[pots.templates]]\nsource = \"../../etc/shadow\"\ntarget = \"t\"\n");
        let error = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("../../etc/shadow"), "{error}");
        write("[[pots]]\nid = \"x\"\nversion = \"1\"\nstart = [\"run\"]\nhealth_timeout = 1e30\n");
        let error = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("health_timeout"), "{error}");
        // Steps that name no command (a git pot's `install = [[]]` used to panic the
        // handler), and names that cannot be what they are used as.
        for (bad, named) in [
            ("install = [[]]", "install step 1"),
            ("install = [[\"ok\"], [\" \", \"x\"]]", "install step 2"),
            ("requirements = [\"\"]", "requirements"),
            ("env = { \"A=B\" = \"1\" }", "A=B"),
            ("config = { \"bad key\" = \"1\" }", "bad key"),
        ] {
            write(&format!(
                "[[pots]]\nid = \"x\"\nversion = \"1\"\nstart = [\"run\"]\n{bad}\n"
            ));
            let error = Manifest::load(dir.path()).unwrap_err().to_string();
            assert!(error.contains(named), "{bad}: {error}");
        }
        write("[[pots]]\nid = \"x\"\nversion = \"1\"\nstart = [\"\"]\n");
        let error = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("start must name a command"), "{error}");
    }
}
