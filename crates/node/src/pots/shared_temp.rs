//! Removing what a pot user left in the directories every user may write to (`/tmp`,
//! `/var/tmp`, `/dev/shm`) when its pot is uninstalled.
//!
//! Left there, its files would outlive the pot, and a later pot user given the same uid
//! would own them. The pot user's processes are all ended before this runs. The walk goes
//! through directory handles: every entry is opened without following a link, and only
//! entries owned by that uid are deleted (a link is deleted itself, never its target).
//! Directories of other users are searched too (the pot may have written into a
//! world-writable one), but other filesystems mounted below are not entered.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType};

use super::safe_fs;

/// The directories every user may write to.
pub(crate) const SHARED_WRITABLE_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];
/// Deepest directory searched: a pot could nest directories without end; what lies deeper
/// is reported instead of searched.
const MAX_DEPTH: usize = 128;

/// What a sweep removed, and where it could not look or delete.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    pub removed: u64,
    pub problems: Vec<String>,
}

/// Deletes every entry below `roots` owned by `uid` (directories once emptied of what is
/// that uid's). Root's own entries (uid 0) are never deleted.
pub(crate) fn remove_entries_of(uid: u32, roots: &[PathBuf]) -> Swept {
    let mut swept = Swept::default();
    if uid == 0 {
        swept
            .problems
            .push("refusing to sweep the files of uid 0".into());
        return swept;
    }
    for root in roots {
        let handle = match safe_fs::open_trusted_dir(root) {
            Ok(handle) => handle,
            Err(error) => {
                if root.exists() {
                    swept.problems.push(error.to_string());
                }
                continue;
            }
        };
        let device = match rustix::fs::fstat(&handle) {
            Ok(stat) => stat.st_dev,
            Err(errno) => {
                swept
                    .problems
                    .push(format!("reading {}: {errno}", root.display()));
                continue;
            }
        };
        sweep(&handle, root, uid, device, 0, &mut swept);
    }
    swept
}

fn sweep(
    directory: &OwnedFd,
    shown: &Path,
    uid: u32,
    device: u64,
    depth: usize,
    swept: &mut Swept,
) {
    let names = match safe_fs::entry_names(directory, shown) {
        Ok(names) => names,
        Err(error) => {
            swept.problems.push(error.to_string());
            return;
        }
    };
    for name in names {
        let path = shown.join(&name);
        // Gone meanwhile (another program cleaning up): nothing to do.
        let Ok((handle, stat)) = safe_fs::open_entry(directory, &name, &path) else {
            continue;
        };
        if stat.st_dev != device {
            continue;
        }
        let owned = stat.st_uid == uid;
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            if depth >= MAX_DEPTH {
                swept
                    .problems
                    .push(format!("{} is nested too deep to search", path.display()));
                continue;
            }
            match safe_fs::reopen_directory(&handle, &path) {
                Ok(child) => sweep(&child, &path, uid, device, depth + 1, swept),
                Err(error) => swept.problems.push(error.to_string()),
            }
            if owned {
                match rustix::fs::unlinkat(directory, &name, AtFlags::REMOVEDIR) {
                    Ok(()) => swept.removed += 1,
                    // Something of another user is still inside: the directory stays.
                    Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::NOENT) => {}
                    Err(errno) => swept
                        .problems
                        .push(format!("removing {}: {errno}", path.display())),
                }
            }
        } else if owned {
            match rustix::fs::unlinkat(directory, &name, AtFlags::empty()) {
                Ok(()) => swept.removed += 1,
                Err(rustix::io::Errno::NOENT) => {}
                Err(errno) => swept
                    .problems
                    .push(format!("removing {}: {errno}", path.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn only_the_uids_entries_go_and_links_are_removed_not_followed() {
        // Files of another uid can only be made by root.
        super::super::require_root::require_root("files of another uid");
        const POT_UID: u32 = 65534;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("tmp");
        let target = dir.path().join("root-file");
        std::fs::write(&target, "root's").unwrap();
        std::fs::create_dir_all(shared.join("pot-dir/inner")).unwrap();
        std::fs::create_dir_all(shared.join("root-dir")).unwrap();
        std::fs::write(shared.join("pot-file"), "x").unwrap();
        std::fs::write(shared.join("pot-dir/inner/file"), "x").unwrap();
        std::fs::write(shared.join("root-dir/pot-file"), "x").unwrap();
        std::fs::write(shared.join("root-dir/root-file"), "x").unwrap();
        symlink(&target, shared.join("pot-link")).unwrap();
        symlink(&target, shared.join("root-link")).unwrap();
        let give = |relative: &str| {
            std::os::unix::fs::lchown(shared.join(relative), Some(POT_UID), Some(POT_UID)).unwrap()
        };
        for relative in [
            "pot-file",
            "pot-dir",
            "pot-dir/inner",
            "pot-dir/inner/file",
            "root-dir/pot-file",
            "pot-link",
        ] {
            give(relative);
        }
        let swept = remove_entries_of(POT_UID, std::slice::from_ref(&shared));
        assert!(swept.problems.is_empty(), "{:?}", swept.problems);
        assert_eq!(swept.removed, 6);
        for gone in ["pot-file", "pot-dir", "root-dir/pot-file", "pot-link"] {
            assert!(shared.join(gone).symlink_metadata().is_err(), "{gone}");
        }
        for kept in ["root-dir", "root-dir/root-file", "root-link"] {
            assert!(shared.join(kept).symlink_metadata().is_ok(), "{kept}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root's");
        assert!(remove_entries_of(0, &[shared]).problems[0].contains("uid 0"));
    }
}
