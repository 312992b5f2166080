//! File work as root inside directories a pot (or a pot-owned git checkout) controls, done
//! relative to directory handles with `O_NOFOLLOW` on every component.
//!
//! A pot user can swap any entry of its own directories for a symbolic link at any moment,
//! so checking a path first and using it afterwards is a race it can win. Every function
//! here opens each component itself, refuses links instead of following them, checks what
//! it opened with `fstat` on the handle, and writes new files under a temporary name that
//! is renamed over the target (a rename replaces a planted link; it never writes through
//! it). Regular files with more than one hard link are refused as sources, because a hard
//! link to a root-only file would hand its content over.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Uid};
use rustix::io::Errno;
use thiserror::Error;

use super::privilege::RunAs;

/// Longest file `read_file_beneath` returns: templates are small; a pot must not make the
/// node read a huge file into memory.
const MAX_READ_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum SafeFsError {
    #[error("refusing the symbolic link {path}")]
    SymbolicLink { path: PathBuf },
    #[error("refusing {path}: not a regular file or directory")]
    NotRegular { path: PathBuf },
    #[error("refusing {path}: it has {links} hard links")]
    HardLinked { path: PathBuf, links: u64 },
    #[error(
        "refusing {path}: it belongs to uid {owner}, neither root nor the pot's uid {pot_uid}"
    )]
    ForeignOwner {
        path: PathBuf,
        owner: u32,
        pot_uid: u32,
    },
    #[error("path {path} leaves its directory")]
    Escapes { path: PathBuf },
    #[error("{path} is larger than {max_bytes} bytes")]
    TooLarge { path: PathBuf, max_bytes: u64 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(what: &'static str, path: &Path, errno: Errno) -> SafeFsError {
    SafeFsError::Io {
        what,
        path: path.to_path_buf(),
        source: errno.into(),
    }
}

/// Opens a directory the node trusts (the potstore, the pots' base directory) as a handle;
/// everything below it is reached with the `*_beneath` functions.
pub(crate) fn open_trusted_dir(path: &Path) -> Result<OwnedFd, SafeFsError> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| io_error("opening", path, errno))
}

/// The names of a relative path; `..`, a root or a prefix are refused.
fn names(relative: &Path) -> Result<Vec<&OsStr>, SafeFsError> {
    relative
        .components()
        .filter(|component| !matches!(component, Component::CurDir))
        .map(|component| match component {
            Component::Normal(name) => Ok(name),
            _ => Err(SafeFsError::Escapes {
                path: relative.to_path_buf(),
            }),
        })
        .collect()
}

/// Opens one directory entry below `parent` without following a link.
fn open_child_dir(parent: impl AsFd, name: &OsStr, shown: &Path) -> Result<OwnedFd, SafeFsError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(&parent, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(errno) => Err(explain(&parent, name, shown, errno, "opening")),
    }
}

/// Turns `ELOOP`/`ENOTDIR` from an `O_NOFOLLOW` open into "this is a link" when it is one.
fn explain(
    parent: impl AsFd,
    name: &OsStr,
    shown: &Path,
    errno: Errno,
    what: &'static str,
) -> SafeFsError {
    let is_link = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Symlink);
    if is_link {
        SafeFsError::SymbolicLink {
            path: shown.to_path_buf(),
        }
    } else {
        io_error(what, shown, errno)
    }
}

/// Opens the directory `relative` below `root`, refusing a link at any component.
pub(crate) fn open_dir_beneath(
    root: impl AsFd,
    root_shown: &Path,
    relative: &Path,
) -> Result<OwnedFd, SafeFsError> {
    let mut current =
        rustix::io::dup(&root).map_err(|errno| io_error("opening", root_shown, errno))?;
    let mut shown = root_shown.to_path_buf();
    for name in names(relative)? {
        shown.push(name);
        current = open_child_dir(&current, name, &shown)?;
    }
    Ok(current)
}

/// Like [`open_dir_beneath`], creating missing directories (mode 0700, given to `owner`).
pub(crate) fn ensure_dir_beneath(
    root: impl AsFd,
    root_shown: &Path,
    relative: &Path,
    owner: Option<&RunAs>,
) -> Result<OwnedFd, SafeFsError> {
    let mut current =
        rustix::io::dup(&root).map_err(|errno| io_error("opening", root_shown, errno))?;
    let mut shown = root_shown.to_path_buf();
    for name in names(relative)? {
        shown.push(name);
        match rustix::fs::mkdirat(&current, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {
                let created = open_child_dir(&current, name, &shown)?;
                give(&created, owner, &shown)?;
                current = created;
            }
            Err(Errno::EXIST) => current = open_child_dir(&current, name, &shown)?,
            Err(errno) => return Err(io_error("creating", &shown, errno)),
        }
    }
    Ok(current)
}

fn give(fd: impl AsFd, owner: Option<&RunAs>, shown: &Path) -> Result<(), SafeFsError> {
    let Some(owner) = owner else {
        return Ok(());
    };
    rustix::fs::fchown(
        fd,
        Some(Uid::from_raw(owner.uid)),
        Some(rustix::fs::Gid::from_raw(owner.gid)),
    )
    .map_err(|errno| io_error("giving the pot user", shown, errno))
}

/// Whose files a read may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceOwners {
    /// Anyone's: a directory the node trusts (the potstore, the kit).
    Anyone,
    /// Root's or those of the pot's uid: a directory the pot controls. A file of anyone
    /// else there (another pot's, moved in through a directory both could write) would
    /// hand its content to this pot, as a hard link would.
    RootOrPot(u32),
}

/// Opens a regular, singly linked file `name` in `dir` for reading, owned as `owners`
/// allows, without following a link and without blocking on a FIFO a pot may have planted.
fn open_source_file(
    dir: impl AsFd,
    name: &OsStr,
    shown: &Path,
    owners: SourceOwners,
) -> Result<File, SafeFsError> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir, name, flags, Mode::empty())
        .map_err(|errno| explain(&dir, name, shown, errno, "opening"))?;
    let stat = rustix::fs::fstat(&fd).map_err(|errno| io_error("reading", shown, errno))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(SafeFsError::NotRegular {
            path: shown.to_path_buf(),
        });
    }
    if stat.st_nlink != 1 {
        return Err(SafeFsError::HardLinked {
            path: shown.to_path_buf(),
            links: stat.st_nlink,
        });
    }
    if let SourceOwners::RootOrPot(pot_uid) = owners {
        if stat.st_uid != 0 && stat.st_uid != pot_uid {
            return Err(SafeFsError::ForeignOwner {
                path: shown.to_path_buf(),
                owner: stat.st_uid,
                pot_uid,
            });
        }
    }
    Ok(File::from(fd))
}

/// Reads the regular file `relative` below `root`, owned as `owners` allows; no component
/// may be a link.
pub(crate) fn read_file_beneath(
    root: impl AsFd,
    root_shown: &Path,
    relative: &Path,
    owners: SourceOwners,
) -> Result<Vec<u8>, SafeFsError> {
    let (parent, name) = split_parent(relative)?;
    let shown = root_shown.join(relative);
    let directory = open_dir_beneath(root, root_shown, parent)?;
    let file = open_source_file(&directory, name, &shown, owners)?;
    let mut content = Vec::new();
    file.take(MAX_READ_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(|source| SafeFsError::Io {
            what: "reading",
            path: shown.clone(),
            source,
        })?;
    if content.len() as u64 > MAX_READ_BYTES {
        return Err(SafeFsError::TooLarge {
            path: shown,
            max_bytes: MAX_READ_BYTES,
        });
    }
    Ok(content)
}

fn split_parent(relative: &Path) -> Result<(&Path, &OsStr), SafeFsError> {
    let names = names(relative)?;
    let escapes = || SafeFsError::Escapes {
        path: relative.to_path_buf(),
    };
    let name = *names.last().ok_or_else(escapes)?;
    Ok((relative.parent().unwrap_or(Path::new("")), name))
}

/// Writes `content` to `relative` below `root` (creating missing parent directories): into
/// a new temporary file that is given to `owner` and then renamed over the target, so a
/// link or a hard link the pot put at the target is replaced, never written through.
pub(crate) fn write_file_beneath(
    root: impl AsFd,
    root_shown: &Path,
    relative: &Path,
    content: &[u8],
    owner: Option<&RunAs>,
) -> Result<(), SafeFsError> {
    let (parent, name) = split_parent(relative)?;
    let shown = root_shown.join(relative);
    let directory = ensure_dir_beneath(root, root_shown, parent, owner)?;
    let mut temporary_name = b".".to_vec();
    temporary_name.extend_from_slice(name.as_bytes());
    temporary_name.extend_from_slice(b".honeybee-tmp");
    let temporary_name = OsStr::from_bytes(&temporary_name);
    let _ = rustix::fs::unlinkat(&directory, temporary_name, AtFlags::empty());
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(
        &directory,
        temporary_name,
        flags,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|errno| io_error("writing", &shown, errno))?;
    give(&fd, owner, &shown)?;
    let mut file = File::from(fd);
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(|source| SafeFsError::Io {
            what: "writing",
            path: shown.clone(),
            source,
        })?;
    rustix::fs::renameat(&directory, temporary_name, &directory, name)
        .map_err(|errno| io_error("replacing", &shown, errno))
}

/// Copies the directory `source_relative` below `source_root` to a new directory
/// `target_name` in `target_parent`, given to `owner`. A link anywhere — at the root of the
/// copy or below it — fails the copy, as do hard-linked files and special files.
pub(crate) fn copy_tree_beneath(
    source_root: impl AsFd,
    source_root_shown: &Path,
    source_relative: &Path,
    target_parent: impl AsFd,
    target_shown: &Path,
    owner: Option<&RunAs>,
) -> Result<(), SafeFsError> {
    let source = open_dir_beneath(source_root, source_root_shown, source_relative)?;
    let target_name = target_shown
        .file_name()
        .ok_or_else(|| SafeFsError::Escapes {
            path: target_shown.to_path_buf(),
        })?;
    rustix::fs::mkdirat(&target_parent, target_name, Mode::from_raw_mode(0o700))
        .map_err(|errno| io_error("creating", target_shown, errno))?;
    let target = open_child_dir(&target_parent, target_name, target_shown)?;
    give(&target, owner, target_shown)?;
    copy_entries(
        &source,
        &source_root_shown.join(source_relative),
        &target,
        target_shown,
        owner,
    )
}

fn copy_entries(
    source: &OwnedFd,
    source_shown: &Path,
    target: &OwnedFd,
    target_shown: &Path,
    owner: Option<&RunAs>,
) -> Result<(), SafeFsError> {
    let entries = rustix::fs::Dir::read_from(source)
        .map_err(|errno| io_error("listing", source_shown, errno))?;
    for entry in entries {
        let entry = entry.map_err(|errno| io_error("listing", source_shown, errno))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let from = source_shown.join(name);
        let to = target_shown.join(name);
        let stat = rustix::fs::statat(source, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|errno| io_error("reading", &from, errno))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => return Err(SafeFsError::SymbolicLink { path: from }),
            FileType::Directory => {
                let child = open_child_dir(source, name, &from)?;
                rustix::fs::mkdirat(target, name, Mode::from_raw_mode(0o700))
                    .map_err(|errno| io_error("creating", &to, errno))?;
                let child_target = open_child_dir(target, name, &to)?;
                give(&child_target, owner, &to)?;
                copy_entries(&child, &from, &child_target, &to, owner)?;
            }
            FileType::RegularFile => {
                let mut input = open_source_file(source, name, &from, SourceOwners::Anyone)?;
                let mode = Mode::from_raw_mode((stat.st_mode & 0o700) | 0o600);
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(target, name, flags, mode)
                    .map_err(|errno| io_error("writing", &to, errno))?;
                give(&fd, owner, &to)?;
                let mut output = File::from(fd);
                std::io::copy(&mut input, &mut output).map_err(|source| SafeFsError::Io {
                    what: "copying",
                    path: from.clone(),
                    source,
                })?;
            }
            _ => return Err(SafeFsError::NotRegular { path: from }),
        }
    }
    Ok(())
}

/// The names in a directory (without `.` and `..`), read through its handle.
pub(crate) fn entry_names(
    directory: impl AsFd,
    shown: &Path,
) -> Result<Vec<std::ffi::OsString>, SafeFsError> {
    let entries =
        rustix::fs::Dir::read_from(directory).map_err(|errno| io_error("listing", shown, errno))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|errno| io_error("listing", shown, errno))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_os_string());
        }
    }
    Ok(names)
}

/// Opens the entry `name` of `directory` itself — a link is opened as the link, never
/// followed — as an `O_PATH` handle, with what `fstat` says of it. Whatever is done to the
/// entry afterwards goes through this handle, so a name swapped meanwhile changes nothing.
pub(crate) fn open_entry(
    directory: impl AsFd,
    name: &OsStr,
    shown: &Path,
) -> Result<(OwnedFd, rustix::fs::Stat), SafeFsError> {
    let handle = rustix::fs::openat(
        directory,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| io_error("opening", shown, errno))?;
    let stat = rustix::fs::fstat(&handle).map_err(|errno| io_error("reading", shown, errno))?;
    Ok((handle, stat))
}

/// The directory an [`open_entry`] handle stands for, opened for listing through the handle
/// itself (so it is the very directory that was checked).
pub(crate) fn reopen_directory(handle: &OwnedFd, shown: &Path) -> Result<OwnedFd, SafeFsError> {
    rustix::fs::openat(
        handle,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| io_error("opening", shown, errno))
}

/// The regular file `name` of `directory` opened for reading (without following a link or
/// blocking), when it is still the file `checked` describes; `None` when the name now
/// stands for something else.
pub(crate) fn reopen_regular_file(
    directory: impl AsFd,
    name: &OsStr,
    checked: &rustix::fs::Stat,
    shown: &Path,
) -> Result<Option<OwnedFd>, SafeFsError> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(directory, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::LOOP | Errno::NOENT) => return Ok(None),
        Err(errno) => return Err(io_error("opening", shown, errno)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|errno| io_error("reading", shown, errno))?;
    let same = stat.st_dev == checked.st_dev && stat.st_ino == checked.st_ino;
    Ok(same.then_some(fd))
}

/// The device and inode of an open handle: what a directory is, whatever path names it.
pub(crate) fn identity(handle: impl AsFd, shown: &Path) -> Result<(u64, u64), SafeFsError> {
    let stat = rustix::fs::fstat(handle).map_err(|errno| io_error("reading", shown, errno))?;
    Ok((stat.st_dev, stat.st_ino))
}

/// Sets the permission bits of an open file or directory when they differ; whether it
/// changed something.
pub(crate) fn set_mode(handle: impl AsFd, mode: u32, shown: &Path) -> Result<bool, SafeFsError> {
    let stat = rustix::fs::fstat(&handle).map_err(|errno| io_error("reading", shown, errno))?;
    if stat.st_mode & 0o7777 == mode {
        return Ok(false);
    }
    rustix::fs::fchmod(handle, Mode::from_raw_mode(mode))
        .map_err(|errno| io_error("changing the mode of", shown, errno))?;
    Ok(true)
}

/// Gives `directory` and everything below it that belongs to one of `from_uids` to `to`
/// (when a pot moves from the shared user of earlier versions to its own).
///
/// Each entry is opened once (`O_PATH|O_NOFOLLOW`, relative to its directory's handle),
/// checked with `fstat` on that handle, and changed through the same handle: a name swapped
/// for a hard link or a link after the check is never what gets changed. Links are changed
/// themselves, never followed, and a file with several hard links keeps its owner: it may
/// be a link to a file of someone else.
pub(crate) fn chown_tree_beneath(
    directory: &OwnedFd,
    shown: &Path,
    from_uids: &[u32],
    to: &RunAs,
) -> Result<(), SafeFsError> {
    let stat = rustix::fs::fstat(directory).map_err(|errno| io_error("reading", shown, errno))?;
    if from_uids.contains(&stat.st_uid) {
        give(directory, Some(to), shown)?;
    }
    for name in entry_names(directory, shown)? {
        let path = shown.join(&name);
        let (handle, stat) = open_entry(directory, &name, &path)?;
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            let child = reopen_directory(&handle, &path)?;
            chown_tree_beneath(&child, &path, from_uids, to)?;
        } else if from_uids.contains(&stat.st_uid) {
            if stat.st_nlink != 1 {
                tracing::warn!(path = %path.display(), links = stat.st_nlink, "a hard-linked file in a pot's directory keeps its owner");
                continue;
            }
            rustix::fs::chownat(
                &handle,
                "",
                Some(Uid::from_raw(to.uid)),
                Some(rustix::fs::Gid::from_raw(to.gid)),
                AtFlags::EMPTY_PATH,
            )
            .map_err(|errno| io_error("giving the pot user", &path, errno))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    use super::*;

    const ANYONE: SourceOwners = SourceOwners::Anyone;

    fn secret_in(dir: &Path) -> PathBuf {
        let secret = dir.join("secret");
        std::fs::write(&secret, "root-only secret").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        secret
    }

    #[test]
    fn reads_refuse_links_at_any_component_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_in(dir.path());
        let instance = dir.path().join("instance");
        std::fs::create_dir_all(instance.join("files")).unwrap();
        std::fs::write(instance.join("files/real.cfg"), "real").unwrap();
        let root = open_trusted_dir(&instance).unwrap();
        assert_eq!(
            read_file_beneath(&root, &instance, Path::new("files/real.cfg"), ANYONE).unwrap(),
            b"real"
        );
        symlink(&secret, instance.join("files/cowrie.cfg")).unwrap();
        let error =
            read_file_beneath(&root, &instance, Path::new("files/cowrie.cfg"), ANYONE).unwrap_err();
        assert!(matches!(error, SafeFsError::SymbolicLink { .. }), "{error}");
        symlink(dir.path(), instance.join("up")).unwrap();
        let error =
            read_file_beneath(&root, &instance, Path::new("up/secret"), ANYONE).unwrap_err();
        assert!(matches!(error, SafeFsError::SymbolicLink { .. }), "{error}");
        std::fs::hard_link(&secret, instance.join("files/hard.cfg")).unwrap();
        let error =
            read_file_beneath(&root, &instance, Path::new("files/hard.cfg"), ANYONE).unwrap_err();
        assert!(matches!(error, SafeFsError::HardLinked { .. }), "{error}");
        assert!(read_file_beneath(&root, &instance, Path::new("../secret"), ANYONE).is_err());
    }

    /// In a pot's directory, a file of another uid (here another pot's) is refused as a
    /// source even with one link; root's and the pot's own are read.
    #[test]
    fn reads_in_a_pot_directory_refuse_a_file_of_another_uid() {
        super::super::require_root::require_root("files of another uid");
        const POT_UID: u32 = 65534;
        const OTHER_POT_UID: u32 = 65533;
        let dir = tempfile::tempdir().unwrap();
        let instance = dir.path().join("instance");
        std::fs::create_dir_all(instance.join("files")).unwrap();
        for (name, owner) in [
            ("own.cfg", POT_UID),
            ("root.cfg", 0),
            ("other.cfg", OTHER_POT_UID),
        ] {
            let path = instance.join("files").join(name);
            std::fs::write(&path, name).unwrap();
            std::os::unix::fs::chown(&path, Some(owner), Some(owner)).unwrap();
        }
        let root = open_trusted_dir(&instance).unwrap();
        let pot = SourceOwners::RootOrPot(POT_UID);
        for name in ["own.cfg", "root.cfg"] {
            let read = read_file_beneath(&root, &instance, &Path::new("files").join(name), pot);
            assert_eq!(read.unwrap(), name.as_bytes());
        }
        let error =
            read_file_beneath(&root, &instance, Path::new("files/other.cfg"), pot).unwrap_err();
        assert!(
            matches!(
                error,
                SafeFsError::ForeignOwner {
                    owner: OTHER_POT_UID,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("65533"), "{error}");
        // A trusted directory takes anyone's file.
        assert!(read_file_beneath(&root, &instance, Path::new("files/other.cfg"), ANYONE).is_ok());
    }

    #[test]
    fn writes_replace_a_planted_link_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_in(dir.path());
        let instance = dir.path().join("instance");
        std::fs::create_dir_all(instance.join("etc")).unwrap();
        let root = open_trusted_dir(&instance).unwrap();
        symlink(&secret, instance.join("etc/cowrie.cfg")).unwrap();
        write_file_beneath(&root, &instance, Path::new("etc/cowrie.cfg"), b"new", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "root-only secret"
        );
        let written = instance.join("etc/cowrie.cfg");
        assert!(!written.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&written).unwrap(), "new");
        // A linked directory on the way is refused, not followed.
        symlink(dir.path(), instance.join("state")).unwrap();
        let error = write_file_beneath(&root, &instance, Path::new("state/secret"), b"x", None)
            .unwrap_err();
        assert!(matches!(error, SafeFsError::SymbolicLink { .. }), "{error}");
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "root-only secret"
        );
        assert!(write_file_beneath(&root, &instance, Path::new("../escape"), b"x", None).is_err());
        // Missing parents are created.
        write_file_beneath(&root, &instance, Path::new("new/dir/file"), b"y", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(instance.join("new/dir/file")).unwrap(),
            "y"
        );
    }

    #[test]
    fn copies_refuse_a_linked_root_and_links_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(store.join("pot/sub")).unwrap();
        std::fs::write(store.join("pot/sub/a.py"), "print(1)").unwrap();
        symlink("/etc", store.join("etc-link")).unwrap();
        let target_parent = dir.path().join("instance");
        std::fs::create_dir_all(&target_parent).unwrap();
        let source_root = open_trusted_dir(&store).unwrap();
        let target = open_trusted_dir(&target_parent).unwrap();

        copy_tree_beneath(
            &source_root,
            &store,
            Path::new("pot"),
            &target,
            &target_parent.join("files"),
            None,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(target_parent.join("files/sub/a.py")).unwrap(),
            "print(1)"
        );

        let error = copy_tree_beneath(
            &source_root,
            &store,
            Path::new("etc-link"),
            &target,
            &target_parent.join("stolen"),
            None,
        )
        .unwrap_err();
        assert!(matches!(error, SafeFsError::SymbolicLink { .. }), "{error}");
        assert!(!target_parent.join("stolen").exists());

        symlink("/etc/hostname", store.join("pot/sub/link")).unwrap();
        let error = copy_tree_beneath(
            &source_root,
            &store,
            Path::new("pot"),
            &target,
            &target_parent.join("again"),
            None,
        )
        .unwrap_err();
        assert!(matches!(error, SafeFsError::SymbolicLink { .. }), "{error}");
    }

    #[test]
    fn chown_never_follows_links_nor_takes_hard_linked_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_in(dir.path());
        let outside_dir = dir.path().join("outside");
        std::fs::create_dir(&outside_dir).unwrap();
        std::fs::write(outside_dir.join("kept"), "x").unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
        std::fs::write(tree.join("sub/own.txt"), "x").unwrap();
        std::fs::write(tree.join("sub/deeper/own.txt"), "x").unwrap();
        symlink(&secret, tree.join("sub/link")).unwrap();
        symlink(&outside_dir, tree.join("dir-link")).unwrap();
        std::fs::hard_link(&secret, tree.join("hard")).unwrap();
        let me = rustix::process::getuid().as_raw();
        let group = rustix::process::getgid().as_raw();
        // Unprivileged, only our own uid can be given: the walk must still pass links and
        // hard links without an error.
        let to = RunAs {
            name: "test".into(),
            uid: me,
            gid: group,
        };
        let handle = open_trusted_dir(&tree).unwrap();
        chown_tree_beneath(&handle, &tree, &[me], &to).unwrap();
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 2);
        super::super::require_root::require_root("giving files to another uid");
        let nobody = RunAs {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
        };
        chown_tree_beneath(&handle, &tree, &[me], &nobody).unwrap();
        let owner = |path: &Path| std::fs::symlink_metadata(path).unwrap().uid();
        for given in [
            tree.clone(),
            tree.join("sub"),
            tree.join("sub/deeper"),
            tree.join("sub/own.txt"),
            tree.join("sub/deeper/own.txt"),
            tree.join("sub/link"),
            tree.join("dir-link"),
        ] {
            assert_eq!(owner(&given), 65534, "{}", given.display());
        }
        assert_eq!(owner(&secret), me, "the hard-linked file keeps its owner");
        assert_eq!(owner(&tree.join("hard")), me);
        assert_eq!(
            owner(&outside_dir),
            me,
            "a link to a directory is not followed"
        );
        assert_eq!(owner(&outside_dir.join("kept")), me);
    }

    /// A process of the shared user swaps a name between its own file and a hard link to
    /// another pot's file while the tree is handed over, again and again: the other pot's
    /// file never changes owner (checking one inode and changing another by name would).
    #[test]
    fn chown_is_never_redirected_by_a_name_swapped_during_the_walk() {
        super::super::require_root::require_root("files and processes of another uid");
        const POT_UID: u32 = 65534;
        let dir = tempfile::tempdir().unwrap();
        let victim = secret_in(dir.path());
        let tree = dir.path().join("tree");
        let stash = dir.path().join("stash");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::create_dir_all(&stash).unwrap();
        std::fs::write(tree.join("x"), "own").unwrap();
        std::fs::hard_link(&victim, stash.join("x")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, tree, stash) = (stop.clone(), tree.clone(), stash.clone());
            std::thread::spawn(move || {
                // Each exchange swaps the two names atomically: `tree/x` is always there.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        tree.join("x"),
                        rustix::fs::CWD,
                        stash.join("x"),
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .unwrap();
                }
            })
        };
        let to = RunAs {
            name: "nobody".into(),
            uid: POT_UID,
            gid: POT_UID,
        };
        let handle = open_trusted_dir(&tree).unwrap();
        for _ in 0..40_000 {
            chown_tree_beneath(&handle, &tree, &[0, POT_UID], &to).unwrap();
            if std::fs::metadata(&victim).unwrap().uid() != 0 {
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        assert_eq!(
            std::fs::metadata(&victim).unwrap().uid(),
            0,
            "another pot's file was handed over"
        );
    }
}
