//! The node's data directory is closed to everyone else: its `node_id`, `totp.key`, spool,
//! `pots.json` and the pots' logs are 0600 (directories 0700). Only the data directory
//! itself and the pots' base directory below it are 0711 (pass through, no listing), so
//! each pot user reaches its own directory (0700, its own) and nothing else.
//!
//! Files created by earlier versions (0644 by the umask) are tightened at every start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Pass through, no listing: for the directories pot users must cross.
pub(crate) const TRAVERSE_ONLY: u32 = 0o711;
const PRIVATE_DIRECTORY: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Every file and directory the node creates from now on is private to it (children such
/// as pot processes set their own modes on their own files).
pub(crate) fn private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Tightens `data_dir` (0711) and everything below it: directories 0700, files 0600. The
/// pots' base directory, when it lies below, becomes 0711 and is not descended into (each
/// pot's directory belongs to its pot user). Symbolic links are never followed. Returns how
/// many entries changed.
pub(crate) fn tighten(data_dir: &Path, pots_base_dir: &Path) -> std::io::Result<u64> {
    let mut changed = set_mode(data_dir, TRAVERSE_ONLY)?;
    changed += tighten_below(data_dir, pots_base_dir)?;
    Ok(changed)
}

fn tighten_below(directory: &Path, pots_base_dir: &Path) -> std::io::Result<u64> {
    let mut changed = 0;
    for entry in std::fs::read_dir(directory)? {
        let path = entry?.path();
        let kind = std::fs::symlink_metadata(&path)?.file_type();
        if kind.is_symlink() {
            continue;
        }
        if kind.is_dir() {
            if path == pots_base_dir {
                changed += set_mode(&path, TRAVERSE_ONLY)?;
                continue;
            }
            changed += set_mode(&path, PRIVATE_DIRECTORY)?;
            changed += tighten_below(&path, pots_base_dir)?;
        } else if kind.is_file() {
            changed += set_mode(&path, PRIVATE_FILE)?;
        }
    }
    Ok(changed)
}

/// Sets the permission bits when they differ; 1 when it changed something.
fn set_mode(path: &Path, mode: u32) -> std::io::Result<u64> {
    let current = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    if current == mode {
        return Ok(0);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn an_old_open_data_directory_is_closed_but_pot_directories_are_left_to_their_users() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let open = |path: &Path, bits: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits)).unwrap()
        };
        std::fs::create_dir_all(data.join("spool")).unwrap();
        std::fs::create_dir_all(data.join("pots/pot-1")).unwrap();
        std::fs::write(data.join("node_id"), "1\n").unwrap();
        std::fs::write(data.join("spool/0001.seg"), "x").unwrap();
        std::fs::write(data.join("pots.json"), "[]").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();
        for (path, bits) in [
            (data.clone(), 0o755),
            (data.join("spool"), 0o755),
            (data.join("pots"), 0o755),
            (data.join("pots/pot-1"), 0o700),
            (data.join("node_id"), 0o644),
            (data.join("spool/0001.seg"), 0o644),
            (data.join("pots.json"), 0o644),
            (outside.clone(), 0o644),
        ] {
            open(&path, bits);
        }
        let changed = tighten(&data, &data.join("pots")).unwrap();
        assert_eq!(changed, 6);
        assert_eq!(mode(&data), 0o711);
        assert_eq!(mode(&data.join("pots")), 0o711);
        assert_eq!(mode(&data.join("pots/pot-1")), 0o700);
        assert_eq!(mode(&data.join("spool")), 0o700);
        for file in ["node_id", "spool/0001.seg", "pots.json"] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&outside), 0o644, "links are not followed");
        assert_eq!(tighten(&data, &data.join("pots")).unwrap(), 0);
    }
}
