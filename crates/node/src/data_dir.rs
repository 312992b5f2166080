//! The node's data directory is closed to everyone else: its `node_id`, `totp.key`, spool,
//! `pots.json` and the pots' logs are 0600 (directories 0700). Only the data directory
//! itself and the pots' base directory below it are 0711 (pass through, no listing), so
//! each pot user reaches its own directory (0700, its own) and nothing else.
//!
//! Files created by earlier versions (0644 by the umask) are tightened at every start.

use std::path::Path;

use rustix::fs::FileType;

use crate::pots::safe_fs::{self, SafeFsError};

/// Pass through, no listing: for the directories pot users must cross.
pub(crate) const TRAVERSE_ONLY: u32 = 0o711;
const PRIVATE_DIRECTORY: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Every file and directory the node creates from now on is private to it (children such
/// as pot processes set their own modes on their own files).
pub(crate) fn private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Replaces `path` with `content`, privately (0600) and atomically: a temporary file next
/// to it, synced, renamed over it, and the directory synced so the rename survives a power
/// loss (the node must not come back without, say, the secret the Core already holds).
///
/// The temporary name is fixed (`<path>.tmp`), so whatever is found there — a file left by
/// a run that died, or a link someone planted to make root write a secret through it — is
/// removed first (a link itself, never its target), and the temporary is then created anew
/// with `O_EXCL | O_NOFOLLOW`: if anything took the name meanwhile, the write fails
/// instead of following it.
pub(crate) fn write_private_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut temporary_name = path.as_os_str().to_owned();
    temporary_name.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary_name);
    // `remove_file` unlinks the name; it does not follow a link.
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(no_follow_flag())
        .mode(PRIVATE_FILE)
        .open(&temporary)?;
    // The umask must not have narrowed the mode, nor an unusual one widened it.
    file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE))?;
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(directory) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}

/// `O_NOFOLLOW` for `OpenOptionsExt::custom_flags` (std has no constant for it).
fn no_follow_flag() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Tightens `data_dir` (0711) and everything below it: directories 0700, files 0600. The
/// pots' base directory, when it lies below, becomes 0711 and is not descended into (each
/// pot's directory belongs to its pot user); it is recognised by device and inode, however
/// its path is written. The walk goes through directory handles: every entry is opened
/// without following a link and changed through that handle, so a name swapped for a link
/// meanwhile never redirects root's chmod. Links and hard-linked files are left alone.
/// Returns how many entries were closed (the data directory opened from 0700 to 0711 for
/// the pot users to pass through does not count: nothing was readable before).
pub(crate) fn tighten(data_dir: &Path, pots_base_dir: &Path) -> Result<u64, SafeFsError> {
    let pots_base = match safe_fs::open_trusted_dir(pots_base_dir) {
        Ok(handle) => Some(safe_fs::identity(&handle, pots_base_dir)?),
        Err(_) => None,
    };
    let root = safe_fs::open_trusted_dir(data_dir)?;
    let was_private = std::fs::symlink_metadata(data_dir).is_ok_and(|metadata| {
        std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o077 == 0
    });
    let root_changed = safe_fs::set_mode(&root, TRAVERSE_ONLY, data_dir)?;
    let mut changed = u64::from(root_changed && !was_private);
    if Some(safe_fs::identity(&root, data_dir)?) == pots_base {
        // Refused by the config check; should it happen anyway, the pots' files are theirs.
        return Ok(changed);
    }
    changed += tighten_below(&root, data_dir, pots_base)?;
    Ok(changed)
}

fn tighten_below(
    directory: &std::os::fd::OwnedFd,
    shown: &Path,
    pots_base: Option<(u64, u64)>,
) -> Result<u64, SafeFsError> {
    let mut changed = 0;
    for name in safe_fs::entry_names(directory, shown)? {
        let path = shown.join(&name);
        let (handle, stat) = safe_fs::open_entry(directory, &name, &path)?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                let child = safe_fs::reopen_directory(&handle, &path)?;
                if Some((stat.st_dev, stat.st_ino)) == pots_base {
                    changed += u64::from(safe_fs::set_mode(&child, TRAVERSE_ONLY, &path)?);
                    continue;
                }
                changed += u64::from(safe_fs::set_mode(&child, PRIVATE_DIRECTORY, &path)?);
                changed += tighten_below(&child, &path, pots_base)?;
            }
            FileType::RegularFile if stat.st_nlink == 1 => {
                if let Some(file) = safe_fs::reopen_regular_file(directory, &name, &stat, &path)? {
                    changed += u64::from(safe_fs::set_mode(&file, PRIVATE_FILE, &path)?);
                }
            }
            FileType::RegularFile => {
                tracing::warn!(path = %path.display(), links = stat.st_nlink, "a hard-linked file in the data directory keeps its mode");
            }
            _ => {}
        }
    }
    Ok(changed)
}

/// Whether the pots' base directory is the data directory or one of its ancestors: each pot
/// user owns its directory in there, so the node's own files would lie in a pot's reach
/// (and the data directory could not be told from the pots' when it is tightened). Paths
/// are compared canonicalised as far as they exist.
pub(crate) fn base_dir_holds_data_dir(data_dir: &Path, pots_base_dir: &Path) -> bool {
    resolved(data_dir).starts_with(resolved(pots_base_dir))
}

/// `path` made absolute and resolved one name at a time: each prefix that exists is
/// canonicalised (links resolved, so a `..` after a link goes up from where it points), the
/// rest normalised by name (`.` dropped, `..` going up).
fn resolved(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut resolved = std::path::PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                resolved.pop();
            }
            other => {
                resolved.push(other);
                if let Ok(canonical) = resolved.canonicalize() {
                    resolved = canonical;
                }
            }
        }
    }
    resolved
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    /// A link planted at the fixed temporary name, pointing to a file: the file stays as it
    /// was, the link is gone, and the new content is in place, private.
    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "the victim's own\n").unwrap();
        let secret = dir.path().join("totp.key");
        std::os::unix::fs::symlink(&target, dir.path().join("totp.key.tmp")).unwrap();
        write_private_file(&secret, b"secret").unwrap();
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "the victim's own\n"
        );
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
        assert_eq!(mode(&secret), 0o600);
        assert!(
            std::fs::symlink_metadata(dir.path().join("totp.key.tmp")).is_err(),
            "the temporary name is free again"
        );
        // A stale temporary file (a run that died) is no obstacle either.
        std::fs::write(dir.path().join("totp.key.tmp"), "stale").unwrap();
        write_private_file(&secret, b"newer").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"newer");
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
        // A fresh, private data directory opened to 0711 for the pot users closes nothing.
        let fresh = dir.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        open(&fresh, 0o700);
        assert_eq!(tighten(&fresh, &fresh.join("pots")).unwrap(), 0);
        assert_eq!(mode(&fresh), 0o711);
        assert_eq!(mode(&data.join("spool")), 0o700);
        for file in ["node_id", "spool/0001.seg", "pots.json"] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&outside), 0o644, "links are not followed");
        assert_eq!(tighten(&data, &data.join("pots")).unwrap(), 0);
    }

    #[test]
    fn links_are_never_followed_and_the_pot_directory_is_known_however_its_path_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pot = data.join("pots/pot-1");
        std::fs::create_dir_all(&pot).unwrap();
        std::fs::write(pot.join("pot-file"), "x").unwrap();
        let outside_dir = dir.path().join("outside-dir");
        std::fs::create_dir(&outside_dir).unwrap();
        let outside_file = dir.path().join("outside-file");
        std::fs::write(&outside_file, "x").unwrap();
        std::fs::write(outside_dir.join("inner"), "x").unwrap();
        for (path, bits) in [
            (&outside_dir, 0o755),
            (&outside_file, 0o644),
            (&outside_dir.join("inner"), 0o644),
            (&pot.join("pot-file"), 0o644),
        ] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(bits)).unwrap();
        }
        // Links planted in the data directory, to a file and to a directory.
        std::os::unix::fs::symlink(&outside_file, data.join("file-link")).unwrap();
        std::os::unix::fs::symlink(&outside_dir, data.join("dir-link")).unwrap();
        // The pots' base directory written through another path to the same place.
        let alias = dir.path().join("alias");
        std::os::unix::fs::symlink(&data, &alias).unwrap();
        tighten(&data, &alias.join("pots")).unwrap();
        assert_eq!(mode(&outside_file), 0o644);
        assert_eq!(mode(&outside_dir), 0o755);
        assert_eq!(mode(&outside_dir.join("inner")), 0o644);
        assert_eq!(mode(&data.join("pots")), 0o711);
        assert_eq!(
            mode(&pot.join("pot-file")),
            0o644,
            "the pots' directory is not descended into"
        );
        // The data directory itself as the pots' base directory: nothing below is touched.
        std::fs::write(data.join("loose"), "x").unwrap();
        std::fs::set_permissions(data.join("loose"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        tighten(&data, &data).unwrap();
        assert_eq!(mode(&data.join("loose")), 0o644);
        assert_eq!(mode(&data), 0o711);
    }

    #[test]
    fn a_pot_base_directory_holding_the_data_directory_is_recognised_however_written() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let alias = dir.path().join("alias");
        std::os::unix::fs::symlink(&data, &alias).unwrap();
        assert!(base_dir_holds_data_dir(&data, &data));
        assert!(base_dir_holds_data_dir(&data, &alias));
        assert!(base_dir_holds_data_dir(&data, &data.join(".")));
        assert!(base_dir_holds_data_dir(&data, &data.join("x/..")));
        assert!(base_dir_holds_data_dir(&data, dir.path()));
        assert!(base_dir_holds_data_dir(
            &data.join("new/y"),
            &data.join("new")
        ));
        assert!(!base_dir_holds_data_dir(&data, &data.join("pots")));
        assert!(!base_dir_holds_data_dir(&data, &alias.join("pots")));
        assert!(!base_dir_holds_data_dir(
            &data,
            &dir.path().join("elsewhere")
        ));
    }

    /// A name in the data directory swapped between a directory and a link to a file outside
    /// (as a pot could in its own directory if that were below): the file's mode never
    /// changes, whichever the name is when it is checked and when it is changed.
    #[test]
    fn a_name_swapped_for_a_link_during_tighten_never_redirects_the_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("entry")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        let stash = dir.path().join("stash");
        std::fs::create_dir_all(&stash).unwrap();
        std::os::unix::fs::symlink(&outside, stash.join("entry")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, data, stash) = (stop.clone(), data.clone(), stash.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        data.join("entry"),
                        rustix::fs::CWD,
                        stash.join("entry"),
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .unwrap();
                }
            })
        };
        for _ in 0..60_000 {
            // A walk that met the name mid-swap may fail; what matters is what it changed.
            let _ = tighten(&data, &data.join("pots"));
            if mode(&outside) != 0o644 {
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        assert_eq!(
            mode(&outside),
            0o644,
            "root's chmod followed a swapped-in link"
        );
    }
}
