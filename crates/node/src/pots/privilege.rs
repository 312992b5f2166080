//! Least privilege for pots: when the node runs as root, pots run as an unprivileged user
//! (created if missing) that owns their files.

use std::path::Path;

use nix::unistd::{Uid, User};

/// Who a pot's processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// `None` when the node is not root (pots then run as the node's own user); otherwise the
/// configured user, created as a system user without a login shell when it is missing.
pub(crate) fn resolve_run_as(user_name: &str) -> Result<Option<RunAs>, String> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    if lookup(user_name)?.is_none() {
        let status = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                user_name,
            ])
            .status()
            .map_err(|error| format!("running useradd for {user_name:?}: {error}"))?;
        if !status.success() {
            return Err(format!("useradd {user_name:?} failed with {status}"));
        }
        tracing::info!(user = user_name, "created the unprivileged pot user");
    }
    let user = lookup(user_name)?
        .ok_or_else(|| format!("user {user_name:?} still missing after useradd"))?;
    if user.uid.is_root() {
        return Err(format!(
            "honeypot.run_as {user_name:?} is root; pots must not run as root"
        ));
    }
    Ok(Some(RunAs {
        name: user_name.to_owned(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

fn lookup(user_name: &str) -> Result<Option<User>, String> {
    User::from_name(user_name).map_err(|error| format!("looking up user {user_name:?}: {error}"))
}

/// Gives `path` and everything below it to the pot user (no-op without one).
pub(crate) fn chown_tree(path: &Path, run_as: Option<&RunAs>) -> std::io::Result<()> {
    let Some(run_as) = run_as else {
        return Ok(());
    };
    std::os::unix::fs::lchown(path, Some(run_as.uid), Some(run_as.gid))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), Some(run_as))?;
        }
    }
    Ok(())
}
