//! Keeping pot users away from cron and at.
//!
//! A pot user that may run `crontab` or `at` can leave a job behind that starts its code
//! again after the pot was stopped, or — since a pot's user name is the same for every
//! install under one pot id — after it was uninstalled and installed again. Every pot user
//! is listed in `/etc/cron.deny` and `/etc/at.deny` whenever the node makes sure the user
//! exists, and any crontab or at job it has is removed then and at uninstall, when it also
//! leaves the deny files.
//!
//! A missing deny file means different things to the two. Without `cron.allow` and
//! `cron.deny`, Debian's cron lets every user run `crontab`: `cron.deny` is created. Without
//! `at.deny`, `at` allows only the users in `at.allow`, or only root when that is missing
//! too — creating `at.deny` would open `at` to every user not listed in it. So `at.deny` is
//! only ever edited, never created.
//!
//! The deny files are rewritten whole under a temporary name and renamed into place (never
//! half written), one line per user, under an exclusive `flock` on their directory: nodes
//! (and tests) running side by side must not lose each other's lines.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use thiserror::Error;

use super::pot_users;
use super::privilege::RunAs;
use super::safe_fs;

/// Where the deny files live.
#[derive(Debug, Clone)]
pub(crate) struct SchedulingPaths {
    pub cron_deny: PathBuf,
    pub at_deny: PathBuf,
    /// Directories holding one crontab per user, named after the user (Debian's and Red
    /// Hat's layouts).
    pub crontab_dirs: Vec<PathBuf>,
    /// Directories holding at jobs, one file each, owned by the user who queued it.
    pub at_job_dirs: Vec<PathBuf>,
}

impl SchedulingPaths {
    /// The system's own files.
    pub(crate) fn system() -> Self {
        SchedulingPaths {
            cron_deny: PathBuf::from("/etc/cron.deny"),
            at_deny: PathBuf::from("/etc/at.deny"),
            crontab_dirs: vec![
                PathBuf::from("/var/spool/cron/crontabs"),
                PathBuf::from("/var/spool/cron"),
            ],
            at_job_dirs: vec![
                PathBuf::from("/var/spool/cron/atjobs"),
                PathBuf::from("/var/spool/at"),
            ],
        }
    }
}

#[derive(Debug, Error)]
pub enum SchedulingError {
    #[error("refusing to list user {name:?} in a deny file: not a pot user")]
    NotAPotUser { name: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(what: &'static str, path: &Path, source: impl Into<std::io::Error>) -> SchedulingError {
    SchedulingError::Io {
        what,
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// One node edits the deny files one change at a time (the `flock` orders it with others).
static DENY_FILES: Mutex<()> = Mutex::new(());

/// Lists `user` in both deny files and removes any crontab or at job it has.
pub(crate) fn deny_scheduling(
    user: &RunAs,
    paths: &SchedulingPaths,
) -> Result<(), SchedulingError> {
    if user.uid == 0 || !pot_users::is_pot_user_name(&user.name) {
        return Err(SchedulingError::NotAPotUser {
            name: user.name.clone(),
        });
    }
    for (deny_file, create) in [(&paths.cron_deny, true), (&paths.at_deny, false)] {
        if edit_deny_file(deny_file, &user.name, DenyEdit::List { create })? {
            tracing::info!(user = %user.name, file = %deny_file.display(), "listed a pot user in a deny file");
        }
    }
    remove_jobs(user, paths)
}

/// Removes any crontab or at job of `user`, then takes it off both deny files (its user is
/// about to be removed).
pub(crate) fn forget_scheduling(
    user: &RunAs,
    paths: &SchedulingPaths,
) -> Result<(), SchedulingError> {
    remove_jobs(user, paths)?;
    if !pot_users::is_pot_user_name(&user.name) {
        return Ok(());
    }
    for deny_file in [&paths.cron_deny, &paths.at_deny] {
        edit_deny_file(deny_file, &user.name, DenyEdit::Unlist)?;
    }
    Ok(())
}

fn remove_jobs(user: &RunAs, paths: &SchedulingPaths) -> Result<(), SchedulingError> {
    for directory in &paths.crontab_dirs {
        let Some(handle) = open_if_present(directory)? else {
            continue;
        };
        let name = OsStr::new(&user.name);
        // The entry itself, whatever it is, unless it is a directory (`crontabs` in
        // /var/spool/cron is not a user's crontab; no pot user is named so).
        let is_crontab = rustix::fs::statat(&handle, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) != FileType::Directory);
        if is_crontab {
            rustix::fs::unlinkat(&handle, name, AtFlags::empty())
                .map_err(|errno| io_error("removing", &directory.join(name), errno))?;
            tracing::warn!(user = %user.name, directory = %directory.display(), "removed a crontab of a pot user");
        }
    }
    for directory in &paths.at_job_dirs {
        let Some(handle) = open_if_present(directory)? else {
            continue;
        };
        let names = safe_fs::entry_names(&handle, directory)
            .map_err(|error| io_error("listing", directory, std::io::Error::other(error)))?;
        for name in names {
            let path = directory.join(&name);
            let Ok((_, stat)) = safe_fs::open_entry(&handle, &name, &path) else {
                continue;
            };
            if stat.st_uid == user.uid
                && FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
            {
                rustix::fs::unlinkat(&handle, &name, AtFlags::empty())
                    .map_err(|errno| io_error("removing", &path, errno))?;
                tracing::warn!(user = %user.name, job = %path.display(), "removed an at job of a pot user");
            }
        }
    }
    Ok(())
}

fn open_if_present(directory: &Path) -> Result<Option<std::os::fd::OwnedFd>, SchedulingError> {
    match rustix::fs::open(
        directory,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(handle) => Ok(Some(handle)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(errno) => Err(io_error("opening", directory, errno)),
    }
}

/// What to do with a user's line in a deny file.
#[derive(Debug, Clone, Copy)]
enum DenyEdit {
    /// Add it; `create`: make the file (0644, root's) when it is missing, else leave a
    /// missing file missing.
    List { create: bool },
    /// Remove it (a missing file stays missing).
    Unlist,
}

/// Adds or removes the line `user_name` in `deny_file`; whether it changed the file. Other
/// lines, the file's mode, owner and group are kept.
fn edit_deny_file(
    deny_file: &Path,
    user_name: &str,
    edit: DenyEdit,
) -> Result<bool, SchedulingError> {
    let (listed, create) = match edit {
        DenyEdit::List { create } => (true, create),
        DenyEdit::Unlist => (false, false),
    };
    let _turn = DENY_FILES.lock().unwrap_or_else(|p| p.into_inner());
    let (parent, file_name) = match (deny_file.parent(), deny_file.file_name()) {
        (Some(parent), Some(file_name)) => (parent, file_name),
        _ => {
            return Err(io_error(
                "editing",
                deny_file,
                std::io::ErrorKind::InvalidInput,
            ))
        }
    };
    let directory = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| io_error("opening", parent, errno))?;
    rustix::fs::flock(&directory, FlockOperation::LockExclusive)
        .map_err(|errno| io_error("locking", parent, errno))?;
    let (text, mode, owner) = match std::fs::read(deny_file) {
        Ok(bytes) => {
            use std::os::unix::fs::MetadataExt;
            let metadata = std::fs::symlink_metadata(deny_file)
                .map_err(|error| io_error("reading", deny_file, error))?;
            (
                String::from_utf8_lossy(&bytes).into_owned(),
                metadata.mode() & 0o7777,
                Some((metadata.uid(), metadata.gid())),
            )
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o644, None),
        Err(error) => return Err(io_error("reading", deny_file, error)),
    };
    let present = text.lines().any(|line| line.trim() == user_name);
    if present == listed || (owner.is_none() && !create) {
        return Ok(false);
    }
    let mut kept: Vec<&str> = text
        .lines()
        .filter(|line| line.trim() != user_name)
        .collect();
    if listed {
        kept.push(user_name);
    }
    let mut content = kept.join("\n");
    if !content.is_empty() {
        content.push('\n');
    }
    let mut temporary_name = OsStr::new(".").to_os_string();
    temporary_name.push(file_name);
    temporary_name.push(".honeybee-tmp");
    let _ = rustix::fs::unlinkat(&directory, &temporary_name, AtFlags::empty());
    let fd = rustix::fs::openat(
        &directory,
        &temporary_name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|errno| io_error("writing", deny_file, errno))?;
    // The umask must not narrow the mode; the group (`daemon` for at.deny) stays.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
        .map_err(|errno| io_error("writing", deny_file, errno))?;
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(|errno| io_error("writing", deny_file, errno))?;
    }
    let mut file = std::fs::File::from(fd);
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| io_error("writing", deny_file, error))?;
    rustix::fs::renameat(&directory, &temporary_name, &directory, file_name)
        .map_err(|errno| io_error("replacing", deny_file, errno))?;
    let _ = rustix::fs::fsync(directory.as_fd());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn paths_in(dir: &Path) -> SchedulingPaths {
        SchedulingPaths {
            cron_deny: dir.join("etc/cron.deny"),
            at_deny: dir.join("etc/at.deny"),
            crontab_dirs: vec![dir.join("spool/crontabs")],
            at_job_dirs: vec![dir.join("spool/atjobs")],
        }
    }

    fn pot_user() -> RunAs {
        RunAs {
            name: pot_users::pot_user_name("honeybee", "pot-1"),
            uid: rustix::process::getuid().as_raw().max(1),
            gid: rustix::process::getgid().as_raw(),
        }
    }

    #[test]
    fn pot_users_are_listed_once_and_removed_without_touching_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let paths = paths_in(dir.path());
        std::fs::write(&paths.at_deny, "alice\nbob\n").unwrap();
        std::fs::set_permissions(&paths.at_deny, std::fs::Permissions::from_mode(0o640)).unwrap();
        let user = pot_user();
        deny_scheduling(&user, &paths).unwrap();
        deny_scheduling(&user, &paths).unwrap();
        let listed = format!("{}\n", user.name);
        assert_eq!(std::fs::read_to_string(&paths.cron_deny).unwrap(), listed);
        assert_eq!(
            std::fs::read_to_string(&paths.at_deny).unwrap(),
            format!("alice\nbob\n{listed}")
        );
        assert_eq!(
            std::fs::metadata(&paths.cron_deny).unwrap().mode() & 0o7777,
            0o644
        );
        assert_eq!(
            std::fs::metadata(&paths.at_deny).unwrap().mode() & 0o7777,
            0o640
        );
        forget_scheduling(&user, &paths).unwrap();
        assert_eq!(std::fs::read_to_string(&paths.cron_deny).unwrap(), "");
        assert_eq!(
            std::fs::read_to_string(&paths.at_deny).unwrap(),
            "alice\nbob\n"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("etc"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
    }

    /// Without `at.allow` and `at.deny` only root may use `at`; an `at.deny` made to list a
    /// pot user would let every other user in. `cron.deny` is still made (without either
    /// file, Debian's cron lets everyone use `crontab`).
    #[test]
    fn a_missing_at_deny_is_not_created_and_a_present_one_is_edited() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let paths = paths_in(dir.path());
        let user = pot_user();
        deny_scheduling(&user, &paths).unwrap();
        assert!(
            !paths.at_deny.exists(),
            "at.deny created where only root could use at"
        );
        assert_eq!(
            std::fs::read_to_string(&paths.cron_deny).unwrap(),
            format!("{}\n", user.name)
        );
        forget_scheduling(&user, &paths).unwrap();
        assert!(!paths.at_deny.exists());

        std::fs::write(&paths.at_deny, "").unwrap();
        deny_scheduling(&user, &paths).unwrap();
        assert_eq!(
            std::fs::read_to_string(&paths.at_deny).unwrap(),
            format!("{}\n", user.name)
        );
    }

    #[test]
    fn root_and_users_that_are_not_pot_users_are_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let paths = paths_in(dir.path());
        for user in [
            RunAs {
                name: "alice".into(),
                uid: 1000,
                gid: 1000,
            },
            RunAs {
                name: pot_users::pot_user_name("honeybee", "pot-1"),
                uid: 0,
                gid: 0,
            },
        ] {
            let error = deny_scheduling(&user, &paths).unwrap_err();
            assert!(error.to_string().contains(&user.name), "{error}");
        }
        assert!(!paths.cron_deny.exists());
    }

    #[test]
    fn the_users_crontab_and_at_jobs_are_removed_and_nobody_elses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let paths = paths_in(dir.path());
        let crontabs = &paths.crontab_dirs[0];
        let at_jobs = &paths.at_job_dirs[0];
        std::fs::create_dir_all(crontabs).unwrap();
        std::fs::create_dir_all(at_jobs).unwrap();
        let user = pot_user();
        std::fs::write(crontabs.join(&user.name), "* * * * * /tmp/x\n").unwrap();
        std::fs::write(crontabs.join("alice"), "* * * * * true\n").unwrap();
        std::fs::write(at_jobs.join("a0000101"), "job").unwrap();
        // An at job of the pot user next to one of root's: only root can make both.
        super::super::require_root::require_root("files of another uid");
        std::os::unix::fs::chown(at_jobs.join("a0000101"), Some(user.uid), Some(user.gid)).unwrap();
        std::fs::write(at_jobs.join("b0000102"), "root's job").unwrap();
        deny_scheduling(&user, &paths).unwrap();
        assert!(!crontabs.join(&user.name).exists());
        assert!(crontabs.join("alice").exists());
        assert!(!at_jobs.join("a0000101").exists(), "owned by the user");
        assert!(at_jobs.join("b0000102").exists(), "owned by someone else");
    }
}
