//! Writing the Core's own files in its data directory (the first admin token, generated TLS
//! keys) as new files, never through what is already at the path.
//!
//! Opening an existing path with `O_TRUNC` keeps that file's mode and owner (a 0644
//! `admin-token` left by a copy or an older version stays world-readable with a fresh admin
//! token in it) and follows a symbolic link planted at the path (the token would be written
//! wherever it points). Instead the content goes to a new temporary file next to the target
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`, created with the wanted mode), is synced, and is renamed over
//! the target: `rename` replaces a link itself, never its target, and readers see the old
//! file or the whole new one.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `content` to `path` as a new file with `mode` (0600 for secrets).
pub(crate) fn write_new_file(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let temporary = temporary_path(path)?;
    let written =
        write_temporary(&temporary, content, mode).and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn write_temporary(temporary: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .mode(mode)
        .open(temporary)?;
    // The umask may have taken bits away; it must not have left any the mode lacks.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(content)?;
    file.sync_all()
}

/// `.<name>.<random>.tmp` in the target's directory (same file system, so `rename` is atomic).
fn temporary_path(path: &Path) -> std::io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let suffix: u64 = rand::random();
    Ok(path.with_file_name(format!(".{}.{suffix:016x}.tmp", name.to_string_lossy())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_existing_world_readable_file_is_replaced_by_a_private_one() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("admin-token");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_new_file(&path, b"hb_new\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hb_new\n");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_planted_link_is_replaced_not_followed() {
        let directory = tempfile::tempdir().unwrap();
        let elsewhere = directory.path().join("elsewhere");
        std::fs::write(&elsewhere, "not the core's\n").unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = directory.path().join("admin-token");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        write_new_file(&path, b"hb_new\n", 0o600).unwrap();
        assert_eq!(
            std::fs::read_to_string(&elsewhere).unwrap(),
            "not the core's\n"
        );
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        assert!(
            metadata.file_type().is_file(),
            "the link itself was replaced"
        );
        assert_eq!(metadata.mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hb_new\n");
    }
}
