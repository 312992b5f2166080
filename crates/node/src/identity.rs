//! The node's persistent identity: a `node_id` generated once and kept in the state
//! directory, so the Core recognises the same node across restarts.

use std::path::{Path, PathBuf};

use rand::Rng;
use thiserror::Error;

/// Node ids stay below 2^53 so that JavaScript clients (the dashboard) read them exactly.
const NODE_ID_LIMIT: u64 = 1 << 53;
const NODE_ID_FILE: &str = "node_id";

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("creating state directory {path}: {source}")]
    CreateDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading node id file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node id file {path} holds {content:?}, not a non-zero integer; fix or remove it (removing it makes this a new node)")]
    Corrupt { path: PathBuf, content: String },
    #[error("writing node id file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the node id from `state_dir`, creating it on first start.
pub fn load_or_create_node_id(state_dir: &Path) -> Result<u64, IdentityError> {
    std::fs::create_dir_all(state_dir).map_err(|source| IdentityError::CreateDirectory {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = state_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(content) => match content.trim().parse::<u64>() {
            Ok(node_id) if node_id != 0 => Ok(node_id),
            _ => Err(IdentityError::Corrupt {
                path,
                content: content.trim().to_owned(),
            }),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let node_id = rand::thread_rng().gen_range(1..NODE_ID_LIMIT);
            // Private (0600), and a crash never leaves a half-written id.
            crate::data_dir::write_private_file(&path, format!("{node_id}\n").as_bytes())
                .map_err(|source| IdentityError::Write { path, source })?;
            Ok(node_id)
        }
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_node_id(&dir.path().join("state")).unwrap();
        assert!(first > 0 && first < NODE_ID_LIMIT);
        let second = load_or_create_node_id(&dir.path().join("state")).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn a_corrupt_id_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NODE_ID_FILE), "banana").unwrap();
        let error = load_or_create_node_id(dir.path()).unwrap_err().to_string();
        assert!(error.contains("banana"), "{error}");
    }
}
