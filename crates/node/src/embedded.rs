//! Files built into the node binary (the potstore and the Python kit, see build.rs) and
//! writing them out to the node's state directory.

use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/embedded_files.rs"));

/// Replaces `target` with a fresh copy of `files`.
pub(crate) fn materialize(files: &[(&str, &[u8])], target: &Path) -> std::io::Result<()> {
    if target.exists() {
        std::fs::remove_dir_all(target)?;
    }
    std::fs::create_dir_all(target)?;
    for (relative, content) in files {
        let path = target.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_potstore_and_kit_are_complete() {
        let names: Vec<&str> = BUILTIN_POTSTORE.iter().map(|(name, _)| *name).collect();
        for expected in [
            "manifest.toml",
            "tcp-banner/tcp_banner.py",
            "cowrie/cowrie.cfg",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let kit: Vec<&str> = PYTHON_KIT.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            kit,
            [
                "honeybee.py",
                "pyproject.toml",
                "README.md",
                "cowrie_output.py"
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        materialize(PYTHON_KIT, dir.path()).unwrap();
        materialize(PYTHON_KIT, dir.path()).unwrap();
        assert!(dir.path().join("honeybee.py").is_file());
    }
}
